"""`depnet demo` (what `make demo` runs): a cross-border B2B payment story on a live network.

The cast comes from the network's genesis, so the story plays on any template: the first
client account is the buyer, the others are its suppliers abroad, and the buyer pays in
its own bank's token, which suppliers at other banks can hold because every bank on the
network admits it. One supplier then redeems what it received with the issuing bank.
"""

from __future__ import annotations

from pathlib import Path

import click

from chain.tx import TxKind
from cli.commands.common import (
    CliError,
    SafeCommand,
    find_wallet,
    format_amount,
    holdings,
    home_option,
    parse_amount,
    print_table,
    resolve_party,
)
from cli.commands.network import UP_TIMEOUT, bring_up
from cli.commands.wallet import Payment, send
from cli.devnet.client import connect
from cli.devnet.start import init_network
from node.layout import DEFAULT_BASE_PORT, NetworkHome

DEPOSIT = "100000.00"
INVOICES = ["125000.00", "18400.00", "42750.50"]  # one per supplier, cycled
REDEEM_SHARE = 2  # the first supplier redeems half of what it was paid


@click.command(cls=SafeCommand)
@home_option
@click.option(
    "--base-port",
    type=int,
    default=DEFAULT_BASE_PORT,
    show_default=True,
    help="First port, if the demo has to create the network.",
)
def demo(home: Path, base_port: int) -> None:
    """Start the default 4-bank network and play a cross-border payment story on it."""
    net = NetworkHome(Path(home))
    if not net.exists():
        init_network(home, None, None, base_port, force=False)
        click.echo(f"initialised the default network at {net.path}")
    bring_up(net, UP_TIMEOUT, as_json=False)

    genesis = net.genesis()
    clients = [a for a in genesis.accounts if a.name]
    if len(clients) < 2:
        raise CliError("the demo needs a buyer and at least one supplier in genesis accounts")
    buyer = find_wallet(net, clients[0].name)
    suppliers = [resolve_party(net, a.name) for a in clients[1:]]
    bank = genesis.bank(buyer.bank)
    token = bank.tokens[0]
    countries = {b.name: b.country for b in genesis.banks}

    click.echo()
    click.echo(
        f"{buyer.name} banks with {bank.name} ({bank.country}) and pays suppliers abroad in "
        f"{token.symbol}, {bank.name}'s deposit token. Correspondent banking would take 48-72 h."
    )
    steps: list[tuple[str, Payment]] = [
        (
            f"{bank.name} takes a deposit from {buyer.name} and mints it as {token.symbol}",
            Payment(
                TxKind.MINT,
                find_wallet(net, bank.name),
                resolve_party(net, buyer.name),
                token,
                parse_amount(DEPOSIT, token),
                "DEPOSIT-0001",
            ),
        )
    ]
    for i, supplier in enumerate(suppliers):
        invoice = f"INV-2025-{1001 + i}"
        steps.append(
            (
                f"{buyer.name} pays invoice {invoice} of {supplier.label} "
                f"({supplier.bank}, {countries.get(supplier.bank or '', '')})",
                Payment(
                    TxKind.TRANSFER,
                    buyer,
                    supplier,
                    token,
                    parse_amount(INVOICES[i % len(INVOICES)], token),
                    invoice,
                ),
            )
        )
    first = suppliers[0]
    redeemed = parse_amount(INVOICES[0], token) // REDEEM_SHARE
    steps.append(
        (
            f"{first.label} redeems part of its {token.symbol} with {bank.name} "
            "for an ordinary deposit",
            Payment(
                TxKind.BURN,
                find_wallet(net, first.label),
                None,
                token,
                redeemed,
                "REDEEM-0001",
            ),
        )
    )
    settle_times = []
    for number, (title, payment) in enumerate(steps, 1):
        click.echo()
        click.echo(f"{number}. {title}")
        settled = send(net, payment, node=None, wait=True, as_json=False)
        if settled is not None:
            settle_times.append(settled.seconds)

    click.echo()
    click.echo(
        f"{len(settle_times)} settlements, each final in at most {max(settle_times):.2f} s "
        "(a committed block is never reverted)"
    )
    _print_balances(net, [c.name for c in clients])
    click.echo()
    click.echo("The network keeps running. Try:")
    click.echo(f"  depnet wallet balance {buyer.name}")
    click.echo(f"  depnet wallet history {first.label}")
    click.echo("  depnet status")
    click.echo("Stop it with `depnet down`.")


def _print_balances(net: NetworkHome, names: list[str]) -> None:
    """Final balances, formatted as `depnet wallet balance` prints them."""
    tokens = net.genesis().tokens
    rows = []
    with connect(net) as client:
        for name in names:
            info = client.account(resolve_party(net, name).account)
            for symbol, units in holdings(info).items():
                rows.append(
                    [name, info["bank"], f"{format_amount(units, tokens[symbol].decimals)}", symbol]
                )
    click.echo()
    click.echo("Final balances:")
    print_table(["wallet", "bank", "amount", "token"], rows)
