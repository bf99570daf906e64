"""The only code that signs proposals and votes, and the reason a validator never equivocates.

Like CometBFT's file private validator, the signer remembers the last (height, round,
step) it signed and what it signed there, and persists that record *before* it returns a
signature. Asked again for the same message it returns the same signature (a node that
lost its outbox may re-send); asked for anything else at the same or an earlier (height,
round, step) it raises ``DoubleSignRefused``. Because the record is durable first, a
crash at any instant cannot make the validator sign two conflicting messages.

It keeps the latest record of each step (proposal, prevote, precommit), not only the very
last one: after a crash the engine re-sends its prevote *and* precommit of the round it
was in. Without that, a prevote lost in the crash is lost for good, and with exactly 2f+1
live honest validators nobody could gather 2f+1 prevotes in that round again.

It also persists the Tendermint lock (Algorithm 1, lines 36-39): a validator locks on v
exactly when it precommits v, so ``lock_and_precommit`` records the lock in the same write
as the signature. The lock keeps the block itself and the 2f+1 prevotes that justified it:
a validator restarted while locked must still be able to re-propose its locked block
(lines 15-16) with the proof its peers need to accept it (line 28). Without them, if the
validators locked on a block all restart, nobody holds it any more, and they never prevote
anything else: the height stalls for good. After a restart the engine reads ``last``,
``signed_in`` and ``lock`` to resume in the round it had reached, with its lock intact.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import msgpack
from nacl.signing import SigningKey

from chain.block import Block
from chain.codec import HASH_SIZE, SIGNATURE_SIZE
from consensus.messages import (
    BadMessage,
    Proposal,
    Step,
    Vote,
    VoteKind,
    decode_message,
    encode_message,
    proposal_sign_bytes,
    vote_sign_bytes,
)

_FORMAT_VERSION = 1


class DoubleSignRefused(Exception):
    """Signing this message could conflict with one already signed."""


class SignerStateError(Exception):
    """The persisted signer state is unreadable or belongs to another key or chain.

    The node must not start: discarding the state could let it sign twice.
    """


class SignerStorage(Protocol):
    """Where the signer keeps its record. ``save`` must be durable when it returns."""

    def load(self) -> bytes | None: ...

    def save(self, data: bytes) -> None: ...


class MemorySignerStorage:
    """In-process storage: survives an engine being rebuilt (the simulator's crash/restart)."""

    def __init__(self) -> None:
        self.data: bytes | None = None

    def load(self) -> bytes | None:
        return self.data

    def save(self, data: bytes) -> None:
        self.data = data


class FileSignerStorage:
    """A file replaced atomically: temp file, fsync, rename, fsync of the directory.

    After a crash the file holds either the previous record or the new one, never a torn
    mix, and a returned ``save`` survives power loss.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def load(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def save(self, data: bytes) -> None:
        directory = self.path.parent
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@dataclass(frozen=True, slots=True)
class SignedRecord:
    """The last message signed. ``pol_round`` is -1 except for a re-proposal."""

    height: int
    round: int
    step: Step
    block_hash: bytes | None
    pol_round: int
    signature: bytes


@dataclass(frozen=True, slots=True)
class Lock:
    """lockedRound/lockedValue of Algorithm 1 at ``height`` (our last non-nil precommit),
    with ``polka``: the prevotes of ``round`` for the block that made us lock."""

    height: int
    round: int
    block: Block
    polka: tuple[Vote, ...]

    @property
    def block_hash(self) -> bytes:
        return self.block.hash

    def to_list(self) -> list:
        return [
            self.height,
            self.round,
            self.block.encode(),
            [encode_message(v) for v in self.polka],
        ]

    @classmethod
    def from_list(cls, fields: list) -> Lock:
        height, round_, raw_block, raw_votes = fields
        polka: list[Vote] = []
        for raw in raw_votes:
            vote = decode_message(raw)
            if not isinstance(vote, Vote) or vote.kind is not VoteKind.PREVOTE:
                raise BadMessage("a lock's polka holds prevotes only")
            polka.append(vote)
        return cls(height, round_, Block.decode(raw_block), tuple(polka))


class Signer:
    """Signs for one validator key on one chain; see the module docstring for the rules."""

    def __init__(self, key: SigningKey, storage: SignerStorage, chain_id: str) -> None:
        self._key = key
        self._storage = storage
        self.chain_id = chain_id
        self.pubkey = bytes(key.verify_key)
        self._signed: dict[Step, SignedRecord] = {}  # the latest record of each step
        self._lock: Lock | None = None
        self._lock_fields: list | None = None  # the lock's encoded form, reused by every save
        data = storage.load()
        if data is not None:
            self._signed, self._lock, self._lock_fields = self._decode(data)

    @property
    def last(self) -> SignedRecord | None:
        """The highest (height, round, step) signed: nothing at or below it is signed anew."""
        return max(self._signed.values(), key=_position, default=None)

    @property
    def lock(self) -> Lock | None:
        return self._lock

    def signed_in(self, height: int, round: int) -> list[SignedRecord]:
        """What we signed in (height, round), in step order: after a restart the engine
        sends these again, since peers may never have received them."""
        records = [r for r in self._signed.values() if (r.height, r.round) == (height, round)]
        return sorted(records, key=_position)

    def sign_proposal(self, height: int, round: int, block: Block, pol_round: int) -> Proposal:
        sign_bytes = proposal_sign_bytes(self.chain_id, height, round, block.hash, pol_round)
        signature = self._sign(height, round, Step.PROPOSE, block.hash, pol_round, sign_bytes)
        return Proposal(height, round, block, pol_round, self.pubkey, signature)

    def sign_vote(self, kind: VoteKind, height: int, round: int, block_hash: bytes | None) -> Vote:
        """A prevote, or a precommit for nil. A precommit for a block is a lock: see
        ``lock_and_precommit``."""
        if kind is VoteKind.PRECOMMIT and block_hash is not None:
            raise ValueError("a precommit for a block locks on it: use lock_and_precommit")
        sign_bytes = vote_sign_bytes(self.chain_id, kind, height, round, block_hash)
        signature = self._sign(height, round, Step.of_vote(kind), block_hash, -1, sign_bytes)
        return Vote(kind, height, round, block_hash, self.pubkey, signature)

    def lock_and_precommit(
        self, height: int, round: int, block: Block, polka: Sequence[Vote]
    ) -> Vote:
        """Lines 38-40: lock on ``block`` in ``round`` and precommit it. ``polka`` holds
        the 2f+1 prevotes for it in ``round``; they are persisted with the lock."""
        kind = VoteKind.PRECOMMIT
        sign_bytes = vote_sign_bytes(self.chain_id, kind, height, round, block.hash)
        lock = Lock(height, round, block, tuple(polka))
        signature = self._sign(height, round, Step.PRECOMMIT, block.hash, -1, sign_bytes, lock)
        return Vote(kind, height, round, block.hash, self.pubkey, signature)

    def _sign(
        self,
        height: int,
        round: int,
        step: Step,
        block_hash: bytes | None,
        pol_round: int,
        sign_bytes: bytes,
        lock: Lock | None = None,
    ) -> bytes:
        same_slot = self._signed.get(step)
        if same_slot is not None and (same_slot.height, same_slot.round) == (height, round):
            if (block_hash, pol_round) == (same_slot.block_hash, same_slot.pol_round):
                return same_slot.signature  # the identical message: safe to hand out again
            raise DoubleSignRefused(
                f"already signed a different {step.name.lower()} at height {height} round {round}"
            )
        last = self.last
        if last is not None and (height, round, step) < _position(last):
            raise DoubleSignRefused(
                f"already signed at height {last.height} round {last.round} "
                f"{last.step.name.lower()}; refusing to go back to {height}/{round}"
            )
        signature = self._key.sign(sign_bytes).signature
        lock_fields = self._lock_fields if lock is None else lock.to_list()
        record = SignedRecord(height, round, step, block_hash, pol_round, signature)
        signed = {**self._signed, step: record}
        self._storage.save(self._encode(signed, lock_fields))  # durable before anyone sees it
        self._signed = signed
        if lock is not None:
            self._lock, self._lock_fields = lock, lock_fields
        return signature

    def _encode(self, signed: dict[Step, SignedRecord], lock_fields: list | None) -> bytes:
        return msgpack.packb(
            {
                "version": _FORMAT_VERSION,
                "chain_id": self.chain_id,
                "pubkey": self.pubkey,
                "signed": [
                    [r.height, r.round, int(r.step), r.block_hash, r.pol_round, r.signature]
                    for r in sorted(signed.values(), key=_position)
                ],
                "lock": lock_fields,
            },
            use_bin_type=True,
        )

    def _decode(self, data: bytes) -> tuple[dict[Step, SignedRecord], Lock | None, list | None]:
        try:
            doc = msgpack.unpackb(data, raw=False)
            if doc["version"] != _FORMAT_VERSION:
                raise SignerStateError(f"signer state version {doc['version']!r} is unknown")
            if doc["chain_id"] != self.chain_id or doc["pubkey"] != self.pubkey:
                raise SignerStateError("signer state belongs to another chain or key")
            signed = {}
            for height, round_, step, block_hash, pol_round, signature in doc["signed"]:
                record = SignedRecord(height, round_, Step(step), block_hash, pol_round, signature)
                if not _well_typed(record):
                    raise SignerStateError(f"signer state holds a damaged record {record!r}")
                signed[record.step] = record
            lock_fields = doc["lock"]
            lock = None if lock_fields is None else Lock.from_list(lock_fields)
            if lock is not None and not (_is_int(lock.height, 1) and _is_int(lock.round, 0)):
                raise SignerStateError("signer state holds a damaged lock")
        except SignerStateError:
            raise
        except Exception as exc:  # any damage means we cannot know what we signed
            raise SignerStateError(f"signer state is unreadable ({type(exc).__name__})") from None
        return signed, lock, lock_fields


def _well_typed(record: SignedRecord) -> bool:
    """The file is our own and trusted, but damage must stop the node here, not surface
    as a TypeError when the next vote is compared with the record."""
    return (
        _is_int(record.height, 1)
        and _is_int(record.round, 0)
        and _is_int(record.pol_round, -1)
        and (record.block_hash is None or _is_bytes(record.block_hash, HASH_SIZE))
        and _is_bytes(record.signature, SIGNATURE_SIZE)
    )


def _is_int(value: object, low: int) -> bool:
    return type(value) is int and value >= low


def _is_bytes(value: object, size: int) -> bool:
    return type(value) is bytes and len(value) == size


def _position(record: SignedRecord) -> tuple[int, int, int]:
    return (record.height, record.round, int(record.step))
