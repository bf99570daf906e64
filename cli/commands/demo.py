"""`depnet demo` (what `make demo` runs): programmable B2B payments on a live network.

acme-buyer (a US company banking with JPM) orders electronics from pearl-river-electronics
(Hong Kong, HSBC) through a trade platform. The order is a contract in escrow, paid 30 %
on shipment and 70 % on delivery as the platform's account approves; pearl-river swaps
the dollars it received into Hong Kong dollars with HSBC's treasury, payment versus
payment; a second order to another supplier expires unreleased and goes back to the
buyer; JPM holds an account for AML review and a payment to it is refused. Every step is
a tx signed here and settled on the chain; each prints how long settlement took.

The cast are wallets of the default template (configs/network.json). Contract terms are
written as TOML files into the network home, the same files `depnet contract open
--terms` reads.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from chain.tx import TxKind
from cli.commands.common import (
    CliError,
    SafeCommand,
    find_token,
    find_wallet,
    holdings,
    home_option,
    money_text,
    parse_amount,
    print_table,
    resolve_party,
)
from cli.commands.contract import opening, refunding, releasing
from cli.commands.network import UP_TIMEOUT, bring_up
from cli.commands.swap import accepting, offering
from cli.commands.wallet import Payment, holding, send
from cli.devnet.client import connect
from cli.devnet.errors import ApiError
from cli.devnet.start import init_network
from node.layout import DEFAULT_BASE_PORT, NetworkHome

BUYER, SUPPLIER, PLATFORM = "acme-buyer", "pearl-river-electronics", "tradeflow-platform"
TREASURY, OTHER_SUPPLIER, HELD = "hsbc-treasury", "lion-city-logistics", "orient-sourcing"
CAST = (BUYER, SUPPLIER, PLATFORM, TREASURY, OTHER_SUPPLIER, HELD)
SHORT_EXPIRY_S = 6  # the second order's expiry, in seconds of block time
EXPIRY_WAIT_S = 60.0

ORDER = """\
# Purchase order PO-2025-0042: 5,000 controller boards, FOB Shenzhen.
buyer = "acme-buyer"
supplier = "pearl-river-electronics"
approver = "tradeflow-platform"   # the platform confirms shipment and delivery
token = "USD.JPM"
expires = "30d"
invoices = ["INV-PR-7781"]
memo = "PO-2025-0042"

[[milestones]]
name = "shipment"   # 30 % when the goods ship
amount = "37500.00"

[[milestones]]
name = "delivery"   # 70 % on delivery
amount = "87500.00"
"""

SECOND_ORDER = f"""\
# Purchase order PO-2025-0043: warehousing in Singapore, paid on delivery.
buyer = "acme-buyer"
supplier = "lion-city-logistics"
approver = "tradeflow-platform"
token = "USD.JPM"
expires = "{SHORT_EXPIRY_S}s"
memo = "PO-2025-0043"

