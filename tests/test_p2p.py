"""Tests of node/p2p.py: real py-libp2p hosts on 127.0.0.1, several networks per trio run."""

from __future__ import annotations

import logging
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from multiaddr import Multiaddr

from node.p2p import (
    CONSENSUS_PROTOCOL,
    FRAME_COST,
    HEARTBEAT_INTERVAL,
    MAX_FRAME_SIZE,
    MAX_INBOUND_BYTES,
    SYNC_PROTOCOL,
    TXS_PROTOCOL,
    URGENT_MAX_BYTES,
    Frame,
    InboundQueue,
    Kind,
    P2PNetwork,
    RequestFailed,
    _Outbox,
    encode_frame,
    peer_id_from_pubkey,
)

ROOT = Path(__file__).resolve().parent.parent
_seeds = iter(range(1, 256))


class Node:
    """A validator identity with a free port on 127.0.0.1."""

    def __init__(self) -> None:
        self.seed = bytes([next(_seeds)]) * 32
        self.pub = create_new_key_pair(self.seed).public_key.to_bytes()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.addr = f"/ip4/127.0.0.1/tcp/{sock.getsockname()[1]}"

    def network(self, validators: list[Node], observers: Sequence[Node] = ()) -> P2PNetwork:
        return P2PNetwork(
            self.seed,
            self.addr,
            {v.pub: v.addr for v in validators},
            [str(peer_id_from_pubkey(o.pub)) for o in observers],  # as in the config file
        )


async def start(nursery: trio.Nursery, net: P2PNetwork) -> trio.CancelScope:
    """Run ``net`` until the returned scope is cancelled (the node going away)."""
    scope = trio.CancelScope()

    async def serve(task_status: trio.TaskStatus[None]) -> None:
        with scope:
            await net.run(task_status=task_status)

    await nursery.start(serve)
    return scope


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.01)


async def receive(net: P2PNetwork, timeout: float = 10.0) -> Frame:
    with trio.fail_after(timeout):
        return await net.inbound.receive()


async def receive_until(net: P2PNetwork, wanted: Callable[[Frame], bool]) -> Frame:
    """Skip messages (e.g. frames queued before a reconnect) until one matches."""
    while not wanted(msg := await receive(net)):
        pass
    return msg


def fully_connected(nets: list[P2PNetwork], others: int) -> Callable[[], bool]:
    return lambda: all(len(net.connected_peers()) == others for net in nets)


@pytest.fixture
def p2p_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.INFO, logger="node.p2p"):
        yield caplog


async def test_full_mesh_delivers_every_frame_in_order(nursery: trio.Nursery) -> None:
    nodes = [Node() for _ in range(3)]
    nets = [node.network(nodes) for node in nodes]
    for net in nets:
        await start(nursery, net)
    await wait_until(fully_connected(nets, 2))

    count = 10_000
    started = time.perf_counter()
    for i, net in enumerate(nets):
        for k in range(count):
            for j, node in enumerate(nodes):
                if i != j:
                    net.send(node.pub, Kind.CONSENSUS, b"%d:%d" % (i, k))

    async def consume(net: P2PNetwork) -> None:
        next_seq: dict[bytes, int] = {}
        received = 0
        while received < 2 * count:
            # Drain without a checkpoint per message, as a runner should.
            batch = [await net.inbound.receive()]
            while True:
                try:
                    batch.append(net.inbound.receive_nowait())
                except trio.WouldBlock:
                    break
            for msg in batch:
                sender, seq = msg.payload.split(b":")
                assert msg.sender == nodes[int(sender)].pub and msg.kind is Kind.CONSENSUS
                assert int(seq) == next_seq.get(msg.sender, 0), "frame lost or reordered"
                next_seq[msg.sender] = int(seq) + 1
            received += len(batch)
        assert sorted(next_seq.values()) == [count, count]

    with trio.fail_after(30):
        async with trio.open_nursery() as consumers:
            for net in nets:
                consumers.start_soon(consume, net)
    elapsed = time.perf_counter() - started
    print(f"\n{6 * count} frames in {elapsed:.2f} s: {6 * count / elapsed:,.0f} frames/s")


async def test_unknown_peer_is_refused(
    nursery: trio.Nursery, p2p_logs: pytest.LogCaptureFixture
) -> None:
    node, intruder = Node(), Node()
    net = node.network([])
    bad = intruder.network([node])  # the intruder knows the node; the node does not list it
    await start(nursery, net)
    await start(nursery, bad)

    bad.send(node.pub, Kind.CONSENSUS, b"evil")
    with pytest.raises(RequestFailed):
        await bad.request(node.pub, Kind.SYNC_REQUEST, b"evil", timeout=5)
    await wait_until(lambda: "refused inbound connection" in p2p_logs.text)
    assert bad.connected_peers() == set()
    with pytest.raises(trio.WouldBlock):
        net.inbound.receive_nowait()


