"""`depnet chain head | block H | tx ID | evidence`: read the committed chain from a live
node."""

from __future__ import annotations

import time
from pathlib import Path

import click

from cli.commands.common import (
    F,
    SafeGroup,
    echo_json,
    format_amount,
    home_option,
    json_option,
    node_option,
    open_network,
    print_table,
    short_hex,
)
from cli.devnet.client import NodeClient, connect


@click.group(cls=SafeGroup)
def chain() -> None:
    """Read blocks and transactions."""


def read_options(f: F) -> F:
    f = json_option(f)
    f = node_option(f)
    return home_option(f)


def _client(home: Path, node: str | None) -> tuple[NodeClient, dict[str, str], dict[str, int]]:
    """A live node, plus names for accounts and decimals of tokens to print with."""
    net = open_network(home)
    genesis = net.genesis()
    names = {w.account: w.name for w in net.wallets()}
    names.update({b.validator.hex(): b.name for b in genesis.banks})
    decimals = {symbol: t.decimals for symbol, t in genesis.tokens.items()}
    return connect(net, node, only=node is not None), names, decimals


@chain.command()
@read_options
def head(home: Path, node: str | None, as_json: bool) -> None:
    """The committed tip: height, block hash, state root."""
    client, _, _ = _client(home, node)
    with client:
        tip = client.head()
    if as_json:
        echo_json(tip)
        return
    click.echo(f"height     {tip['height']}  (from {client.bank})")
    click.echo(f"hash       {tip['hash']}")
    click.echo(f"state root {tip['state_root']}")
    click.echo(f"time       {_time(tip['time_ms'])}")


@chain.command()
@click.argument("height", type=click.IntRange(1))
@read_options
def block(height: int, home: Path, node: str | None, as_json: bool) -> None:
    """A committed block: header, certificate signers and transactions."""
    client, names, decimals = _client(home, node)
    with client:
        found = client.block(height)
    if as_json:
        echo_json(found)
        return
    header = found["header"]
    cert = found["cert"]
    click.echo(f"block {found['height']}  {found['hash']}")
    click.echo(
        f"  round {header['round']}, proposer {names.get(header['proposer'], '?')}, "
        f"time {_time(header['time_ms'])}"
    )
    click.echo(f"  prev {header['prev_hash']}")
    click.echo(f"  state root {header['state_root']}")
    if cert is not None:
        click.echo(f"  committed by {len(cert['signatures'])} precommits in round {cert['round']}")
    click.echo(f"  {len(found['txs'])} txs")
    if found["evidence"]:
        click.echo(f"  {len(found['evidence'])} evidence (depnet chain evidence --height {height})")
    if found["txs"]:
        print_table(
            ["tx", "kind", "from", "to", "amount", "memo"],
            [
                [
                    short_hex(tx["tx_id"]),
                    tx["kind"],
                    names.get(tx["sender"], short_hex(tx["sender"])),
                    names.get(tx["to"], short_hex(tx["to"])),
                    _amount(tx, decimals),
                    tx["memo"],
                ]
                for tx in found["txs"]
            ],
        )


@chain.command()
@click.argument("tx_id")
@read_options
def tx(tx_id: str, home: Path, node: str | None, as_json: bool) -> None:
    """Where a transaction stands: pending, committed at a height, or rejected (why)."""
    client, names, decimals = _client(home, node)
    with client:
        status = client.tx(tx_id)
        committed = status["status"] == "committed"
        body = client.block(status["height"])["txs"][status["position"]] if committed else None
    if as_json:
        echo_json({**status, "tx": body})
        return
    line = f"tx {status['tx_id']}: {status['status']}"
    if committed:
        line += f" at height {status['height']}"
    elif status["status"] == "rejected":
        line += f" ({status['code']}: {status['message']})"
    click.echo(line)
    if body is not None:
        click.echo(
            f"  {body['kind']} {_amount(body, decimals)} from "
            f"{names.get(body['sender'], body['sender'])} to {names.get(body['to'], body['to'])}"
            + (f", memo {body['memo']}" if body["memo"] else "")
        )


@chain.command()
@click.option("--height", type=click.IntRange(1), help="Only what the block at HEIGHT holds.")
@read_options
def evidence(height: int | None, home: Path, node: str | None, as_json: bool) -> None:
    """Equivocations committed on the chain: who signed twice, where, and which block
    committed the proof."""
    client, _, _ = _client(home, node)
    with client:
        found = client.evidence(height)
    if as_json:
        echo_json(found)
        return
    if not found:
        click.echo("no evidence committed" + (f" at height {height}" if height else ""))
        return
    print_table(
        ["bank", "validator", "height", "round", "kind", "committed at"],
        [
            [
                e["bank"],
                short_hex(e["validator"]),
                e["height"],
                e["round"],
                e["kind"],
                e["committed_at"],
            ]
            for e in found
        ],
    )


def _amount(tx: dict, decimals: dict[str, int]) -> str:
    if tx["token"] not in decimals:
        return ""
    return f"{format_amount(tx['amount'], decimals[tx['token']])} {tx['token']}"


def _time(time_ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time_ms / 1000)) + " UTC"