[[milestones]]
name = "delivery"
amount = "18400.00"
"""


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
    """Start the default 4-bank network and play a programmable-payments story on it."""
    net = NetworkHome(Path(home))
    if not net.exists():
        init_network(home, None, None, base_port, force=False)
        click.echo(f"initialised the default network at {net.path}")
    bring_up(net, UP_TIMEOUT, as_json=False)
    missing = [name for name in CAST if name not in {w.name for w in net.wallets()}]
    if missing:
        raise CliError(
            f"the demo needs the wallets {', '.join(missing)} (the default template has them)"
        )
    story = Story(net)
    click.echo()
    click.echo(
        f"{BUYER} (US, JPM) orders from {SUPPLIER} (Hong Kong, HSBC) through a trade "
        f"platform. Correspondent banking would take 48-72 h per payment; here each one "
        "settles in seconds, on the contract's terms."
    )

    order = story.step(
        f"{BUYER} opens contract PO-2025-0042 with {SUPPLIER}: 30 % on shipment, 70 % on "
        f"delivery, released by {PLATFORM}",
        opening(net, story.terms_file("po-2025-0042.toml", ORDER)),
    )
    story.step(
        f"the goods ship: {PLATFORM} releases the first milestone",
        releasing(net, order, story.contract(order), "shipment"),
    )
    quote = story.step(
        f"HSBC's treasury quotes {SUPPLIER} Hong Kong dollars for its US dollars",
        offering(
            net, TREASURY, ("291750.00", "HKD.HSBC"), ("37500.00", "USD.JPM"), SUPPLIER, "10m",
            "FX-Q-0917",
        ),
    )  # fmt: skip
    story.step(
        f"{SUPPLIER} accepts: USD.JPM to HSBC's treasury, HKD.HSBC back, both legs or neither",
        accepting(net, quote, story.offer(quote), None),
    )
    story.step(
        f"the goods arrive: {PLATFORM} releases the second milestone",
        releasing(net, order, story.contract(order), "delivery"),
    )
    second = story.step(
        f"{BUYER} opens PO-2025-0043 with {OTHER_SUPPLIER}, expiring in "
        f"{SHORT_EXPIRY_S} s of block time",
        opening(net, story.terms_file("po-2025-0043.toml", SECOND_ORDER)),
    )
    waited = story.wait_past(story.contract(second)["expiry_ms"])
    story.step(
        f"nothing was delivered; {waited:.1f} s later the contract has expired and "
        f"{BUYER} takes its money back",
        refunding(net, second, story.contract(second)),
    )
    story.step(
        f"JPM puts {HELD} under an AML hold",
        holding(net, TxKind.FREEZE, HELD, "JPM"),
    )
    usd = find_token(net.genesis(), "USD.JPM")
    story.refused(
        f"{BUYER} tries to pay {HELD}",
        Payment(
            TxKind.TRANSFER, find_wallet(net, BUYER), resolve_party(net, HELD), usd,
            parse_amount("9800.00", usd), "INV-OS-0113",
        ),
    )  # fmt: skip
    story.step(
        "HSBC's treasury leaves a standing quote open to any client",
        offering(
            net, TREASURY, ("778000.00", "HKD.HSBC"), ("100000.00", "USD.JPM"), None, "1h",
            "FX-Q-0918",
        ),
    )  # fmt: skip

    click.echo()
    click.echo(
        f"{len(story.times)} settlements, each final in at most {max(story.times):.2f} s "
        "(a committed block is never reverted)"
    )
    _print_balances(net)
    click.echo()
    click.echo("The network keeps running. Try:")
    click.echo(f"  depnet contract list --party {BUYER}")
    click.echo(f"  depnet contract show {order.hex()}")
    click.echo("  depnet swap list")
    click.echo(f"  depnet wallet history {SUPPLIER}")
    click.echo("Stop it with `depnet down`.")


class Story:
    """The demo's steps, numbered, each sent and waited for; their settlement times."""

    def __init__(self, net: NetworkHome) -> None:
        self.net = net
        self.number = 0
        self.times: list[float] = []
        self.notes: list[str] = []  # printed under the next step's title

    def step(self, title: str, payment: Payment) -> bytes:
        """Send one step's tx and wait for its commit; returns its tx id (which is the
        id of the contract or offer it opens)."""
        self._title(title)
        settled = send(self.net, payment, node=None, wait=True, as_json=False)
        assert settled is not None  # waited for
        self.times.append(settled.seconds)
        return bytes.fromhex(settled.tx_id)

    def refused(self, title: str, payment: Payment) -> None:
        """A step the ledger must refuse: print the reason it gives."""
        self._title(title)
        try:
            send(self.net, payment, node=None, wait=True, as_json=False)
        except ApiError as exc:
            click.echo(f"  refused: {exc}")
            return
        raise CliError(f"step {self.number} should have been refused, and it settled")

    def terms_file(self, name: str, text: str) -> Path:
        path = self.net.path / "demo" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        self.notes.append(f"  terms file: {path}")
        return path

    def contract(self, key: bytes) -> dict:
        with connect(self.net) as client:
            return client.contract(key)

    def offer(self, key: bytes) -> dict:
        with connect(self.net) as client:
            return client.offer(key)

    def wait_past(self, time_ms: int) -> float:
        """Wait until the chain's block time reaches ``time_ms``; returns the seconds."""
        return wait_for_block_time(self.net, time_ms)

    def _title(self, title: str) -> None:
        self.number += 1
        click.echo()
        click.echo(f"{self.number}. {title}")
        for note in self.notes:
            click.echo(note)
        self.notes.clear()


def wait_for_block_time(net: NetworkHome, time_ms: int) -> float:
    """Poll the head until a committed block is dated at ``time_ms`` or later (validators
    keep committing blocks, so block time keeps up with the clock)."""
    started = time.monotonic()
    with connect(net) as client:
        while int(client.head()["time_ms"]) < time_ms:
            if time.monotonic() - started > EXPIRY_WAIT_S:
                raise CliError(f"block time did not reach the expiry in {EXPIRY_WAIT_S:.0f} s")
            time.sleep(0.2)
    return time.monotonic() - started


def _print_balances(net: NetworkHome) -> None:
    """What each of the cast holds, and what it has locked in contracts and offers."""
    rows = []
    with connect(net) as client:
        for name in CAST:
            info = client.account(resolve_party(net, name).account)
            held, locked = holdings(info), info.get("locked", {})
            for symbol in sorted(held.keys() | locked.keys()):
                rows.append(
                    [
                        name,
                        info["bank"],
                        money_text(net, held.get(symbol, 0), symbol),
                        money_text(net, locked.get(symbol, 0), symbol),
                    ]
                )
            if info.get("frozen"):
                rows.append([name, info["bank"], "frozen (AML hold)", ""])
    click.echo()
    click.echo("Final balances (locked: in open contracts and offers):")
    print_table(["wallet", "bank", "available", "locked"], rows)
