"""What the user-facing commands share: options, one-line errors, names, amounts, sending.

Every command here runs on a user's terminal, so three rules hold throughout:
- an error is one line on stderr and a non-zero exit, never a traceback (``SafeCommand``);
- amounts are decimal strings converted to integer minor units by string arithmetic,
  checked against the token's decimals (no floats, no rounding);
- this module imports nothing heavy (no libp2p, trio or the store): `depnet wallet
  transfer` pays for its imports on every call, and it must return in well under 2 s.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from chain.errors import LedgerError, Reason, TxRejected
from chain.genesis import Genesis, Token
from chain.tx import KEY_SIZE, MAX_AMOUNT, Tx
from cli.devnet.client import NodeClient
from cli.devnet.errors import ApiError, DevnetError
from node.layout import NetworkError, NetworkHome, Wallet

DEFAULT_HOME = ".depnet"
POLL_INTERVAL = 0.02
COMMIT_TIMEOUT = 30.0

F = TypeVar("F", bound=Callable[..., Any])  # a command function, for option decorators


class CliError(click.ClickException):
    """A user error: printed as one line on stderr, exit status 1."""

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class SafeCommand(click.Command):
    """A command whose failures reach the user as one line.

    Errors of the layers below (missing network, bad genesis, ledger rejections) keep their
    own message; anything unexpected is named by its type. Set DEPNET_DEBUG=1 to see the
    traceback instead.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            raise click.Abort() from None
        except BrokenPipeError:  # `depnet ... | head`: the reader has all it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise click.exceptions.Exit(0) from None
        except TxRejected as exc:  # a tx this CLI signed fails the ledger's own checks
            raise CliError(rejection_message(exc.reason.value, exc.detail)) from None
        except (NetworkError, LedgerError, DevnetError) as exc:
            raise CliError(str(exc)) from None
        except Exception as exc:
            if os.environ.get("DEPNET_DEBUG"):
                raise
            detail = f": {exc}" if str(exc) else ""
            raise CliError(
                f"unexpected {type(exc).__name__}{detail} (DEPNET_DEBUG=1 shows a traceback)"
            ) from None


class SafeGroup(click.Group):
    """A command group whose subcommands (and subgroups) are all ``SafeCommand``s."""

    command_class = SafeCommand
    group_class = type  # subgroups get this same class


def home_option(f: F) -> F:
    """``--home DIR``: the network's folder, from $DEPNET_HOME or ./.depnet."""
    return click.option(
        "--home",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="DEPNET_HOME",
        default=DEFAULT_HOME,
        show_default=True,
        show_envvar=True,
        help="Network home folder.",
    )(f)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")(f)


def node_option(f: F) -> F:
    """``--node BANK``: talk to this bank's node only, instead of the first live one."""
    return click.option(
        "--node",
        metavar="BANK",
        help="Use only this bank's node (default: the account's bank's node, then any).",
    )(f)


def gathered(into: str, make: Callable[..., Any], *options: Callable[[F], F]) -> Callable[[F], F]:
    """Add ``options`` to a command; their values reach it as one argument ``into``,
    ``make(**values)``, so commands that share options do not repeat them one by one."""

    def decorate(f: F) -> F:
        @functools.wraps(f)
        def command(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in names}
            return f(*args, **kwargs, **{into: make(**values)})

        before = len(vars(command).get("__click_params__", []))
        for option in reversed(options):
            command = option(command)
        names = [p.name for p in vars(command)["__click_params__"][before:]]
        return cast(F, command)

    return decorate


def echo_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2))


def print_table(headers: list[str], rows: list[list[Any]]) -> None:
    """A borderless table on stdout; cells may hold rich markup such as ``[green]up[/]``.

    rich is imported here, by the commands that draw tables, not by every command.
    """
    from rich.console import Console
    from rich.table import Table

    table = Table(*headers, box=None, pad_edge=False)
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    # Piped output is read by programs and grep: don't cut it at an imagined 80 columns.
    Console(highlight=False, width=None if sys.stdout.isatty() else 200).print(table)


# --- the network home ------------------------------------------------------------------


def open_network(home: Path) -> NetworkHome:
    """The network at ``home``, or the "network not initialised" error."""
    net = NetworkHome(Path(home))
    if not net.exists():
        raise CliError(f"network not initialised at {net.path} (run `depnet init` or `depnet up`)")
    return net


@dataclass(frozen=True)
class Party:
    """An account named on the command line, with the label to show for it."""

    label: str
    account: bytes
    bank: str | None  # None for an account no wallet here knows


def find_wallet(net: NetworkHome, name: str) -> Wallet:
    try:
        return net.wallet(name)
    except NetworkError:
        raise CliError(f"unknown wallet {name!r} (see `depnet wallet list`)") from None


