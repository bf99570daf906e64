"""Targeted tests of the Tendermint engine, one rule of Algorithm 1 at a time: one engine
under test, the test plays the other three validators (``tests/consensus_helpers.py``).
Each test names the case that breaks naive implementations."""

from __future__ import annotations

from dataclasses import replace

from chain.block import Block, CommitCertificate
from consensus.engine import AHEAD_TICKS, MAX_PROPOSALS_PER_ROUND, ROUND_WINDOW
from consensus.events import (
    Broadcast,
    Commit,
    CommitReceived,
    RequestSync,
    ScheduleTimeout,
    TimeoutFired,
    TimeoutKind,
    Timeouts,
)
from consensus.evidence import verify_equivocation
from consensus.messages import Proposal, Step, Vote, VoteKind, proposal_sign_bytes
from consensus.simulate import CHAIN_ID, apply_decided
from consensus.validators import verify_certificate
from tests.consensus_helpers import (
    KEYS,
    PUB,
    Harness,
    W,
    block,
    commits,
    decided_chain,
    precommits,
    prevotes,
    propose,
    sent_votes,
    vote,
)


def test_commits_with_a_certificate_anyone_can_verify() -> None:
    h = Harness()
    a = block(1)
    assert sent_votes(h.feed(propose(a, 0)), VoteKind.PREVOTE) == [a.hash]
    assert sent_votes(h.feed(*prevotes([1, 2], 0, a.hash)), VoteKind.PRECOMMIT) == [a.hash]
    actions = h.feed(*precommits([1, 2], 0, a.hash))
    [commit] = commits(actions)
    assert commit.block == a and commit.cert.block_hash == a.hash
    verify_certificate(commit.cert, W.validators, CHAIN_ID)
    assert [i for i, _ in commit.cert.signatures] == [0, 1, 2]
    assert ScheduleTimeout(TimeoutFired(TimeoutKind.COMMIT, 1, 0), 0) in actions
    assert h.engine.step is Step.COMMIT


def test_locked_validator_prevotes_nil_for_new_value_and_relocks_on_polka_in_next_round() -> None:
    h = Harness()
    a, b = block(1), block(2, round=1)
    h.feed(propose(a, 0), *prevotes([1, 2], 0, a.hash))  # polka for A: we lock on A in round 0
    assert h.engine.locked_round == 0
    h.feed(*precommits([1, 2], 0, None))
    h.fire(TimeoutKind.PRECOMMIT, 0)
    assert h.engine.round == 1
    # Line 22-23: a fresh proposal of another value gets nil from a locked validator.
    assert sent_votes(h.feed(propose(b, 1)), VoteKind.PREVOTE) == [None]
    # Line 36: a polka for B in round 1 moves the lock to B and we precommit B.
    actions = h.feed(*prevotes([1, 2, 3], 1, b.hash))
    assert sent_votes(actions, VoteKind.PRECOMMIT) == [b.hash]
    assert h.engine.locked_round == 1
    # Line 29: a re-proposal of A with a POL older than our lock gets nil.
    h.feed(*precommits([1, 2], 1, None))
    h.fire(TimeoutKind.PRECOMMIT, 1)
    assert sent_votes(h.feed(propose(a, 2, pol_round=0)), VoteKind.PREVOTE) == [None]


def test_locked_validator_accepts_reproposal_justified_by_a_newer_polka() -> None:
    h = Harness()
    a, b = block(1), block(2, round=1)
    h.feed(propose(a, 0), *prevotes([1, 2], 0, a.hash))
    assert h.engine.locked_round == 0
    h.feed(*precommits([1, 2], 0, None))
    h.fire(TimeoutKind.PRECOMMIT, 0)
    # Round 1: B's proposal never reaches us; the others form a polka for B.
    h.fire(TimeoutKind.PROPOSE, 1)
    h.feed(*prevotes([1, 2, 3], 1, b.hash))
    assert h.engine.locked_round == 0  # no block, so no relock
    h.feed(*precommits([1, 2], 1, None))
    h.fire(TimeoutKind.PRECOMMIT, 1)
    # Round 2: B re-proposed with POL round 1 >= our locked round 0: line 29 says prevote B.
    assert sent_votes(h.feed(propose(b, 2, pol_round=1)), VoteKind.PREVOTE) == [b.hash]


