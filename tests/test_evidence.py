"""Evidence on the chain: a proof of equivocation is encoded small, travels in blocks, and
every validator checks each one before it prevotes; a proof is committed once, while
recent, and then leaves the pool."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from chain.block import Block, CommitCertificate, evidence_hash
from chain.errors import InvalidBlock
from chain.state import build_block, execute_block
from chain.store import Store
from consensus.events import ReportEvidence
from consensus.evidence import (
    MAX_EVIDENCE_AGE,
    Equivocation,
    EvidencePool,
    InvalidEvidence,
    decode_evidence,
    detect,
    encode_evidence,
)
from consensus.ledger_app import LedgerApp
from consensus.messages import VoteKind, vote_sign_bytes
from consensus.simulate import CHAIN_ID, GENESIS_TIME_MS, apply_decided, sim_app
from tests.consensus_helpers import (
    PUB,
    Harness,
    W,
    block,
    decided_chain,
    propose,
    sent_votes,
    vote,
)

CHAIN = decided_chain(3)


def double_prevote(who: int, height: int = 1, round: int = 0) -> Equivocation:
    first = vote(who, VoteKind.PREVOTE, round, bytes(32), height)
    second = vote(who, VoteKind.PREVOTE, round, None, height)
    ev = detect(first, second)
    assert ev is not None
    return ev


def double_proposal() -> Equivocation:
    ev = detect(propose(block(1), 0), propose(block(1, time_offset=1), 0))
    assert ev is not None
    return ev


def app_at(height: int, proposer: int = 0) -> LedgerApp:
    """A validator's app with blocks 1..height of ``CHAIN`` committed."""
    app = sim_app(W, PUB[proposer], lambda: GENESIS_TIME_MS + 9_000)
    for b, _ in CHAIN[:height]:
        apply_decided(app, b)
    return app


def with_evidence(b: Block, *proofs: bytes) -> Block:
    """``b`` carrying other evidence, its header kept consistent (only the evidence and
    so the hash differ)."""
    header = replace(b.header, evidence_hash=evidence_hash(proofs))
    return Block(header, b.txs, b.last_cert, proofs)


def next_block(app: LedgerApp, *proofs: bytes) -> Block:
    """The next block on ``app``'s state, carrying ``proofs`` (its parent's certificate is
    a stand-in: the app's rules do not read its signatures, the engine's do)."""
    state = app.state
    parent = CommitCertificate(state.height, 0, state.last_hash, ())
    proposer = W.validators.proposer(state.height + 1, 0)
    return build_block(
        state, [], round=0, proposer=proposer, time_ms=state.last_time_ms + 1,
        last_cert=parent, max_txs=1, evidence=proofs,
    ).block  # fmt: skip


# -- the proof's bytes ---------------------------------------------------------------------


def test_a_proof_round_trips_small_and_proposals_keep_their_header_only() -> None:
    for ev in (double_prevote(2), double_proposal().without_blocks()):
        data = encode_evidence(ev)
        assert decode_evidence(data) == ev and len(data) < 1_400
    ev = double_proposal()
    assert decode_evidence(encode_evidence(ev)) == ev.without_blocks()


@pytest.mark.parametrize(
    "data",
    [b"", b"\x92\xc0\xc0", b"\x91\x90", b"\xdd\xff\xff\xff\xff", b"\x92" + b"\x97" + b"\x03" * 7],
)
def test_garbage_is_no_proof(data: bytes) -> None:
    with pytest.raises(InvalidEvidence):
        decode_evidence(data)


def test_two_identical_messages_are_no_proof() -> None:
    same = vote(2, VoteKind.PREVOTE, 0, None)
    data = encode_evidence(Equivocation(PUB[2], 1, 0, "prevote", same, same))
    with pytest.raises(InvalidEvidence, match="not a conflict"):
        decode_evidence(data)


# -- the rule every validator applies before it prevotes -----------------------------------


def test_good_evidence_makes_a_valid_block_and_is_committed_once() -> None:
    proof = encode_evidence(double_prevote(2, height=1))
    app = app_at(1)
    b = next_block(app, proof)
    app.validate_block(b)
    apply_decided(app, b)
    assert app.evidence.height == 2
    again = next_block(app, proof)
    with pytest.raises(InvalidBlock, match="evidence 0 was committed at height 2"):
        app.validate_block(again)


def test_evidence_that_does_not_verify_makes_the_block_invalid() -> None:
    ev = double_prevote(2)
    forged = replace(ev, second=replace(ev.second, signature=ev.first.signature))
    outsider = SigningKey(bytes(32))
    by_outsider = [
        replace(m, validator=bytes(outsider.verify_key), signature=outsider.sign(
            vote_sign_bytes(CHAIN_ID, m.kind, m.height, m.round, m.block_hash)).signature)
        for m in (ev.first, ev.second)
    ]  # fmt: skip
    app = app_at(1)
    for bad in (forged, detect(*by_outsider)):
        with pytest.raises(InvalidBlock, match="evidence 0 proves nothing"):
            app.validate_block(next_block(app, encode_evidence(bad)))
    with pytest.raises(InvalidBlock, match="evidence 0 proves nothing"):
        app.validate_block(next_block(app, b"not a proof"))


