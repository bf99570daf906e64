"""Decoders of bytes a peer or a client can send turn ANY input into their one typed error
(TxRejected for a tx, InvalidBlock for a block or a certificate), within bounded memory.

A property feeds valid encodings mutated structurally (a field swapped for a huge,
negative, float, bool or nested value, dropped or repeated, then re-encoded) and byte by
byte; the regressions pin the inputs that once escaped as OverflowError or MemoryError or
made msgpack allocate hundreds of megabytes.
"""

from __future__ import annotations

import tracemalloc

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain import codec
from chain.block import Block, CommitCertificate
from chain.codec import BLOCK, BLOCK_TXS, MAX_BLOCK_TXS, TX_BODY, split_array, unpack, unpack_bins
from chain.errors import DecodeError, InvalidBlock, Reason, TxRejected
from chain.state import State
from chain.tx import Ref, SwapTerms, TxKind, decode_tx, sign_tx
from tests.ledger_helpers import (
    CHAIN_ID,
    EXPIRY,
    SGD,
    USD,
    build_next,
    contract_terms,
    key,
    make_genesis,
    pub,
)

GENESIS = make_genesis()
TX_REASONS = {Reason.MALFORMED, Reason.BAD_AMOUNT, Reason.MEMO_TOO_LONG}
ARRAY32_OF_4G = b"\xdd\xff\xff\xff\xff"  # an array header declaring 2**32-1 elements


def pay(nonce: int):
    return sign_tx(key("alice"), TxKind.TRANSFER, CHAIN_ID, nonce, to=pub("carol"), token=USD,
                   amount=10, memo="INV-1")  # fmt: skip


def second_block() -> Block:
    """A block at height 2: it carries a header, txs and its parent's certificate."""
    state = State(GENESIS)
    first = build_next(state, [pay(0)])
    state.commit(first.changes, first.block.header)
    return build_next(state, [pay(1), pay(2)]).block


BLOCK_2 = second_block()
TX = BLOCK_2.txs[0]
# One tx of each shape of args: a contract's terms (the deepest), a swap's, a reference.
PAYMENT_TXS = [
    sign_tx(key("alice"), TxKind.CONTRACT_OPEN, CHAIN_ID, 0, to=pub("bob"), token=USD,
            amount=1_000, memo="PO-1", args=contract_terms(due={"shipment": EXPIRY - 1})),
    sign_tx(key("bob"), TxKind.SWAP_OFFER, CHAIN_ID, 0, token=SGD, amount=1_350,
            args=SwapTerms(USD, 1_000, EXPIRY)),
    sign_tx(key("carol"), TxKind.CONTRACT_RELEASE, CHAIN_ID, 0, args=Ref(bytes(32), "shipment")),
]  # fmt: skip
CERT = BLOCK_2.last_cert
assert CERT is not None
SIGNATURE = bytes(64)

HOSTILE = st.one_of(
    st.sampled_from([float("inf"), float("nan"), 1e300, 2**63, 2**64 - 1, -(2**63), True, None]),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(),
    st.booleans(),
    st.binary(max_size=80),
    st.text(max_size=40),
    st.lists(st.integers(-1, 2**64 - 1), max_size=4),
    st.recursive(st.none(), lambda inner: st.lists(inner, max_size=3), max_leaves=12),
)


def mutate(value: object, data: st.DataObject) -> object:
    """``value`` with one node replaced by a hostile value, dropped, or repeated."""
    if isinstance(value, list) and value and data.draw(st.booleans()):
        copy = list(value)
        at = data.draw(st.integers(0, len(copy) - 1))
        action = data.draw(st.sampled_from(["descend", "replace", "drop", "repeat"]))
        if action == "descend":
            copy[at] = mutate(copy[at], data)
        elif action == "replace":
            copy[at] = data.draw(HOSTILE)
        elif action == "drop":
            del copy[at]
        else:
            copy.insert(at, copy[at])
        return copy
    return data.draw(HOSTILE)


def mangle(raw: bytes, data: st.DataObject) -> bytes:
    """``raw`` truncated, or with a few bytes flipped or inserted."""
    raw = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw)))
        action = data.draw(st.sampled_from(["flip", "insert", "truncate"]))
        if action == "truncate":
            del raw[at:]
        elif action == "insert":
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=6))
        elif at < len(raw):
            raw[at] ^= data.draw(st.integers(1, 255))
    return bytes(raw)


def decodes_or_refuses(decoder, error: type[Exception], raw: bytes) -> None:
    """The decoder returns, or raises ``error``: nothing else gets out."""
    try:
        decoder(raw)
    except error as exc:
        if isinstance(exc, TxRejected):
            assert exc.reason in TX_REASONS
    # any other exception fails the test with its traceback


