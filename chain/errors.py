"""Typed rejections of the ledger layer.

Every rule of the ledger has one reason code, so a caller (the mempool, the HTTP API, the
CLI) can tell the user exactly which rule a transaction broke, and tests can check that
the *specific* rule fired rather than "something went wrong".
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar


class Reason(StrEnum):
    """Why a transaction was rejected. The value is the machine-readable error code."""

    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad_signature"
    WRONG_CHAIN = "wrong_chain"
    BAD_NONCE = "bad_nonce"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    SENDER_NOT_REGISTERED = "sender_not_registered"
    RECIPIENT_NOT_REGISTERED = "recipient_not_registered"
    ALREADY_REGISTERED = "already_registered"
    NOT_A_BANK = "not_a_bank"
    NOT_ISSUER = "not_issuer"
    UNKNOWN_TOKEN = "unknown_token"
    BAD_AMOUNT = "bad_amount"
    MEMO_TOO_LONG = "memo_too_long"
    DUPLICATE = "duplicate"
    MEMPOOL_FULL = "mempool_full"  # not a ledger rule: a node's mempool is at its limit
    # compliance holds
    ACCOUNT_FROZEN = "account_frozen"
    NOT_REGISTERING_BANK = "not_registering_bank"
    ALREADY_FROZEN = "already_frozen"
    NOT_FROZEN = "not_frozen"
    # contracts
    BAD_EXPIRY = "bad_expiry"
    APPROVER_NOT_REGISTERED = "approver_not_registered"
    UNKNOWN_CONTRACT = "unknown_contract"
    NOT_APPROVER = "not_approver"
    NOT_BUYER = "not_buyer"
    NOT_SUPPLIER = "not_supplier"
    UNKNOWN_MILESTONE = "unknown_milestone"
    MILESTONE_RELEASED = "milestone_released"
    MILESTONE_OVERDUE = "milestone_overdue"
    CONTRACT_EXPIRED = "contract_expired"
    CONTRACT_NOT_EXPIRED = "contract_not_expired"
    CONTRACT_CLOSED = "contract_closed"
    # swaps
    UNKNOWN_OFFER = "unknown_offer"
    NOT_COUNTERPARTY = "not_counterparty"
    NOT_OFFERER = "not_offerer"
    OFFER_EXPIRED = "offer_expired"
    OFFER_TAKEN = "offer_taken"
    OFFER_CANCELLED = "offer_cancelled"


class LedgerError(Exception):
    """Base of every error raised by chain/."""


class TxRejected(LedgerError):
    """A transaction broke a ledger rule; nothing was changed."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)


class InvalidBlock(LedgerError):
    """A block does not follow the chain's rules (header, tx root, state root, a tx)."""


class DecodeError(LedgerError):
    """Bytes from outside are not one well-formed message within its limits (chain.codec).

    Decoders turn it into their own error (TxRejected MALFORMED, InvalidBlock), so a
    caller sees one typed error per kind of message whatever the bytes were.
    """


class GenesisError(LedgerError):
    """A genesis file is unreadable or inconsistent."""


class StoreError(LedgerError):
    """A node's store cannot be used: locked, corrupt, or created for another genesis."""


def ensure(
    condition: bool, broken: Reason | type[InvalidBlock], detail: str = "", *args: object
) -> None:
    """Keep each ledger rule to one line at the point where it applies.

    ``broken`` names what the rule protects: a ``Reason`` for a transaction rule (raises
    TxRejected with that reason), ``InvalidBlock`` for a block rule. One idiom for both,
    so every rule of the ledger reads the same way. ``detail`` is a ``str.format``
    template filled from ``args`` only when the rule breaks: the rules run several times
    for every transaction, and formatting a message costs more than checking the rule.
    A bytes argument (an account key) shows as its first 16 hex digits.
    """
    if not condition:
        if isinstance(broken, Reason):
            raise rejected(broken, detail, *args)
        raise broken(_filled(detail, args))


def rejected(reason: Reason, detail: str = "", *args: object) -> TxRejected:
    """The TxRejected that ``ensure`` raises for ``reason``, for the rules of the
    commonest txs, which run as plain ``if`` statements (a call per rule is a noticeable
    part of applying a transfer) and build their error only when the rule breaks."""
    return TxRejected(reason, _filled(detail, args))


def _filled(detail: str, args: tuple[object, ...]) -> str:
    if not args:
        return detail
    return detail.format(*(_short(a) if type(a) is bytes else a for a in args))


T = TypeVar("T")


def present(value: T | None, broken: Reason, detail: str = "", *args: object) -> T:
    """``ensure`` for a lookup: the value if there is one, else the rule ``broken`` breaks.

    Rules that find a record (a token, a contract, an offer) read as one line and hand the
    rest of the rule a value that is known to exist.
    """
    ensure(value is not None, broken, detail, *args)
    assert value is not None
    return value


def _short(key: bytes) -> str:
    return key.hex()[:16] + "…"
