"""Block validity: ``execute_block`` is the one function that decides it, rule by rule, and
a refused block leaves the state as it was."""

from __future__ import annotations

from dataclasses import replace

import pytest

from chain.block import Block, cert_hash, evidence_hash, tx_root
from chain.codec import MAX_BLOCK_EVIDENCE
from chain.errors import InvalidBlock
from chain.state import State, execute_block
from chain.tx import TxKind, sign_tx
from tests.ledger_helpers import (
    CHAIN_ID,
    USD,
    build_next,
    certificate_for,
    key,
    make_genesis,
    pub,
    view,
)

GENESIS = make_genesis()


def pay(nonce: int, amount: int = 10):
    return sign_tx(key("alice"), TxKind.TRANSFER, CHAIN_ID, nonce, to=pub("carol"), token=USD,
                   amount=amount)  # fmt: skip


def reheader(block: Block, **fields: object) -> Block:
    return Block(replace(block.header, **fields), block.txs, block.last_cert)


def with_txs(block: Block, txs: tuple) -> Block:
    """``block`` holding other txs, its tx root kept consistent (so only the txs differ)."""
    return Block(replace(block.header, tx_root=tx_root(txs)), txs, block.last_cert)


def state_at_height_one() -> State:
    state = State(GENESIS)
    first = build_next(state, [pay(0)])
    state.commit(first.changes, first.block.header)
    return state


def refused(state: State, block: Block) -> str:
    """Execute ``block`` expecting a refusal; the state must be untouched by it."""
    before = (view(state), state.state_root, state.height, state.last_hash, state.last_time_ms)
    with pytest.raises(InvalidBlock) as info:
        execute_block(state, block)
    assert (view(state), state.state_root, state.height, state.last_hash, state.last_time_ms) == (
        before
    )
    return str(info.value)


def test_a_built_block_executes_to_its_root_and_binds_its_changes() -> None:
    state = State(GENESIS)
    built = build_next(state, [pay(0), pay(1)])
    changes = execute_block(state, built.block)
    assert changes.block_hash == built.block.hash == built.changes.block_hash
    assert changes.root_acc().to_bytes(32, "big") == built.block.header.state_root
    state.commit(changes, built.block.header)
    assert state.height == 1 and changes.balance(pub("carol"), USD) == 20


def test_a_block_decodes_reusing_known_txs_and_decoding_the_others() -> None:
    """A node's mempool already decoded most of a proposal's txs: those objects are taken as
    they are (a tx id is the hash of its bytes), the rest are decoded, and a part that is
    not a tx is refused whatever ``known`` holds."""
    held = pay(0)
    block = build_next(State(GENESIS), [held, pay(1)]).block
    decoded = Block.decode(block.encode(), {held.tx_id: held})
    assert decoded == block
    assert decoded.txs[0] is held and decoded.txs[1] is not block.txs[1]
    with pytest.raises(InvalidBlock, match="tx root"):  # the header commits to each tx id
        Block.decode(block.encode(), {pay(1).tx_id: pay(5)})  # so a wrong entry is caught
    garbled = bytearray(block.encode())
    garbled[garbled.index(held.raw) + 3] ^= 0xFF  # the first tx is no longer the held one
    with pytest.raises(InvalidBlock):
        execute_block(State(GENESIS), Block.decode(bytes(garbled), {held.tx_id: held}))


# -- structure: what a block must satisfy on its own ----------------------------------------


def test_evidence_travels_in_the_block_and_the_header_commits_to_it() -> None:
    proofs = (b"proof one", b"proof two")
    block = build_next(State(GENESIS), [pay(0)], evidence=proofs).block
    assert block.evidence == proofs and block.header.evidence_hash == evidence_hash(proofs)
    assert Block.decode(block.encode()) == block
    assert execute_block(State(GENESIS), block).block_hash == block.hash
    swapped = Block(block.header, block.txs, block.last_cert, proofs[::-1])
    assert "evidence hash" in refused(State(GENESIS), swapped)
    assert "evidence hash" in refused(State(GENESIS), Block(block.header, block.txs, None))