def test_reproposal_waits_for_its_polka() -> None:
    h = Harness()
    b = block(2, round=1)
    h.fire(TimeoutKind.PROPOSE, 0)
    h.feed(*precommits([1, 2], 0, None))
    h.fire(TimeoutKind.PRECOMMIT, 0)
    h.fire(TimeoutKind.PROPOSE, 1)
    h.feed(*precommits([1, 2], 1, None))
    h.fire(TimeoutKind.PRECOMMIT, 1)
    assert sent_votes(h.feed(propose(b, 2, pol_round=1)), VoteKind.PREVOTE) == []
    actions = h.feed(*prevotes([1, 2, 3], 1, b.hash))  # the POL arrives: line 28 fires
    assert sent_votes(actions, VoteKind.PREVOTE) == [b.hash]


def test_equivocating_proposer_gets_one_prevote_and_is_caught() -> None:
    h = Harness()
    a, a2 = block(1), block(1, time_offset=1)
    assert a.hash != a2.hash
    actions = h.feed(propose(a, 0), propose(a2, 0))
    assert sent_votes(actions, VoteKind.PREVOTE) == [a.hash]
    [ev] = h.engine.evidence
    assert (ev.validator, ev.kind, ev.height, ev.round) == (PUB[1], "proposal", 1, 0)
    verify_equivocation(ev, W.validators, CHAIN_ID)
    # The other block wins the polka: we precommit it (line 36 does not ask what we prevoted).
    assert sent_votes(h.feed(*prevotes([1, 2, 3], 0, a2.hash)), VoteKind.PRECOMMIT) == [a2.hash]
    [commit] = commits(h.feed(*precommits([1, 2], 0, a2.hash)))
    assert commit.block == a2


def test_double_vote_is_kept_as_evidence_and_counted_for_each_value() -> None:
    h = Harness()
    a, a2 = block(1), block(1, time_offset=1)
    h.feed(propose(a, 0))
    h.feed(vote(2, VoteKind.PREVOTE, 0, a.hash), vote(2, VoteKind.PREVOTE, 0, a2.hash))
    [ev] = h.engine.evidence
    assert (ev.validator, ev.kind) == (PUB[2], "prevote")
    verify_equivocation(ev, W.validators, CHAIN_ID)
    assert h.engine.voters(VoteKind.PREVOTE) == (PUB[0], PUB[2])
    # Validator 2's prevote for A still counts: with ours and 3's that is a polka.
    assert sent_votes(h.feed(vote(3, VoteKind.PREVOTE, 0, a.hash)), VoteKind.PRECOMMIT) == [a.hash]


def test_votes_before_the_proposal_decide_when_it_arrives() -> None:
    h = Harness()
    a = block(1)
    early = h.feed(*prevotes([1, 2, 3], 0, a.hash), *precommits([1, 2, 3], 0, a.hash))
    assert not any(isinstance(x, Broadcast | Commit) for x in early)
    actions = h.feed(propose(a, 0))
    [commit] = commits(actions)
    assert commit.block == a
    assert [i for i, _ in commit.cert.signatures] == [1, 2, 3]


def test_prevotes_before_the_proposal_lead_to_a_precommit_when_it_arrives() -> None:
    h = Harness()
    a = block(1)
    h.feed(*prevotes([1, 2], 0, a.hash))
    actions = h.feed(propose(a, 0))
    assert sent_votes(actions, VoteKind.PREVOTE) == [a.hash]
    assert sent_votes(actions, VoteKind.PRECOMMIT) == [a.hash]


