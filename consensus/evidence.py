"""Equivocation evidence: two different messages one validator signed for one slot.

A slot is (height, round, type) with type proposal, prevote or precommit. Honest
validators sign at most one message per slot (``consensus/signer.py`` guarantees it), so
two valid signatures over different contents prove the validator faulty to anyone who
holds genesis. The engine records the first conflict per slot; ``verify_equivocation``
lets a checker confirm a record without trusting the node that reported it.

Evidence reaches the chain as in CometBFT. A node that detects an equivocation keeps it
in its ``EvidencePool`` and sends it to its peers, which verify it and keep it too; a
proposer puts what its pool holds in its next block (at most ``MAX_BLOCK_EVIDENCE``), and
every validator checks each proof of a proposed block before it prevotes (``check``, from
``LedgerApp.validate_block``): it must verify against the genesis validators, be at most
``MAX_EVIDENCE_AGE`` heights old, and accuse a (validator, height, kind) that no block of
that window committed yet and that no other proof of the block accuses. What the window
committed is a function of the chain alone, so every validator decides alike; a restarted
node reads it back from its store (``Store.evidence``). Once committed, or too old, a
proof leaves the pool.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import msgpack

from chain.block import Block, Header
from chain.codec import EVIDENCE, MAX_BLOCK_EVIDENCE, unpack
from chain.errors import DecodeError, InvalidBlock
from consensus.messages import (
    WIRE_PROPOSAL,
    WIRE_VOTE,
    BadMessage,
    Message,
    Proposal,
    Vote,
    proposal_of,
    signer_of,
    vote_fields,
    vote_of,
)
from consensus.validators import ValidatorSet, signature_ok

MAX_EVIDENCE_AGE = 100  # heights: a proof of an older height is no longer committed

EvidenceKey = tuple[bytes, int, str]  # (validator, height, kind): what one proof accuses


class InvalidEvidence(Exception):
    """An equivocation record that does not prove anything."""


@dataclass(frozen=True, slots=True)
class Equivocation:
    """``first`` was seen first; both are signed by ``validator`` for one slot."""

    validator: bytes
    height: int
    round: int
    kind: str  # "proposal" | "prevote" | "precommit"
    first: Message
    second: Message

    def without_blocks(self) -> Equivocation:
        """The same proof with each proposal's block cut to its header (a proposal signs
        the block's hash, which is the header's): ~1 KB instead of two full blocks."""
        return replace(self, first=_header_only(self.first), second=_header_only(self.second))

    @property
    def key(self) -> EvidenceKey:
        """One proof per validator, height and kind is enough: more add nothing."""
        return (self.validator, self.height, self.kind)

    def to_json(self) -> dict:
        return {
            "validator": self.validator.hex(),
            "height": self.height,
            "round": self.round,
            "kind": self.kind,
            "first": _content(self.first),
            "second": _content(self.second),
        }


def _header_only(msg: Message) -> Message:
    if isinstance(msg, Vote):
        return msg
    return replace(msg, block=replace(msg.block, txs=(), last_cert=None))


def slot_kind(msg: Message) -> str:
    if isinstance(msg, Proposal):
        return "proposal"
    return msg.kind.name.lower()


def conflicts(first: Message, second: Message) -> bool:
    """True if two messages of one slot differ in what they vote or propose."""
    return _content(first) != _content(second)


def detect(first: Message, second: Message) -> Equivocation | None:
    """An Equivocation if ``first`` and ``second`` are one signer's conflicting messages
    for one slot; None for a duplicate or for unrelated messages."""
    slot = (signer_of(first), first.height, first.round, slot_kind(first))
    if slot != (signer_of(second), second.height, second.round, slot_kind(second)):
        return None
    if not conflicts(first, second):
        return None
    return Equivocation(slot[0], first.height, first.round, slot[3], first, second)


def verify_equivocation(ev: Equivocation, validators: ValidatorSet, chain_id: str) -> None:
    """Check that ``ev`` really proves ``ev.validator`` signed twice. Raises InvalidEvidence."""
    if ev.validator not in validators:
        raise InvalidEvidence("accused key is not a validator")
    if detect(ev.first, ev.second) != ev or signer_of(ev.first) != ev.validator:
        raise InvalidEvidence("the two messages are not a conflict in one slot")
    for msg in (ev.first, ev.second):
        if not signature_ok(ev.validator, msg.sign_bytes(chain_id), msg.signature):
            raise InvalidEvidence("a message of the evidence is not signed by the accused")


def _content(msg: Message) -> dict:
    if isinstance(msg, Vote):
        return {"block_hash": msg.block_hash.hex() if msg.block_hash else None}
    return {"block_hash": msg.block.hash.hex(), "pol_round": msg.pol_round}


def encode_evidence(ev: Equivocation) -> bytes:
    """A proof's bytes in a block and on the wire: [first, second], each message as on
    the wire except that a proposal carries its block's header only (which its signed
    block hash is the hash of)."""
    return _pack([_message_fields(ev.first), _message_fields(ev.second)])


def decode_evidence(data: object) -> Equivocation:
    """Parse a proof's bytes within ``chain.codec.EVIDENCE``; signatures are not checked
    here (``verify_equivocation`` does). Raises InvalidEvidence only."""
    try:
        pair = unpack(data, EVIDENCE)
    except DecodeError as exc:
        raise InvalidEvidence(f"undecodable evidence: {exc}") from None
    if type(pair) is not list or len(pair) != 2:
        raise InvalidEvidence("evidence is an array of 2 messages")
    first, second = (_message(fields) for fields in pair)
    ev = detect(first, second)
    if ev is None:
        raise InvalidEvidence("the two messages are not a conflict in one slot")
    return ev


def _message_fields(msg: Message) -> list:
    if isinstance(msg, Vote):
        return vote_fields(msg)
    header = msg.block.header.to_list()
    return [
        WIRE_PROPOSAL,
        msg.height,
        msg.round,
        header,
        msg.pol_round,
        msg.proposer,
        msg.signature,
    ]


def _message(fields: object) -> Message:
    if type(fields) is not list or len(fields) != 7 or type(fields[0]) is not int:
        raise InvalidEvidence("an evidence message is an array of 7 fields")
    try:
        if fields[0] == WIRE_VOTE:
            return vote_of(fields)
        if fields[0] == WIRE_PROPOSAL:
            return proposal_of(fields, Block(Header.from_list(fields[3]), (), None))
    except (BadMessage, InvalidBlock) as exc:
        raise InvalidEvidence(f"evidence message: {exc}") from None
    raise InvalidEvidence(f"unknown evidence message type {fields[0]!r}")


class EvidencePool:
    """One node's evidence: proofs pending inclusion, and what the chain's last
    ``MAX_EVIDENCE_AGE`` heights committed (the rule ``check`` applies). See the module
    docstring.

    Memory: a pending proof is verified, of a height from ``MAX_EVIDENCE_AGE`` below the
    next block's to one above it, and one per (validator, height, kind): at most
    3 * n * (MAX_EVIDENCE_AGE + 2) proofs of ~1 KB, whoever sends them; committed keys
    are as many at most."""

    def __init__(self, validators: ValidatorSet, chain_id: str) -> None:
        self.validators = validators
        self.chain_id = chain_id
        self.height = 0  # the last committed height
        self._pending: dict[EvidenceKey, Equivocation] = {}
        self._committed: dict[EvidenceKey, int] = {}  # -> height of the block that did

    @classmethod
    def restore(
        cls,
        validators: ValidatorSet,
        chain_id: str,
        head: int,
        committed: Iterable[tuple[int, bytes]],
    ) -> EvidencePool:
        """A restarted node's pool: what the blocks up to ``head`` committed, as its store
        lists it (height, proof), from ``head + 1 - MAX_EVIDENCE_AGE`` on at least."""
        pool = cls(validators, chain_id)
        for height, proof in committed:
            pool.update(height, (proof,))
        pool.update(head, ())
        return pool

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, key: object) -> bool:
        """Whether a fault (an ``EvidenceKey``) is pending here."""
        return key in self._pending

    def pending(self) -> list[Equivocation]:
        return list(self._pending.values())

    def add(self, ev: Equivocation) -> bool:
        """Keep a verified proof to propose; False if it is known, committed or out of
        the window (then nothing changes)."""
        key = ev.key
        next_height = self.height + 1
        if key in self._pending or key in self._committed:
            return False
        if not next_height - MAX_EVIDENCE_AGE <= ev.height <= next_height + 1:
            return False
        self._pending[key] = ev.without_blocks()
        return True

    def receive(self, data: bytes) -> Equivocation | None:
        """A peer's proof: decoded, verified and kept; the proof if it is new here (to pass
        on), None if it is known. Raises InvalidEvidence if it proves nothing."""
        ev = decode_evidence(data)
        if ev.key in self._pending or ev.key in self._committed:
            return None
        verify_equivocation(ev, self.validators, self.chain_id)
        return ev if self.add(ev) else None

    def proposable(self, height: int) -> tuple[bytes, ...]:
        """Encoded proofs for the block at ``height``: pending ones of its window, oldest
        first, at most ``MAX_BLOCK_EVIDENCE``."""
        fresh = [e for e in self._pending.values() if _in_window(e, height)]
        fresh.sort(key=lambda e: (e.height, e.round, e.kind, e.validator))
        return tuple(encode_evidence(e) for e in fresh[:MAX_BLOCK_EVIDENCE])

    def check(self, height: int, proofs: Sequence[bytes]) -> None:
        """The evidence rule of the block at ``height`` (the next one). Raises InvalidBlock
        naming the proof that breaks it."""
        seen: set[EvidenceKey] = set()
        for position, proof in enumerate(proofs):
            try:
                ev = decode_evidence(proof)
                verify_equivocation(ev, self.validators, self.chain_id)
            except InvalidEvidence as exc:
                raise InvalidBlock(f"evidence {position} proves nothing: {exc}") from None
            if not _in_window(ev, height):
                raise InvalidBlock(
                    f"evidence {position} is of height {ev.height}, outside "
                    f"{max(height - MAX_EVIDENCE_AGE, 1)}..{height}"
                )
            if ev.key in self._committed:
                raise InvalidBlock(
                    f"evidence {position} was committed at height {self._committed[ev.key]}"
                )
            if ev.key in seen:
                raise InvalidBlock(f"evidence {position} accuses what another proof does")
            seen.add(ev.key)

    def update(self, height: int, proofs: Iterable[bytes]) -> None:
        """The block at ``height`` was committed with ``proofs``: they leave the pending
        set, and what fell out of the next block's window is forgotten."""
        for proof in proofs:
            key = decode_evidence(proof).key
            self._committed[key] = height
            self._pending.pop(key, None)
        self.height = max(self.height, height)
        oldest = self.height + 1 - MAX_EVIDENCE_AGE
        if any(key[1] < oldest for key in self._committed):
            self._committed = {k: h for k, h in self._committed.items() if k[1] >= oldest}
        if any(key[1] < oldest for key in self._pending):
            self._pending = {k: e for k, e in self._pending.items() if k[1] >= oldest}


def _in_window(ev: Equivocation, height: int) -> bool:
    return height - MAX_EVIDENCE_AGE <= ev.height <= height


_pack = msgpack.Packer(use_bin_type=True).pack
