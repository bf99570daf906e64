"""The signer: never two conflicting signatures for one slot, also across restarts."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.messages import Step, VoteKind
from consensus.signer import (
    DoubleSignRefused,
    FileSignerStorage,
    MemorySignerStorage,
    Signer,
    SignerStateError,
)
from consensus.simulate import CHAIN_ID, GENESIS_TIME_MS, sim_app, world
from consensus.validators import signature_ok

W = world(4)
KEY = W.keys[0]
BLOCK = sim_app(W, bytes(W.keys[1].verify_key), lambda: GENESIS_TIME_MS + 1).build_block(1, 0, None)
OTHER = sim_app(W, bytes(W.keys[1].verify_key), lambda: GENESIS_TIME_MS + 2).build_block(1, 0, None)
PRE, COMMIT = VoteKind.PREVOTE, VoteKind.PRECOMMIT


class CountingStorage(MemorySignerStorage):
    def __init__(self) -> None:
        super().__init__()
        self.saves = 0

    def save(self, data: bytes) -> None:
        self.saves += 1
        super().save(data)


class BrokenStorage(MemorySignerStorage):
    def save(self, data: bytes) -> None:
        raise OSError("disk full")


def test_identical_message_gets_the_identical_signature_without_a_new_write() -> None:
    storage = CountingStorage()
    signer = Signer(KEY, storage, CHAIN_ID)
    first = signer.sign_vote(PRE, 1, 0, BLOCK.hash)
    assert signer.sign_vote(PRE, 1, 0, BLOCK.hash) == first
    assert storage.saves == 1
    assert signature_ok(signer.pubkey, first.sign_bytes(CHAIN_ID), first.signature)


def test_conflicting_vote_in_the_same_slot_is_refused() -> None:
    signer = Signer(KEY, MemorySignerStorage(), CHAIN_ID)
    signer.sign_vote(PRE, 1, 0, BLOCK.hash)
    with pytest.raises(DoubleSignRefused):
        signer.sign_vote(PRE, 1, 0, None)
    with pytest.raises(DoubleSignRefused):
        signer.sign_vote(PRE, 1, 0, OTHER.hash)


def test_going_back_in_height_round_or_step_is_refused() -> None:
    signer = Signer(KEY, MemorySignerStorage(), CHAIN_ID)
    signer.sign_vote(PRE, 2, 3, None)
    signer.sign_vote(COMMIT, 2, 3, None)
    for kind, height, round_ in [(PRE, 2, 2), (COMMIT, 2, 2), (PRE, 1, 9)]:
        with pytest.raises(DoubleSignRefused):
            signer.sign_vote(kind, height, round_, None)
    with pytest.raises(DoubleSignRefused):
        signer.sign_proposal(2, 3, BLOCK, -1)  # a proposal comes before the votes of a round
    signer.sign_vote(PRE, 2, 4, None)  # forward is fine


def test_proposal_with_another_block_or_pol_round_is_refused() -> None:
    signer = Signer(KEY, MemorySignerStorage(), CHAIN_ID)
    proposal = signer.sign_proposal(1, 2, BLOCK, -1)
    assert signer.sign_proposal(1, 2, BLOCK, -1) == proposal
    with pytest.raises(DoubleSignRefused):
        signer.sign_proposal(1, 2, OTHER, -1)
    with pytest.raises(DoubleSignRefused):
        signer.sign_proposal(1, 2, BLOCK, 1)


def test_nothing_is_signed_unless_the_state_was_saved() -> None:
    signer = Signer(KEY, BrokenStorage(), CHAIN_ID)
    with pytest.raises(OSError):
        signer.sign_vote(PRE, 1, 0, BLOCK.hash)
    assert signer.last is None  # and no signature left the signer


def test_precommit_for_a_block_records_the_lock_with_its_polka() -> None:
    signer = Signer(KEY, MemorySignerStorage(), CHAIN_ID)
    prevote = signer.sign_vote(PRE, 1, 0, BLOCK.hash)
    with pytest.raises(ValueError):
        signer.sign_vote(COMMIT, 1, 0, BLOCK.hash)  # a lock needs its block and polka
    signer.lock_and_precommit(1, 0, BLOCK, [prevote])
    lock = signer.lock
    assert lock is not None
    assert (lock.height, lock.round, lock.block, lock.polka) == (1, 0, BLOCK, (prevote,))
    signer.sign_vote(PRE, 1, 1, None)
    signer.sign_vote(COMMIT, 1, 1, None)  # a nil precommit does not unlock (line 45)
    assert signer.lock == lock


def test_restart_from_file_keeps_refusing_and_keeps_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "signer.state"
    signer = Signer(KEY, FileSignerStorage(path), CHAIN_ID)
    prevote = signer.sign_vote(PRE, 5, 1, BLOCK.hash)
    precommit = signer.lock_and_precommit(5, 1, BLOCK, [prevote])
    del signer  # the process dies

    again = Signer(KEY, FileSignerStorage(path), CHAIN_ID)
    assert again.last is not None
    assert (again.last.height, again.last.round, again.last.step) == (5, 1, Step.PRECOMMIT)
    assert [r.step for r in again.signed_in(5, 1)] == [Step.PREVOTE, Step.PRECOMMIT]
    assert again.lock is not None and again.lock.block == BLOCK and again.lock.polka == (prevote,)
    with pytest.raises(DoubleSignRefused):
        again.sign_vote(COMMIT, 5, 1, None)
    with pytest.raises(DoubleSignRefused):
        again.sign_vote(PRE, 5, 1, OTHER.hash)
    assert again.lock_and_precommit(5, 1, BLOCK, [prevote]) == precommit
    assert sorted(p.name for p in tmp_path.iterdir()) == ["signer.state"]  # no temp files left


def test_unreadable_or_foreign_state_stops_the_signer(tmp_path: Path) -> None:
    path = tmp_path / "signer.state"
    Signer(KEY, FileSignerStorage(path), CHAIN_ID).sign_vote(PRE, 1, 0, None)
    with pytest.raises(SignerStateError, match="another chain or key"):
        Signer(W.keys[1], FileSignerStorage(path), CHAIN_ID)
    with pytest.raises(SignerStateError, match="another chain or key"):
        Signer(KEY, FileSignerStorage(path), "other-chain")
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(SignerStateError, match="unreadable"):
        Signer(KEY, FileSignerStorage(path), CHAIN_ID)


def saved_state() -> bytes:
    """A state with a record of every step and a lock."""
    storage = MemorySignerStorage()
    signer = Signer(KEY, storage, CHAIN_ID)
    signer.sign_proposal(1, 3, BLOCK, -1)
    prevote = signer.sign_vote(PRE, 1, 3, BLOCK.hash)
    signer.lock_and_precommit(1, 3, BLOCK, [prevote])
    assert storage.data is not None
    return storage.data


STATE = saved_state()
ODD = st.one_of(
    st.sampled_from([None, True, -1, 0, 2**64 - 1, 1.5, "", b"", bytes(32), [], {}]),
    st.binary(max_size=70),
    st.integers(-(2**63), 2**64 - 1),
)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_a_damaged_state_file_is_a_signer_state_error_or_still_usable(data: st.DataObject) -> None:
    """Bytes flipped, cut or a field of a record or of the lock replaced: the signer either
    refuses to start (SignerStateError) or loads a state it can go on signing with."""
    if data.draw(st.booleans()):
        raw = bytearray(STATE)
        at = data.draw(st.integers(0, len(raw) - 1))
        if data.draw(st.booleans()):
            del raw[at:]
        else:
            raw[at] ^= data.draw(st.integers(1, 255))
    else:
        doc = msgpack.unpackb(STATE, raw=False)
        where = data.draw(st.sampled_from(["signed", "lock"]))
        fields = doc[where][data.draw(st.integers(0, 2))] if where == "signed" else doc["lock"]
        fields[data.draw(st.integers(0, len(fields) - 1))] = data.draw(ODD)
        raw = msgpack.packb(doc, use_bin_type=True)
    storage = MemorySignerStorage()
    storage.data = bytes(raw)
    try:
        signer = Signer(KEY, storage, CHAIN_ID)
    except SignerStateError:
        return
    assert signer.last is not None
    signer.sign_vote(PRE, signer.last.height + 1, 0, None)
    with pytest.raises(DoubleSignRefused):
        signer.sign_vote(PRE, 1, 0, OTHER.hash)
