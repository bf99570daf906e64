"""Equivocation evidence: two different messages one validator signed for one slot.

A slot is (height, round, type) with type proposal, prevote or precommit. Honest
validators sign at most one message per slot (``consensus/signer.py`` guarantees it), so
two valid signatures over different contents prove the validator faulty to anyone who
holds genesis. The engine records the first conflict per slot; ``verify_equivocation``
lets a checker confirm a record without trusting the node that reported it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from consensus.messages import Message, Proposal, Vote, signer_of
from consensus.validators import ValidatorSet, signature_ok


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
