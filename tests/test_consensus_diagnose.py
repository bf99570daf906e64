"""What an engine reports about itself, and the stall reasoning over several reports."""

from __future__ import annotations

from dataclasses import replace

import pytest

from consensus.diagnose import EngineStatus, explain_stall
from consensus.messages import Step, VoteKind
from tests.consensus_helpers import PUB, Harness, W, block, prevotes, propose

NAMES = dict(zip(PUB, ["JPM", "HSBC", "DBS", "BNP"], strict=True))


def status(round: int = 0, prevoters: tuple[int, ...] = (), proposal: bool = False) -> EngineStatus:
    return EngineStatus(
        height=7,
        round=round,
        step=Step.PREVOTE,
        proposer=W.validators.proposer(7, round),
        proposal=bytes(32) if proposal else None,
        prevotes=tuple(PUB[i] for i in prevoters),
        precommits=(),
        quorum=3,
        validators=4,
        locked_round=-1,
        valid_round=-1,
        evidence=0,
    )


def test_engine_status_says_where_it_is_and_round_trips_through_json() -> None:
    h = Harness()
    a = block(1)
    h.feed(propose(a, 0), *prevotes([2], 0, a.hash))
    s = h.engine.status()
    assert (s.height, s.round, s.step, s.proposal) == (1, 0, Step.PREVOTE, a.hash)
    assert s.prevotes == (PUB[0], PUB[2]) and s.precommits == ()
    assert (s.proposer, s.quorum, s.validators) == (PUB[1], 3, 4)
    doc = s.to_json()
    assert doc["step"] == "prevote" and doc["proposer"] == PUB[1].hex()
    assert EngineStatus.from_json(doc) == s
    with pytest.raises(ValueError, match="not an engine status"):
        EngineStatus.from_json(doc | {"round": "0"})
    with pytest.raises(ValueError, match="not an engine status"):
        EngineStatus.from_json({k: v for k, v in doc.items() if k != "prevotes"})


def test_stall_merges_the_lowest_round_at_the_highest_height_and_names_the_silent() -> None:
    behind = replace(status(), height=6)  # a node a height behind tells nothing new
    stall = explain_stall([status(5, (0,)), status(5, (1,)), status(6, (0, 1, 2)), behind], PUB)
    assert (stall.height, stall.round, stall.prevotes) == (7, 5, (PUB[0], PUB[1]))
    assert stall.short is VoteKind.PREVOTE and stall.silent == (PUB[2], PUB[3])
    doc = stall.to_json(NAMES.__getitem__)
    assert doc["summary"] == (
        "stalled at height 7 round 5: prevotes from 2 of 4 banks (DBS, BNP silent); "
        "3 needed; no proposal from JPM, this round's proposer"
    )
    assert (doc["silent"], doc["proposer"], doc["validators"]) == (["DBS", "BNP"], "JPM", 4)


def test_stall_with_a_quorum_of_prevotes_points_at_the_precommits() -> None:
    stall = explain_stall([status(0, (0, 1, 2), proposal=True)], PUB)
    assert stall.short is VoteKind.PRECOMMIT and stall.silent == tuple(PUB)
    summary = stall.to_json(NAMES.__getitem__)["summary"]
    assert summary == "stalled at height 7 round 0: precommits from 0 of 4 banks " + (
        "(JPM, HSBC, DBS, BNP silent); 3 needed"
    )
    full = replace(stall, precommits=tuple(PUB[:3]))
    assert full.short is None and full.silent == ()
    assert "a quorum has voted" in full.to_json(NAMES.__getitem__)["summary"]
