"""The payloads of the frames a peer can send, and the one place they are decoded.

Every decoder here takes any bytes at all and returns a well-typed value or raises
``BadMessage``, never another exception, so the loops that read peers catch one error.
None of them hands a payload to msgpack unguarded: a sync answer is split with
``chain.codec.split_array``, which builds no object, and each part is unpacked under the
limits of one part; a tx batch, only bins, is unpacked by ``chain.codec.unpack_bins``,
which refuses an array of anything else as soon as it is built. So garbage costs CPU in
proportion to its bytes and no more memory than about its own size, whatever it declares
(an array32 header asking for 2**32 slots is refused before anything is allocated).

The payloads, by frame kind:

- CONSENSUS: one proposal or vote (``consensus.messages``, bounded by its ``MESSAGE``).
- TXS: ``[tx, ...]``, the wire bytes of at most MAX_BATCH_TXS txs, each a msgpack bin.
- SYNC_REQUEST: ``[from_height, count]``; ``count`` above SYNC_BATCH is served as SYNC_BATCH.
- SYNC_RESPONSE: ``[[block, certificate], ...]`` in height order, at most SYNC_BATCH
  pairs, each part its own encoded bytes as a msgpack bin; one frame (MAX_FRAME_SIZE).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import msgpack

from chain.block import MAX_HEIGHT, Block, CommitCertificate
from chain.codec import (
    BLOCK,
    CERTIFICATE,
    MAX_BLOCK_TXS,
    MAX_TX_BYTES,
    TX_IN_BLOCK,
    Limits,
    split_array,
    unpack,
    unpack_bins,
)
from chain.errors import DecodeError, InvalidBlock
from chain.tx import Tx
from consensus.messages import BadMessage, Message, decode_message
from node.p2p import MAX_FRAME_SIZE

SYNC_BATCH = 64  # blocks a sync request asks for, and the most an answer holds
MAX_BATCH_TXS = MAX_BLOCK_TXS  # txs in one gossip batch: never more than a block holds

_ARRAY32 = 5  # the widest msgpack array header
_BIN32 = 5  # the widest msgpack bin header

TX_BATCH = Limits(
    max_bytes=min(MAX_FRAME_SIZE, _ARRAY32 + MAX_BATCH_TXS * TX_IN_BLOCK.max_bytes),
    max_array=MAX_BATCH_TXS,
    max_bin=MAX_TX_BYTES,
    max_str=0,
)
"""A tx batch: an array of txs' wire bytes (``chain.codec.unpack_bins``)."""

SYNC_REQUEST = Limits(max_bytes=1 + 2 * 9, max_array=2, max_bin=0, max_str=0)
"""``[from_height, count]``: two integers of at most 9 bytes each."""

_SYNC_BLOCK = Limits(
    max_bytes=_BIN32 + BLOCK.max_bytes, max_array=0, max_bin=BLOCK.max_bytes, max_str=0
)
_SYNC_CERT = Limits(
    max_bytes=_BIN32 + CERTIFICATE.max_bytes, max_array=0, max_bin=CERTIFICATE.max_bytes, max_str=0
)
_SYNC_ENTRY = Limits(
    max_bytes=1 + _SYNC_BLOCK.max_bytes + _SYNC_CERT.max_bytes, max_array=2, max_bin=0, max_str=0
)
SYNC_ANSWER = Limits(max_bytes=MAX_FRAME_SIZE, max_array=SYNC_BATCH, max_bin=0, max_str=0)
"""A sync answer, split into its ``[block, certificate]`` pairs, each split again into its
two parts, and each part unpacked as one bin (then decoded by ``Block.decode`` and
``CommitCertificate.decode`` under their own limits)."""

ANSWER_OVERHEAD = _ARRAY32  # bytes of a sync answer beyond its entries, at most
ENTRY_OVERHEAD = 1 + 2 * _BIN32  # bytes of one entry beyond its block's and cert's, at most


def decode_consensus(payload: bytes, known: Mapping[bytes, Tx] | None = None) -> Message:
    """A proposal or vote, not yet verified (``consensus.validators.verify_message``); a
    proposal's block reuses the ``known`` txs (by id) it holds."""
    return decode_message(payload, known)


def encode_tx_batch(raws: Sequence[bytes]) -> bytes:
    return msgpack.packb(list(raws), use_bin_type=True)


def decode_tx_batch(payload: bytes) -> list[bytes]:
    """The wire bytes of each tx in a batch, not yet decoded (``chain.tx.decode_tx``)."""
    try:
        return unpack_bins(payload, TX_BATCH)
    except DecodeError as exc:
        raise BadMessage(f"tx batch: {exc}") from None


def encode_sync_request(from_height: int, count: int) -> bytes:
    return msgpack.packb([from_height, count])


def decode_sync_request(payload: bytes) -> tuple[int, int]:
    """``(from_height, count)``, both at least 1; a count above SYNC_BATCH is left to the
    server to cap."""
    try:
        fields = unpack(payload, SYNC_REQUEST)
    except DecodeError as exc:
        raise BadMessage(f"sync request: {exc}") from None
    if not (
        type(fields) is list
        and len(fields) == 2
        and all(type(n) is int and 1 <= n <= MAX_HEIGHT for n in fields)
    ):
        raise BadMessage("a sync request is [from_height, count], each in [1, 2**63)")
    return fields[0], fields[1]


def encode_sync_answer(entries: Sequence[tuple[bytes, bytes]]) -> bytes:
    """``entries`` are the encoded (block, certificate) pairs, in height order."""
    return msgpack.packb([list(entry) for entry in entries], use_bin_type=True)


def decode_sync_answer(payload: bytes) -> Iterator[tuple[Block, CommitCertificate]]:
    """The (block, certificate) pairs of an answer, decoded one at a time as the caller
    iterates, so a long answer holds one decoded block at a time. The answer's framing is
    checked at once; a bad pair raises BadMessage when the iteration reaches it.
    Certificates are not verified here (``consensus.validators.verify_certificate``)."""
    try:
        entries = split_array(payload, SYNC_ANSWER)
    except DecodeError as exc:
        raise BadMessage(f"sync answer: {exc}") from None
    return (_decode_entry(entry) for entry in entries)


def _decode_entry(entry: memoryview) -> tuple[Block, CommitCertificate]:
    try:
        parts = split_array(entry, _SYNC_ENTRY)
        if len(parts) != 2:
            raise DecodeError("an entry is [block, certificate]")
        raw_block, raw_cert = _bin(parts[0], _SYNC_BLOCK), _bin(parts[1], _SYNC_CERT)
        return Block.decode(raw_block), CommitCertificate.decode(raw_cert)
    except (DecodeError, InvalidBlock) as exc:
        raise BadMessage(f"sync answer: {exc}") from None


def _bin(data: memoryview, limits: Limits) -> bytes:
    """One msgpack bin; raises DecodeError for anything else."""
    value = unpack(data, limits)
    if type(value) is not bytes:
        raise DecodeError(f"a bin of at most {limits.max_bin} bytes expected")
    return value