def test_invalid_block_gets_a_nil_prevote() -> None:
    h = Harness()
    a = block(1)
    bad = replace(a, header=replace(a.header, state_root=bytes(32)))
    assert sent_votes(h.feed(propose(bad, 0)), VoteKind.PREVOTE) == [None]


def test_proposal_from_the_wrong_proposer_is_ignored() -> None:
    h = Harness()
    a = block(2)
    sig = KEYS[2].sign(proposal_sign_bytes(CHAIN_ID, 1, 0, a.hash, -1)).signature
    assert h.feed(Proposal(1, 0, a, -1, PUB[2], sig)) == []


def test_f_plus_one_messages_of_a_higher_round_skip_to_it() -> None:
    h = Harness()
    h.feed(vote(1, VoteKind.PREVOTE, 5, None))
    assert h.engine.round == 0  # f = 1 validator could be lying
    h.feed(vote(2, VoteKind.PRECOMMIT, 5, None))
    assert h.engine.round == 5


def test_timeouts_grow_with_the_round() -> None:
    h = Harness()
    assert ScheduleTimeout(TimeoutFired(TimeoutKind.PROPOSE, 1, 0), 1000) in h.started
    actions = h.feed(*prevotes([1, 2], 2, None))  # skip to round 2
    assert ScheduleTimeout(TimeoutFired(TimeoutKind.PROPOSE, 1, 2), 1000 + 500 * 2) in actions
    actions = h.fire(TimeoutKind.PROPOSE, 2)  # our prevote is the third one of round 2
    assert ScheduleTimeout(TimeoutFired(TimeoutKind.PREVOTE, 1, 2), 500 + 250 * 2) in actions
    assert Timeouts().delay(TimeoutKind.PRECOMMIT, 4) == 500 + 250 * 4


def test_resend_timer_rebroadcasts_own_votes_and_reschedules() -> None:
    h = Harness()
    a = block(1)
    [prevote] = [x.message for x in h.feed(propose(a, 0)) if isinstance(x, Broadcast)]
    actions = h.fire(TimeoutKind.RESEND, 0)
    assert [x.message for x in actions if isinstance(x, Broadcast)] == [prevote]
    assert ScheduleTimeout(TimeoutFired(TimeoutKind.RESEND, 1, 0), 500) in actions


def test_resend_timer_starts_afresh_with_each_height() -> None:
    """A tick at a fixed pace re-sent every other proposal under load (a proposal carries
    its block): a height decided within one interval resends nothing."""
    h = Harness()
    assert ScheduleTimeout(TimeoutFired(TimeoutKind.RESEND, 1, 0), 500) in h.started
    a = block(1)
    h.feed(propose(a, 0), *prevotes([1, 2], 0, a.hash), *precommits([1, 2], 0, a.hash))
    actions = h.fire(TimeoutKind.COMMIT, 0)
    assert h.engine.height == 2
    assert ScheduleTimeout(TimeoutFired(TimeoutKind.RESEND, 2, 0), 500) in actions
    # Height 1's tick lapses: nothing resent, nothing rescheduled.
    assert h.fire(TimeoutKind.RESEND, 0) == []
    resent = h.fire(TimeoutKind.RESEND, 0, height=2)
    assert ScheduleTimeout(TimeoutFired(TimeoutKind.RESEND, 2, 0), 500) in resent
    assert [x.message for x in resent if isinstance(x, Broadcast)][-1].height == 1  # our precommit


def test_messages_two_heights_ahead_request_sync() -> None:
    h = Harness()
    assert h.feed(vote(1, VoteKind.PREVOTE, 0, None, height=3)) == [RequestSync(1)]
    assert h.feed(vote(2, VoteKind.PREVOTE, 0, None, height=3)) == []  # asked once per height
    # Next height's messages are kept for later; the resend tick asks for the block.
    h.feed(vote(1, VoteKind.PREVOTE, 0, None, height=2))
    assert RequestSync(1) in h.fire(TimeoutKind.RESEND, 0)


