"""The benchmarks `depnet bench` runs: the ledger path in one process, and a whole network.

`run_network_bench` starts a local network (one validator process per bank, on free
127.0.0.1 ports in a temporary home), offers it pre-signed transfers in batches through
every node's HTTP API for a while, and reports committed tx/s, submit-to-commit latency,
each node's memory and CPU, and the heights reached; then stops every process.

`run_ledger_bench` times what every validator does with each transaction of a block:
decode the wire bytes, verify the Ed25519 signature, apply the ledger rules, and commit
the block through the real LevelDB store (one synced batch per block). Keys, genesis and
signatures are prepared before the clock starts, since a node receives txs already signed.
"""

from __future__ import annotations

import os
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any

from cli.devnet.client import NodeClient
from cli.devnet.errors import DevnetError
from cli.devnet.health import cpu_seconds
from cli.devnet.load import funded_template, load_payers, sign_transfers
from cli.devnet.localnet import ChainScan, LocalNet


def run_ledger_bench(txs: int, *, accounts: int, block_size: int, seed: int) -> dict[str, Any]:
    """Run the ledger benchmark and return its figures (see module docstring)."""
    from nacl.signing import SigningKey

    from chain.genesis import genesis_from_template
    from chain.state import build_block
    from chain.store import Store
    from chain.tx import TxKind, decode_tx, sign_tx, verify_signature
    from consensus.validators import certify
    from node.config import load_template

    def key(*parts: object) -> SigningKey:
        return SigningKey(sha256(repr((seed, *parts)).encode()).digest())

    template = load_template()
    banks = [b["name"] for b in template["banks"]]
    symbols = {b["name"]: b["tokens"][0]["symbol"] for b in template["banks"]}
    wallets = [key("account", i) for i in range(accounts)]
    bank_of = [banks[i % len(banks)] for i in range(accounts)]
    template["accounts"] = [
        {"name": f"bench-{i}", "bank": bank_of[i], "balances": {symbols[bank_of[i]]: 10**12}}
        for i in range(accounts)
    ]
    role_keys = {("validator", b): key("validator", b) for b in banks}
    role_keys.update({("account", f"bench-{i}"): k for i, k in enumerate(wallets)})

    def public_key(role: str, name: str) -> bytes:
        signer = role_keys.get((role, name)) or key(role, name)
        return bytes(signer.verify_key)

    genesis = genesis_from_template(template, public_key, genesis_time_ms=1_764_000_000_000)
    # The first three validators in genesis order: a quorum (2f+1) of the 4 banks.
    signers = [role_keys[("validator", b.name)] for b in genesis.banks[:3]]

    # Each account pays in its own bank's token; senders take turns so that nonces
    # stay in order within and across blocks.
    rng = random.Random(seed)
    wire = []
    for i in range(txs):
        sender = i % accounts
        recipient = (sender + rng.randrange(1, accounts)) % accounts
        tx = sign_tx(
            wallets[sender],
            TxKind.TRANSFER,
            genesis.chain_id,
            i // accounts,
            to=bytes(wallets[recipient].verify_key),
            token=symbols[bank_of[sender]],
            amount=rng.randrange(1, 10_000),
            memo=f"INV-{i:08d}",
        )
        wire.append(tx.raw)

    phases = {"decode": 0.0, "verify": 0.0, "apply": 0.0, "commit": 0.0}  # seconds, summed
    clock = time.perf_counter
    with tempfile.TemporaryDirectory(prefix="depnet-bench-") as tmp:
        store = Store.open(Path(tmp) / "db", genesis)
        last_cert = None
        for start in range(0, txs, block_size):
            t0 = clock()
            batch = [decode_tx(raw) for raw in wire[start : start + block_size]]
            t1 = clock()
            for tx in batch:
                verify_signature(tx)
            verified = {tx.tx_id for tx in batch}
            t2 = clock()
            built = build_block(
                store.state,
                batch,
                round=0,
                proposer=bytes(signers[0].verify_key),
                time_ms=genesis.genesis_time_ms + store.state.height + 1,
                last_cert=last_cert,
                max_txs=block_size,
                verified=verified,
            )
            if built.rejected:
                raise DevnetError(f"bench tx rejected: {built.rejected[0][1]}")
            t3 = clock()
            # Stand-in for consensus: 3 of the 4 validators precommit the block, so the
            # certificate verifies as a real one would.
            last_cert = certify(built.block, signers, genesis.chain_id)
            store.commit_block(built.block, last_cert, built.changes)
            t4 = clock()
            phases["decode"] += t1 - t0
            phases["verify"] += t2 - t1
            phases["apply"] += t3 - t2
            phases["commit"] += t4 - t3
        blocks, store_bytes = store.head.height, store.size_bytes()
        store.close()

    seconds = sum(phases.values())
    return {
        "txs": txs,
        "accounts": accounts,
        "blocks": blocks,
        "block_size": block_size,
        "seconds": round(seconds, 3),
        "tx_per_s": round(txs / seconds),
        "verify_per_s": round(txs / phases["verify"]),
        "store_mb": round(store_bytes / 1e6, 2),
        "phase_seconds": {name: round(s, 3) for name, s in phases.items()},
        "phase_us_per_tx": {name: round(s / txs * 1e6, 2) for name, s in phases.items()},
    }