async def test_observer_may_request_but_not_send_frames(
    nursery: trio.Nursery, p2p_logs: pytest.LogCaptureFixture
) -> None:
    """The connection is allowed, so only the per-stream peer check stops its frames."""
    node, observer = Node(), Node()
    net = node.network([], observers=[observer])
    obs = observer.network([node])
    await start(nursery, net)
    await start(nursery, obs)

    obs.send(node.pub, Kind.CONSENSUS, b"not a validator")
    await wait_until(lambda: "stream from non-validator" in p2p_logs.text)

    async def answer() -> None:
        request = await receive(net)
        assert (request.sender, request.kind) == (observer.pub, Kind.SYNC_REQUEST)
        net.respond(request, b"blocks")

    nursery.start_soon(answer)
    assert await obs.request(node.pub, Kind.SYNC_REQUEST, b"from 1", timeout=5) == b"blocks"
    with pytest.raises(trio.WouldBlock):
        net.inbound.receive_nowait()


GARBAGE = [
    b"\xff\xff\xff\xff" + b"x" * 100,  # length prefix far over the maximum
    b"\x00\x00\x00\x00",  # empty frame: no kind byte
    b"\x00\x00\x00\x06\x09hello",  # unknown kind
    bytes(range(128, 256)) * 8,  # noise
]


@pytest.mark.parametrize("protocol", [CONSENSUS_PROTOCOL, TXS_PROTOCOL, SYNC_PROTOCOL])
async def test_garbage_resets_the_stream_only(nursery: trio.Nursery, protocol: TProtocol) -> None:
    node, friend, raw = Node(), Node(), Node()
    net = node.network([friend, raw])
    friend_net = friend.network([node])
    await start(nursery, net)
    await start(nursery, friend_net)
    await wait_until(lambda: friend.pub in net.connected_peers())

    # An allowed validator key on a bare libp2p host writes raw bytes, bypassing framing.
    host = new_host(key_pair=create_new_key_pair(raw.seed))
    node_id = peer_id_from_pubkey(node.pub)
    async with host.run(listen_addrs=[Multiaddr(raw.addr)]):
        host.get_peerstore().add_addrs(node_id, [Multiaddr(node.addr)], 0)
        for garbage in GARBAGE:
            stream = await host.new_stream(node_id, [protocol])
            await stream.write(garbage)
            with trio.fail_after(5):
                try:
                    while await stream.read(1024):
                        pass
                except Exception:  # StreamReset: what the node should do
                    pass
        # The node still takes valid frames, from the same peer and from others.
        if protocol == SYNC_PROTOCOL:
            # A well-formed frame of another kind is no request: reset at once, not queued.
            for kind in (Kind.CONSENSUS, Kind.TXS):
                stream = await host.new_stream(node_id, [protocol])
                await stream.write(encode_frame(kind, b"injected"))
                with trio.fail_after(5):
                    try:
                        while await stream.read(1024):
                            pass
                    except Exception:
                        pass
            with pytest.raises(trio.WouldBlock):
                net.inbound.receive_nowait()
            nursery.start_soon(answer_requests, net)
            answer = await friend_net.request(node.pub, Kind.SYNC_REQUEST, b"q", timeout=5)
            assert answer == b"re:q"
        else:
            stream = await host.new_stream(node_id, [protocol])
            await stream.write(encode_frame(Kind.TXS, b"valid"))
            msg = await receive(net)
            assert (msg.sender, msg.kind, msg.payload) == (raw.pub, Kind.TXS, b"valid")
            friend_net.send(node.pub, Kind.CONSENSUS, b"still up")
            msg = await receive(net)
            assert (msg.sender, msg.payload) == (friend.pub, b"still up")


async def answer_requests(net: P2PNetwork) -> None:
    async for request in net.inbound:  # ends when the network stops
        net.respond(request, b"re:" + request.payload)


