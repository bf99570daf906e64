"""Catch-up: an answer fits in one frame whatever the block sizes, and never holds no
block; whatever a byzantine peer answers, fetching logs one typed error, goes on from the
next peer and allocates no more than the answer's size. (Honest fetching is exercised end
to end in tests/test_node_reactor.py.)"""

from __future__ import annotations

import math
import tracemalloc
from types import SimpleNamespace

import msgpack
import pytest
import trio

from consensus.events import CommitReceived
from consensus.messages import BadMessage
from consensus.simulate import CHAIN_ID
from node.blocksync import SERVE_BURST, SERVE_RATE, SYNC_BATCH, BlockSync
from node.p2p import MAX_FRAME_SIZE, Kind, encode_frame
from tests.consensus_helpers import W, decided_chain


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
    return BlockSync(store, None, None, "chain", None, clock=lambda: 0.0)  # type: ignore[arg-type]


def test_a_sync_answer_of_big_blocks_fits_in_one_frame() -> None:
    """64 blocks of 300 kB are over the 16 MiB frame limit: the answer takes what fits."""
    block_bytes = 300_000
    assert SYNC_BATCH * block_bytes > MAX_FRAME_SIZE
    answer = _serving(block_bytes).serve(b"peer", msgpack.packb([7, SYNC_BATCH]))
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
    (entry,) = msgpack.unpackb(sync.serve(b"peer", msgpack.packb([3, SYNC_BATCH])))
    assert int.from_bytes(entry[0][:4], "big") == 3


def test_a_peer_that_asks_without_pause_gets_one_block_an_answer_beyond_its_allowance() -> None:
    """Each peer is served SERVE_RATE bytes a second after a burst of SERVE_BURST, and
    always the first block asked for; another peer's allowance is its own."""
    block_bytes = 1_000_000
    sync = _serving(block_bytes, height=10_000)
    now = [0.0]
    sync.clock = lambda: now[0]

    def blocks_served(sender: bytes) -> int:
        return len(msgpack.unpackb(sync.serve(sender, msgpack.packb([1, SYNC_BATCH]))))

    served = 0
    while (count := blocks_served(b"rogue")) > 1:
        served += count
    assert SERVE_BURST - MAX_FRAME_SIZE < served * block_bytes <= SERVE_BURST
    assert [blocks_served(b"rogue") for _ in range(5)] == [1] * 5
    assert blocks_served(b"honest") * block_bytes > MAX_FRAME_SIZE - block_bytes
    now[0] += 1.0  # a second later: about SERVE_RATE bytes more
    assert blocks_served(b"rogue") * block_bytes > SERVE_RATE - 6 * block_bytes


# --- fetching from a byzantine peer ---------------------------------------------------------


CHAIN = decided_chain(3)
HUGE = 4 * 1024 * 1024  # elements declared by the amplification frames below


def _answer(*entries: object) -> bytes:
    return msgpack.packb(list(entries), use_bin_type=True)


def _cert_bytes(signature_pair: list) -> bytes:
    _, cert = CHAIN[0]
    return msgpack.packb([cert.height, cert.round, cert.block_hash, [signature_pair]])


class _TwoPeers:
    """A byzantine peer that answers every sync request with ``garbage``, and an honest
    one that serves CHAIN; catch-up asks the byzantine one first (peers in key order)."""

    def __init__(self, garbage: bytes) -> None:
        self.garbage = garbage
        self.honest = _serving_chain()
        self.asked: list[bytes] = []

    def connected_peers(self) -> set[bytes]:
        return {b"byzantine", b"honest"}

    async def request(self, pubkey: bytes, kind: Kind, payload: bytes, timeout: float) -> bytes:
        self.asked.append(pubkey)
        return self.garbage if pubkey == b"byzantine" else self.honest.serve(pubkey, payload)


def _serving_chain() -> BlockSync:
    store = SimpleNamespace(
        state=SimpleNamespace(height=len(CHAIN)),
        blocks=lambda first, last: CHAIN[first - 1 : last],
    )
    return BlockSync(store, None, None, CHAIN_ID, None, clock=lambda: 0.0)  # type: ignore[arg-type]