@dataclass(frozen=True)
class NetworkLoad:
    """What `depnet bench network` offers a network: its options, one field each."""

    duration: float  # seconds of load
    rate: int  # offered tx/s over all nodes; 0: each node's next batch as soon as it answers
    batch: int  # txs per POST
    accounts: int  # funded accounts that pay each other, spread over the banks
    banks: int
    seed: int  # seeds the payments


def run_network_bench(
    load: NetworkLoad, home: Path | None = None, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Start ``load.banks`` validators in ``home`` (default: a temporary folder, removed
    afterwards), load them for ``load.duration`` seconds, measure, stop them."""
    folder = nullcontext(home) if home else tempfile.TemporaryDirectory(prefix="depnet-bench-net-")
    with folder as path:
        return _run_network_bench(home or Path(path) / "net", load, progress)


def _run_network_bench(
    home: Path, load: NetworkLoad, progress: Callable[[str], None] | None
) -> dict[str, Any]:
    """Each account's transfers go to its own bank's node, in nonce order, one per account
    per batch. Latency runs from sending a tx's POST to the first poll of the first node's
    /head that shows the height holding it (polled every 20 ms)."""
    duration, rate, batch, banks, seed = load.duration, load.rate, load.batch, load.banks, load.seed
    say = progress or (lambda _msg: None)
    per_bank = max(1, load.accounts // banks)
    offered = rate if rate else 3_000  # sign enough for an unpaced run on this machine
    per_payer = int(offered * duration * 1.05 / (per_bank * banks)) + 1

    with LocalNet.create(home, funded_template(per_bank), banks=banks) as ln:
        payers = load_payers(ln.net)
        say(f"signing {per_payer * len(payers):,} transfers from {len(payers):,} accounts")
        signed = sign_transfers(ln.genesis.chain_id, payers, per_payer, seed=seed)
        queues: dict[str, list[list[bytes]]] = {bank: [] for bank in ln.banks}
        by_bank: dict[str, list[list[Any]]] = {bank: [] for bank in ln.banks}
        for payer, txs in zip(payers, signed, strict=True):
            by_bank[payer.wallet.bank].append(txs)
        for bank, lists in by_bank.items():  # round n holds every account's nonce n
            flat = [tx.raw for n in range(per_payer) for txs in lists for tx in txs[n : n + 1]]
            queues[bank] = [flat[i : i + batch] for i in range(0, len(flat), batch)]
        say(f"starting {banks} validators in {home}")
        ln.start_all()
        ln.wait_healthy(timeout=120)
        first = ln.banks[0]

        stop = threading.Event()
        sent_at: dict[bytes, float] = {}
        rejected: dict[str, int] = {}
        post_errors = [0]
        seen_at: dict[int, float] = {}  # height -> first time the monitor saw it
        rss_peak: dict[str, int] = dict.fromkeys(ln.banks, 0)
        lock = threading.Lock()
        interval = (batch * len(ln.banks) / rate) if rate else 0.0

        def submitter(bank: str) -> None:
            with NodeClient(ln.entries[bank], timeout=30) as client:
                # Nodes take turns, so the offered load is even rather than in bursts.
                start = time.monotonic() + interval * ln.banks.index(bank) / len(ln.banks)
                for k, raws in enumerate(queues[bank]):
                    if stop.is_set():
                        return
                    delay = start + k * interval - time.monotonic()
                    if delay > 0 and stop.wait(delay):
                        return
                    now = time.monotonic()
                    try:
                        results = client.submit(raws)["results"]
                    except DevnetError:
                        with lock:
                            post_errors[0] += 1
                        continue
                    with lock:
                        for raw, result in zip(raws, results, strict=True):
                            if result["accepted"]:
                                sent_at[sha256(raw).digest()] = now
                            else:
                                rejected[result["code"]] = rejected.get(result["code"], 0) + 1

        def monitor() -> None:
            last_rss = 0.0
            with NodeClient(ln.entries[first], timeout=30) as client:
                while not monitor_done.is_set():
                    try:
                        height = client.head()["height"]
                    except DevnetError:
                        height = 0
                    now = time.monotonic()
                    for h in range(max(seen_at, default=0) + 1, height + 1):
                        seen_at[h] = now
                    if now - last_rss > 1.0:
                        last_rss = now
                        for bank in ln.banks:
                            rss_peak[bank] = max(rss_peak[bank], ln.rss_kb(bank) or 0)
                    time.sleep(0.02)

        monitor_done = threading.Event()
        cpu_before = {b: cpu_seconds(ln.pid(b)) or 0.0 for b in ln.banks}
        height_before = ln.status(first)["height"]
        watcher = threading.Thread(target=monitor, daemon=True)
        watcher.start()
        threads = [threading.Thread(target=submitter, args=(b,), daemon=True) for b in ln.banks]
        say(f"load: {rate or 'unpaced'} tx/s offered for {duration:g} s in batches of {batch}")
        load_start = time.monotonic()
        for thread in threads:
            thread.start()
        stop.wait(duration)
        stop.set()
        for thread in threads:
            thread.join()
        load_end = time.monotonic()
        cpu_after = {b: cpu_seconds(ln.pid(b)) or 0.0 for b in ln.banks}
        rss_end = {b: ln.rss_kb(b) for b in ln.banks}
        with lock:
            accepted = dict(sent_at)

        say(f"draining: waiting for {len(accepted):,} accepted txs to commit")
        scan = ChainScan(ln, first)
        drain_deadline = time.monotonic() + 60

        def drained() -> bool:
            scan.update()
            statuses = [ln.try_get(b, "/status") or {} for b in ln.banks]
            return all(s.get("mempool_size", 1) == 0 for s in statuses)

        while not drained() and time.monotonic() < drain_deadline:
            time.sleep(0.25)
        drain_end = time.monotonic()
        monitor_done.set()
        watcher.join()
        scan.update()

        latencies = []
        in_window = 0
        for tx_hex, height in scan.tx_heights.items():
            tx_id = bytes.fromhex(tx_hex)
            at = seen_at.get(height)
            if at is None:
                continue
            if tx_id in accepted:
                latencies.append(at - accepted[tx_id])
            if load_start <= at <= load_end:
                in_window += 1
        committed_accepted = sum(1 for t in scan.tx_heights if bytes.fromhex(t) in accepted)
        load_seconds = load_end - load_start
        blocks = [h for h, at in seen_at.items() if load_start <= at <= load_end]
        statuses = {b: ln.status(b) for b in ln.banks}
        result = {
            "banks": len(ln.banks),
            "accounts": len(payers),
            "batch": batch,
            "offered_tx_per_s": rate or None,
            "load_seconds": round(load_seconds, 2),
            "submitted_accepted": len(accepted),
            "submitted_rejected": rejected,
            "post_errors": post_errors[0],
            "accepted_tx_per_s": round(len(accepted) / load_seconds, 1),
            "committed_tx_per_s": round(in_window / load_seconds, 1),
            "committed_in_load_window": in_window,
            "committed_of_accepted": committed_accepted,
            # accepted by a node but still not in a block when the drain wait gave up
            "uncommitted_after_drain": len(accepted) - committed_accepted,
            "drain_seconds": round(drain_end - load_end, 2),
            "latency_ms": {
                name: None if (v := _percentile(latencies, q)) is None else round(v * 1000, 1)
                for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
            }
            | {"mean": round(statistics.fmean(latencies) * 1000, 1) if latencies else None},
            "blocks_in_load_window": len(blocks),
            "block_rate_per_s": round(len(blocks) / load_seconds, 2),
            "txs_per_block": round(in_window / len(blocks), 1) if blocks else 0,
            "heights": {b: s["height"] for b, s in statuses.items()},
            "height_at_load_start": height_before,
            "head_hashes_agree": len(
                {ln.hash_at(b, min(s["height"] for s in statuses.values())) for b in ln.banks}
            )
            == 1,
            "rss_mb": {b: round((kb or 0) / 1024, 1) for b, kb in rss_end.items()},
            "rss_peak_mb": {b: round(kb / 1024, 1) for b, kb in rss_peak.items()},
            "cpu_cores_during_load": {
                b: round((cpu_after[b] - cpu_before[b]) / load_seconds, 2) for b in ln.banks
            },
            "machine": {"cpus": os.cpu_count(), "loadavg_1m": os.getloadavg()[0]},
        }
        say("stopping the validators")
    return result


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
