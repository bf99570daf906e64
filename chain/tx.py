"""Deposit-token transactions: fields, canonical bytes, Ed25519 signatures, tx ids.

Wire form: ``body || signature`` where ``body`` is the msgpack of a fixed-order array
``[kind, chain_id, sender, nonce, to, token, amount, memo]`` and ``signature`` is the
64-byte Ed25519 signature of ``body`` by ``sender``. The kinds of programmable payments
(contracts, swaps) carry a ninth field, their ``args`` array; the others stay at eight, so
their bytes and ids are the same as before those kinds existed. A fixed-order array packs and
unpacks several times faster than a map, and signing the exact
body bytes means nobody but the sender can produce a second encoding of the same
transaction. Decoding re-packs the body and insists on byte equality, so a tx id
(sha256 of the wire bytes) names exactly one transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from hashlib import sha256

import msgpack
from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey

from chain.codec import (
    HASH_SIZE,
    KEY_SIZE,
    MAX_CHAIN_ID_CHARS,
    MAX_MILESTONES,
    MAX_TX_BYTES,
    SIGNATURE_SIZE,
    TX_BODY,
    unpack,
)
from chain.errors import DecodeError, Reason, TxRejected

MAX_MEMO_BYTES = 256
MAX_TOKEN_CHARS = 32
MAX_AMOUNT = 2**63 - 1
MAX_NONCE = 2**63 - 1
MAX_TIME_MS = 2**63 - 1  # block times and expiries are signed 64-bit, like heights
MAX_MILESTONE_NAME_CHARS = 32


class TxKind(IntEnum):
    """What a transaction does."""

    REGISTER = 1  # a bank admits a KYC'd account
    MINT = 2  # the issuing bank credits a registered account (a deposit comes in)
    BURN = 3  # a holder redeems tokens for an ordinary deposit at the issuing bank
    TRANSFER = 4  # a holder pays a registered account
    CONTRACT_OPEN = 5  # a buyer locks a contract's total in escrow for a supplier
    CONTRACT_RELEASE = 6  # the contract's approver pays one milestone to the supplier
    CONTRACT_REFUND = 7  # after the expiry, the buyer takes back what was never released
    CONTRACT_CANCEL = 8  # the supplier, at any time, gives back what was never released
    SWAP_OFFER = 9  # lock an amount of one token, asking an amount of another, until an expiry
    SWAP_ACCEPT = 10  # pay what the offer asks and receive what it locked, in one tx
    SWAP_CANCEL = 11  # the maker at any time, anyone after the expiry: the lock goes back
    FREEZE = 12  # the bank that registered an account puts a compliance hold on it
    UNFREEZE = 13  # that bank lifts the hold


@dataclass(frozen=True, slots=True)
class Milestone:
    """One part of a contract: released to the supplier on the approver's word while the
    block time is before ``due_ms`` (0: no due time of its own) and the contract's expiry."""

    name: str
    amount: int
    due_ms: int = 0

    def to_list(self) -> list:
        return [self.name, self.amount, self.due_ms]


@dataclass(frozen=True, slots=True)
class ContractTerms:
    """The args of CONTRACT_OPEN. The tx's ``to`` is the supplier, ``token`` the currency
    and ``amount`` the total, which the milestones add up to. ``terms_hash`` is the sha256
    of the terms document, so the chain commits to the exact agreement."""

    approver: bytes
    expiry_ms: int
    terms_hash: bytes
    milestones: tuple[Milestone, ...]

    def to_list(self) -> list:
        milestones = [m.to_list() for m in self.milestones]
        return [self.approver, self.expiry_ms, self.terms_hash, milestones]


@dataclass(frozen=True, slots=True)
class SwapTerms:
    """The args of SWAP_OFFER: what the maker asks for the tx's ``amount`` of ``token``,
    from the tx's ``to`` (empty: from anyone), until ``expiry_ms``."""

    ask_token: str
    ask_amount: int
    expiry_ms: int

    def to_list(self) -> list:
        return [self.ask_token, self.ask_amount, self.expiry_ms]


@dataclass(frozen=True, slots=True)
class Ref:
    """The args of a tx that acts on a contract or an offer: its id (the id of the tx
    that opened it) and, for a release only, the milestone's name."""

    id: bytes
    milestone: str = ""

    def to_list(self) -> list:
        return [self.id, self.milestone] if self.milestone else [self.id]