def signing_wallet(net: NetworkHome, name: str) -> Wallet:
    """A wallet that can sign: one whose file holds a key, not a watch-only address."""
    wallet = find_wallet(net, name)
    if not wallet.seed:
        raise CliError(f"wallet {wallet.name!r} is watch-only: it has no key to sign with")
    return wallet


def resolve_party(net: NetworkHome, text: str) -> Party:
    """A wallet name, or an account as 64 hex characters (named if a wallet holds it)."""
    wallets = net.wallets()
    for wallet in wallets:
        if wallet.name.lower() == text.lower():
            return Party(wallet.name, bytes.fromhex(wallet.account), wallet.bank)
    account = parse_account(text)
    if account is None:
        raise CliError(f"unknown wallet or account {text!r} (see `depnet wallet list`)")
    for wallet in wallets:
        if wallet.account == account.hex():
            return Party(wallet.name, account, wallet.bank)
    return Party(short_hex(account.hex()), account, None)


def parse_account(text: str) -> bytes | None:
    """The account key if ``text`` is 64 hex characters, else None."""
    if len(text) != 2 * KEY_SIZE:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


def find_token(genesis: Genesis, symbol: str) -> Token:
    tokens = genesis.tokens
    token = tokens.get(symbol.upper())
    if token is None:
        raise CliError(f"unknown token {symbol!r} (tokens on this network: {', '.join(tokens)})")
    return token


def short_hex(text: str, size: int = 12) -> str:
    return text if len(text) <= size else text[:size] + "…"


# --- amounts ---------------------------------------------------------------------------

_AMOUNT = re.compile(r"(\d+)(?:\.(\d*))?")


def parse_amount(text: str, token: Token) -> int:
    """``"1,250.00"`` of a 2-decimal token -> 125000 minor units, exactly.

    Trailing zeros beyond the token's decimals are accepted (1250.000 is 1250.00);
    anything that would need rounding is refused.
    """
    match = _AMOUNT.fullmatch(text.strip().replace(",", "").replace("_", ""))
    if match is None:
        raise CliError(f"amount {text!r} is not a decimal number such as 1250.00")
    whole, fraction = match.group(1), (match.group(2) or "").rstrip("0")
    if len(fraction) > token.decimals:
        raise CliError(
            f"too many decimals in {text}: {token.symbol} has {token.decimals} decimal places"
        )
    units = int(whole) * 10**token.decimals + int(fraction.ljust(token.decimals, "0") or "0")
    if units <= 0:
        raise CliError("amount must be positive")
    if units > MAX_AMOUNT:
        raise CliError(f"amount {text} is larger than the ledger allows")
    return units


def format_amount(units: int, decimals: int) -> str:
    """Minor units as a decimal string with thousands separators: 125000, 2 -> "1,250.00"."""
    whole, fraction = divmod(units, 10**decimals)
    return f"{whole:,}.{fraction:0{decimals}d}" if decimals else f"{whole:,}"


def plain_amount(units: int, decimals: int) -> str:
    """Minor units as a decimal string for JSON: 125000, 2 -> "1250.00"."""
    return format_amount(units, decimals).replace(",", "")


# --- answers of a node ---------------------------------------------------------------


def holdings(account_info: dict) -> dict[str, int]:
    """Non-zero balances of a GET /accounts answer, by token symbol in order."""
    return {t: units for t, units in sorted(account_info["balances"].items()) if units}


# --- transactions ----------------------------------------------------------------------


@dataclass(frozen=True)
class Settled:
    """A committed transaction: where it landed and how long settlement took."""

    tx_id: str
    height: int
    seconds: float

    def to_json(self) -> dict:
        return {"tx_id": self.tx_id, "height": self.height, "seconds": round(self.seconds, 3)}


def submit_tx(client: NodeClient, tx: Tx, explain: Callable[[str, str], str] | None = None) -> None:
    """Hand one signed tx to the node; a rejection becomes a one-line error.

    ``explain(code, message)`` lets a command phrase a rejection in its own terms
    (amounts in the token's decimals rather than minor units).
    """
    (result,) = client.submit([tx.raw])["results"]
    if result["accepted"]:
        return
    code, message = result["code"] or "rejected", result["message"] or ""
    raise ApiError(code, (explain or rejection_message)(code, message))