def test_two_proofs_of_one_fault_in_a_block_make_it_invalid() -> None:
    app = app_at(1)
    one = encode_evidence(double_prevote(2, round=0))
    other = encode_evidence(double_prevote(2, round=1))  # same validator, height and kind
    with pytest.raises(InvalidBlock, match="evidence 1 accuses what another proof does"):
        app.validate_block(next_block(app, one, other))
    app.validate_block(next_block(app, one, encode_evidence(double_prevote(3))))


def test_stale_or_future_evidence_makes_the_block_invalid() -> None:
    pool = EvidencePool(W.validators, CHAIN_ID)
    old = encode_evidence(double_prevote(2, height=1))
    pool.check(MAX_EVIDENCE_AGE + 1, [old])
    with pytest.raises(InvalidBlock, match=rf"outside 2\.\.{MAX_EVIDENCE_AGE + 2}"):
        pool.check(MAX_EVIDENCE_AGE + 2, [old])
    app = app_at(1)
    with pytest.raises(InvalidBlock, match=r"outside 1\.\.2"):
        app.validate_block(next_block(app, encode_evidence(double_prevote(2, height=3))))


def test_a_refused_block_is_not_prevoted() -> None:
    """The engine asks valid(v), which asks the evidence rule: a fresh proposal with a
    forged proof gets a nil prevote."""
    h = Harness()
    ev = double_prevote(2)
    forged = encode_evidence(replace(ev, second=replace(ev.second, signature=bytes(64))))
    bad = with_evidence(block(1), forged)
    actions = h.feed(propose(bad, 0))
    assert sent_votes(actions, VoteKind.PREVOTE) == [None]


# -- the pool ------------------------------------------------------------------------------


def test_the_proposer_includes_pending_evidence_and_forgets_it_once_committed() -> None:
    app = app_at(1, proposer=2)
    ev = double_prevote(3, height=1)
    assert app.evidence.add(ev) and not app.evidence.add(ev)
    built = app.build_block(2, 0, CHAIN[0][1])
    assert built.evidence == (encode_evidence(ev),)
    app.validate_block(built)
    apply_decided(app, built)
    stand_in = CommitCertificate(2, 0, built.hash, ())
    assert not app.evidence.pending() and app.build_block(3, 0, stand_in).evidence == ()
    assert not app.evidence.add(ev)  # committed: never proposed again


def test_a_peers_proof_is_verified_before_it_is_kept() -> None:
    pool = EvidencePool(W.validators, CHAIN_ID)
    ev = double_prevote(2)
    forged = replace(ev, second=replace(ev.second, signature=bytes(64)))
    with pytest.raises(InvalidEvidence):
        pool.receive(encode_evidence(forged))
    assert not pool.pending()
    assert pool.receive(encode_evidence(ev)) == ev
    assert pool.receive(encode_evidence(ev)) is None and pool.pending() == [ev]


def test_pending_evidence_too_old_to_commit_is_dropped() -> None:
    pool = EvidencePool(W.validators, CHAIN_ID)
    assert pool.add(double_prevote(2, height=1))
    pool.update(MAX_EVIDENCE_AGE, [])
    assert len(pool) == 1
    pool.update(MAX_EVIDENCE_AGE + 1, [])
    assert len(pool) == 0 and not pool.add(double_prevote(3, height=1))


def test_the_engine_reports_each_fault_once() -> None:
    h = Harness()
    a, a2 = block(1), block(1, time_offset=1)
    actions = h.feed(propose(a, 0), propose(a2, 0))
    actions += h.feed(vote(2, VoteKind.PREVOTE, 0, a.hash), vote(2, VoteKind.PREVOTE, 0, None))
    actions += h.feed(vote(2, VoteKind.PREVOTE, 0, a2.hash))
    reported = [a.evidence.key for a in actions if isinstance(a, ReportEvidence)]
    assert reported == [(PUB[1], 1, "proposal"), (PUB[2], 1, "prevote")]


def test_a_restarted_pool_knows_what_the_stored_blocks_committed(tmp_path: Path) -> None:
    """The rule must not change across a restart: the pool is rebuilt from the store's
    evidence index, and a proof already on the chain stays refused."""
    proof = encode_evidence(double_prevote(2, height=1))
    with Store.open(tmp_path / "db", W.genesis) as store:
        first, cert = CHAIN[0]
        store.commit_block(first, cert, execute_block(store.state, first))
        b = next_block(app_at(1), proof)
        store.commit_block(b, CommitCertificate(2, 0, b.hash, ()), execute_block(store.state, b))
        committed = store.evidence(store.head.height + 1 - MAX_EVIDENCE_AGE)
        pool = EvidencePool.restore(W.validators, CHAIN_ID, store.head.height, committed)
    assert pool.height == 2 and not pool.add(double_prevote(2, height=1))
    with pytest.raises(InvalidBlock, match="committed at height 2"):
        pool.check(3, [proof])
    pool.check(3, [encode_evidence(double_prevote(3, height=1))])