async def test_peer_that_restarts_is_reconnected(nursery: trio.Nursery) -> None:
    a, b = Node(), Node()
    net_a = a.network([b])
    await start(nursery, net_a)
    scope_b = await start(nursery, b.network([a]))
    await wait_until(lambda: net_a.connected_peers() == {b.pub})

    scope_b.cancel()
    await wait_until(lambda: net_a.connected_peers() == set())
    net_a.send(b.pub, Kind.CONSENSUS, b"while down")  # queued; may arrive after reconnect

    net_b = b.network([a])  # same key and port
    started = trio.current_time()
    await start(nursery, net_b)
    await wait_until(lambda: net_a.connected_peers() == {b.pub} and net_b.connected_peers())
    print(f"\nreconnected {trio.current_time() - started:.3f} s after the restart")

    net_a.send(b.pub, Kind.CONSENSUS, b"after")
    net_b.send(a.pub, Kind.CONSENSUS, b"back")
    assert (await receive_until(net_b, lambda m: m.payload == b"after")).sender == a.pub
    assert (await receive(net_a)).payload == b"back"


async def test_tx_batches_reach_every_validator(nursery: trio.Nursery) -> None:
    nodes = [Node() for _ in range(3)]
    nets = [node.network(nodes) for node in nodes]
    for net in nets:
        await start(nursery, net)
    await wait_until(fully_connected(nets, 2))

    batches = [bytes([i]) * 20_000 for i in range(50)]
    for batch in batches:
        nets[0].broadcast(Kind.TXS, batch)
    for receiver in nets[1:]:
        for batch in batches:
            msg = await receive(receiver)
            assert (msg.sender, msg.kind, msg.payload) == (nodes[0].pub, Kind.TXS, batch)


