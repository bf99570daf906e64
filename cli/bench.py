"""`depnet bench`: measure how fast one node's ledger path runs on this machine.

`depnet bench ledger` times what every validator does with each transaction of a block:
decode the wire bytes, verify the Ed25519 signature, apply the ledger rules, and commit
the block through the real LevelDB store (one synced batch per block). Keys, genesis and
signatures are prepared before the clock starts, since a node receives txs already signed.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from hashlib import sha256
from pathlib import Path
from typing import Any

import click


@click.group()
def bench() -> None:
    """Measure throughput on this machine."""


@bench.command("ledger")
@click.option("--txs", type=click.IntRange(min=1), default=50_000, show_default=True)
@click.option(
    "--accounts",
    type=click.IntRange(min=2),
    default=10_000,
    show_default=True,
    help="Registered accounts that send and receive the transfers.",
)
@click.option("--block-size", type=click.IntRange(1, 10_000), default=1_000, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True, help="Seeds keys and payments.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def ledger(txs: int, accounts: int, block_size: int, seed: int, as_json: bool) -> None:
    """Decode, verify, apply and commit TXS transfers in blocks through a temporary store."""
    result = run_ledger_bench(txs, accounts=accounts, block_size=block_size, seed=seed)
    if as_json:
        click.echo(json.dumps(result))
    else:
        _print_table(result)


def run_ledger_bench(txs: int, *, accounts: int, block_size: int, seed: int) -> dict[str, Any]:
    """Run the ledger benchmark and return its figures (see module docstring)."""
    from nacl.signing import SigningKey

    from chain.block import CommitCertificate
    from chain.genesis import genesis_from_template, load_template
    from chain.state import build_block
    from chain.store import Store
    from chain.tx import TxKind, decode_tx, sign_tx, verify_signature

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
    validators = [role_keys[("validator", b)] for b in banks]

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
                proposer=bytes(validators[0].verify_key),
                time_ms=genesis.genesis_time_ms + store.state.height + 1,
                last_cert=last_cert,
                max_txs=block_size,
                verified=verified,
            )
            if built.rejected:
                raise click.ClickException(f"bench tx rejected: {built.rejected[0][1]}")
            t3 = clock()
            # Stand-in for consensus: 3 of the 4 validators sign the block hash.
            block = built.block
            signatures = tuple((i, v.sign(block.hash).signature) for i, v in enumerate(validators))
            last_cert = CommitCertificate(block.height, 0, block.hash, signatures[:3])
            store.commit_block(block, last_cert, built.changes)
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


def _print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ledger: {result['txs']:,} transfers in {result['blocks']:,} blocks")
    table.add_column("phase")
    table.add_column("seconds", justify="right")
    table.add_column("µs per tx", justify="right")
    for name, seconds in result["phase_seconds"].items():
        table.add_row(name, f"{seconds:.3f}", f"{result['phase_us_per_tx'][name]:.1f}")
    table.add_row("total", f"{result['seconds']:.3f}", f"{1e6 / result['tx_per_s']:.1f}")
    console = Console()
    console.print(table)
    console.print(
        f"[bold]{result['tx_per_s']:,} tx/s[/bold] end to end on one core; "
        f"signature checks alone {result['verify_per_s']:,}/s; "
        f"store {result['store_mb']} MB for {result['accounts']:,} accounts"
    )
