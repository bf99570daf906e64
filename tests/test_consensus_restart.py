"""The engine resumes from its signer state: after a crash, and after a wipe of its blocks
that kept the signer state, it never signs a second message in a slot, keeps its lock, and
still sends what its peers need to leave the round it was in."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.engine import Engine
from consensus.events import (
    Broadcast,
    CommitReceived,
    MessageReceived,
    ScheduleTimeout,
    TimeoutFired,
    TimeoutKind,
)
from consensus.messages import Step, VoteKind, signer_of
from consensus.signer import DoubleSignRefused, MemorySignerStorage, Signer
from consensus.simulate import CHAIN_ID, GENESIS_TIME_MS, SIM_TIMEOUTS, apply_decided, sim_app
from tests.consensus_helpers import (
    KEYS,
    ME,
    PUB,
    Harness,
    W,
    block,
    block_on,
    commits,
    decided_chain,
    precommits,
    prevotes,
    propose,
    sent_votes,
    vote,
)


def test_restart_after_signing_a_precommit_never_signs_a_different_one() -> None:
    h = Harness()
    a = block(1)
    h.feed(propose(a, 0))
    lost = h.feed(*prevotes([1, 2], 0, a.hash))  # signed, then the node dies before sending
    assert sent_votes(lost, VoteKind.PRECOMMIT) == [a.hash]
    [precommit] = [x.message for x in lost if isinstance(x, Broadcast)]

    again = h.restart()
    assert again.engine.round == 0 and again.engine.step is Step.PRECOMMIT
    assert again.engine.locked_round == 0
    resent = [a.message for a in again.started if isinstance(a, Broadcast)]
    assert precommit in resent  # the same signature: nothing new was signed
    # Everything that would make a fresh node precommit nil in round 0:
    actions = again.feed(*prevotes([1, 2, 3], 0, None))
    actions += again.fire(TimeoutKind.PREVOTE, 0)
    actions += again.fire(TimeoutKind.PROPOSE, 0)
    assert sent_votes(actions, VoteKind.PRECOMMIT) == []
    with pytest.raises(DoubleSignRefused):
        again.engine.signer.sign_vote(VoteKind.PRECOMMIT, 1, 0, None)


def test_restart_between_prevote_and_precommit_keeps_the_prevote() -> None:
    h = Harness()
    a, a2 = block(1), block(1, time_offset=1)
    assert sent_votes(h.feed(propose(a, 0)), VoteKind.PREVOTE) == [a.hash]

    again = h.restart()
    assert again.engine.step is Step.PREVOTE
    assert sent_votes(again.started, VoteKind.PREVOTE) == [a.hash]  # re-sent, not re-decided
    # The proposer equivocates towards the restarted node: no second prevote.
    assert sent_votes(again.feed(propose(a2, 0)), VoteKind.PREVOTE) == []
    assert sent_votes(again.feed(propose(a, 0)), VoteKind.PREVOTE) == []  # A, re-sent
    # A polka for A still lets it precommit A: it had not precommitted anything.
    assert sent_votes(again.feed(*prevotes([1, 2], 0, a.hash)), VoteKind.PRECOMMIT) == [a.hash]
    [commit] = commits(again.feed(*precommits([1, 2], 0, a.hash)))
    assert commit.block == a


def test_restarted_proposer_resends_its_proposal_or_none_at_all() -> None:
    storage = MemorySignerStorage()
    mine = sim_app(W, PUB[ME], lambda: GENESIS_TIME_MS + 1_000).build_block(1, 3, None)
    proposal = Signer(KEYS[ME], storage, CHAIN_ID).sign_proposal(1, 3, mine, -1)  # then: crash
    before = storage.data
    # Restarted with the same clock, the app builds the same block: the same signature.
    same = Harness(storage)
    assert (same.engine.round, Broadcast(proposal) in same.started) == (3, True)
    # With a later clock the block differs, and the signer will not sign a second one.
    other_storage = MemorySignerStorage()
    other_storage.data = before
    other = Harness(other_storage, clock_ms=5_000)
    assert not any(isinstance(a, Broadcast) for a in other.started)
    assert (other.engine.round, other.engine.step) == (3, Step.PROPOSE)
    assert ScheduleTimeout(TimeoutFired(TimeoutKind.PROPOSE, 1, 3), 1000 + 500 * 3) in other.started


def test_engine_that_reaches_the_signers_height_by_sync_keeps_its_lock() -> None:
    """Wipe-and-resync (an operator wipes the blocks) keeps the signer state but not the
    blocks: the node restarts at height 1 while its signer locked on V at height 2. When
    sync brings the engine to height 2 it must take the lock back (and resume the round
    it had reached), or it prevotes a fresh W in a later round and f byzantine plus one
    honest validator that never saw the polka can decide W after V was decided."""
    [(b1, c1)] = decided_chain(1)
    v = block_on((b1, c1), proposer=2, round=0)  # proposer(2, 0) is validator 2
    w = block_on((b1, c1), proposer=3, round=1)  # proposer(2, 1) is validator 3
    assert v.hash != w.hash

    # Before the wipe: at height 2 round 0 we prevoted V, saw its polka, locked and
    # precommitted V. The signer state (and the lock) survives the wipe.
    storage = MemorySignerStorage()
    signer = Signer(KEYS[ME], storage, CHAIN_ID)
    polka = [vote(i, VoteKind.PREVOTE, 0, v.hash, height=2) for i in (1, 2, 3)]
    signer.sign_vote(VoteKind.PREVOTE, 2, 0, v.hash)
    signer.lock_and_precommit(2, 0, v, polka)

    # After the wipe: the store is empty, so the node starts at height 1 and syncs.
    app = sim_app(W, PUB[ME], lambda: GENESIS_TIME_MS + 9_000)
    engine = Engine(
        CHAIN_ID,
        W.validators,
        Signer(KEYS[ME], storage, CHAIN_ID),
        app,
        height=1,
        last_cert=None,
        timeouts=SIM_TIMEOUTS,
    )
    engine.start()
    engine.handle(CommitReceived(b1, c1))
    apply_decided(app, b1)
    engine.handle(TimeoutFired(TimeoutKind.COMMIT, 1, 0))
    assert engine.height == 2
    assert engine.locked_round == 0, "the lock the signer persisted for height 2 was dropped"
    assert (engine.round, engine.step) == (0, Step.PRECOMMIT)

    # Round 1: a fresh proposal of W (POL round -1). Locked on V, line 23 says nil.
    actions = []
    for msg in (
        vote(1, VoteKind.PRECOMMIT, 1, None, height=2),
        vote(2, VoteKind.PRECOMMIT, 1, None, height=2),
        propose(w, 1, height=2),
    ):
        actions += engine.handle(MessageReceived(msg))
    assert engine.round == 1
    assert sent_votes(actions, VoteKind.PREVOTE) == [None]


def test_restarted_validator_still_resends_its_precommit_of_the_previous_round() -> None:
    """Liveness with f silent and one crash. We left round 0 on 2f+1 precommits that
    include ours, prevoted in round 1, then crashed. The honest validators still in round
    0 need our precommit to leave it (line 47), and cannot skip to round 1 on one sender
    (line 55 needs f+1). Before the crash the resend timer covered the previous round;
    after it, the engine must still send that precommit, or the height stalls for good:
    ``depnet sim --nodes 4 --heights 10 --seed 946 --drop 0.3 --delay 4-31 --duplicate 0.2
    --reorder 0.5 --byzantine 1 --byzantine-mode mixed --partition '1|0,2,3@2238-4859'
    --partition '1|2|0,3@1100-2308' --partition '0,2,3|1@103-784' --crash 2@4787-4787
    --crash 1@3841-6754 --crash 3@2179-4773 --crash 1@4844-7402`` never left height 0."""
    h = Harness()
    h.fire(TimeoutKind.PROPOSE, 0)  # no proposal: prevote nil
    h.feed(*prevotes([1, 2], 0, None))  # line 44: precommit nil
    h.feed(*precommits([1, 2], 0, None))  # 2f+1 precommits with ours: line 47
    ours = h.engine.signer.signed_in(1, 0)[-1]
    assert (ours.step, ours.block_hash) == (Step.PRECOMMIT, None)
    h.fire(TimeoutKind.PRECOMMIT, 0)  # line 65: round 1
    h.fire(TimeoutKind.PROPOSE, 1)  # prevote nil in round 1
    assert h.engine.round == 1
    resent = [a.message for a in h.fire(TimeoutKind.RESEND, 0) if isinstance(a, Broadcast)]
    assert [(m.round, m.kind) for m in resent] == [
        (0, VoteKind.PREVOTE),
        (0, VoteKind.PRECOMMIT),
        (1, VoteKind.PREVOTE),
    ]

    again = h.restart()
    assert (again.engine.round, again.engine.step) == (1, Step.PREVOTE)
    sent = [a.message for a in again.started if isinstance(a, Broadcast)]
    assert (0, VoteKind.PRECOMMIT, None) in [(m.round, m.kind, m.block_hash) for m in sent]
    resent = [a.message for a in again.fire(TimeoutKind.RESEND, 0) if isinstance(a, Broadcast)]
    assert (0, VoteKind.PRECOMMIT) in [(m.round, m.kind) for m in resent]


_A, _B = block(1, round=0), block(2, round=1)  # valid, built by the proposers of rounds 0, 1
_BLOCKS = {"A": _A, "B": _B}


@st.composite
def _rounds(draw: st.DrawFn) -> list:
    """Rounds 0-2 of one height as the others might play them (any of them may misbehave:
    the rules checked are ours to keep), with timeouts, shuffled within each round, and
    restarts anywhere. Votes lean towards one value per round so that polkas, locks and
    re-proposals are common."""
    events: list = []
    for rnd in range(3):
        scene: list = []
        name = draw(st.sampled_from(["A", "B", "B", None]))
        if name is not None and _BLOCKS[name].header.round <= rnd:
            scene.append(("proposal", rnd, name, draw(st.integers(-1, rnd - 1))))
        for kind in (VoteKind.PREVOTE, VoteKind.PRECOMMIT):
            favourite = draw(st.sampled_from(["A", "B", None]))
            for who in (1, 2, 3):
                value = draw(
                    st.sampled_from([favourite, favourite, favourite, "A", "B", None, "-"])
                )
                if value != "-":
                    scene.append(("votes", kind, rnd, value, [who]))
        for kind in (TimeoutKind.PROPOSE, TimeoutKind.PREVOTE, TimeoutKind.PRECOMMIT):
            if draw(st.booleans()):
                scene.append(("timeout", kind, rnd))
        events += draw(st.permutations(scene))
    for _ in range(draw(st.integers(0, 3))):
        events.insert(draw(st.integers(0, len(events))), ("restart",))
    return events


def _mine(actions: list, into: list) -> None:
    for a in actions:
        if isinstance(a, Broadcast) and signer_of(a.message) == PUB[ME]:
            into.append(a.message)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(events=_rounds())
def test_restart_at_any_point_never_breaks_the_locking_rules(events: list) -> None:
    """Drive one validator with arbitrary messages and timeouts, restarting it (from its
    signer state) at arbitrary points. Across every incarnation: one message per slot;
    a precommit for v only on 2f+1 prevotes for v in its round (line 36); after a
    precommit for v in round lr, a prevote for w != v in round r > lr only on a proposal
    of w with a POL round in [lr, r) backed by 2f+1 prevotes there (line 29)."""
    h = Harness()
    signed: list = []
    _mine(h.started, signed)
    seen: list = []  # everything the validator received, in any incarnation
    for event in events:
        if event[0] == "restart":
            h = h.restart()
            _mine(h.started, signed)
            continue
        if event[0] == "timeout":
            _mine(h.fire(event[1], event[2]), signed)
            continue
        if event[0] == "proposal":
            _, rnd, name, pol = event
            b = _BLOCKS[name]
            if b.header.round > rnd:
                continue
            msgs = [propose(b, rnd, pol_round=min(pol, rnd - 1))]
        else:
            _, kind, rnd, name, who = event
            value = None if name is None else _BLOCKS[name].hash
            msgs = [vote(w, kind, rnd, value) for w in who]
        seen += msgs
        _mine(h.feed(*msgs), signed)

    everything = seen + signed
    slots: dict = {}
    for m in signed:
        key = (type(m).__name__, getattr(m, "kind", None), m.round)
        content = (m.block.hash, m.pol_round) if hasattr(m, "block") else m.block_hash
        assert slots.setdefault(key, content) == content, f"two messages in slot {key}"

    def polka(rnd: int, value: bytes) -> bool:
        voters = {
            m.validator
            for m in everything
            if hasattr(m, "kind") and m.kind is VoteKind.PREVOTE
            if m.round == rnd and m.block_hash == value
        }
        return len(voters) >= 3

    votes = [m for m in signed if hasattr(m, "kind")]
    for m in votes:
        if m.kind is VoteKind.PRECOMMIT and m.block_hash is not None:
            assert polka(m.round, m.block_hash), f"precommit in round {m.round} without polka"
    for m in votes:
        if m.kind is not VoteKind.PREVOTE or m.block_hash is None:
            continue
        locks = [
            p
            for p in votes
            if p.kind is VoteKind.PRECOMMIT and p.block_hash is not None and p.round < m.round
        ]
        if not locks:
            continue
        lock = max(locks, key=lambda p: p.round)
        if lock.block_hash == m.block_hash:
            continue
        assert any(
            hasattr(p, "block")
            and p.round == m.round
            and p.block.hash == m.block_hash
            and lock.round <= p.pol_round < m.round
            and polka(p.pol_round, m.block_hash)
            for p in everything
        ), f"prevote in round {m.round} against the lock of round {lock.round}"
