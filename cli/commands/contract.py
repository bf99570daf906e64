"""`depnet contract ...`: milestone contracts in escrow, from a terms file to the last
release or refund.

The buyer's wallet opens a contract from a terms file (cli/commands/terms.py): the total
leaves its balance and is locked under the contract's id (the id of the opening tx). The
approver's wallet releases milestones to the supplier; after the expiry the buyer's
wallet takes back what was never released; the supplier's wallet may cancel at any
time, refunding the buyer. Each command signs with the wallet that the ledger's rule
names, found among this home's wallets, and waits for the commit like `wallet transfer`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from chain.tx import MAX_AMOUNT, ContractTerms, Milestone, Ref, TxKind
from cli.commands.common import (
    CliError,
    Party,
    SafeGroup,
    block_time_text,
    echo_json,
    find_token,
    format_amount,
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
from node.layout import NetworkHome

T = TypeVar("T")
LIST_LIMIT = 500  # the most a node lists at once (node.api.MAX_LIST)


@click.group(cls=SafeGroup)
def contract() -> None:
    """Contracts in escrow: a buyer's funds paid to a supplier milestone by milestone."""


@contract.command("open")
@click.option(
    "--terms",
    "terms_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Terms file, TOML or JSON (see `depnet contract schema`).",
)
@send_options
def open_(terms_path: Path, sending: Sending) -> None:
    """Lock a contract's total from the buyer's balance, as its terms file says."""
    net = open_network(sending.home)
    sending.send(net, opening(net, terms_path))


def opening(net: NetworkHome, terms_path: Path) -> Payment:
    """The contract_open a terms file asks for, its deadlines read as block times from
    the chain's head. Raises CliError naming the file and the field."""
    from cli.commands.terms import load_terms  # pydantic: only for the commands that need it

    loaded = load_terms(terms_path)
    terms = loaded.terms

    def field(name: str, check: Callable[[], T]) -> T:
        """``check()``, its error prefixed with the file and the field it is about."""
        try:
            return check()
        except CliError as exc:
            raise CliError(f"{terms_path}: {name}: {exc.format_message()}") from None

    buyer = field("buyer", lambda: signing_wallet(net, terms.buyer))
    supplier = field("supplier", lambda: resolve_party(net, terms.supplier))
    approver = (
        field("approver", lambda: resolve_party(net, terms.approver))  # type: ignore[arg-type]
        if terms.approver
        else Party(buyer.name, bytes.fromhex(buyer.account), buyer.bank)
    )
    token = field("token", lambda: find_token(net.genesis(), terms.token))
    amounts = [
        field(f"milestones.{i}.amount", lambda m=m: parse_amount(m.amount, token))
        for i, m in enumerate(terms.milestones)
    ]
    total = sum(amounts)
    if total > MAX_AMOUNT:
        raise CliError(f"{terms_path}: milestones: their total is larger than the ledger allows")
    with connect(net, buyer.bank) as client:
        now = int(client.head()["time_ms"])
    expiry = to_time_ms(terms.expires, now_ms=now)
    if expiry <= now:
        raise CliError(
            f"{terms_path}: expires: {block_time_text(expiry)} is not after the chain's time "
            f"{block_time_text(now)}"
        )
    milestones = []
    for i, (m, amount) in enumerate(zip(terms.milestones, amounts, strict=True)):
        due = to_time_ms(m.due, now_ms=now) if m.due else 0
        if due and not now < due <= expiry:
            raise CliError(
                f"{terms_path}: milestones.{i}.due: must lie after the chain's time and "
                "no later than the expiry"
            )
        milestones.append(Milestone(m.name, amount, due))
    parts = ", ".join(f"{m.name} {format_amount(m.amount, token.decimals)}" for m in milestones)
    what = (
        f"{buyer.name} locked {format_amount(total, token.decimals)} {token.symbol} for "
        f"{supplier.label} ({parts}), released by {approver.label}, "
        f"expires {block_time_text(expiry)}"
    )
    args = ContractTerms(approver.account, expiry, loaded.sha256, tuple(milestones))
    return Payment(TxKind.CONTRACT_OPEN, buyer, supplier, token, total, terms.reference, args, what)


@contract.command()
@click.argument("contract_id", metavar="ID")
@click.option("--milestone", required=True, help="Name of the milestone to release.")
@send_options
def release(contract_id: str, milestone: str, sending: Sending) -> None:
    """Pay one milestone to the supplier (the approver's wallet signs)."""
    net, key, info = _contract(sending, contract_id)
    sending.send(net, releasing(net, key, info, milestone))