def test_commit_received_catches_up_and_waits_for_the_commit_timeout() -> None:
    chain = decided_chain(3)
    (b1, c1), (b2, c2), (b3, c3) = chain
    h = Harness()
    forged = CommitCertificate(1, c1.round, b1.hash, c1.signatures[:2])  # below quorum
    assert h.engine.handle(CommitReceived(b1, forged)) == []
    actions = h.engine.handle(CommitReceived(b1, c1))
    assert commits(actions) == [Commit(b1, c1)]
    apply_decided(h.app, b1)  # the caller carries out the Commit before the next event
    # Blocks 2 and 3 arrive before the commit timeout: nothing happens yet.
    assert h.engine.handle(CommitReceived(b2, c2)) == []
    assert h.engine.handle(CommitReceived(b3, c3)) == []
    assert h.engine.height == 1
    actions = h.fire(TimeoutKind.COMMIT, 0)
    assert commits(actions) == [Commit(b2, c2)] and h.engine.height == 2
    apply_decided(h.app, b2)
    assert commits(h.fire(TimeoutKind.COMMIT, 0, height=2)) == [Commit(b3, c3)]


def test_next_height_is_not_touched_before_the_commit_is_applied() -> None:
    chain = decided_chain(2)
    (b1, c1), (b2, _) = chain
    h = Harness()
    h.engine.handle(CommitReceived(b1, c1))
    apply_decided(h.app, b1)
    # The proposer of height 2 round 0 is validator 2; its proposal arrives early.
    assert b2.header.round == 0
    assert (
        h.feed(propose(b2, 0, height=2)) == []
    )  # buffered: the state may not have applied block 1 yet
    actions = h.fire(TimeoutKind.COMMIT, 0)
    assert h.engine.height == 2
    prevoted = [
        x.message.block_hash
        for x in actions
        if isinstance(x, Broadcast) and isinstance(x.message, Vote) and x.message.height == 2
    ]
    assert prevoted == [b2.hash]


def test_a_block_once_judged_untimely_is_still_committed_when_decided() -> None:
    """Time is a prevote condition only (line 23, as proposer-based timestamps make it),
    never part of valid(v): a node whose clock runs behind, or which judged a block too
    far ahead once, must still commit it on 2f+1 precommits (line 49) or with a valid
    certificate from sync. Caching the time verdict with valid(v) left such a node stuck
    at that height for good."""
    early = block(1, time_offset=10_500)  # 10.5 s ahead of the harness clock
    h = Harness()
    assert sent_votes(h.feed(propose(early, 0)), VoteKind.PREVOTE) == [None]
    [commit] = commits(h.feed(*precommits([1, 2, 3], 0, early.hash)))
    assert commit.block == early
    verify_certificate(commit.cert, W.validators, CHAIN_ID)

    synced = Harness()
    assert sent_votes(synced.feed(propose(early, 0)), VoteKind.PREVOTE) == [None]
    assert commits(synced.engine.handle(CommitReceived(early, commit.cert))) == [commit]


def test_a_polka_for_a_block_judged_untimely_still_gets_our_precommit() -> None:
    """Line 36 asks valid(v), not timely(v): 2f+1 prevotes mean f+1 honest validators
    found the block timely, and locking on it keeps the round able to decide."""
    early = block(1, time_offset=10_500)
    h = Harness()
    h.feed(propose(early, 0))
    actions = h.feed(*prevotes([1, 2, 3], 0, early.hash))
    assert sent_votes(actions, VoteKind.PRECOMMIT) == [early.hash]
    assert h.engine.locked_round == 0


def signed_proposal(who: int, b: Block, round: int, height: int) -> Proposal:
    """A proposal signed by ``who``, whether or not it is the round's proposer."""
    sig = KEYS[who].sign(proposal_sign_bytes(CHAIN_ID, height, round, b.hash, -1)).signature
    return Proposal(height, round, b, -1, PUB[who], sig)


def variants(b: Block, count: int) -> list[Block]:
    """``count`` distinct blocks (of no validity) shaped like ``b``."""
    return [
        replace(b, header=replace(b.header, time_ms=b.header.time_ms + i)) for i in range(count)
    ]