Args = ContractTerms | SwapTerms | Ref
REF_KINDS = frozenset(
    {
        TxKind.CONTRACT_RELEASE,
        TxKind.CONTRACT_REFUND,
        TxKind.CONTRACT_CANCEL,
        TxKind.SWAP_ACCEPT,
        TxKind.SWAP_CANCEL,
    }
)
ARGS_KINDS = REF_KINDS | {TxKind.CONTRACT_OPEN, TxKind.SWAP_OFFER}
# A tx of one of these kinds can make another sender's tx, which applied before it, fail
# after it: a hold stops the account's payments, a refund or a cancel ends a contract's
# releases. Every other pair of valid txs of different senders applies in either order.
ORDER_SENSITIVE_KINDS = frozenset({TxKind.FREEZE, TxKind.CONTRACT_REFUND, TxKind.CONTRACT_CANCEL})


@dataclass(frozen=True, slots=True)
class Tx:
    """A signed transaction. ``to`` is empty for a burn; ``token``/``amount`` unused by register.

    ``args`` is None except for the kinds in ``ARGS_KINDS``: a contract's terms, a swap's
    terms, or a ``Ref`` to the contract or offer acted on."""

    kind: TxKind
    chain_id: str
    sender: bytes
    nonce: int
    to: bytes
    token: str
    amount: int
    memo: str
    args: Args | None
    signature: bytes
    raw: bytes  # the wire bytes this tx was decoded from or signed into
    tx_id: bytes  # sha256(raw)

    @property
    def body(self) -> bytes:
        return self.raw[:-SIGNATURE_SIZE]

    # The decoder gives each kind in ARGS_KINDS its one shape of args, so the rules of a
    # kind read them through these; a mismatch is a bug in this module, not bad input.
    @property
    def contract_terms(self) -> ContractTerms:
        assert isinstance(self.args, ContractTerms), self.kind
        return self.args

    @property
    def swap_terms(self) -> SwapTerms:
        assert isinstance(self.args, SwapTerms), self.kind
        return self.args

    @property
    def ref(self) -> Ref:
        assert isinstance(self.args, Ref), self.kind
        return self.args


def sign_tx(
    key: SigningKey,
    kind: TxKind,
    chain_id: str,
    nonce: int,
    *,
    to: bytes = b"",
    token: str = "",
    amount: int = 0,
    memo: str = "",
    args: Args | None = None,
) -> Tx:
    """Build and sign a transaction; the result round-trips through :func:`decode_tx`."""
    sender = bytes(key.verify_key)
    fields = [int(kind), chain_id, sender, nonce, to, token, amount, memo]
    if args is not None:
        fields.append(args.to_list())
    body = _pack(fields)
    signature = key.sign(body).signature
    raw = body + signature
    return decode_tx(raw)  # one code path for every Tx: what we sign passes the same checks


