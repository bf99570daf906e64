"""`depnet wallet ...`: keys in the network home, payments signed here and sent to a node.

A wallet is a file under ``<home>/wallets/`` (node/layout.py). Each bank's issuer account
is the wallet named after the bank: it registers clients and mints its own token. Every
command that moves money builds the tx locally, takes its nonce from a node
(``next_nonce`` counts the sender's pending txs), submits it, and by default waits for the
commit so the user sees the height and how long settlement took.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from chain.genesis import Genesis, Token
from chain.tx import Args, TxKind, sign_tx
from cli.commands.common import (
    CliError,
    Party,
    SafeGroup,
    Settled,
    echo_json,
    find_token,
    find_wallet,
    format_amount,
    gathered,
    holdings,
    home_option,
    json_option,
    node_option,
    open_network,
    parse_account,
    parse_amount,
    plain_amount,
    print_table,
    rejection_message,
    resolve_party,
    short_hex,
    signing_wallet,
    submit_tx,
    wait_committed,
)
from cli.devnet.client import NodeClient, connect
from cli.devnet.errors import ApiError
from node.layout import NetworkHome, Wallet, new_wallet

HISTORY_LIMIT = 50
HISTORY_PAGE = 500  # the most txs the API returns per page (node.api.MAX_HISTORY_PAGE)
WALLET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")


@click.group(cls=SafeGroup)
def wallet() -> None:
    """Wallets: create, list, check balances, pay, mint, redeem, register, hold, history."""


@dataclass(frozen=True)
class Sending:
    """How a command that submits a tx was asked to send it (--home, --no-wait, --node,
    --json)."""

    home: Path
    no_wait: bool
    node: str | None
    as_json: bool

    def send(
        self, net: NetworkHome, payment: Payment, on_accepted: Callable[[], None] | None = None
    ) -> Settled | None:
        return send(
            net,
            payment,
            node=self.node,
            wait=not self.no_wait,
            as_json=self.as_json,
            on_accepted=on_accepted,
        )


@dataclass(frozen=True)
class Money:
    """--amount, --token and --memo as typed; read against the network's tokens."""

    amount: str
    token: str
    memo: str


send_options = gathered(
    "sending",
    Sending,
    home_option,
    click.option("--no-wait", is_flag=True, help="Return once the node accepts the tx."),
    node_option,
    json_option,
)
amount_options = gathered(
    "money",
    Money,
    click.option("--amount", required=True, help="Decimal amount, e.g. 1250.00."),
    click.option("--token", required=True, help="Token symbol, e.g. USD.JPM."),
    click.option("--memo", default="", help="Reference carried on the ledger (invoice id)."),
)


# --- sending ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Payment:
    """What a command asks the ledger to do, in the words it will print."""

    kind: TxKind
    signer: Wallet
    to: Party | None = None
    token: Token | None = None
    amount: int = 0
    memo: str = ""
    args: Args | None = None  # a contract's or a swap's terms, or the one acted on
    what: str = ""  # how a command on a contract, a swap or a hold words what it did

    def describe(self) -> str:
        memo = f" (memo {self.memo})" if self.memo else ""
        if self.what:
            return self.what + memo
        what = self._amount_text()
        to = self.to.label if self.to else ""
        return {
            TxKind.TRANSFER: f"paid {what} from {self.signer.name} to {to}",
            TxKind.MINT: f"{self.signer.name} minted {what} to {to}",
            TxKind.BURN: f"{self.signer.name} redeemed {what} with {self._issuer}",
            TxKind.REGISTER: f"{self.signer.name} registered {to}",
        }[self.kind] + memo

    def _amount_text(self) -> str:
        if self.token is None:
            return ""
        return f"{format_amount(self.amount, self.token.decimals)} {self.token.symbol}"

    @property
    def _issuer(self) -> str:
        return self.token.bank if self.token else ""

    def explain(self, balances: dict[str, int]) -> Callable[[str, str], str]:
        """Phrase a rejection with this payment's amounts (the node speaks minor units)."""

        def explain(code: str, message: str) -> str:
            if code == "insufficient_funds" and self.token is not None:
                held = format_amount(balances.get(self.token.symbol, 0), self.token.decimals)
                return (
                    f"insufficient funds: {self.signer.name} holds {held} {self.token.symbol}, "
                    f"needs {self._amount_text()}"
                )
            return rejection_message(code, message)

        return explain

    def to_json(self) -> dict:
        data: dict[str, Any] = {"kind": self.kind.name.lower(), "signer": self.signer.name}
        if self.to is not None:
            data["to"] = self.to.account.hex()
        if self.token is not None:
            data.update(
                token=self.token.symbol,
                amount=plain_amount(self.amount, self.token.decimals),
                memo=self.memo,
            )
        return data


