"""The benchmarks `depnet bench` runs: the ledger path in one process, and a whole network.

`run_network_bench` starts a local network (one validator process per bank, on free
127.0.0.1 ports in a temporary home), offers it pre-signed transfers in batches through
every node's HTTP API for a while, and reports committed tx/s, submit-to-commit latency,
each node's memory and CPU, and the heights reached; then stops every process.

`run_ledger_bench` times what every validator does with each transaction of a block:
decode the wire bytes, verify the Ed25519 signature, apply the ledger rules, and commit
the block through the real LevelDB store (one synced batch per block). Keys, genesis and
signatures are prepared before the clock starts, since a node receives txs already signed.
Each tx is decoded once and verified once, and the block is built on the verified ids,
as in a node. The reference is the raw verify rate (PyNaCl's C call alone, one core)
measured in the same run on the same txs, block by block alongside the path. One core
does the phases in turn: a second thread verifying alongside does not pay, because each
verification hands the GIL back and waits up to the 5 ms switch interval to retake it
while the other thread runs Python.
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
from dataclasses import dataclass, field, replace
from hashlib import sha256
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.devnet.client import NodeClient
from cli.devnet.errors import DevnetError
from cli.devnet.health import cpu_seconds
from cli.devnet.load import funded_template, load_payers, sign_transfers
from cli.devnet.localnet import LocalNet

if TYPE_CHECKING:
    from nacl.signing import SigningKey

    from chain.genesis import Genesis


def run_ledger_bench(txs: int, *, accounts: int, block_size: int, seed: int) -> dict[str, Any]:
    """Run the ledger benchmark and return its figures (see module docstring)."""
    from nacl.bindings import crypto_sign_open

    from chain.codec import SIGNATURE_SIZE
    from chain.state import build_block
    from chain.store import Store
    from chain.tx import decode_tx, verify_signature
    from consensus.validators import certify

    genesis, signers, wire = _ledger_inputs(txs, accounts, seed)

    # The reference: each block's signatures checked by PyNaCl's C call alone, on messages
    # prepared beforehand, right before the block goes through the path, so that the
    # machine's load drifts alike for both (this machine is shared).
    signed = [
        (raw[-SIGNATURE_SIZE:] + raw[:-SIGNATURE_SIZE], decode_tx(raw).sender) for raw in wire
    ]
    raw_seconds = 0.0
    phases = {"decode": 0.0, "verify": 0.0, "apply": 0.0, "commit": 0.0}  # seconds, summed
    clock = time.perf_counter
    with tempfile.TemporaryDirectory(prefix="depnet-bench-") as tmp:
        store = Store.open(Path(tmp) / "db", genesis)
        last_cert = None
        for start in range(0, txs, block_size):
            r0 = clock()
            for message, sender in signed[start : start + block_size]:
                crypto_sign_open(message, sender)
            raw_seconds += clock() - r0
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
        # The state entries the blocks changed, written once each (the store writes them
        # every CHECKPOINT_BLOCKS blocks): their cost is the commit's too.
        t0 = clock()
        store.checkpoint()
        phases["commit"] += clock() - t0
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
        "raw_verify_per_s": round(txs / raw_seconds),
        "ratio_to_raw_verify": round(raw_seconds / seconds, 3),
        "store_mb": round(store_bytes / 1e6, 2),
        "phase_seconds": {name: round(s, 3) for name, s in phases.items()},
        "phase_us_per_tx": {name: round(s / txs * 1e6, 2) for name, s in phases.items()},
    }


def _ledger_inputs(
    txs: int, accounts: int, seed: int
) -> tuple[Genesis, list[SigningKey], list[bytes]]:
    """The ledger benchmark's genesis, a quorum of validator keys, and its signed transfers.

    The accounts' keys and the template die with this call, before the clock starts:
    left alive, they were tens of thousands of objects that the garbage collector walked
    during the timed blocks, a cost no node pays.
    """
    from nacl.signing import SigningKey

    from chain.genesis import genesis_from_template
    from chain.tx import TxKind, sign_tx
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
    return genesis, signers, wire


@dataclass(frozen=True)
class NetworkLoad:
    """What `depnet bench network` offers a network: its options, one field each."""

    duration: float  # seconds of load
    rate: int  # offered tx/s over all nodes; 0: a closed loop of ``in_flight`` txs per node
    batch: int  # txs per POST, at most
    accounts: int  # funded accounts that pay each other, spread over the banks
    banks: int
    seed: int  # seeds the payments
    in_flight: int = 1_000  # closed loop: txs accepted by a node and not yet committed
    warmup: float = 5.0  # seconds of load left out of the rate and latency figures
    idle: bool = False  # offer nothing: how many blocks and how much CPU an idle network uses


CLOSED_LOOP_SIGN_RATE = 12_000  # tx/s a closed loop is given pre-signed txs for
RETRY_AFTER_DEFAULT = 1.0  # a refusal for room that named no wait (HTTP's default unit)


def run_network_bench(
    load: NetworkLoad, home: Path | None = None, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Start ``load.banks`` validators in ``home`` (default: a temporary folder, removed
    afterwards), load them for ``load.duration`` seconds, measure, stop them."""
    folder = nullcontext(home) if home else tempfile.TemporaryDirectory(prefix="depnet-bench-net-")
    with folder as path:
        return _run_network_bench(home or Path(path) / "net", load, progress)