def decode_tx(raw: bytes) -> Tx:
    """Parse wire bytes into a Tx, checking shape and field types but not the signature.

    Raises TxRejected with MALFORMED, BAD_AMOUNT or MEMO_TOO_LONG. This runs for every
    transaction a node sees, so checks are plain ``if`` statements and messages are only
    formatted on failure.
    """
    if type(raw) is not bytes:
        if not isinstance(raw, bytearray):
            raise TxRejected(Reason.MALFORMED, "a transaction is bytes")
        raw = bytes(raw)
    if not SIGNATURE_SIZE < len(raw) <= MAX_TX_BYTES:
        raise TxRejected(Reason.MALFORMED, f"a transaction is 65..{MAX_TX_BYTES} bytes")
    body = raw[:-SIGNATURE_SIZE]
    try:
        fields = unpack(body, TX_BODY)
    except DecodeError as exc:
        raise TxRejected(Reason.MALFORMED, f"body: {exc}") from None
    if type(fields) is not list or not 8 <= len(fields) <= 9:
        raise TxRejected(Reason.MALFORMED, "body must be an array of 8 fields (9 with args)")
    kind, chain_id, sender, nonce, to, token, amount, memo = (
        fields[:8] if len(fields) == 9 else fields
    )
    if type(kind) is not int or kind not in _KINDS:
        raise TxRejected(Reason.MALFORMED, f"unknown kind {kind!r}")
    if type(chain_id) is not str or not 0 < len(chain_id) <= MAX_CHAIN_ID_CHARS:
        raise TxRejected(Reason.MALFORMED, "bad chain id")
    if type(sender) is not bytes or len(sender) != KEY_SIZE:
        raise TxRejected(Reason.MALFORMED, "bad sender key")
    if type(nonce) is not int or not 0 <= nonce <= MAX_NONCE:
        raise TxRejected(Reason.MALFORMED, f"bad nonce {nonce!r}")
    if type(to) is not bytes or len(to) not in (0, KEY_SIZE):
        raise TxRejected(Reason.MALFORMED, "bad recipient key")
    if type(token) is not str or len(token) > MAX_TOKEN_CHARS:
        raise TxRejected(Reason.MALFORMED, "bad token")
    if type(memo) is not str:
        raise TxRejected(Reason.MALFORMED, "memo must be text")
    if type(amount) is not int:
        raise TxRejected(Reason.BAD_AMOUNT, f"amount must be an integer, got {amount!r}")
    # A character is at most 4 bytes of UTF-8: a short memo needs no encoding to be sure.
    if len(memo) > MAX_MEMO_BYTES // 4 and len(memo.encode()) > MAX_MEMO_BYTES:
        raise TxRejected(Reason.MEMO_TOO_LONG, f"memo is over {MAX_MEMO_BYTES} bytes")
    kind = _KINDS[kind]
    if (len(fields) == 9) != (kind in ARGS_KINDS):
        needs = "9 fields" if kind in ARGS_KINDS else "8 fields"
        raise TxRejected(Reason.MALFORMED, f"{kind.name.lower()} takes {needs}")
    args = None
    if kind in _NO_AMOUNT:
        if len(to) != KEY_SIZE or token or amount:
            raise TxRejected(Reason.MALFORMED, f"{kind.name.lower()} names an account only")
    elif kind in REF_KINDS:
        if to or token or amount:
            raise TxRejected(
                Reason.MALFORMED, f"{kind.name.lower()} names a contract or offer only"
            )
        args = _ref(fields[8], kind is TxKind.CONTRACT_RELEASE)
    else:
        if not 0 < amount <= MAX_AMOUNT:
            raise TxRejected(Reason.BAD_AMOUNT, f"amount must be positive, got {amount}")
        if not token:
            raise TxRejected(Reason.MALFORMED, "token missing")
        if kind is TxKind.BURN:
            if to:
                raise TxRejected(Reason.MALFORMED, "burn has no recipient")
        elif not to and kind is not TxKind.SWAP_OFFER:  # an offer without one is to anyone
            raise TxRejected(Reason.MALFORMED, f"{kind.name.lower()} needs a recipient")
        if len(fields) == 9:  # the kind takes args (checked above): a contract's or a swap's
            if kind is TxKind.CONTRACT_OPEN:
                args = _contract_terms(fields[8], amount)
            else:
                args = _swap_terms(fields[8], token)
    if _pack(fields) != body:
        raise TxRejected(Reason.MALFORMED, "non-canonical encoding")
    return _new_tx(
        kind,
        chain_id,
        sender,
        nonce,
        to,
        token,
        amount,
        memo,
        args,
        raw[-SIGNATURE_SIZE:],
        raw,
        _sha256(raw).digest(),
    )


def _contract_terms(fields: object, total: int) -> ContractTerms:
    """The args of a contract_open, checked for shape; whether the expiry is still ahead
    is a ledger rule (it depends on the block time)."""
    if type(fields) is not list or len(fields) != 4:
        raise TxRejected(
            Reason.MALFORMED, "contract terms are [approver, expiry, hash, milestones]"
        )
    approver, expiry_ms, terms_hash, entries = fields
    if type(approver) is not bytes or len(approver) != KEY_SIZE:
        raise TxRejected(Reason.MALFORMED, "bad approver key")
    if type(expiry_ms) is not int or not 0 < expiry_ms <= MAX_TIME_MS:
        raise TxRejected(Reason.MALFORMED, f"bad expiry {expiry_ms!r}")
    if type(terms_hash) is not bytes or len(terms_hash) != HASH_SIZE:
        raise TxRejected(Reason.MALFORMED, "terms hash must be 32 bytes")
    if type(entries) is not list or not 0 < len(entries) <= MAX_MILESTONES:
        raise TxRejected(Reason.MALFORMED, f"a contract has 1..{MAX_MILESTONES} milestones")
    milestones = tuple(_milestone(entry, expiry_ms) for entry in entries)
    if len({m.name for m in milestones}) != len(milestones):
        raise TxRejected(Reason.MALFORMED, "milestone names must differ")
    if sum(m.amount for m in milestones) != total:
        raise TxRejected(Reason.BAD_AMOUNT, f"milestones do not add up to the amount {total}")
    return ContractTerms(approver, expiry_ms, terms_hash, milestones)


def _milestone(entry: object, expiry_ms: int) -> Milestone:
    if type(entry) is not list or len(entry) != 3:
        raise TxRejected(Reason.MALFORMED, "a milestone is [name, amount, due]")
    name, amount, due_ms = entry
    if type(name) is not str or not 0 < len(name) <= MAX_MILESTONE_NAME_CHARS:
        raise TxRejected(
            Reason.MALFORMED, f"a milestone name is 1..{MAX_MILESTONE_NAME_CHARS} chars"
        )
    if type(amount) is not int or not 0 < amount <= MAX_AMOUNT:
        raise TxRejected(Reason.BAD_AMOUNT, f"milestone {name!r} amount must be positive")
    if type(due_ms) is not int or not 0 <= due_ms <= expiry_ms:
        raise TxRejected(Reason.MALFORMED, f"milestone {name!r} is due after the expiry")
    return Milestone(name, amount, due_ms)


