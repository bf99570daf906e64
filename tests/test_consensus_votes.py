"""Vote counting (``consensus/votes.py``): per value from distinct validators, an
equivocator counted for each value it signed, and memory bounded without breaking that."""

from __future__ import annotations

from consensus.events import TimeoutKind
from consensus.messages import VoteKind
from consensus.votes import MAX_VALUES_PER_VALIDATOR, HeightVoteSet
from tests.consensus_helpers import (
    PUB,
    Harness,
    W,
    block,
    precommits,
    prevotes,
    propose,
    sent_votes,
    vote,
)


def test_equivocators_vote_in_a_relayed_proof_of_lock_counts_past_the_memory_bound() -> None:
    """The POL of a re-proposal may include a byzantine prevote. An equivocator that first
    shows a validator three other values in that slot used to hit MAX_VALUES_PER_VALIDATOR
    there, so its vote in the relayed POL was dropped and line 28 never fired. Found by a
    fuzz run (1 byzantine of 4 sending extra signed votes for random values, 35 % loss,
    crashes) that stayed at height 2 for 400 s after healing: two honest validators were
    locked on a block whose POL needed that vote, and the third was offered only POLs
    that did not add up for it. A vote for a value f+1 validators voted for (so one
    honest) is bounded anyway, and must count as Algorithm 1 counts it."""
    h = Harness()
    a = block(1)  # built by the proposer of round 0; re-proposed in round 1 by validator 2
    h.fire(TimeoutKind.PROPOSE, 0)  # we never got A in round 0: prevote nil
    junk = [bytes([i]) * 32 for i in (1, 2, 3)]
    h.feed(*[vote(3, VoteKind.PREVOTE, 0, x) for x in junk])  # validator 3 equivocates
    h.feed(*prevotes([1, 2, 3], 0, a.hash))  # the polka for A, as the proposer relays it
    h.fire(TimeoutKind.PREVOTE, 0)
    h.feed(*precommits([1, 2], 0, None))
    h.fire(TimeoutKind.PRECOMMIT, 0)
    assert h.engine.round == 1
    actions = h.feed(propose(a, 1, pol_round=0))
    assert sent_votes(actions, VoteKind.PREVOTE) == [a.hash]  # line 28-30


def test_quorum_questions_count_distinct_validators_per_value() -> None:
    votes = HeightVoteSet(W.validators)
    a, b = bytes([0xA]) * 32, bytes([0xB]) * 32
    for v in prevotes([0, 1], 0, a) + prevotes([2], 0, None):
        assert votes.add(v) == (True, None)
    round0 = votes.prevotes(0)
    assert round0.has_two_thirds_any() and round0.two_thirds_majority() is None
    assert round0.voters() == [0, 1, 2]
    assert votes.add(prevotes([1], 0, a)[0]) == (False, None)  # a duplicate counts once
    votes.add(prevotes([3], 0, a)[0])
    assert round0.two_thirds_majority() == a and round0.has_two_thirds_for(a)
    assert [v.validator for v in round0.votes_for(a)] == [PUB[0], PUB[1], PUB[3]]
    assert not votes.prevotes(1).has_two_thirds_any()  # an unseen round is empty
    assert votes.precommits(0).voters() == []
    # An equivocator's second value counts too, and its first vote comes back as evidence.
    counted, prior = votes.add(prevotes([3], 0, b)[0])
    assert counted and prior is not None and prior.block_hash == a
    assert round0.count(b) == 1 and round0.count(a) == 3


def test_precommit_quorum_rounds_and_the_round_to_skip_to() -> None:
    votes = HeightVoteSet(W.validators)
    a = bytes([0xA]) * 32
    for v in precommits([0, 1, 2], 2, a):
        votes.add(v)
    assert votes.precommit_quorum_rounds == [2]
    votes.add(precommits([3], 2, a)[0])
    assert votes.precommit_quorum_rounds == [2]  # noted once, when the quorum is reached
    assert votes.highest_round_with_f_plus_one_above(0) == 2
    assert votes.highest_round_with_f_plus_one_above(2) is None
    votes.add_sender(5, 1)  # a proposal counts as a message of its round (line 55)
    assert votes.highest_round_with_f_plus_one_above(2) is None  # f = 1 could be lying
    votes.add(prevotes([2], 5, None)[0])
    assert votes.highest_round_with_f_plus_one_above(2) == 5


def test_an_equivocators_values_beyond_the_bound_are_dropped_unless_f_plus_one_back_them() -> None:
    votes = HeightVoteSet(W.validators)
    values = [bytes([i]) * 32 for i in range(MAX_VALUES_PER_VALIDATOR + 1)]
    for value in values[:MAX_VALUES_PER_VALIDATOR]:
        assert votes.add(prevotes([3], 0, value)[0])[0]
    extra = prevotes([3], 0, values[-1])[0]
    counted, prior = votes.add(extra)
    assert not counted and prior is not None  # dropped, still evidence
    votes.add(prevotes([0], 0, values[-1])[0])
    votes.add(prevotes([1], 0, values[-1])[0])  # f+1 = 2 validators: one honest
    assert votes.add(extra)[0] and votes.prevotes(0).has_two_thirds_for(values[-1])
