"""Consensus messages, the validator set and commit certificates."""

from __future__ import annotations

import contextlib
import tracemalloc
from dataclasses import replace

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.block import CommitCertificate
from consensus.evidence import InvalidEvidence, detect, verify_equivocation
from consensus.messages import (
    MAX_MESSAGE_BYTES,
    BadMessage,
    Proposal,
    Vote,
    VoteKind,
    decode_message,
    encode_message,
    proposal_sign_bytes,
)
from consensus.simulate import CHAIN_ID, GENESIS_TIME_MS, sim_app, world
from consensus.validators import (
    InvalidCertificate,
    ValidatorSet,
    verify_certificate,
    verify_message,
)
from tests.consensus_helpers import KEYS, PUB, W, vote

BLOCK = sim_app(W, PUB[1], lambda: GENESIS_TIME_MS + 1).build_block(1, 0, None)


def proposal(block=BLOCK, pol_round: int = -1, round: int = 1) -> Proposal:
    sig = KEYS[1].sign(proposal_sign_bytes(CHAIN_ID, 1, round, block.hash, pol_round)).signature
    return Proposal(1, round, block, pol_round, PUB[1], sig)


def cert(signers: list[int], block_hash: bytes = BLOCK.hash) -> CommitCertificate:
    sigs = tuple((i, vote(i, VoteKind.PRECOMMIT, 0, block_hash).signature) for i in signers)
    return CommitCertificate(1, 0, block_hash, sigs)


def test_messages_round_trip_through_wire_bytes() -> None:
    for msg in (proposal(), proposal(pol_round=0), vote(2, VoteKind.PREVOTE, 0, None)):
        assert decode_message(encode_message(msg)) == msg
        verify_message(msg, W.validators, CHAIN_ID)
    assert decode_message(encode_message(vote(3, VoteKind.PRECOMMIT, 0, BLOCK.hash))).block_hash


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_bytes_raise_bad_message_only(data: bytes) -> None:
    with contextlib.suppress(BadMessage):  # and no other exception
        decode_message(data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_messages_raise_bad_message_or_fail_verification(data: st.DataObject) -> None:
    original = data.draw(st.sampled_from([proposal(), vote(2, VoteKind.PREVOTE, 0, BLOCK.hash)]))
    raw = bytearray(encode_message(original))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        msg = decode_message(bytes(raw))
        verify_message(msg, W.validators, CHAIN_ID)
    except BadMessage:
        return
    assert msg == original  # no mutation yields another message that verifies


HOSTILE = st.one_of(
    st.sampled_from([float("inf"), float("nan"), 1e300, 2**63, 2**64 - 1, -(2**63), True, None]),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.binary(max_size=80),
    st.text(max_size=20),
    st.recursive(st.none() | st.integers(-1, 2**64 - 1), lambda inner: st.lists(inner, max_size=3)),
)


def wire_fields(msg: Proposal | Vote) -> list:
    return msgpack.unpackb(encode_message(msg), raw=False)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_structurally_mutated_messages_raise_bad_message_only(data: st.DataObject) -> None:
    """A field swapped for a huge, negative, float, bool, text or nested value, dropped or
    repeated, or (in a proposal) the block's own bytes swapped for a mutated block: the
    message is re-encoded, then decoded and verified as a node does."""
    original = data.draw(
        st.sampled_from(
            [proposal(), proposal(pol_round=0), vote(2, VoteKind.PRECOMMIT, 0, BLOCK.hash)]
        )
    )
    fields = wire_fields(original)
    at = data.draw(st.integers(0, 6))
    action = data.draw(st.sampled_from(["replace", "drop", "repeat", "block"]))
    if action == "replace":
        fields[at] = data.draw(HOSTILE)
    elif action == "drop":
        del fields[at]
    elif action == "repeat":
        fields.insert(at, fields[at])
    elif isinstance(original, Proposal):
        block = msgpack.unpackb(fields[3], raw=False)
        part = data.draw(st.integers(0, 2))
        if isinstance(block[part], list) and block[part]:
            block[part][data.draw(st.integers(0, len(block[part]) - 1))] = data.draw(HOSTILE)
        else:
            block[part] = data.draw(HOSTILE)
        fields[3] = msgpack.packb(block, use_bin_type=True)
    with contextlib.suppress(BadMessage):  # and no other exception
        msg = decode_message(msgpack.packb(fields, use_bin_type=True))
        verify_message(msg, W.validators, CHAIN_ID)
        assert msg == original


@pytest.mark.parametrize(
    "field",
    [
        b"\xdd" + (2_000_000).to_bytes(4, "big") + b"\x90" * 2_000_000,  # 2M empty arrays
        b"\xdd\xff\xff\xff\xff",  # an array header declaring 2**32-1 elements
        b"\xc6" + (4_000_000).to_bytes(4, "big") + bytes(4_000_000),  # a 4 MB bin as a hash
    ],
)
def test_a_hostile_field_is_refused_without_building_its_objects(field: bytes) -> None:
    """Unpacked whole under msgpack's defaults, 2 MB of empty arrays in one field became
    two million lists (~130 MB) before the shape was checked. Now the cost is a copy of
    the input at most, whatever it holds."""
    fields = [
        msgpack.packb(f, use_bin_type=True) for f in wire_fields(vote(2, VoteKind.PREVOTE, 0, None))
    ]
    fields[4] = field
    data = b"\x97" + b"".join(fields)
    tracemalloc.start()
    try:
        with pytest.raises(BadMessage):
            decode_message(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * len(data) + 1_000_000


def test_a_message_over_the_largest_legal_one_is_refused() -> None:
    """The limit is a proposal of the largest block, not the 16 MiB of a p2p frame."""
    assert MAX_MESSAGE_BYTES < 11_000_000
    oversized = msgpack.packb(
        [2, 1, 1, 0, None, PUB[0], bytes(MAX_MESSAGE_BYTES)], use_bin_type=True
    )
    with pytest.raises(BadMessage, match="at most"):
        decode_message(oversized)


@pytest.mark.parametrize(
    "fields",
    [
        [2, 1, 1, 0, None, PUB[0], b"x" * 64, "extra"],  # 8 fields
        [2, 3, 1, 0, None, PUB[0], b"x" * 64],  # unknown vote kind
        [2, 1, 0, 0, None, PUB[0], b"x" * 64],  # height 0
        [2, 1, 1, -1, None, PUB[0], b"x" * 64],  # negative round
        [2, 1, 1, 0, b"short", PUB[0], b"x" * 64],
        [2, 1, True, 0, None, PUB[0], b"x" * 64],  # bool is not an int here
        [1, 1, 0, BLOCK.encode(), 0, PUB[1], b"x" * 64],  # POL round not below round
        [1, 2, 0, BLOCK.encode(), -1, PUB[1], b"x" * 64],  # block for another height
        [1, 1, 0, b"not a block", -1, PUB[1], b"x" * 64],
        [9, 1, 0, None, -1, PUB[1], b"x" * 64],
    ],
)
def test_malformed_fields_are_rejected(fields: list) -> None:
    with pytest.raises(BadMessage):
        decode_message(msgpack.packb(fields, use_bin_type=True))


def test_verification_binds_chain_signer_and_content() -> None:
    good = vote(2, VoteKind.PREVOTE, 0, BLOCK.hash)
    with pytest.raises(BadMessage, match="signature"):
        verify_message(good, W.validators, "another-chain")
    with pytest.raises(BadMessage, match="signature"):
        verify_message(replace(good, round=1), W.validators, CHAIN_ID)
    with pytest.raises(BadMessage, match="signature"):
        verify_message(replace(good, kind=VoteKind.PRECOMMIT), W.validators, CHAIN_ID)
    with pytest.raises(BadMessage, match="not a validator"):
        verify_message(replace(good, validator=bytes(32)), W.validators, CHAIN_ID)
    with pytest.raises(BadMessage, match="signature"):
        verify_message(replace(proposal(), pol_round=0), W.validators, CHAIN_ID)


def test_validator_set_sizes_quorum_and_rotation() -> None:
    four, seven = ValidatorSet(PUB), ValidatorSet(world(7).validators.pubkeys)
    assert (four.n, four.f, four.quorum) == (4, 1, 3)
    assert (seven.n, seven.f, seven.quorum) == (7, 2, 5)
    assert [four.proposer(1, r) for r in range(5)] == [PUB[1], PUB[2], PUB[3], PUB[0], PUB[1]]
    assert four.proposer(2, 0) == four.proposer(1, 1)
    assert four.index(PUB[3]) == 3 and PUB[3] in four and bytes(32) not in four
    with pytest.raises(KeyError):
        four.index(bytes(32))
    with pytest.raises(ValueError):
        ValidatorSet([PUB[0], PUB[0]])


def test_certificate_with_a_quorum_of_precommits_verifies() -> None:
    verify_certificate(cert([0, 1, 2]), W.validators, CHAIN_ID)
    verify_certificate(cert([0, 1, 2, 3]), W.validators, CHAIN_ID)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (cert([0, 1]), "2 precommits; 3 of 4 needed"),
        (replace(cert([0, 1]), signatures=cert([0, 1, 1]).signatures), "twice"),
        (replace(cert([0, 1, 2]), block_hash=bytes(32)), "does not verify"),
        (replace(cert([0, 1, 2]), round=1), "does not verify"),
        (replace(cert([0, 1, 2]), signatures=((0, b"x" * 64), *cert([1, 2, 3]).signatures)), "0"),
        (replace(cert([1, 2, 3]), signatures=((7, b"x" * 64), *cert([1, 2]).signatures)), "range"),
    ],
)
def test_bad_certificates_are_rejected(bad: CommitCertificate, reason: str) -> None:
    with pytest.raises(InvalidCertificate, match=reason):
        verify_certificate(bad, W.validators, CHAIN_ID)