def send(
    net: NetworkHome,
    payment: Payment,
    *,
    node: str | None,
    wait: bool,
    as_json: bool,
    on_accepted: Callable[[], None] | None = None,
) -> Settled | None:
    """Sign ``payment`` with the next nonce, submit it and (if ``wait``) await its commit.

    ``on_accepted`` runs once the node has taken the tx, before the wait.
    """
    with connect(net, node or payment.signer.bank, only=node is not None) as client:
        sender = bytes.fromhex(payment.signer.account)
        info = _account_info(client, sender, payment.signer.name)
        tx = sign_tx(
            payment.signer.signing_key,
            payment.kind,
            net.genesis().chain_id,
            int(info["next_nonce"]),
            to=payment.to.account if payment.to else b"",
            token=payment.token.symbol if payment.token else "",
            amount=payment.amount,
            memo=payment.memo,
            args=payment.args,
        )
        started = time.monotonic()
        submit_tx(client, tx, payment.explain(info["balances"]))
        if on_accepted is not None:
            on_accepted()
        settled = wait_committed(client, tx.tx_id, started) if wait else None
    created = _CREATES.get(payment.kind)  # what the tx opens is named by the tx's id
    if as_json:
        echo_json(
            {
                **payment.to_json(),
                "tx_id": tx.tx_id.hex(),
                **({f"{created}_id": tx.tx_id.hex()} if created else {}),
                "node": client.bank,
                "committed": settled is not None,
                **(settled.to_json() if settled else {}),
            }
        )
    else:
        click.echo(payment.describe())
        if created:
            click.echo(f"  {created} id {tx.tx_id.hex()}")
        if settled is None:
            click.echo(f"  tx {tx.tx_id.hex()} accepted by {client.bank}; not waiting for commit")
        else:
            click.echo(
                f"  tx {tx.tx_id.hex()} committed at height {settled.height}, "
                f"settled in {settled.seconds:.2f} s"
            )
    return settled


_CREATES = {TxKind.CONTRACT_OPEN: "contract", TxKind.SWAP_OFFER: "offer"}


def _account_info(client: NodeClient, account: bytes, label: str) -> dict:
    try:
        return client.account(account)
    except ApiError as exc:
        if exc.code == "account_not_found":
            raise CliError(f"unknown account: {label} is not registered on the ledger") from None
        raise


# --- commands that send ----------------------------------------------------------------


@wallet.command()
@click.option("--from", "sender", required=True, metavar="NAME", help="Paying wallet.")
@click.option("--to", "recipient", required=True, metavar="NAME|ACCOUNT", help="Payee.")
@amount_options
@send_options
def transfer(sender: str, recipient: str, money: Money, sending: Sending) -> None:
    """Pay a registered account in any bank's token; waits for the commit by default."""
    _send_money(TxKind.TRANSFER, lambda net: signing_wallet(net, sender), recipient, money, sending)