def encoded(value: object) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


# -- the property: any mutation gives the typed error ---------------------------------------

FUZZ = settings(max_examples=300, deadline=None)


@FUZZ
@given(data=st.data())
def test_a_mutated_tx_is_a_typed_rejection(data: st.DataObject) -> None:
    tx = data.draw(st.sampled_from([TX, *PAYMENT_TXS]))
    body = msgpack.unpackb(tx.body, raw=False)
    raw = encoded(mutate(body, data)) + SIGNATURE
    decodes_or_refuses(decode_tx, TxRejected, raw)
    decodes_or_refuses(decode_tx, TxRejected, mangle(tx.raw, data))


@FUZZ
@given(data=st.data())
def test_a_mutated_block_is_invalid_and_nothing_else(data: st.DataObject) -> None:
    fields = msgpack.unpackb(BLOCK_2.encode(), raw=False)
    decodes_or_refuses(Block.decode, InvalidBlock, encoded(mutate(fields, data)))
    decodes_or_refuses(Block.decode, InvalidBlock, mangle(BLOCK_2.encode(), data))


@FUZZ
@given(data=st.data())
def test_a_mutated_certificate_is_invalid_and_nothing_else(data: st.DataObject) -> None:
    decodes_or_refuses(
        CommitCertificate.decode, InvalidBlock, encoded(mutate(CERT.to_list(), data))
    )
    decodes_or_refuses(CommitCertificate.decode, InvalidBlock, mangle(CERT.encode(), data))


@FUZZ
@given(raw=st.binary(max_size=2_000))
def test_random_bytes_are_refused_by_every_decoder(raw: bytes) -> None:
    decodes_or_refuses(decode_tx, TxRejected, raw)
    decodes_or_refuses(Block.decode, InvalidBlock, raw)
    decodes_or_refuses(CommitCertificate.decode, InvalidBlock, raw)


# -- regressions: inputs that once escaped as other exceptions -------------------------------


@pytest.mark.parametrize(
    "pair",
    [
        [float("inf"), SIGNATURE],  # int(inf): OverflowError
        [1e300, SIGNATURE],  # int(1e300): a 997-bit index
        [0, 2**63],  # bytes(2**63): OverflowError or MemoryError
        [0, 10**9],  # bytes(10**9): a gigabyte of zeros
        [True, SIGNATURE],  # a bool is not an index
        [-1, SIGNATURE],
        [0, "x" * 64],
        [0],
        [0, SIGNATURE, 0],
        "ab",  # a string unpacks into two fields too
    ],
)
def test_a_certificate_signature_pair_of_the_wrong_type_is_invalid(pair: object) -> None:
    raw = encoded([1, 0, bytes(32), [pair]])
    with pytest.raises(InvalidBlock, match="certificate"):
        CommitCertificate.decode(raw)


@pytest.mark.parametrize(
    "fields",
    [
        [1.0, 0, bytes(32), []],
        [True, 0, bytes(32), []],
        [1, float("nan"), bytes(32), []],
        [2**64 - 1, 0, bytes(32), []],  # beyond a signed 64-bit height
        [1, 0, bytes(31), []],
        [1, 0, bytes(32), "sigs"],
        "abcd",  # four characters once unpacked as four fields
        [1, 0, bytes(32)],
    ],
)
def test_a_certificate_with_fields_of_the_wrong_type_is_invalid(fields: object) -> None:
    with pytest.raises(InvalidBlock):
        CommitCertificate.decode(encoded(fields))


@pytest.mark.parametrize(
    ("index", "value"),
    [(1, True), (1, 1.0), (1, float("inf")), (2, -1), (5, 2**63), (0, ""), (0, "x" * 65),
     (0, b"depnet-test"), (3, bytes(33)), (4, bytes(31)), (8, None)],
)  # fmt: skip
def test_a_header_field_of_the_wrong_type_or_range_is_invalid(index: int, value: object) -> None:
    fields = msgpack.unpackb(BLOCK_2.encode(), raw=False)
    fields[0][index] = value
    with pytest.raises(InvalidBlock, match="header"):
        Block.decode(encoded(fields))