def test_prevote_signatures_do_not_make_a_certificate() -> None:
    sigs = tuple((i, vote(i, VoteKind.PREVOTE, 0, BLOCK.hash).signature) for i in (0, 1, 2))
    with pytest.raises(InvalidCertificate):
        verify_certificate(CommitCertificate(1, 0, BLOCK.hash, sigs), W.validators, CHAIN_ID)


def test_equivocation_evidence_proves_a_double_vote_and_nothing_else() -> None:
    first, second = vote(2, VoteKind.PREVOTE, 0, BLOCK.hash), vote(2, VoteKind.PREVOTE, 0, None)
    ev = detect(first, second)
    assert ev is not None and ev.kind == "prevote" and ev.validator == PUB[2]
    verify_equivocation(ev, W.validators, CHAIN_ID)
    assert detect(first, first) is None  # a duplicate is no evidence
    assert detect(first, vote(2, VoteKind.PRECOMMIT, 0, None)) is None  # another slot
    assert detect(first, vote(3, VoteKind.PREVOTE, 0, None)) is None  # another validator
    forged = replace(ev, second=replace(second, signature=first.signature))
    with pytest.raises(InvalidEvidence):
        verify_equivocation(forged, W.validators, CHAIN_ID)
    other_block = sim_app(W, PUB[1], lambda: GENESIS_TIME_MS + 2).build_block(1, 0, None)
    double = detect(proposal(), proposal(other_block))
    assert double is not None and double.kind == "proposal"
    verify_equivocation(double, W.validators, CHAIN_ID)