def test_only_the_next_heights_proposer_gets_a_few_proposals_buffered() -> None:
    """A byzantine validator used to fill the next-height buffer with full blocks of any
    proposer (2,000 of them, ~5 GB). Only the proposer of (h+1, r), for the first rounds,
    may have proposals buffered, MAX_PROPOSALS_PER_ROUND per round."""
    [(b1, c1), (b2, _)] = decided_chain(2)
    h = Harness()
    h.engine.handle(CommitReceived(b1, c1))  # the others are at height 2 already
    assert W.validators.proposer(2, 0) == PUB[2]
    h.feed(*[signed_proposal(3, b, 0, height=2) for b in variants(b2, 50)])  # not its turn
    h.feed(*[signed_proposal(2, b, 0, height=2) for b in variants(b2, 50)])  # equivocating
    h.feed(*[signed_proposal(2, b, 1_000, height=2) for b in variants(b2, 5)])  # far round
    held = h.engine.retained()
    assert held.next_height_proposals == MAX_PROPOSALS_PER_ROUND and held.blocks == 0


def test_messages_far_ahead_in_rounds_keep_one_integer_per_validator() -> None:
    """Up to 4 blocks per round for every round up to 1,000 ahead used to be kept. Beyond
    ROUND_WINDOW only each sender's highest round is, and that still lets f+1 validators
    far ahead pull us there (line 55)."""
    h = Harness()
    a = block(1)
    far = [r for r in range(ROUND_WINDOW + 1, 400) if W.validators.proposer(1, r) == PUB[3]]
    h.feed(*[signed_proposal(3, b, r, height=1) for r in far for b in variants(a, 4)])
    held = h.engine.retained()
    assert (held.blocks, held.far_rounds, h.engine.round) == (0, 1, 0)  # f = 1 could be lying
    h.feed(vote(2, VoteKind.PREVOTE, 700, None))
    assert h.engine.round == max(far)  # f+1 validators (2 and 3) are there or later


def test_evidence_is_one_record_per_validator_height_and_kind_without_blocks() -> None:
    """An equivocator used to leave a record per round and kind (1,000 per height seen),
    each proposal record with two full blocks."""
    h = Harness()
    a, a2 = block(1), block(1, time_offset=1)
    h.feed(propose(a, 0), propose(a2, 0))
    for r in range(ROUND_WINDOW + 1):
        for kind in (VoteKind.PREVOTE, VoteKind.PRECOMMIT):
            h.feed(vote(2, kind, r, a.hash), vote(2, kind, r, None))
    kinds = sorted((W.validators.index(e.validator), e.kind) for e in h.engine.evidence)
    assert kinds == [(1, "proposal"), (2, "precommit"), (2, "prevote")]
    [proposal_ev] = [e for e in h.engine.evidence if e.kind == "proposal"]
    assert proposal_ev.first.block.txs == () and proposal_ev.second.block.txs == ()
    for ev in h.engine.evidence:
        verify_equivocation(ev, W.validators, CHAIN_ID)


def test_a_lone_claim_of_a_far_height_stops_costing_sync_requests() -> None:
    """One vote at height 2**63-1 made every node ask for sync on every resend tick for
    ever. A claim of one validator is believed for AHEAD_TICKS ticks per height; claims
    of f+1 validators (one of them honest) for as long as they hold."""
    h = Harness()
    actions = h.feed(vote(3, VoteKind.PREVOTE, 0, None, height=2**63 - 1))
    for _ in range(AHEAD_TICKS + 10):
        actions += h.fire(TimeoutKind.RESEND, 0)
    assert actions.count(RequestSync(1)) == 1 + AHEAD_TICKS

    h.feed(vote(2, VoteKind.PREVOTE, 0, None, height=3))  # now f+1 validators claim more
    asked = [RequestSync(1) in h.fire(TimeoutKind.RESEND, 0) for _ in range(AHEAD_TICKS + 10)]
    assert all(asked)