@wallet.command()
@click.option("--bank", required=True, help="The issuing bank (signs with its issuer wallet).")
@click.option("--to", "recipient", required=True, metavar="NAME|ACCOUNT", help="Depositor.")
@amount_options
@send_options
def mint(bank: str, recipient: str, money: Money, sending: Sending) -> None:
    """A deposit comes in: the issuing bank credits a registered account with its token."""
    _send_money(TxKind.MINT, lambda net: _issuer_wallet(net, bank), recipient, money, sending)


@wallet.command()
@click.option("--from", "holder", required=True, metavar="NAME", help="The redeeming holder.")
@amount_options
@send_options
def burn(holder: str, money: Money, sending: Sending) -> None:
    """Redeem tokens for an ordinary deposit at the issuing bank (the holder signs)."""
    _send_money(TxKind.BURN, lambda net: signing_wallet(net, holder), None, money, sending)


def _send_money(
    kind: TxKind,
    signer: Callable[[NetworkHome], Wallet],
    recipient: str | None,
    money: Money,
    sending: Sending,
) -> None:
    """Check the token, the signer (``signer(net)``), the recipient and the amount, in
    that order (the first that is wrong is the error shown), then send the payment."""
    net = open_network(sending.home)
    token = find_token(net.genesis(), money.token)
    payment = Payment(
        kind,
        signer(net),
        resolve_party(net, recipient) if recipient is not None else None,
        token,
        parse_amount(money.amount, token),
        money.memo,
    )
    sending.send(net, payment)


@wallet.command()
@click.argument("name")
@click.option("--bank", required=True, help="The bank that admits (KYCs) the new account.")
@send_options
def new(name: str, bank: str, sending: Sending) -> None:
    """Create a key pair, register it at BANK, and save it as wallet NAME."""
    net = open_network(sending.home)
    _check_new_name(net, name)
    issuer = _issuer_wallet(net, bank)
    created = new_wallet(name, issuer.bank)
    party = Party(name, bytes.fromhex(created.account), created.bank)
    _register(net, issuer, party, created, sending)


@wallet.command()
@click.argument("account")
@click.option("--bank", required=True, help="The bank that admits (KYCs) the account.")
@click.option("--name", help="Also save it as a watch-only wallet (no key) under this name.")
@send_options
def register(account: str, bank: str, name: str | None, sending: Sending) -> None:
    """Admit an existing account (64 hex characters, its public key) to the network."""
    net = open_network(sending.home)
    key = parse_account(account)
    if key is None:
        raise CliError(f"account {account!r} is not 64 hex characters (a public key)")
    if name is not None:
        _check_new_name(net, name)
    issuer = _issuer_wallet(net, bank)
    label = name or short_hex(key.hex())
    watch = Wallet(name, issuer.bank, key.hex(), "") if name else None
    _register(net, issuer, Party(label, key, issuer.bank), watch, sending)


def _register(
    net: NetworkHome,
    issuer: Wallet,
    party: Party,
    save: Wallet | None,
    sending: Sending,
) -> None:
    """Submit the register tx; the wallet file is written once the node has accepted it,
    so a refused registration leaves nothing behind and an accepted one keeps its key."""
    payment = Payment(TxKind.REGISTER, issuer, party)
    on_accepted = (lambda: net.save_wallet(save)) if save is not None else None
    sending.send(net, payment, on_accepted)


@wallet.command()
@click.argument("who", metavar="NAME|ACCOUNT")
@click.option("--bank", help="The bank that registered the account (default: its wallet's).")
@send_options
def freeze(who: str, bank: str | None, sending: Sending) -> None:
    """Put a compliance (AML) hold on an account: it can neither send nor receive, and
    what it has locked does not pay out to it, until unfrozen. Its bank signs."""
    _hold(TxKind.FREEZE, who, bank, sending)


@wallet.command()
@click.argument("who", metavar="NAME|ACCOUNT")
@click.option("--bank", help="The bank that registered the account (default: its wallet's).")
@send_options
def unfreeze(who: str, bank: str | None, sending: Sending) -> None:
    """Lift a compliance hold (its bank signs)."""
    _hold(TxKind.UNFREEZE, who, bank, sending)


