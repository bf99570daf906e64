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
well-formed message raises ``BadMessage``, never another exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import msgpack

from chain.block import HASH_SIZE, Block
from chain.errors import InvalidBlock
from chain.tx import KEY_SIZE, SIGNATURE_SIZE

MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # a full block of 10,000 txs fits with room to spare
MAX_ROUND = 2**31 - 1
MAX_HEIGHT = 2**63 - 1
_PROPOSAL_TAG = "depnet/proposal/v1"
_VOTE_TAG = "depnet/vote/v1"
_WIRE_PROPOSAL = 1
_WIRE_VOTE = 2


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
                _WIRE_PROPOSAL,
                msg.height,
                msg.round,
                msg.block.encode(),
                msg.pol_round,
                msg.proposer,
                msg.signature,
            ]
        )
    return _pack(
        [
            _WIRE_VOTE,
            int(msg.kind),
            msg.height,
            msg.round,
            msg.block_hash,
            msg.validator,
            msg.signature,
        ]
    )


def decode_message(data: bytes) -> Message:
    """Parse wire bytes into a Proposal or Vote, checking every field's type and range.

    Signatures are not checked here (``consensus.validators.verify_message`` does).
    Raises BadMessage only.
    """
    if not isinstance(data, bytes | bytearray) or len(data) > MAX_MESSAGE_BYTES:
        raise BadMessage(f"a message is bytes of at most {MAX_MESSAGE_BYTES}")
    try:
        fields = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise BadMessage(f"undecodable message ({type(exc).__name__})") from None
    if type(fields) is not list or len(fields) != 7:
        raise BadMessage("a message is an array of 7 fields")
    if fields[0] == _WIRE_PROPOSAL and type(fields[0]) is int:
        return _decode_proposal(fields)
    if fields[0] == _WIRE_VOTE and type(fields[0]) is int:
        return _decode_vote(fields)
    raise BadMessage(f"unknown message type {fields[0]!r}")


def _decode_proposal(fields: list) -> Proposal:
    _, height, round_, raw_block, pol_round, proposer, signature = fields
    _check_height_round(height, round_)
    if type(pol_round) is not int or not -1 <= pol_round < round_:
        raise BadMessage(f"proposal POL round {pol_round!r} must be in [-1, round)")
    _check_key_and_signature(proposer, signature)
    if type(raw_block) is not bytes:
        raise BadMessage("proposal block must be bytes")
    try:
        block = Block.decode(raw_block)
    except InvalidBlock as exc:
        raise BadMessage(f"proposal block: {exc}") from None
    except Exception as exc:  # Header(*fields) and friends on hostile shapes
        raise BadMessage(f"proposal block is malformed ({type(exc).__name__})") from None
    if block.height != height:
        raise BadMessage("proposal block is for another height")
    return Proposal(height, round_, block, pol_round, proposer, signature)


def _decode_vote(fields: list) -> Vote:
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
