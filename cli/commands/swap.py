"""`depnet swap ...`: payment-versus-payment currency swaps between two banks' tokens.

A maker locks an amount of one token and asks an amount of another, from a named
counterparty or from anyone, until an expiry in block time (a bank's treasury quoting FX,
say USD.JPM into HKD.HSBC). Accepting pays what the offer asks and receives what it
locked in one tx: both legs settle or neither. The maker may cancel at any time, anyone
after the expiry; the locked amount goes back to the maker.
"""

from __future__ import annotations

from pathlib import Path

import click

from chain.tx import Ref, SwapTerms, TxKind
from cli.commands.common import (
    TIME_HELP,
    CliError,
    SafeGroup,
    block_time_text,
    echo_json,
    find_token,
    get_record,
    home_option,
    json_option,
    money_text,
    names_of,
    node_option,
    open_network,
    parse_amount,
    parse_id,
    party_account,
    print_table,
    resolve_party,
    short_hex,
    signing_wallet,
    to_time_ms,
    wallet_holding,
)
from cli.commands.wallet import Payment, Sending, send_options
from cli.devnet.client import connect
from node.layout import NetworkHome, Wallet

LIST_LIMIT = 500  # the most a node lists at once (node.api.MAX_LIST)


@click.group(cls=SafeGroup)
def swap() -> None:
    """PvP swaps: one token for another, both legs in one tx or neither."""


@swap.command()
@click.option("--from", "maker", required=True, metavar="NAME", help="The maker's wallet.")
@click.option(
    "--give", nargs=2, required=True, metavar="AMOUNT TOKEN", help="What it locks: 1000.00 USD.JPM"
)
@click.option(
    "--want", nargs=2, required=True, metavar="AMOUNT TOKEN", help="What it asks: 7800.00 HKD.HSBC"
)
@click.option("--to", "counterparty", metavar="NAME|ACCOUNT", help="Only they may accept.")
@click.option("--expires", default="1h", show_default=True, help=f"Until when: {TIME_HELP}.")
@click.option("--memo", default="", help="Reference carried on the ledger.")
@send_options
def offer(
    maker: str,
    give: tuple[str, str],
    want: tuple[str, str],
    counterparty: str | None,
    expires: str,
    memo: str,
    sending: Sending,
) -> None:
    """Lock GIVE from the maker's balance, asking WANT in return."""
    net = open_network(sending.home)
    sending.send(net, offering(net, maker, give, want, counterparty, expires, memo))


def offering(
    net: NetworkHome,
    maker: str,
    give: tuple[str, str],
    want: tuple[str, str],
    counterparty: str | None,
    expires: str,
    memo: str,
) -> Payment:
    """The swap_offer the options ask for, its expiry read as a block time."""
    genesis = net.genesis()
    signer = signing_wallet(net, maker)
    token, ask_token = find_token(genesis, give[1]), find_token(genesis, want[1])
    if token.symbol == ask_token.symbol:
        raise CliError("a swap gives one token and wants another")
    amount, ask = parse_amount(give[0], token), parse_amount(want[0], ask_token)
    party = resolve_party(net, counterparty) if counterparty else None
    with connect(net, signer.bank) as client:
        now = int(client.head()["time_ms"])
    try:
        expiry = to_time_ms(expires, now_ms=now)
    except ValueError as exc:
        raise CliError(f"--expires: {exc}") from None
    if expiry <= now:
        raise CliError(f"--expires: {block_time_text(expiry)} is not after the chain's time")
    what = (
        f"{signer.name} offers {money_text(net, amount, token.symbol)} for "
        f"{money_text(net, ask, ask_token.symbol)} to {party.label if party else 'anyone'}, "
        f"until {block_time_text(expiry)}"
    )
    args = SwapTerms(ask_token.symbol, ask, expiry)
    return Payment(TxKind.SWAP_OFFER, signer, party, token, amount, memo, args, what)


@swap.command()
@click.argument("offer_id", metavar="ID")
@click.option("--from", "taker", metavar="NAME", help="Accepting wallet (default: the named one).")
@send_options
def accept(offer_id: str, taker: str | None, sending: Sending) -> None:
    """Pay what the offer asks and receive what it locked, atomically."""
    net, key, info = _offer(sending, offer_id)
    sending.send(net, accepting(net, key, info, taker))


def accepting(net: NetworkHome, key: bytes, info: dict, taker: str | None) -> Payment:
    """The accept of the offer ``info`` (GET /offers/{key}) by ``taker`` (default: the
    counterparty it names, if a wallet here holds its key)."""
    if taker is not None:
        signer = signing_wallet(net, taker)
    elif info["counterparty"]:
        signer = wallet_holding(net, info["counterparty"], "the counterparty")
    else:
        raise CliError("the offer is open to anyone: name the accepting wallet with --from")
    what = (
        f"{signer.name} paid {money_text(net, info['ask_amount'], info['ask_token'])} to "
        f"{_name(net, info['maker'])} and received "
        f"{money_text(net, info['amount'], info['token'])} (PvP)"
    )
    return Payment(TxKind.SWAP_ACCEPT, signer, args=Ref(key), what=what)


@swap.command()
@click.argument("offer_id", metavar="ID")
@click.option("--from", "who", metavar="NAME", help="Signing wallet (default: the maker's).")
@send_options
def cancel(offer_id: str, who: str | None, sending: Sending) -> None:
    """Give the locked amount back to the maker (the maker any time, anyone after expiry)."""
    net, key, info = _offer(sending, offer_id)
    signer: Wallet = (
        signing_wallet(net, who) if who else wallet_holding(net, info["maker"], "the maker")
    )
    what = (
        f"{signer.name} cancelled the offer: {money_text(net, info['amount'], info['token'])} "
        f"back to {_name(net, info['maker'])}"
    )
    sending.send(net, Payment(TxKind.SWAP_CANCEL, signer, args=Ref(key), what=what))


@swap.command("list")
@click.option("--party", metavar="NAME|ACCOUNT", help="Only offers this account made or may take.")
@click.option("--all", "show_all", is_flag=True, help="Taken and cancelled offers too.")
@node_option
@home_option
@json_option
def list_(party: str | None, show_all: bool, node: str | None, home: Path, as_json: bool) -> None:
    """Swap offers (open ones by default), in order of expiry."""
    net = open_network(home)
    with connect(net, node, only=node is not None) as client:
        found = client.offers(
            party=party_account(net, party), open_only=not show_all, limit=LIST_LIMIT
        )
    if as_json:
        echo_json(found)
        return
    print_table(
        ["id", "status", "maker", "gives", "wants", "to", "expires"],
        [
            [
                o["id"],
                o["status"],
                _name(net, o["maker"]),
                money_text(net, o["amount"], o["token"]),
                money_text(net, o["ask_amount"], o["ask_token"]),
                _name(net, o["counterparty"]) if o["counterparty"] else "anyone",
                block_time_text(o["expiry_ms"]),
            ]
            for o in found
        ],
    )


def _offer(sending: Sending, text: str) -> tuple[NetworkHome, bytes, dict]:
    net = open_network(sending.home)
    key = parse_id(text)
    with connect(net, sending.node, only=sending.node is not None) as client:
        return net, key, get_record(client.offer, key, "offer")


def _name(net: NetworkHome, account: str) -> str:
    return names_of(net).get(account, short_hex(account))
