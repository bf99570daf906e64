"""Consensus messages: proposals and votes, their signed bytes and their wire form.

Signatures cover *sign bytes*, a msgpack array that starts with a domain tag and the
chain id, so a signature made for one chain (or for a transaction) never verifies as a
vote elsewhere. A proposal signs the block's hash, not its bytes: the hash commits to
everything in the block, and evidence of a double proposal stays small.

Vote sign bytes do not name the voter: the key that verifies the signature does. So every
precommit for one (height, round, block) signs the same bytes, and a commit certificate
is checked against one message (``consensus.validators.verify_certificate``, next to
``verify_message``, which checks who signed a message).

``decode_message`` is fed raw bytes from the network: anything that is not exactly a
well-formed message raises ``BadMessage``, never another exception, and costs no more
memory than its largest field. The message is split into its fields without building
any object (``chain.codec.split_array``), and each field is then unpacked alone under
limits that allow one scalar, so nested arrays cannot multiply into millions of lists;
a proposal's block is decoded by ``Block.decode`` under the block's own limits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum

import msgpack

from chain.block import Block
from chain.codec import BLOCK, HASH_SIZE, KEY_SIZE, SIGNATURE_SIZE, Limits, split_array, unpack
from chain.errors import DecodeError, InvalidBlock
from chain.tx import Tx

_FIELD = Limits(max_bytes=2 + SIGNATURE_SIZE, max_array=0, max_bin=SIGNATURE_SIZE, max_str=0)
"""One field other than a proposal's block: an integer, nil, a hash, a key or a signature."""
_BLOCK_FIELD = Limits(
    max_bytes=5 + BLOCK.max_bytes, max_array=0, max_bin=BLOCK.max_bytes, max_str=0
)
"""A proposal's block: the block's own bytes, as one msgpack bin."""
MESSAGE = Limits(
    max_bytes=1 + 6 * _FIELD.max_bytes + _BLOCK_FIELD.max_bytes,
    max_array=7,
    max_bin=BLOCK.max_bytes,
    max_str=0,
)
"""A wire message, [type, six fields]: at most a proposal of the largest block (~10.3 MB)."""
MAX_MESSAGE_BYTES = MESSAGE.max_bytes
MAX_ROUND = 2**31 - 1
MAX_HEIGHT = 2**63 - 1
_PROPOSAL_TAG = "depnet/proposal/v1"
_VOTE_TAG = "depnet/vote/v1"
WIRE_PROPOSAL = 1
WIRE_VOTE = 2


class BadMessage(Exception):
    """Bytes or a message that must not reach the engine: malformed, unsigned, or unknown."""


class VoteKind(IntEnum):
    PREVOTE = 1
    PRECOMMIT = 2


class Step(IntEnum):
    """Steps of a round, in the order a validator signs them (the signer relies on it)."""

    PROPOSE = 1
    PREVOTE = 2
    PRECOMMIT = 3
    COMMIT = 4  # decided; waiting for the commit timeout before the next height

    @staticmethod
    def of_vote(kind: VoteKind) -> Step:
        return _VOTE_STEPS[kind]

    def vote_kind(self) -> VoteKind:
        """The kind of vote signed at this step (PREVOTE or PRECOMMIT): of_vote reversed."""
        return _STEP_VOTES[self]


_VOTE_STEPS = {VoteKind.PREVOTE: Step.PREVOTE, VoteKind.PRECOMMIT: Step.PRECOMMIT}
_STEP_VOTES = {step: kind for kind, step in _VOTE_STEPS.items()}


@dataclass(frozen=True, slots=True)
class Proposal:
    """⟨PROPOSAL, height, round, block, pol_round⟩; ``pol_round`` is -1 for a fresh block."""

    height: int
    round: int
    block: Block
    pol_round: int
    proposer: bytes
    signature: bytes

    def sign_bytes(self, chain_id: str) -> bytes:
        return proposal_sign_bytes(
            chain_id, self.height, self.round, self.block.hash, self.pol_round
        )


@dataclass(frozen=True, slots=True)
class Vote:
    """⟨PREVOTE|PRECOMMIT, height, round, id(v)⟩; ``block_hash`` None is a vote for nil."""

    kind: VoteKind
    height: int
    round: int
    block_hash: bytes | None
    validator: bytes
    signature: bytes

    def sign_bytes(self, chain_id: str) -> bytes:
        return vote_sign_bytes(chain_id, self.kind, self.height, self.round, self.block_hash)


Message = Proposal | Vote


def signer_of(msg: Message) -> bytes:
    return msg.proposer if isinstance(msg, Proposal) else msg.validator


