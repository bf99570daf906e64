"""Serving catch-up: an answer fits in one frame whatever the block sizes, and never holds
no block. (Fetching is exercised end to end in tests/test_node_reactor.py.)"""

from __future__ import annotations

from types import SimpleNamespace

import msgpack

from node.blocksync import SYNC_BATCH, BlockSync
from node.p2p import MAX_FRAME_SIZE, Kind, encode_frame


class _Blob:
    """Stands in for a block or certificate of a given encoded size."""

    def __init__(self, size: int, tag: int) -> None:
        self.data = tag.to_bytes(4, "big") * (size // 4)

    def encode(self) -> bytes:
        return self.data


def _serving(block_bytes: int, height: int = 100) -> BlockSync:
    store = SimpleNamespace(
        state=SimpleNamespace(height=height),
        blocks=lambda first, last: (
            (_Blob(block_bytes, h), _Blob(200, h)) for h in range(first, last + 1)
        ),
    )
    return BlockSync(store, None, None, "chain", None)  # type: ignore[arg-type]


def test_a_sync_answer_of_big_blocks_fits_in_one_frame() -> None:
    """64 blocks of 300 kB are over the 16 MiB frame limit: the answer takes what fits."""
    block_bytes = 300_000
    assert SYNC_BATCH * block_bytes > MAX_FRAME_SIZE
    answer = _serving(block_bytes).serve(msgpack.packb([7, SYNC_BATCH]))
    encode_frame(Kind.SYNC_RESPONSE, answer)  # would raise over the limit
    entries = msgpack.unpackb(answer)
    assert [int.from_bytes(block[:4], "big") for block, _ in entries] == list(
        range(7, 7 + len(entries))
    )
    assert len(answer) <= MAX_FRAME_SIZE < len(answer) + block_bytes + 200
    assert 1 < len(entries) < SYNC_BATCH


def test_a_sync_answer_holds_at_least_one_block() -> None:
    sync = _serving(5_000)
    sync.max_answer_bytes = 1_000
    (entry,) = msgpack.unpackb(sync.serve(msgpack.packb([3, SYNC_BATCH])))
    assert int.from_bytes(entry[0][:4], "big") == 3