def _hold(kind: TxKind, who: str, bank: str | None, sending: Sending) -> None:
    net = open_network(sending.home)
    sending.send(net, holding(net, kind, who, bank))


def holding(net: NetworkHome, kind: TxKind, who: str, bank: str | None) -> Payment:
    """A FREEZE or UNFREEZE of ``who`` signed by its bank's issuer wallet."""
    party = resolve_party(net, who)
    bank = bank or party.bank
    if bank is None:
        raise CliError(f"no wallet here knows {party.label}'s bank: name it with --bank")
    issuer = _issuer_wallet(net, bank)
    verb = "froze" if kind is TxKind.FREEZE else "unfroze"
    what = f"{issuer.name} {verb} {party.label} (compliance hold)"
    return Payment(kind, issuer, party, what=what)


def _check_new_name(net: NetworkHome, name: str) -> None:
    if not WALLET_NAME.fullmatch(name) or parse_account(name) is not None:
        raise CliError(
            f"wallet name {name!r}: use 1-40 letters, digits, '.', '_' or '-' "
            "(and not 64 hex characters, which read as an account)"
        )
    if any(w.name.lower() == name.lower() for w in net.wallets()):
        raise CliError(f"a wallet named {name!r} already exists")


def _issuer_wallet(net: NetworkHome, bank: str) -> Wallet:
    """The bank's issuer wallet, which signs its registrations and mints."""
    found = net.genesis().bank(bank)
    wallet = find_wallet(net, found.name)
    if wallet.account != found.issuer.hex():
        raise CliError(f"wallet {wallet.name!r} does not hold {found.name}'s issuer key")
    return wallet


# --- commands that read ----------------------------------------------------------------


@wallet.command("list")
@home_option
@json_option
def list_(home: Path, as_json: bool) -> None:
    """The wallets in this network home (no node needed)."""
    net = open_network(home)
    issuers = {b.issuer.hex(): b.name for b in net.genesis().banks}
    rows = [
        {
            "name": w.name,
            "bank": w.bank,
            "account": w.account,
            "role": "issuer" if w.account in issuers else ("client" if w.seed else "watch-only"),
        }
        for w in net.wallets()
    ]
    if as_json:
        echo_json(rows)
        return
    print_table(
        ["name", "bank", "role", "account"],
        [[r["name"], r["bank"], r["role"], r["account"]] for r in rows],
    )


@wallet.command()
@click.argument("who", metavar="NAME|ACCOUNT")
@node_option
@home_option
@json_option
def balance(who: str, node: str | None, home: Path, as_json: bool) -> None:
    """Balances and nonce of a wallet or account, from a live node."""
    net = open_network(home)
    party = resolve_party(net, who)
    with connect(net, node or party.bank, only=node is not None) as client:
        info = _account_info(client, party.account, party.label)
    tokens = net.genesis().tokens
    balances = {
        symbol: (units, tokens[symbol].decimals) for symbol, units in holdings(info).items()
    }
    locked = {symbol: (units, tokens[symbol].decimals) for symbol, units in info["locked"].items()}
    if as_json:
        echo_json(
            {
                "name": party.label,
                "account": info["account"],
                "bank": info["bank"],
                "nonce": info["nonce"],
                "balances": {s: plain_amount(u, d) for s, (u, d) in balances.items()},
                "units": {s: u for s, (u, _) in balances.items()},
                "locked": {s: plain_amount(u, d) for s, (u, d) in locked.items()},
                "frozen": info["frozen"],
            }
        )
        return
    held = " (frozen: compliance hold)" if info["frozen"] else ""
    click.echo(f"{party.label} at {info['bank']} ({info['account']}), nonce {info['nonce']}{held}")
    if not balances:
        click.echo("  no balances")
    for symbol, (units, decimals) in balances.items():
        click.echo(f"  {format_amount(units, decimals):>20} {symbol}")
    for symbol, (units, decimals) in locked.items():
        click.echo(f"  {format_amount(units, decimals):>20} {symbol} locked in contracts/offers")


