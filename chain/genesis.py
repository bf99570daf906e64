"""Genesis: the chain id, the banks (validators and token issuers) and the opening state.

A genesis file is JSON, written by ``depnet init`` from the template in ``configs/``::

    {"chain_id": "depnet-local",
     "genesis_time_ms": 1764000000000,
     "banks": [{"name": "JPM", "country": "US", "validator": "<hex pubkey>",
                "issuer": "<hex pubkey>", "tokens": [{"symbol": "USD.JPM", "decimals": 2}]}],
     "accounts": [{"account": "<hex pubkey>", "bank": "JPM", "name": "acme",
                   "balances": {"USD.JPM": 1000000}}]}

A bank has two keys: ``validator`` signs consensus votes (only ``consensus/signer.py``
uses it) and ``issuer`` is the bank's ledger account, which registers clients and mints.
Keeping them apart means a node's consensus key never moves money.

A network *template* (``configs/network.json``) is the same document without keys or
time: ``genesis_from_template`` fills them in, which is what ``depnet init`` does after
generating a key for each validator, issuer and account.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from chain.codec import MAX_VALIDATORS
from chain.errors import GenesisError
from chain.tx import KEY_SIZE, MAX_AMOUNT, MAX_CHAIN_ID_CHARS, MAX_TOKEN_CHARS

TOKEN_PATTERN = re.compile(r"^[A-Z]{3}\.[A-Z0-9]{2,12}$")
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,32}")
NAME_RULE = "1-32 letters, digits, '-' or '_'"
# Every amount is a count of minor units below 2**63 (MAX_AMOUNT, the 64-bit integers of
# the encoding), so decimals trade range for precision: with 6 a token's outstanding supply
# can reach 9.2 trillion whole units, more than the deposits of any bank, while 18 (as some
# crypto tokens use) would leave it 9.2 units. No ISO 4217 currency has more than 4 minor
# digits; 6 is what fiat-backed tokens such as USDC use.
MAX_DECIMALS = 6


@dataclass(frozen=True, slots=True)
class Token:
    symbol: str
    decimals: int
    bank: str
    issuer: bytes


@dataclass(frozen=True, slots=True)
class Bank:
    name: str
    country: str
    validator: bytes
    issuer: bytes
    tokens: tuple[Token, ...]


@dataclass(frozen=True, slots=True)
class Account:
    account: bytes
    bank: str
    name: str
    balances: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Genesis:
    chain_id: str
    genesis_time_ms: int
    banks: tuple[Bank, ...]
    accounts: tuple[Account, ...]

    @property
    def validators(self) -> tuple[bytes, ...]:
        """Validator public keys in genesis order: the order defines indexes and proposers."""
        return tuple(bank.validator for bank in self.banks)

    @property
    def tokens(self) -> dict[str, Token]:
        return {t.symbol: t for bank in self.banks for t in bank.tokens}

    def bank(self, name: str) -> Bank:
        for bank in self.banks:
            if bank.name.lower() == name.lower():
                return bank
        raise GenesisError(f"unknown bank {name!r}; banks: {', '.join(b.name for b in self.banks)}")

    @property
    def hash(self) -> bytes:
        """sha256 of the canonical JSON: two nodes (or a store and a node) hold the same
        genesis exactly when these are equal."""
        canonical = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).digest()

    def to_json(self) -> dict:
        return {
            "chain_id": self.chain_id,
            "genesis_time_ms": self.genesis_time_ms,
            "banks": [
                {
                    "name": b.name,
                    "country": b.country,
                    "validator": b.validator.hex(),
                    "issuer": b.issuer.hex(),
                    "tokens": [{"symbol": t.symbol, "decimals": t.decimals} for t in b.tokens],
                }
                for b in self.banks
            ],
            "accounts": [
                {
                    "account": a.account.hex(),
                    "bank": a.bank,
                    "name": a.name,
                    "balances": dict(a.balances),
                }
                for a in self.accounts
            ],
        }


def parse_genesis(data: object) -> Genesis:
    """Validate a genesis document; every inconsistency is a GenesisError naming it."""
    doc = _mapping(data, "genesis")
    chain_id = doc.get("chain_id")
    if not (isinstance(chain_id, str) and 0 < len(chain_id) <= MAX_CHAIN_ID_CHARS):
        raise GenesisError("chain_id must be 1-64 characters")
    genesis_time = doc.get("genesis_time_ms", 0)
    if type(genesis_time) is not int or genesis_time < 0:
        raise GenesisError("genesis_time_ms must be a non-negative integer")
    banks = tuple(_bank(b) for b in _list(doc.get("banks"), "banks"))
    if not 0 < len(banks) <= MAX_VALIDATORS:
        # A commit certificate holds a signature per validator and peers decode it under
        # that bound (chain.codec.CERTIFICATE).
        raise GenesisError(f"genesis needs 1-{MAX_VALIDATORS} banks, not {len(banks)}")
    _unique([b.name.lower() for b in banks], "bank name")
    _unique([b.validator for b in banks], "validator key")
    tokens = {t.symbol: t for b in banks for t in b.tokens}
    _unique([t.symbol for b in banks for t in b.tokens], "token symbol")
    bank_names = {b.name for b in banks}
    accounts = tuple(
        _account(a, bank_names, tokens) for a in _list(doc.get("accounts", []), "accounts")
    )
    _unique([a.account for a in accounts] + [b.issuer for b in banks], "account key")
    _unique([a.name.lower() for a in accounts if a.name], "account name")
    for symbol in tokens:
        # The ledger caps each token's outstanding supply (chain.state._mint); genesis too.
        if sum(dict(a.balances).get(symbol, 0) for a in accounts) > MAX_AMOUNT:
            raise GenesisError(f"opening balances of {symbol} add up to more than {MAX_AMOUNT}")
    return Genesis(chain_id, genesis_time, banks, accounts)


def genesis_from_template(
    template: Mapping, key_for: Callable[[str, str], bytes], *, genesis_time_ms: int
) -> Genesis:
    """Fill a template's keys and time in, and validate the result as a genesis.

    ``key_for(role, name)`` returns the 32-byte public key for ``("validator", bank)``,
    ``("issuer", bank)`` or ``("account", account name)``; ``depnet init`` generates and
    saves a key pair on each call, so the template decides which keys exist.
    """
    doc = dict(_mapping(template, "network template"))
    doc["genesis_time_ms"] = genesis_time_ms
    banks = [dict(_mapping(b, "bank")) for b in _list(doc.get("banks"), "banks")]
    accounts = [dict(_mapping(a, "account")) for a in _list(doc.get("accounts", []), "accounts")]
    # Names become key file names in init: check them before asking for any key.
    for entry in banks + accounts:
        if not (isinstance(entry.get("name"), str) and NAME_PATTERN.fullmatch(entry["name"])):
            raise GenesisError(f"template name {entry.get('name')!r} must be {NAME_RULE}")
    for bank in banks:
        bank["validator"] = key_for("validator", bank["name"]).hex()
        bank["issuer"] = key_for("issuer", bank["name"]).hex()
    for account in accounts:
        account["account"] = key_for("account", account["name"]).hex()
    doc["banks"], doc["accounts"] = banks, accounts
    return parse_genesis(doc)


def _bank(data: object) -> Bank:
    doc = _mapping(data, "bank")
    name = doc.get("name")
    if not (isinstance(name, str) and NAME_PATTERN.fullmatch(name)):
        raise GenesisError(f"bank name {name!r} must be {NAME_RULE}")
    tokens = []
    issuer = _key(doc.get("issuer"), f"bank {name} issuer")
    for t in _list(doc.get("tokens"), f"bank {name} tokens"):
        tdoc = _mapping(t, f"bank {name} token")
        symbol, decimals = tdoc.get("symbol"), tdoc.get("decimals")
        if (
            not (isinstance(symbol, str) and TOKEN_PATTERN.match(symbol))
            or len(symbol) > MAX_TOKEN_CHARS
        ):
            raise GenesisError(f"token symbol {symbol!r} must look like 'USD.{name.upper()}'")
        if type(decimals) is not int or not 0 <= decimals <= MAX_DECIMALS:
            raise GenesisError(
                f"token {symbol} decimals must be an integer 0-{MAX_DECIMALS}, so that its"
                f" {MAX_AMOUNT} minor units hold at least {MAX_AMOUNT // 10**MAX_DECIMALS:,}"
                " whole units"
            )
        tokens.append(Token(symbol, decimals, name, issuer))
    return Bank(
        name=name,
        country=str(doc.get("country", "")),
        validator=_key(doc.get("validator"), f"bank {name} validator"),
        issuer=issuer,
        tokens=tuple(tokens),
    )


def _account(data: object, bank_names: set[str], tokens: Mapping[str, Token]) -> Account:
    doc = _mapping(data, "account")
    name = doc.get("name", "")
    if not isinstance(name, str):
        raise GenesisError("account name must be text")
    bank = doc.get("bank")
    if bank not in bank_names:
        raise GenesisError(f"account {name!r} names unknown bank {bank!r}")
    balances = []
    for symbol, amount in _mapping(doc.get("balances", {}), f"account {name} balances").items():
        if symbol not in tokens:
            raise GenesisError(f"account {name!r} holds unknown token {symbol!r}")
        if type(amount) is not int or not 0 < amount <= MAX_AMOUNT:
            raise GenesisError(f"account {name!r} balance of {symbol} must be a positive integer")
        balances.append((symbol, amount))
    return Account(_key(doc.get("account"), f"account {name}"), bank, name, tuple(sorted(balances)))


def _key(value: object, what: str) -> bytes:
    try:
        key = bytes.fromhex(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise GenesisError(f"{what} key must be hex") from None
    if len(key) != KEY_SIZE:
        raise GenesisError(f"{what} key must be {KEY_SIZE} bytes")
    return key


def _mapping(value: object, what: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise GenesisError(f"{what} must be an object")
    return value


def _list(value: object, what: str) -> list:
    if not isinstance(value, list):
        raise GenesisError(f"{what} must be a list")
    return value


def _unique(values: list, what: str) -> None:
    if len(values) != len(set(values)):
        raise GenesisError(f"duplicate {what} in genesis")