def _swap_terms(fields: object, token: str) -> SwapTerms:
    if type(fields) is not list or len(fields) != 3:
        raise TxRejected(Reason.MALFORMED, "swap terms are [ask token, ask amount, expiry]")
    ask_token, ask_amount, expiry_ms = fields
    if type(ask_token) is not str or not 0 < len(ask_token) <= MAX_TOKEN_CHARS:
        raise TxRejected(Reason.MALFORMED, "bad asked token")
    if ask_token == token:
        raise TxRejected(Reason.MALFORMED, "a swap asks for another token than it gives")
    if type(ask_amount) is not int or not 0 < ask_amount <= MAX_AMOUNT:
        raise TxRejected(Reason.BAD_AMOUNT, f"asked amount must be positive, got {ask_amount!r}")
    if type(expiry_ms) is not int or not 0 < expiry_ms <= MAX_TIME_MS:
        raise TxRejected(Reason.MALFORMED, f"bad expiry {expiry_ms!r}")
    return SwapTerms(ask_token, ask_amount, expiry_ms)


def _ref(fields: object, names_milestone: bool) -> Ref:
    if type(fields) is not list or len(fields) != 1 + names_milestone:
        shape = "[id, milestone]" if names_milestone else "[id]"
        raise TxRejected(Reason.MALFORMED, f"the args are {shape}")
    ref_id = fields[0]
    if type(ref_id) is not bytes or len(ref_id) != HASH_SIZE:
        raise TxRejected(Reason.MALFORMED, "a contract or offer id is 32 bytes")
    if not names_milestone:
        return Ref(ref_id)
    name = fields[1]
    if type(name) is not str or not 0 < len(name) <= MAX_MILESTONE_NAME_CHARS:
        raise TxRejected(
            Reason.MALFORMED, f"a milestone name is 1..{MAX_MILESTONE_NAME_CHARS} chars"
        )
    return Ref(ref_id, name)


def verify_signature(tx: Tx) -> None:
    """Check the sender's Ed25519 signature over the body. Raises TxRejected(BAD_SIGNATURE).

    This is the most expensive step of the hot path (~26,000/s per core), so callers
    remember which tx ids they have verified instead of verifying twice.
    """
    try:
        crypto_sign_open(tx.signature + tx.body, tx.sender)
    except (BadSignatureError, ValueError):
        raise TxRejected(Reason.BAD_SIGNATURE, "signature does not match sender") from None


_KINDS = {int(k): k for k in TxKind}
_NO_AMOUNT = frozenset({TxKind.REGISTER, TxKind.FREEZE, TxKind.UNFREEZE})  # name an account
_pack = msgpack.Packer(use_bin_type=True).pack
_sha256 = sha256


def _slot_setter(name: str) -> Callable[[Tx, object], None]:
    return getattr(Tx, name).__set__  # the slot's own descriptor: no frozen __setattr__


_set_kind = _slot_setter("kind")
_set_chain_id = _slot_setter("chain_id")
_set_sender = _slot_setter("sender")
_set_nonce = _slot_setter("nonce")
_set_to = _slot_setter("to")
_set_token = _slot_setter("token")
_set_amount = _slot_setter("amount")
_set_memo = _slot_setter("memo")
_set_args = _slot_setter("args")
_set_signature = _slot_setter("signature")
_set_raw = _slot_setter("raw")
_set_tx_id = _slot_setter("tx_id")
_object_new = object.__new__


def _new_tx(
    kind: TxKind,
    chain_id: str,
    sender: bytes,
    nonce: int,
    to: bytes,
    token: str,
    amount: int,
    memo: str,
    args: Args | None,
    signature: bytes,
    raw: bytes,
    tx_id: bytes,
) -> Tx:
    """``Tx(...)`` at half the cost: a frozen dataclass's ``__init__`` assigns each field
    through ``object.__setattr__``, which is a fifth of decoding every transaction."""
    tx = _object_new(Tx)
    _set_kind(tx, kind)
    _set_chain_id(tx, chain_id)
    _set_sender(tx, sender)
    _set_nonce(tx, nonce)
    _set_to(tx, to)
    _set_token(tx, token)
    _set_amount(tx, amount)
    _set_memo(tx, memo)
    _set_args(tx, args)
    _set_signature(tx, signature)
    _set_raw(tx, raw)
    _set_tx_id(tx, tx_id)
    return tx