def releasing(net: NetworkHome, key: bytes, info: dict, milestone: str) -> Payment:
    """The release of ``milestone`` of the contract ``info`` (GET /contracts/{key})."""
    names = [m["name"] for m in info["milestones"]]
    if milestone not in names:
        raise CliError(f"contract has no milestone {milestone!r} (it has {', '.join(names)})")
    amount = info["milestones"][names.index(milestone)]["amount"]
    signer = wallet_holding(net, info["approver"], "the approver")
    supplier = names_of(net).get(info["supplier"], short_hex(info["supplier"]))
    what = (
        f"{signer.name} released {milestone} "
        f"({money_text(net, amount, info['token'])}) to {supplier}"
    )
    return Payment(TxKind.CONTRACT_RELEASE, signer, args=Ref(key, milestone), what=what)


@contract.command()
@click.argument("contract_id", metavar="ID")
@send_options
def refund(contract_id: str, sending: Sending) -> None:
    """After the expiry: what was never released goes back to the buyer (its wallet signs)."""
    net, key, info = _contract(sending, contract_id)
    sending.send(net, refunding(net, key, info))


def refunding(net: NetworkHome, key: bytes, info: dict) -> Payment:
    """The buyer's refund of what the contract ``info`` still locks."""
    signer = wallet_holding(net, info["buyer"], "the buyer")
    what = f"{signer.name} took back {money_text(net, info['locked'], info['token'])} (refund)"
    return Payment(TxKind.CONTRACT_REFUND, signer, args=Ref(key), what=what)


@contract.command()
@click.argument("contract_id", metavar="ID")
@send_options
def cancel(contract_id: str, sending: Sending) -> None:
    """The supplier gives back what was never released, at any time (its wallet signs)."""
    net, key, info = _contract(sending, contract_id)
    signer = wallet_holding(net, info["supplier"], "the supplier")
    buyer = names_of(net).get(info["buyer"], short_hex(info["buyer"]))
    what = (
        f"{signer.name} cancelled: {money_text(net, info['locked'], info['token'])} back to {buyer}"
    )
    sending.send(net, Payment(TxKind.CONTRACT_CANCEL, signer, args=Ref(key), what=what))


@contract.command()
@click.argument("contract_id", metavar="ID")
@node_option
@home_option
@json_option
def show(contract_id: str, node: str | None, home: Path, as_json: bool) -> None:
    """A contract: parties, milestones and what each became."""
    net = open_network(home)
    with connect(net, node, only=node is not None) as client:
        info = get_record(client.contract, parse_id(contract_id), "contract")
        now = int(client.head()["time_ms"])
    if as_json:
        echo_json(info)
        return
    names = names_of(net)

    def who(account: str) -> str:
        return names.get(account, short_hex(account))

    state = info["status"] if info["status"] == "closed" or now < info["expiry_ms"] else "expired"
    click.echo(f"contract {info['id']} ({state})")
    click.echo(f"  buyer {who(info['buyer'])}, supplier {who(info['supplier'])}, "
               f"approver {who(info['approver'])}")  # fmt: skip
    click.echo(f"  expires {block_time_text(info['expiry_ms'])}; terms sha256 {info['terms_hash']}")
    for key in ("total", "locked", "released", "refunded"):
        click.echo(f"  {key:>9} {money_text(net, info[key], info['token'])}")
    print_table(
        ["milestone", "amount", "due", "state"],
        [
            [
                m["name"],
                money_text(net, m["amount"], info["token"]),
                block_time_text(m["due_ms"]) if m["due_ms"] else "-",
                m["state"],
            ]
            for m in info["milestones"]
        ],
    )


@contract.command("list")
@click.option("--party", metavar="NAME|ACCOUNT", help="Only contracts this account is party to.")
@click.option("--open", "open_only", is_flag=True, help="Only contracts that still lock funds.")
@node_option
@home_option
@json_option
def list_(party: str | None, open_only: bool, node: str | None, home: Path, as_json: bool) -> None:
    """Contracts in order of expiry."""
    net = open_network(home)
    with connect(net, node, only=node is not None) as client:
        found = client.contracts(
            party=party_account(net, party), open_only=open_only, limit=LIST_LIMIT
        )
    if as_json:
        echo_json(found)
        return
    names = names_of(net)
    print_table(
        ["id", "status", "buyer", "supplier", "total", "locked", "expires"],
        [
            [
                c["id"],
                c["status"],
                names.get(c["buyer"], short_hex(c["buyer"])),
                names.get(c["supplier"], short_hex(c["supplier"])),
                money_text(net, c["total"], c["token"]),
                money_text(net, c["locked"], c["token"]),
                block_time_text(c["expiry_ms"]),
            ]
            for c in found
        ],
    )


@contract.command("schema")
def schema_() -> None:
    """Print the JSON Schema of a terms file (for tools that draft contracts)."""
    from cli.commands.terms import schema

    echo_json(schema())


def _contract(sending: Sending, text: str) -> tuple[NetworkHome, bytes, dict]:
    net = open_network(sending.home)
    key = parse_id(text)
    with connect(net, sending.node, only=sending.node is not None) as client:
        return net, key, get_record(client.contract, key, "contract")