def run_sweep(
    load: NetworkLoad,
    rates: list[int],
    home: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """One network run per offered rate (0: the closed loop), each on a fresh network:
    offered vs committed tx/s and latency, the throughput-latency curve."""
    runs = []
    for rate in rates:
        if progress:
            progress(f"--- sweep point: {rate or 'closed loop'} tx/s offered")
        where = home / f"rate-{rate}" if home else None
        runs.append(run_network_bench(replace(load, rate=rate), where, progress))
    points = [
        {
            "offered_tx_per_s": run["offered_tx_per_s"],
            "committed_tx_per_s": run["committed_tx_per_s"],
            "p50_ms": run["latency_ms"]["p50"],
            "p99_ms": run["latency_ms"]["p99"],
            "lost_txs": run["lost_txs"],
            "refused_429": run["refused_429"],
        }
        for run in runs
    ]
    return {"points": points, "runs": runs}


def plot_sweep(sweep: dict[str, Any], path: Path) -> None:
    """The sweep as a picture: offered vs committed tx/s, and latency vs committed tx/s
    (paced points joined in order of offered load; the closed loop, if any, a star)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paced = sorted(
        (p for p in sweep["points"] if p["offered_tx_per_s"]), key=lambda p: p["offered_tx_per_s"]
    )
    closed = [p for p in sweep["points"] if not p["offered_tx_per_s"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    offered = [p["offered_tx_per_s"] for p in paced]
    committed = [p["committed_tx_per_s"] for p in paced]
    top = max(offered + committed + [p["committed_tx_per_s"] for p in closed]) * 1.1
    left.plot([0, top], [0, top], color="0.8", linestyle="--", label="committed = offered")
    left.plot(offered, committed, marker="o", label="paced load")
    for p in closed:
        left.axhline(p["committed_tx_per_s"], color="C3", linestyle=":", label="closed loop")
    left.set(xlabel="offered tx/s", ylabel="committed tx/s", title="throughput")
    left.legend()
    for key, name, color in (("p50_ms", "p50", "C0"), ("p99_ms", "p99", "C1")):
        right.plot(committed, [p[key] or 0 for p in paced], marker="o", color=color, label=name)
        for p in closed:
            right.plot(p["committed_tx_per_s"], p[key] or 0, marker="*", markersize=12,
                       color=color, linestyle="none")  # fmt: skip
    right.set(xlabel="committed tx/s", ylabel="submit to commit, ms", title="latency")
    right.legend(title="(star: closed loop)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def bench_template(banks: int, accounts_per_bank: int) -> dict:
    """The default template, grown to ``banks`` banks if it has fewer (extra banks are
    named B5, B6, ... with a token each), with funded load accounts at every bank."""
    from node.config import load_template

    base = load_template()
    for n in range(len(base["banks"]) + 1, banks + 1):
        base["banks"].append(
            {"name": f"B{n}", "country": "US", "tokens": [{"symbol": f"USD.B{n}", "decimals": 2}]}
        )
    return funded_template(accounts_per_bank, base=base)


@dataclass
class _Account:
    """One payer's pre-signed txs in nonce order and how far the client got."""

    raws: list[bytes]
    ids: list[bytes]
    sent: int = 0  # txs accepted (or known) so far; the next to send is raws[sent]
    dead: bool = False  # a tx was refused for good: its later nonces are held back


@dataclass
class _Shared:
    """What the submitters and the monitor share, under ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    sent_at: dict[bytes, float] = field(default_factory=dict)  # accepted tx -> time
    owner: dict[bytes, str] = field(default_factory=dict)  # accepted tx -> bank
    committed_at: dict[bytes, float] = field(default_factory=dict)
    in_flight: dict[str, int] = field(default_factory=dict)  # accepted, not committed
    rejected: dict[str, int] = field(default_factory=dict)  # code -> txs
    refused_429: int = 0  # POSTs answered 429
    retried: int = 0  # txs sent again after mempool_full
    post_errors: int = 0
    exhausted: bool = False  # a submitter ran out of pre-signed txs


def _run_network_bench(
    home: Path, load: NetworkLoad, progress: Callable[[str], None] | None
) -> dict[str, Any]:
    """Each account's transfers go to its own bank's node, in nonce order, at most one per
    account per batch, as a real client would send them: a tx refused with mempool_full
    (or a batch answered 429) is sent again after Retry-After, and an account whose tx is
    refused for good sends nothing more (its later nonces could never commit). Paced
    (``rate`` > 0): every node gets a batch on a fixed schedule. Closed loop (rate 0): each
    node gets a new batch whenever fewer than ``in_flight`` of its txs are uncommitted.
    Latency runs from sending a tx's POST to the first poll of the first node's /head that
    shows the height holding it (polled every 20 ms)."""
    duration, rate, batch, banks = load.duration, load.rate, load.batch, load.banks
    say = progress or (lambda _msg: None)
    per_bank = max(1, load.accounts // banks)
    # A POST holds at most one tx per account, so a bank with fewer accounts than the batch
    # sends smaller POSTs; the pacing below counts what a POST really holds, or a paced run
    # would offer less than its rate (7 banks of 142 accounts offered 57 % of it).
    batch = min(batch, per_bank)
    offered = rate or CLOSED_LOOP_SIGN_RATE
    total = offered * duration * 1.1 + (0 if rate else load.in_flight * banks)
    per_payer = int(total / (per_bank * banks)) + 1

    with LocalNet.create(home, bench_template(banks, per_bank), banks=banks) as ln:
        payers = load_payers(ln.net)
        say(f"signing {per_payer * len(payers):,} transfers from {len(payers):,} accounts")
        signed = sign_transfers(ln.genesis.chain_id, payers, per_payer, seed=load.seed)
        accounts: dict[str, list[_Account]] = {bank: [] for bank in ln.banks}
        for payer, txs in zip(payers, signed, strict=True):
            raws = [tx.raw for tx in txs]
            accounts[payer.wallet.bank].append(_Account(raws, [tx.tx_id for tx in txs]))
        say(f"starting {banks} validators in {home}")
        ln.start_all()
        ln.wait_healthy(timeout=120)
        first = ln.banks[0]

        shared = _Shared(in_flight=dict.fromkeys(ln.banks, 0))
        stop = threading.Event()
        monitor_done = threading.Event()
        seen_at: dict[int, float] = {}  # height -> first time the monitor saw it
        rss_peak: dict[str, int] = dict.fromkeys(ln.banks, 0)
        mempool_peak: dict[str, int] = dict.fromkeys(ln.banks, 0)
        interval = (batch * len(ln.banks) / rate) if rate else 0.0

        def submitter(bank: str) -> None:
            mine = accounts[bank]
            with NodeClient(ln.entries[bank], timeout=30) as client:
                # Nodes take turns, so the offered load is even rather than in bursts.
                next_at = time.monotonic() + interval * ln.banks.index(bank) / len(ln.banks)
                turn = 0
                while not stop.is_set():
                    room = batch
                    if rate:
                        delay = next_at - time.monotonic()
                        if delay > 0 and stop.wait(delay):
                            return
                        next_at += interval
                    else:
                        room = min(batch, load.in_flight - shared.in_flight[bank])
                        if room < min(batch, load.in_flight) // 4:
                            stop.wait(0.005)
                            continue
                    picked = _pick(mine, room, turn)
                    turn += 1
                    if not picked:
                        shared.exhausted = shared.exhausted or all(
                            a.dead or a.sent == len(a.raws) for a in mine
                        )
                        stop.wait(0.05)
                        continue
                    pause = _submit_batch(client, bank, picked, shared)
                    if pause:
                        stop.wait(pause)

        def monitor() -> None:
            from chain.block import Block

            last_poll = 0.0
            scanned = height_before
            # Clients of its own: one NodeClient is one connection, for one thread.
            pollers = {bank: NodeClient(ln.entries[bank], timeout=5) for bank in ln.banks}
            with NodeClient(ln.entries[first], timeout=30) as client:
                while not monitor_done.is_set():
                    try:
                        # A long poll: the node answers when a block commits (a poll every
                        # 20 ms cost the node ~6 % of its CPU at saturation).
                        height = client.head(after=scanned)["height"]
                        now = time.monotonic()
                        for h in range(scanned + 1, height + 1):
                            seen_at[h] = now
                            # The stored bytes: the JSON of a block of a thousand txs cost
                            # the node serving it a tenth of its CPU.
                            block = Block.decode(client.block_bytes(h))
                            ids = [tx.tx_id for tx in block.txs]
                            _on_committed(ids, now, shared)
                            scanned = h
                    except DevnetError:
                        now = time.monotonic()
                        monitor_done.wait(0.05)  # the node is not answering: do not spin
                    if now - last_poll > 1.0:
                        last_poll = now
                        for bank, poller in pollers.items():
                            rss_peak[bank] = max(rss_peak[bank], ln.rss_kb(bank) or 0)
                            try:
                                size = poller.status()["mempool_size"]
                            except DevnetError:
                                size = 0
                            mempool_peak[bank] = max(mempool_peak[bank], size)
            for poller in pollers.values():
                poller.close()

        stages_before = {b: _stage_totals(ln.client(b)) for b in ln.banks}
        cpu_before = {b: cpu_seconds(ln.pid(b)) or 0.0 for b in ln.banks}
        client_cpu_before = _own_cpu_seconds()
        height_before = ln.status(first)["height"]
        watcher = threading.Thread(target=monitor, daemon=True)
        watcher.start()
        senders = [] if load.idle else ln.banks
        threads = [threading.Thread(target=submitter, args=(b,), daemon=True) for b in senders]
        mode = f"{rate} tx/s offered" if rate else f"closed loop, {load.in_flight} in flight/node"
        mode = "nothing offered (idle)" if load.idle else mode
        say(f"load: {mode} for {duration:g} s in batches of up to {batch}")
        load_start = time.monotonic()
        for thread in threads:
            thread.start()
        stop.wait(duration)
        stop.set()
        for thread in threads:
            thread.join()
        load_end = time.monotonic()
        cpu_after = {b: cpu_seconds(ln.pid(b)) or 0.0 for b in ln.banks}
        client_cpu = _own_cpu_seconds() - client_cpu_before
        stages_after = {b: _stage_totals(ln.client(b)) for b in ln.banks}
        rss_end = {b: ln.rss_kb(b) for b in ln.banks}

        with shared.lock:
            accepted = len(shared.sent_at)
        say(f"draining: waiting for {accepted:,} accepted txs to commit")
        drain_deadline = time.monotonic() + 60

        def drained() -> bool:
            statuses = [ln.try_get(b, "/status") or {} for b in ln.banks]
            with shared.lock:
                caught_up = len(shared.committed_at) >= len(shared.sent_at)
            return caught_up or all(s.get("mempool_size", 1) == 0 for s in statuses)

        while not drained() and time.monotonic() < drain_deadline:
            time.sleep(0.25)
        time.sleep(0.2)  # the monitor's last poll
        drain_end = time.monotonic()
        monitor_done.set()
        watcher.join()

        with shared.lock:
            sent_at, committed_at = dict(shared.sent_at), dict(shared.committed_at)
        uncommitted = [t for t in sent_at if t not in committed_at]
        say(f"asking the nodes about {len(uncommitted):,} accepted, uncommitted txs")
        fates = _fates(ln, uncommitted, shared.owner)
        window_start = load_start + min(load.warmup, duration / 2)
        window = load_end - window_start
        in_window = sum(1 for at in committed_at.values() if window_start <= at <= load_end)
        latencies = [
            committed_at[t] - sent for t, sent in sent_at.items()
            if t in committed_at and sent >= window_start
        ]  # fmt: skip
        load_seconds = load_end - load_start
        blocks = [h for h, at in seen_at.items() if window_start <= at <= load_end]
        statuses = {b: ln.status(b) for b in ln.banks}
        committed_accepted = len(sent_at) - len(uncommitted)
        result = {
            "banks": len(ln.banks),
            "accounts": len(payers),
            "batch": batch,
            "mode": "idle" if load.idle else "paced" if rate else "closed_loop",
            "offered_tx_per_s": rate or None,
            "in_flight_per_node": None if rate else load.in_flight,
            "load_seconds": round(load_seconds, 2),
            "warmup_seconds": round(window_start - load_start, 2),
            "submitted_accepted": len(sent_at),
            "submitted_rejected": shared.rejected,
            "refused_429": shared.refused_429,
            "retried_txs": shared.retried,
            "post_errors": shared.post_errors,
            "signed_txs_ran_out": shared.exhausted,
            "accepted_tx_per_s": round(len(sent_at) / load_seconds, 1),
            "committed_tx_per_s": round(in_window / window, 1),
            "committed_in_load_window": in_window,
            "committed_of_accepted": committed_accepted,
            # accepted by a node but still not in a block when the drain wait gave up
            "uncommitted_after_drain": len(uncommitted),
            "rejected_after_accept": fates["rejected"],
            # accepted, then neither committed nor rejected where the node tells the client
            "lost_txs": sum(n for f, n in fates.items() if f not in ("rejected", "committed")),
            "drain_seconds": round(drain_end - load_end, 2),
            "latency_ms": {
                name: None if (v := _percentile(latencies, q)) is None else round(v * 1000, 1)
                for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
            }
            | {"mean": round(statistics.fmean(latencies) * 1000, 1) if latencies else None},
            "blocks_in_load_window": len(blocks),
            "block_rate_per_s": round(len(blocks) / window, 2),
            "txs_per_block": round(in_window / len(blocks), 1) if blocks else 0,
            "heights": {b: s["height"] for b, s in statuses.items()},
            "height_at_load_start": height_before,
            "head_hashes_agree": len(
                {ln.hash_at(b, min(s["height"] for s in statuses.values())) for b in ln.banks}
            )
            == 1,
            # mean ms per height from one stage to the next, over the load, per node
            "height_stage_ms": {
                b: _stage_means(stages_before[b], stages_after[b]) for b in ln.banks
            },
            "mempool_peak": mempool_peak,
            "rss_mb": {b: round((kb or 0) / 1024, 1) for b, kb in rss_end.items()},
            "rss_peak_mb": {b: round(kb / 1024, 1) for b, kb in rss_peak.items()},
            "cpu_cores_during_load": {
                b: round((cpu_after[b] - cpu_before[b]) / load_seconds, 3) for b in ln.banks
            },
            "cpu_cores_client": round(client_cpu / load_seconds, 2),
            "machine": {"cpus": os.cpu_count(), "loadavg_1m": os.getloadavg()[0]},
        }
        say("stopping the validators")
    return result


def _pick(accounts: list[_Account], room: int, turn: int) -> list[tuple[_Account, int]]:
    """Up to ``room`` (account, index) pairs: each live account's next tx, at most one per
    account, starting at a rotating account so that every account gets its turn."""
    picked: list[tuple[_Account, int]] = []
    count = len(accounts)
    for k in range(count):
        if len(picked) >= room:
            break
        account = accounts[(turn * room + k) % count]
        if not account.dead and account.sent < len(account.raws):
            picked.append((account, account.sent))
    return picked


def _submit_batch(
    client: NodeClient, bank: str, picked: list[tuple[_Account, int]], shared: _Shared
) -> float:
    """POST one batch and account for each answer; returns how long to wait before the next
    POST (the wait the node asked for when it refused txs for room, else 0)."""
    raws = [account.raws[index] for account, index in picked]
    now = time.monotonic()
    try:
        results = client.submit(raws)["results"]
    except DevnetError as exc:
        with shared.lock:
            if getattr(exc, "status", None) == 429:
                shared.refused_429 += 1
                shared.retried += len(raws)
                return client.retry_after or RETRY_AFTER_DEFAULT
            shared.post_errors += 1
        return 0.1
    pause = 0.0
    with shared.lock:
        for (account, index), result in zip(picked, results, strict=True):
            tx_id = account.ids[index]
            code = result["code"]
            if result["accepted"] or code == "duplicate":  # duplicate: accepted before
                account.sent = index + 1
                if tx_id not in shared.sent_at:
                    shared.sent_at[tx_id] = now
                    shared.owner[tx_id] = bank
                    shared.in_flight[bank] += 1
                continue
            shared.rejected[code] = shared.rejected.get(code, 0) + 1
            if code == "mempool_full":
                shared.retried += 1  # account.sent stays: this tx is the next one again
                pause = client.retry_after or RETRY_AFTER_DEFAULT
            else:
                account.dead = True
    return pause


def _on_committed(ids: list[bytes], now: float, shared: _Shared) -> None:
    with shared.lock:
        for tx_id in ids:
            if tx_id in shared.committed_at:
                continue
            shared.committed_at[tx_id] = now
            bank = shared.owner.get(tx_id)
            if bank is not None:
                shared.in_flight[bank] -= 1


def _fates(ln: LocalNet, tx_ids: list[bytes], owner: dict[bytes, str]) -> dict[str, int]:
    """What each node that accepted these txs says of them now: rejected (a reason the
    client can read), pending, queued, committed (after the scan ended) or unknown."""
    fates: dict[str, int] = {}
    for tx_id in tx_ids:
        try:
            answer = ln.tx(owner[tx_id], tx_id)
        except DevnetError:
            answer = None
        fate = "unknown" if answer is None else answer["status"]
        fates[fate] = fates.get(fate, 0) + 1
    return {"rejected": fates.pop("rejected", 0), **fates}


def _stage_totals(client: NodeClient) -> dict[str, tuple[float, float]]:
    """stage -> (heights, seconds) of the node's depnet_height_stage_seconds so far."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = client.metrics()
    except OSError:
        return {}
    totals: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "depnet_height_stage_seconds":
            continue
        for sample in family.samples:
            slot = {"_count": 0, "_sum": 1}.get(sample.name.removeprefix(family.name))
            if slot is not None:
                totals.setdefault(sample.labels["stage"], [0.0, 0.0])[slot] = sample.value
    return {stage: (count, total) for stage, (count, total) in totals.items()}


def _stage_means(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
) -> dict[str, float | None]:
    means: dict[str, float | None] = {}
    for stage, (count, total) in after.items():
        count0, total0 = before.get(stage, (0.0, 0.0))
        heights = count - count0
        means[stage] = round((total - total0) / heights * 1000, 1) if heights else None
    return means


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