async def test_heartbeats_go_only_over_a_quiet_link(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any frame tells a peer we are alive: while frames flow, no heartbeat is queued; on a
    quiet link one goes every HEARTBEAT_INTERVAL, and the peer stays connected."""
    heartbeats: list[int] = []  # ids of the outboxes a heartbeat was queued in
    put = _Outbox.put

    def counting_put(outbox: _Outbox, frame: bytes) -> None:
        if frame[4] == Kind.HEARTBEAT:
            heartbeats.append(id(outbox))
        put(outbox, frame)

    monkeypatch.setattr(_Outbox, "put", counting_put)
    a, b = Node(), Node()
    net_a, net_b = a.network([b]), b.network([a])
    await start(nursery, net_a)
    await start(nursery, net_b)
    await wait_until(fully_connected([net_a, net_b], 1))
    to_b = {id(outbox) for outbox in net_a._peers[b.pub].outboxes.values()}

    def from_a() -> int:
        return sum(1 for outbox in heartbeats if outbox in to_b)

    net_a.send(b.pub, Kind.CONSENSUS, b"first")
    assert (await receive(net_b)).payload == b"first"
    before = from_a()
    busy_until = trio.current_time() + 4 * HEARTBEAT_INTERVAL
    while trio.current_time() < busy_until:  # a frame every fifth of an interval
        net_a.send(b.pub, Kind.TXS, b"tx")
        assert (await receive(net_b)).payload == b"tx"
        await trio.sleep(HEARTBEAT_INTERVAL / 5)
    assert from_a() - before <= 1  # the tick that may fall right after the first frame
    quiet = from_a()
    await wait_until(lambda: from_a() >= quiet + 3, timeout=20)
    assert net_a.connected_peers() == {b.pub} and net_b.connected_peers() == {a.pub}


async def test_request_response_and_timeouts(nursery: trio.Nursery) -> None:
    a, b = Node(), Node()
    net_a = a.network([b])
    net_b = b.network([a])
    await start(nursery, net_a)
    scope_b = await start(nursery, net_b)
    await wait_until(lambda: net_a.connected_peers() == {b.pub})

    nursery.start_soon(answer_requests, net_b)
    assert await net_a.request(b.pub, Kind.SYNC_REQUEST, b"ping", timeout=5) == b"re:ping"
    big = bytes(3_000_000)  # answers span many reads
    assert await net_a.request(b.pub, Kind.SYNC_REQUEST, big, timeout=5) == b"re:" + big

    scope_b.cancel()
    await wait_until(lambda: net_a.connected_peers() == set())
    started = trio.current_time()
    with pytest.raises(RequestFailed):
        await net_a.request(b.pub, Kind.SYNC_REQUEST, b"ping", timeout=1.0)
    assert trio.current_time() - started < 1.5


async def test_request_without_answer_times_out(nursery: trio.Nursery) -> None:
    a, b = Node(), Node()
    net_a = a.network([b])
    net_b = b.network([a])
    await start(nursery, net_a)
    await start(nursery, net_b)

    started = trio.current_time()
    # Bounded from above only by the test's own guard: a loaded machine may wake us late.
    with trio.fail_after(30), pytest.raises(RequestFailed, match="no answer"):
        await net_a.request(b.pub, Kind.SYNC_REQUEST, b"ping", timeout=0.5)
    assert trio.current_time() - started >= 0.5
    request = await receive(net_b)
    net_b.respond(request, b"too late")  # the requester is gone: a no-op


@pytest.mark.parametrize("flood", [True, False], ids=["write-timeout", "heartbeat"])
async def test_frozen_peer_is_dropped_without_blocking_others(
    nursery: trio.Nursery, flood: bool
) -> None:
    """SIGSTOP keeps the TCP connection up: only our write timeout (when we send more than
    the stream window) or the missing heartbeats reveal it."""
    a, b, frozen = Node(), Node(), Node()
    net_a = a.network([b, frozen])
    net_b = b.network([a])
    await start(nursery, net_a)
    await start(nursery, net_b)
    command = [sys.executable, "-m", "tests.p2p_peer", frozen.seed.hex(), frozen.addr]
    command.append(f"{a.pub.hex()}={a.addr}")
    process = await nursery.start(partial(trio.run_process, command, cwd=ROOT, check=False))
    await wait_until(lambda: net_a.connected_peers() == {b.pub, frozen.pub}, timeout=20)
    net_a.send(frozen.pub, Kind.CONSENSUS, b"echo")
    assert (await receive_until(net_a, lambda m: m.payload == b"echo")).sender == frozen.pub

    process.send_signal(signal.SIGSTOP)
    try:
        stopped = trio.current_time()
        for _ in range(4 if flood else 0):  # more than the stream window: the writer blocks
            net_a.send(frozen.pub, Kind.TXS, bytes(1_000_000))
        # Nothing awaited since: every frame still waits for the writer (a flood tool's cue).
        assert net_a.queued_bytes(frozen.pub) == (4 if flood else 0) * (1_000_000 + 5)
        for i in range(100):
            net_a.send(b.pub, Kind.CONSENSUS, b"%d" % i)
        for i in range(100):
            assert (await receive(net_b)).payload == b"%d" % i
        await wait_until(lambda: frozen.pub not in net_a.connected_peers(), timeout=40)
        print(f"\nfrozen peer dropped after {trio.current_time() - stopped:.2f} s")
    finally:
        process.send_signal(signal.SIGCONT)
    resumed = trio.current_time()
    await wait_until(lambda: frozen.pub in net_a.connected_peers(), timeout=30)
    net_a.send(frozen.pub, Kind.CONSENSUS, b"again")
    await receive_until(net_a, lambda m: m.payload == b"again")
    print(f"frames flow again {trio.current_time() - resumed:.2f} s after SIGCONT")


# --- the inbound queue (no libp2p) ------------------------------------------------------


async def test_inbound_queue_bounds_each_peer_by_bytes_and_holds_back_only_that_peer() -> None:
    assert MAX_FRAME_SIZE + 1 + FRAME_COST <= MAX_INBOUND_BYTES  # one frame always fits
    queue = InboundQueue(max_bytes_per_peer=3 * (1_000 + FRAME_COST))
    flooder, honest = b"F" * 32, b"H" * 32
    sent: list[int] = []

    async def flood() -> None:
        for seq in range(10):
            await queue.put(Frame(flooder, Kind.TXS, bytes(1_000)))
            sent.append(seq)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(flood)
        await trio.testing.wait_all_tasks_blocked()
        assert sent == [0, 1, 2]  # at its bound: the flooder's reader waits
        assert queue.queued_bytes(flooder) == 3 * (1_000 + FRAME_COST)
        await queue.put(Frame(honest, Kind.CONSENSUS, b"vote"))  # another peer gets in at once
        assert queue.queued_bytes(honest) == 4 + FRAME_COST
        assert queue.receive_nowait().sender == honest  # consensus traffic goes first
        assert (queue.receive_nowait().sender, len(sent)) == (flooder, 3)
        await trio.testing.wait_all_tasks_blocked()
        assert sent == [0, 1, 2, 3]  # room for one more
        received = [queue.receive_nowait() for _ in range(3)]
        assert [f.sender for f in received] == [flooder] * 3
        assert queue.queued_bytes(flooder) == 0
        nursery.cancel_scope.cancel()


async def test_inbound_queue_takes_consensus_frames_before_tx_batches() -> None:
    """A vote does not wait behind the tx batches its sender (or another peer) sent first,
    but a proposal carrying txs does; each lane keeps each peer's order, and both lanes
    count against one byte bound."""
    queue = InboundQueue()
    a, b = b"A" * 32, b"B" * 32
    for seq in range(3):
        await queue.put(Frame(a, Kind.TXS, b"txs%d" % seq))
        await queue.put(Frame(b, Kind.TXS, b"txs%d" % seq))
    await queue.put(Frame(a, Kind.CONSENSUS, b"prevote"))
    await queue.put(Frame(b, Kind.EVIDENCE, b"proof"))
    proposal = bytes(URGENT_MAX_BYTES + 1)  # carries txs: stays behind A's tx batches
    await queue.put(Frame(a, Kind.CONSENSUS, proposal))
    await queue.put(Frame(a, Kind.CONSENSUS, b"precommit"))
    assert queue.queued_bytes(a) == 6 * FRAME_COST + 3 * 4 + len(b"prevoteprecommit") + len(
        proposal
    )
    order = [(f.sender[:1], f.payload) for f in (queue.receive_nowait() for _ in range(10))]
    assert order[:3] == [(b"A", b"prevote"), (b"B", b"proof"), (b"A", b"precommit")]
    assert order[3:] == [(b"A", b"txs0"), (b"B", b"txs0"), (b"A", b"txs1"), (b"B", b"txs1"),
                         (b"A", b"txs2"), (b"B", b"txs2"), (b"A", proposal)]  # fmt: skip
    assert queue.queued_bytes(a) == queue.queued_bytes(b) == 0
    with pytest.raises(trio.WouldBlock):
        queue.receive_nowait()


async def test_inbound_queue_takes_peers_in_turn_and_each_peers_frames_in_order() -> None:
    """A flooder's backlog does not delay another peer's frame by more than one frame."""
    queue = InboundQueue()
    a, b, c = b"A" * 32, b"B" * 32, b"C" * 32
    for seq in range(50):
        await queue.put(Frame(a, Kind.CONSENSUS, b"%d" % seq))
    await queue.put(Frame(b, Kind.CONSENSUS, b"0"))
    await queue.put(Frame(c, Kind.CONSENSUS, b"0"))
    await queue.put(Frame(b, Kind.CONSENSUS, b"1"))
    order = [(f.sender[:1], f.payload) for f in (queue.receive_nowait() for _ in range(53))]
    assert order[:6] == [(b"A", b"0"), (b"B", b"0"), (b"C", b"0"), (b"A", b"1"), (b"B", b"1"),
                         (b"A", b"2")]  # fmt: skip
    assert [p for s, p in order if s == b"A"] == [b"%d" % seq for seq in range(50)]
    assert queue.queued_bytes(a) == queue.queued_bytes(b) == 0
    with pytest.raises(trio.WouldBlock):
        queue.receive_nowait()


async def test_inbound_queue_lets_in_one_frame_over_the_bound_and_ends_when_closed() -> None:
    queue = InboundQueue(max_bytes_per_peer=10)
    with pytest.raises(trio.WouldBlock):
        queue.receive_nowait()
    big = Frame(b"P" * 32, Kind.TXS, bytes(1_000))
    await queue.put(big)  # alone it is over the bound, but nothing of this peer waits
    queue.close()
    assert [frame async for frame in queue] == [big]
    with pytest.raises(trio.ClosedResourceError):
        await queue.put(big)


async def test_window_updates_go_once_per_half_window_read(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """yamux credit comes back once half the 256 KB receive window was read (go-yamux's
    rule), not after every read: py-libp2p's own rule made half of all frames updates."""
    from libp2p.stream_muxer.yamux.yamux import DEFAULT_WINDOW_SIZE, YamuxStream

    updates: list[int] = []
    send_window_update = YamuxStream.send_window_update

    async def counted(stream: YamuxStream, increment: int, skip_lock: bool = False) -> None:
        updates.append(increment)
        await send_window_update(stream, increment, skip_lock)

    monkeypatch.setattr(YamuxStream, "send_window_update", counted)
    a, b = Node(), Node()
    net_a, net_b = a.network([b]), b.network([a])
    for net in (net_a, net_b):
        await start(nursery, net)
    await wait_until(fully_connected([net_a, net_b], 1))

    frames = [bytes([i % 256]) * 10_000 for i in range(400)]  # 4 MB: 16 windows
    updates.clear()
    for frame in frames:
        net_a.send(b.pub, Kind.TXS, frame)
    for frame in frames:
        msg = await receive(net_b)
        assert (msg.sender, msg.payload) == (a.pub, frame)
    assert all(increment >= DEFAULT_WINDOW_SIZE // 2 for increment in updates)
    assert len(updates) <= sum(map(len, frames)) // (DEFAULT_WINDOW_SIZE // 2) + 2