def test_a_huge_declared_array_is_refused_before_anything_is_allocated() -> None:
    with pytest.raises(TxRejected) as info:
        decode_tx(ARRAY32_OF_4G + SIGNATURE)
    assert info.value.reason is Reason.MALFORMED
    for decoder in (Block.decode, CommitCertificate.decode):
        with pytest.raises(InvalidBlock):
            decoder(ARRAY32_OF_4G)
    header, _, cert, evidence = msgpack.unpackb(BLOCK_2.encode(), raw=False)
    nested = b"\x94" + encoded(header) + ARRAY32_OF_4G + encoded(cert) + encoded(evidence)
    with pytest.raises(InvalidBlock, match="block: undecodable"):  # skipping ran out of bytes
        Block.decode(nested)
    too_many = b"\xdd" + (MAX_BLOCK_TXS + 1).to_bytes(4, "big") + b"\xc0" * (MAX_BLOCK_TXS + 1)
    with pytest.raises(InvalidBlock, match=r"txs: .*10001 exceeds max_array_len\(10000\)"):
        Block.decode(b"\x94" + encoded(header) + too_many + encoded(cert) + encoded(evidence))


def test_a_tx_list_of_anything_but_bins_is_refused_as_soon_as_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``unpack_bins`` refuses the first array holding a non-bin once it is built: of
    10,000 nested arrays (each a Python list of ~60 bytes per input byte), two are built."""
    seen: list[list] = []
    only_bins = codec._only_bins

    def watched(items: list) -> list:
        seen.append(items)
        return only_bins(items)

    monkeypatch.setattr(codec, "_only_bins", watched)
    wide = b"\xdc" + (10_000).to_bytes(2, "big") + b"\x91\x90" * 10_000  # [[[]], [[]], ...]
    with pytest.raises(DecodeError, match="something other than bins"):
        unpack_bins(wide, BLOCK_TXS)
    assert seen == [[], [[]]]
    monkeypatch.undo()
    for bad in (b"\x92\xc4\x01x\x01", b"\x91\xa1x", b"\xc4\x01x", b"\x91\x80", b"\x90\x90"):
        with pytest.raises(DecodeError):
            unpack_bins(bad, BLOCK_TXS)
    assert unpack_bins(b"\x92\xc4\x01x\xc4\x00", BLOCK_TXS) == [b"x", b""]
    assert unpack_bins(b"\x90", BLOCK_TXS) == []


def test_deep_nesting_is_refused() -> None:
    for raw in (b"\x91" * 100_000 + b"\x90", b"\x91" * 2_000 + b"\x90"):
        with pytest.raises(InvalidBlock):
            Block.decode(raw)
        with pytest.raises(InvalidBlock):
            CommitCertificate.decode(raw)
        with pytest.raises(TxRejected):
            decode_tx(raw[:900] + SIGNATURE)


def test_a_4_mb_frame_of_nested_arrays_is_refused_in_bounded_memory() -> None:
    """Legal in every count and every byte limit of a block but one: its txs are arrays of
    400 empty arrays. Unpacked whole without a guard, it is 4 million lists (~257 MB);
    ``unpack_bins`` refuses the first of them once built, and memory stays near the
    frame's size."""
    header, _, cert, evidence = msgpack.unpackb(BLOCK_2.encode(), raw=False)
    element = b"\xdc" + (400).to_bytes(2, "big") + b"\x90" * 400
    txs = b"\xdd" + MAX_BLOCK_TXS.to_bytes(4, "big") + element * MAX_BLOCK_TXS
    frame = b"\x94" + encoded(header) + txs + encoded(cert) + encoded(evidence)
    assert 4_000_000 < len(frame) <= BLOCK.max_bytes
    tracemalloc.start()
    try:
        with pytest.raises(InvalidBlock, match="something other than bins"):
            Block.decode(frame)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * len(frame)  # decoded whole, as before, it peaked at ~257 MB


def test_a_frame_over_the_largest_legal_block_is_refused_unread() -> None:
    with pytest.raises(InvalidBlock, match="at most"):
        Block.decode(b"\x90" * (BLOCK.max_bytes + 1))


def test_the_codec_raises_only_decode_errors() -> None:
    for bad in (b"", b"\xc1", ARRAY32_OF_4G, "text", None, b"\x92\x01"):
        with pytest.raises(DecodeError):
            unpack(bad, TX_BODY)
        with pytest.raises(DecodeError):
            split_array(bad, BLOCK)
    with pytest.raises(DecodeError, match="left over"):
        split_array(b"\x91\x01\x02", BLOCK)
    assert [bytes(v) for v in split_array(b"\x92\x01\xa1x", BLOCK)] == [b"\x01", b"\xa1x"]
    assert unpack(b"\x92\x01\xa1x", TX_BODY) == [1, "x"]


def test_valid_encodings_still_decode() -> None:
    assert Block.decode(BLOCK_2.encode()) == BLOCK_2
    assert CommitCertificate.decode(CERT.encode()) == CERT
    for tx in (TX, *PAYMENT_TXS):
        assert decode_tx(tx.raw) == tx