def rejection_message(code: str, message: str) -> str:
    """One line for a rejected tx: the rule broken in words, then the node's detail."""
    words = {
        Reason.INSUFFICIENT_FUNDS.value: "insufficient funds",
        Reason.UNKNOWN_TOKEN.value: "unknown token",
        Reason.RECIPIENT_NOT_REGISTERED.value: "unknown account: the recipient is not registered",
        Reason.SENDER_NOT_REGISTERED.value: "unknown account: the sender is not registered",
        Reason.NOT_ISSUER.value: "only the issuing bank can do this",
        Reason.ALREADY_REGISTERED.value: "account already registered",
        "mempool_full": "mempool full: the node holds its maximum of pending txs; retry shortly",
        Reason.ACCOUNT_FROZEN.value: "account frozen (compliance hold)",
        Reason.NOT_REGISTERING_BANK.value: "only the bank that registered the account can",
        Reason.NOT_APPROVER.value: "only the contract's approver releases milestones",
        Reason.CONTRACT_EXPIRED.value: "the contract has expired",
        Reason.CONTRACT_NOT_EXPIRED.value: "the contract has not expired yet",
        Reason.OFFER_TAKEN.value: "the offer was already taken",
        Reason.OFFER_EXPIRED.value: "the offer has expired",
    }.get(code, f"rejected ({code})")
    return f"{words}: {message}" if message and message not in words else words


def wait_committed(
    client: NodeClient, tx_id: bytes, started: float, timeout: float = COMMIT_TIMEOUT
) -> Settled:
    """Poll the tx's status until it is committed; ``started`` is when it was submitted."""
    deadline = time.monotonic() + timeout
    for status in _poll(lambda: client.tx(tx_id.hex()), deadline):
        state = status.get("status")
        if state == "committed":
            return Settled(tx_id.hex(), int(status["height"]), time.monotonic() - started)
        if state == "rejected":
            code = status["code"] or "rejected"
            raise ApiError(code, rejection_message(code, status["message"] or ""))
    raise CliError(
        f"tx {tx_id.hex()} not committed within {timeout:.0f} s; it may still be; "
        f"check with `depnet chain tx {tx_id.hex()}` and `depnet status`"
    )


def _poll(fetch: Callable[[], dict], deadline: float) -> Iterator[dict]:
    """Call ``fetch`` every POLL_INTERVAL until the deadline; a 404 counts as "not yet"."""
    while time.monotonic() < deadline:
        try:
            yield fetch()
        except ApiError as exc:
            if exc.status != 404:
                raise
        time.sleep(POLL_INTERVAL)


# --- contracts and offers --------------------------------------------------------------


def parse_id(text: str) -> bytes:
    """A contract or offer id: the 64 hex characters of the tx id that opened it."""
    key = parse_account(text.strip().lower())
    if key is None:
        raise CliError(f"id {text!r} is not 64 hex characters (the id printed when it opened)")
    return key


def get_record(fetch: Callable[[bytes], dict], key: bytes, what: str) -> dict:
    """``fetch(key)`` (a contract or an offer), or the one-line "no such" error."""
    try:
        return fetch(key)
    except ApiError as exc:
        if exc.status == 404:
            raise CliError(f"no {what} {key.hex()} on the ledger") from None
        raise


def names_of(net: NetworkHome) -> dict[str, str]:
    """Wallet names by account hex, to show accounts by name."""
    return {w.account: w.name for w in net.wallets()}


def wallet_holding(net: NetworkHome, account: str, role: str) -> Wallet:
    """The wallet here that holds the key of ``account`` (hex): it signs as ``role``."""
    for wallet in net.wallets():
        if wallet.account == account and wallet.seed:
            return wallet
    raise CliError(f"no wallet here holds the key of {role} ({short_hex(account)})")


def party_account(net: NetworkHome, text: str | None) -> bytes | None:
    return None if text is None else resolve_party(net, text).account


def money_text(net: NetworkHome, units: int, symbol: str) -> str:
    """``units`` of the token ``symbol`` as ``1,250.00 USD.JPM``."""
    token = net.genesis().tokens.get(symbol)
    return f"{format_amount(units, token.decimals)} {symbol}" if token else f"{units} {symbol}"


def block_time_text(time_ms: int) -> str:
    """A block time (ms since the epoch) as a UTC time to the second."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(time_ms / 1000))


TIME_HELP = (
    'a duration from the current block time such as "30d", "12h" or "5s", '
    'or a UTC time such as "2026-03-31T00:00:00Z"'
)
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d)")
_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def to_time_ms(text: str, *, now_ms: int) -> int:
    """A duration after ``now_ms`` (a block time) or a UTC time, in ms since the epoch.
    Raises ValueError."""
    text = text.strip()
    match = _DURATION.fullmatch(text)
    if match:
        return now_ms + int(match.group(1)) * _UNIT_MS[match.group(2)]
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"must be {TIME_HELP}") from None
    if when.tzinfo is None:
        raise ValueError("a time needs its zone, e.g. 2026-03-31T00:00:00Z")
    return int(when.timestamp() * 1000)