@wallet.command()
@click.argument("who", metavar="NAME|ACCOUNT")
@click.option(
    "--limit",
    type=click.IntRange(1),
    default=HISTORY_LIMIT,
    show_default=True,
    help="How many of the latest txs to show (a block's txs are never split across pages).",
)
@click.option(
    "--before",
    type=click.IntRange(1),
    metavar="HEIGHT",
    help="Only txs in blocks below HEIGHT: the next page of an earlier listing.",
)
@node_option
@home_option
@json_option
def history(
    who: str, limit: int, before: int | None, node: str | None, home: Path, as_json: bool
) -> None:
    """Transactions to or from an account, newest first, from the node's account index."""
    net = open_network(home)
    party = resolve_party(net, who)
    genesis = net.genesis()
    with connect(net, node or party.bank, only=node is not None) as client:
        txs, next_before = _read_history(client, party, limit, before)
    names = {w.account: w.name for w in net.wallets()}
    rows = [_history_row(tx, party.account.hex(), genesis, names) for tx in txs]
    if as_json:
        echo_json({"account": party.account.hex(), "txs": rows, "next_before": next_before})
        return
    below = f" in blocks below {before}" if before is not None else ""
    click.echo(f"{party.label}: {len(rows)} txs{below}, newest first")
    print_table(
        ["height", "time (UTC)", "kind", "amount", "counterparty", "memo", "tx"],
        [
            [
                r["height"],
                time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["time_ms"] / 1000)),
                r["kind"],
                r["signed_amount"],
                r["counterparty"],
                r["memo"],
                short_hex(r["tx_id"]),
            ]
            for r in rows
        ],
    )
    if next_before is not None:
        click.echo(f"(older txs not shown; --before {next_before} lists the next ones)")


def _read_history(
    client: NodeClient, party: Party, limit: int, before: int | None
) -> tuple[list[dict], int | None]:
    """Up to ``limit`` of the account's txs below ``before``, newest first, read page by
    page, and the ``before`` that continues the listing (None once the history ends)."""
    found: list[dict] = []
    while True:
        try:
            page = client.account_txs(
                party.account, limit=min(limit - len(found), HISTORY_PAGE), before=before
            )
        except ApiError as exc:
            if exc.code == "account_not_found":
                raise CliError(
                    f"unknown account: {party.label} is not registered on the ledger"
                ) from None
            raise
        txs, next_before = page["txs"], page["next_before"]
        if found and len(found) + len(txs) > limit:
            return found, before  # one block with more txs than fit: it starts the next page
        found.extend(txs)
        if next_before is None or len(found) >= limit:
            return found, next_before
        if not txs or (before is not None and next_before >= before):
            raise CliError(f"node {client.bank} answered a history page that does not move back")
        before = next_before


def _history_row(tx: dict, account: str, genesis: Genesis, names: dict[str, str]) -> dict:
    outgoing = tx["sender"] == account
    other = tx["to"] if outgoing else tx["sender"]
    token = genesis.tokens.get(tx["token"])
    amount = plain_amount(tx["amount"], token.decimals) if token else ""
    shown = format_amount(tx["amount"], token.decimals) if token else ""
    sign = "-" if outgoing and tx["kind"] in ("transfer", "burn") else "+"
    return {
        "height": tx["height"],
        "time_ms": tx["time_ms"],
        "kind": tx["kind"],
        "direction": "out" if outgoing else "in",
        "token": tx["token"],
        "amount": amount,
        "signed_amount": f"{sign}{shown} {tx['token']}" if token else "",
        "counterparty": names.get(other, short_hex(other)) if other else "",
        "memo": tx["memo"],
        "tx_id": tx["tx_id"],
    }