def test_a_block_carries_each_evidence_once_and_at_most_the_limit() -> None:
    twice = (b"proof", b"proof")
    block = build_next(State(GENESIS), [], evidence=(b"proof",)).block
    doubled = Block(replace(block.header, evidence_hash=evidence_hash(twice)), (), None, twice)
    assert "same evidence twice" in refused(State(GENESIS), doubled)
    many = tuple(b"%d" % i for i in range(MAX_BLOCK_EVIDENCE + 1))
    crowded = Block(replace(block.header, evidence_hash=evidence_hash(many)), (), None, many)
    assert "at most 32 evidence" in refused(State(GENESIS), crowded)
    with pytest.raises(InvalidBlock, match="at most 32 evidence"):
        Block.decode(crowded.encode())


def test_a_tx_root_that_does_not_match_the_txs_is_refused() -> None:
    block = build_next(State(GENESIS), [pay(0)]).block
    assert "tx root" in refused(State(GENESIS), Block(block.header, (), None))


def test_the_same_tx_twice_is_refused() -> None:
    block = build_next(State(GENESIS), [pay(0)]).block
    assert "same tx twice" in refused(State(GENESIS), with_txs(block, (pay(0), pay(0))))


def test_the_first_block_carries_no_certificate_and_a_zero_parent() -> None:
    block = build_next(State(GENESIS), []).block
    cert = certificate_for(1, bytes(32))
    carrying = Block(replace(block.header, last_cert_hash=cert_hash(cert)), (), cert)
    assert "carry their parent's certificate" in refused(State(GENESIS), carrying)
    assert "parent hash must be zero" in refused(
        State(GENESIS), reheader(block, prev_hash=b"x" * 32)
    )


def test_a_certificate_that_does_not_match_the_header_is_refused() -> None:
    state = state_at_height_one()
    block = build_next(state, []).block
    other = certificate_for(1, b"o" * 32)
    assert "last certificate hash" in refused(state, Block(block.header, (), other))
    swapped = Block(replace(block.header, last_cert_hash=cert_hash(other)), (), other)
    assert "not for the parent block" in refused(state, swapped)


# -- header: what a block must satisfy against its parent ----------------------------------


def test_a_block_for_another_chain_is_refused() -> None:
    block = build_next(State(GENESIS), []).block
    assert "for chain 'depnet-other'" in refused(
        State(GENESIS), reheader(block, chain_id="depnet-other")
    )


def test_a_block_at_another_height_is_refused() -> None:
    state = State(GENESIS)
    first = build_next(state, [pay(0)])
    state.commit(execute_block(state, first.block), first.block.header)
    assert "block height 1, expected 2" in refused(state, first.block)


def test_a_block_that_does_not_extend_the_head_is_refused() -> None:
    state = state_at_height_one()
    block = build_next(state, []).block
    cert = certificate_for(1, b"p" * 32)
    elsewhere = Block(
        replace(block.header, prev_hash=b"p" * 32, last_cert_hash=cert_hash(cert)), (), cert
    )
    assert "does not extend" in refused(state, elsewhere)


@pytest.mark.parametrize("delta_ms", [0, -1])
def test_a_block_not_dated_after_its_parent_is_refused(delta_ms: int) -> None:
    state = state_at_height_one()
    block = build_next(state, []).block
    dated = reheader(block, time_ms=state.last_time_ms + delta_ms)
    assert "not after its parent" in refused(state, dated)


# -- execution: every tx, then the root -----------------------------------------------------


def test_a_tx_that_breaks_a_rule_makes_the_block_invalid() -> None:
    block = build_next(State(GENESIS), [pay(0)]).block
    bad = with_txs(block, (pay(0), pay(5)))
    assert "tx 1" in refused(State(GENESIS), bad) and "bad_nonce" in refused(State(GENESIS), bad)


def test_a_state_root_that_execution_does_not_reach_is_refused() -> None:
    block = build_next(State(GENESIS), [pay(0)]).block
    assert "state root" in refused(State(GENESIS), reheader(block, state_root=b"r" * 32))