async def _catch_up(garbage: bytes) -> tuple[list[CommitReceived], _TwoPeers]:
    """Run catch-up from height 1 against _TwoPeers until it ends; what it delivered."""
    delivered: list[CommitReceived] = []

    async def deliver(event: CommitReceived) -> None:
        delivered.append(event)

    net = _TwoPeers(garbage)
    sync = BlockSync(None, net, W.validators, CHAIN_ID, deliver)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        sync.start(1, nursery)
    assert not sync.running
    return delivered, net


GARBAGE_ANSWERS = {
    "index inf": _answer([CHAIN[1][0].encode(), _cert_bytes([math.inf, bytes(64)])]),
    "index 1e300": _answer([CHAIN[1][0].encode(), _cert_bytes([1e300, bytes(64)])]),
    "signature 2**63": _answer([CHAIN[1][0].encode(), _cert_bytes([0, 2**63])]),
    "signature -2**63": _answer([CHAIN[1][0].encode(), _cert_bytes([0, -(2**63)])]),
    "floats for parts": _answer([1e300, math.inf]),
    "an answer of inf": msgpack.packb(math.inf),
    "declared-huge array": b"\xdd\xff\xff\xff\xff",
    "declared-huge entry": b"\x91\xdd\xff\xff\xff\xff",
    "declared-huge bin": b"\x91\x92\xc6\xff\xff\xff\xff",
    "a map": msgpack.packb({1: 2}),
    "an ext type": msgpack.packb([msgpack.ExtType(1, b"x")]),
    "three parts": _answer([CHAIN[0][0].encode(), CHAIN[0][1].encode(), b""]),
    "a block for a cert": _answer([CHAIN[0][1].encode(), CHAIN[0][0].encode()]),
    "truncated": _serving_chain().serve(b"peer", msgpack.packb([1, 3]))[:-7],
    "out of order": _answer(*([b.encode(), c.encode()] for b, c in reversed(CHAIN))),
    "nested arrays": b"\x91" * 5_000 + b"\x90",
}


@pytest.mark.parametrize("garbage", GARBAGE_ANSWERS.values(), ids=GARBAGE_ANSWERS.keys())
async def test_a_byzantine_sync_answer_never_stops_catch_up(
    garbage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Overflow- and memory-class inputs raise one typed error, which the fetch loop logs
    before it asks the next peer: the node still catches up, from the honest one."""
    delivered, net = await _catch_up(garbage)
    assert [(e.block.hash, e.cert) for e in delivered] == [(b.hash, c) for b, c in CHAIN]
    assert net.asked[0] == b"byzantine"
    faults = [r.fields for r in caplog.records if r.getMessage() == "sync from peer failed"]
    assert faults and all(f["error"].startswith("BadMessage(") for f in faults), faults


AMPLIFIERS = {
    "an array of empty arrays": b"\xdd" + HUGE.to_bytes(4, "big") + b"\x90" * HUGE,
    "an entry of empty arrays": b"\x91\xdd" + HUGE.to_bytes(4, "big") + b"\x90" * HUGE,
    "a block of empty arrays": b"\x91\x92\xdd" + HUGE.to_bytes(4, "big") + b"\x90" * HUGE + b"\xc0",
    "nested arrays": b"\x91" * HUGE + b"\x90",
}


@pytest.mark.parametrize("garbage", AMPLIFIERS.values(), ids=AMPLIFIERS.keys())
async def test_a_4_mb_answer_of_nested_arrays_costs_memory_of_its_size_only(
    garbage: bytes,
) -> None:
    """Unpacked whole, each of these frames becomes 4 million Python lists (~250 MB).
    Split first, it is refused for its shape while at most about its own bytes are
    allocated (the unpacker's copy of the frame)."""
    tracemalloc.start()
    try:
        delivered, _ = await _catch_up(garbage)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(delivered) == len(CHAIN)
    assert peak < 2 * len(garbage)


BAD_REQUESTS = {
    "from height 0": msgpack.packb([0, 10]),
    "negative count": msgpack.packb([1, -5]),
    "text and 2**63": msgpack.packb(["1", 2**63]),
    "three fields": msgpack.packb([1, 2, 3]),
    "floats": msgpack.packb([1.0, math.inf]),
    "declared-huge array": b"\xdd\xff\xff\xff\xff",
    "4 MB of nested arrays": b"\x91" * HUGE + b"\x90",
}


@pytest.mark.parametrize("request_", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_a_malformed_sync_request_is_refused_with_one_typed_error(request_: bytes) -> None:
    with pytest.raises(BadMessage):
        _serving_chain().serve(b"peer", request_)