def proposal_sign_bytes(
    chain_id: str, height: int, round: int, block_hash: bytes, pol_round: int
) -> bytes:
    return _pack([_PROPOSAL_TAG, chain_id, height, round, block_hash, pol_round])


def vote_sign_bytes(
    chain_id: str, kind: VoteKind, height: int, round: int, block_hash: bytes | None
) -> bytes:
    return _pack([_VOTE_TAG, chain_id, int(kind), height, round, block_hash])


def encode_message(msg: Message) -> bytes:
    """Wire bytes: a msgpack array whose first element says which message it is."""
    if isinstance(msg, Proposal):
        return _pack(
            [
                WIRE_PROPOSAL,
                msg.height,
                msg.round,
                msg.block.encode(),
                msg.pol_round,
                msg.proposer,
                msg.signature,
            ]
        )
    return _pack(vote_fields(msg))


def vote_fields(vote: Vote) -> list:
    """A vote's wire fields, as ``vote_of`` reads them back."""
    return [
        WIRE_VOTE,
        int(vote.kind),
        vote.height,
        vote.round,
        vote.block_hash,
        vote.validator,
        vote.signature,
    ]


def decode_message(data: bytes, known: Mapping[bytes, Tx] | None = None) -> Message:
    """Parse wire bytes into a Proposal or Vote, checking every field's type and range.

    Signatures are not checked here (``consensus.validators.verify_message`` does).
    ``known``: txs already decoded, by id, that a proposal's block may reuse (see
    ``Block.decode``). Raises BadMessage only.
    """
    try:
        parts = split_array(data, MESSAGE)
        if len(parts) != 7:
            raise BadMessage("a message is an array of 7 fields")
        kind = unpack(parts[0], _FIELD)
        if kind == WIRE_PROPOSAL and type(kind) is int:
            fields = [unpack(p, _BLOCK_FIELD if i == 3 else _FIELD) for i, p in enumerate(parts)]
            return _decode_proposal(fields, known)
        if kind == WIRE_VOTE and type(kind) is int:
            return vote_of([unpack(p, _FIELD) for p in parts])
    except DecodeError as exc:
        raise BadMessage(f"undecodable message: {exc}") from None
    raise BadMessage(f"unknown message type {kind!r}")


def _decode_proposal(fields: list, known: Mapping[bytes, Tx] | None) -> Proposal:
    raw_block = fields[3]
    if type(raw_block) is not bytes:
        raise BadMessage("proposal block must be bytes")
    try:
        block = Block.decode(raw_block, known)
    except InvalidBlock as exc:  # Block.decode turns any bytes into a Block or this
        raise BadMessage(f"proposal block: {exc}") from None
    return proposal_of(fields, block)


def proposal_of(fields: list, block: Block) -> Proposal:
    """A proposal from its decoded wire fields with its block decoded apart (a whole block
    on the wire, a header alone in evidence). Raises BadMessage only."""
    _, height, round_, _, pol_round, proposer, signature = fields
    _check_height_round(height, round_)
    if type(pol_round) is not int or not -1 <= pol_round < round_:
        raise BadMessage(f"proposal POL round {pol_round!r} must be in [-1, round)")
    _check_key_and_signature(proposer, signature)
    if block.height != height:
        raise BadMessage("proposal block is for another height")
    return Proposal(height, round_, block, pol_round, proposer, signature)


def vote_of(fields: list) -> Vote:
    """A vote from its decoded wire fields. Raises BadMessage only."""
    _, kind, height, round_, block_hash, validator, signature = fields
    if type(kind) is not int or kind not in (VoteKind.PREVOTE, VoteKind.PRECOMMIT):
        raise BadMessage(f"unknown vote kind {kind!r}")
    _check_height_round(height, round_)
    if block_hash is not None and not (type(block_hash) is bytes and len(block_hash) == HASH_SIZE):
        raise BadMessage("vote block hash must be 32 bytes or nil")
    _check_key_and_signature(validator, signature)
    return Vote(VoteKind(kind), height, round_, block_hash, validator, signature)


def _check_height_round(height: object, round_: object) -> None:
    if type(height) is not int or not 1 <= height <= MAX_HEIGHT:
        raise BadMessage(f"height {height!r} out of range")
    if type(round_) is not int or not 0 <= round_ <= MAX_ROUND:
        raise BadMessage(f"round {round_!r} out of range")


def _check_key_and_signature(key: object, signature: object) -> None:
    if type(key) is not bytes or len(key) != KEY_SIZE:
        raise BadMessage("signer key must be 32 bytes")
    if type(signature) is not bytes or len(signature) != SIGNATURE_SIZE:
        raise BadMessage("signature must be 64 bytes")


_pack = msgpack.Packer(use_bin_type=True).pack
