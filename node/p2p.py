"""Network layer of a validator node: a permissioned py-libp2p host and direct streams.

Why it looks like this (measured on py-libp2p 0.8.1, 4 processes on one machine):

- Every ``write()`` costs ~190 us of CPU, so each peer stream has ONE writer task that packs
  all queued frames into one write. Nothing else ever writes to that stream (yamux interleaves
  concurrent writers and breaks framing).
- libp2p does not notice a frozen peer, so writes run under a timeout and peers exchange
  heartbeats; a silent peer is disconnected and redialed.
- The swarm refuses a peer for 60 s after a failed dial (negative cache) and waits 250 ms per
  dial (happy eyeballs); we unblock before every redial and shorten the delay.
- There is no peer-id gater: a ResourceManager subclass refuses connections from peers outside
  the allowlist, and every stream handler checks the authenticated peer id again.
- yamux sends a window update after every read that leaves credit owed, so half the frames
  a validator wrote were updates; they are sent as go-yamux sends them, once half the
  receive window has been read (``_window_update_by_halves``).
- Tx batches go over the direct streams, not gossipsub: measured with 4 validator processes,
  py-libp2p 0.8.1's gossipsub delivered under half of 25 batches/s per node (2 KB or 20 KB
  each; its per-peer send queue of 32 overflows, and with a larger queue delivery still lags
  far behind) while CPU stayed low. In a full mesh of a few validators, a direct broadcast
  is also cheaper: gossipsub re-forwards every message to every mesh peer.

Wire format, on every direct stream: frames of ``len (4 bytes, big-endian) | kind (1 byte) |
payload``, where ``len`` counts the kind byte and the payload.
"""

from __future__ import annotations

import logging
import struct
from collections import deque
from collections.abc import AsyncIterable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol

import libp2p.network.swarm
import trio
from libp2p import new_host
from libp2p.abc import INetStream
from libp2p.crypto.ed25519 import Ed25519PublicKey, create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import RetryConfig
from libp2p.peer.id import ID
from libp2p.rcmgr import ResourceManager
from libp2p.rcmgr.manager import ConnectionScope
from libp2p.stream_muxer.yamux.yamux import YamuxStream
from multiaddr import Multiaddr

log = logging.getLogger(__name__)

CONSENSUS_PROTOCOL = TProtocol("/depnet/consensus/1.0.0")
TXS_PROTOCOL = TProtocol("/depnet/txs/1.0.0")
SYNC_PROTOCOL = TProtocol("/depnet/sync/1.0.0")

MAX_FRAME_SIZE = 16 * 1024 * 1024  # payload bytes; a larger length prefix resets the stream
MAX_QUEUED_FRAMES = 100_000  # per peer and stream; the OLDEST frames are dropped beyond this
MAX_QUEUED_BYTES = 64 * 1024 * 1024  # idem, in bytes
MAX_INBOUND_BYTES = 32 * 1024 * 1024  # per peer: its frames waiting for the application
URGENT_MAX_BYTES = 4096  # a vote, a proof, a sync request or an empty proposal is smaller
FRAME_COST = 128  # bytes a queued frame counts for beyond its payload (the objects holding it)
READ_SIZE = 256 * 1024
WRITE_BATCH_BYTES = 64 * 1024
WRITE_TIMEOUT = 8.0  # a CPU-starved peer stalls writes for seconds; a frozen one for longer
DIAL_TIMEOUT = 2.0
HEARTBEAT_INTERVAL = 0.5
PEER_TIMEOUT = 8.0  # no frame at all from a peer for this long: it is frozen or gone
MIN_BACKOFF = 0.05
MAX_BACKOFF = 0.5
REPLY_WAIT = 30.0  # how long a sync stream waits for the application's answer

_HEADER = struct.Struct(">IB")  # length, kind
_LENGTH = struct.Struct(">I")


class Kind(IntEnum):
    """Frame kind; HEARTBEAT never reaches the application."""

    HEARTBEAT = 0
    CONSENSUS = 1
    TXS = 2
    SYNC_REQUEST = 3
    SYNC_RESPONSE = 4
    EVIDENCE = 5  # an equivocation proof (``consensus.evidence``), on the consensus stream


_KINDS = frozenset(Kind)
# Long-lived streams, one per purpose so large tx batches never delay votes.
_STREAM_OF_KIND = {
    Kind.HEARTBEAT: CONSENSUS_PROTOCOL,
    Kind.CONSENSUS: CONSENSUS_PROTOCOL,
    Kind.TXS: TXS_PROTOCOL,
    Kind.EVIDENCE: CONSENSUS_PROTOCOL,
}
_STREAM_PROTOCOLS = (CONSENSUS_PROTOCOL, TXS_PROTOCOL)


@dataclass(frozen=True, slots=True)
class Frame:
    """A frame delivered to the application. ``sender`` is the peer's Ed25519 public key,
    authenticated by the libp2p handshake. Requests (from ``request``) carry ``reply_to``;
    answer them with ``P2PNetwork.respond``."""

    sender: bytes
    kind: Kind
    payload: bytes
    reply_to: trio.MemorySendChannel[bytes] | None = field(default=None, repr=False, compare=False)


class Network(Protocol):
    """What a node uses of its network. ``P2PNetwork`` is the real one; tests wire nodes
    together in memory through the same calls."""

    inbound: AsyncIterable[Frame]

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None: ...

    def connected_peers(self) -> set[bytes]: ...

    def dropped_frames(self) -> int: ...

    def send(self, pubkey: bytes, kind: Kind, payload: bytes) -> None: ...

    def broadcast(self, kind: Kind, payload: bytes) -> None: ...

    async def request(self, pubkey: bytes, kind: Kind, payload: bytes, timeout: float) -> bytes: ...

    def respond(self, request: Frame, payload: bytes) -> None: ...


def _behind_txs(frame: Frame) -> bool:
    """Whether a frame keeps its place behind the tx batches its sender sent before it: a
    tx batch, and a consensus frame large enough to carry txs (a proposal holding them
    must not overtake the gossip of those txs, or the node would execute it before it
    holds them)."""
    return frame.kind is Kind.TXS or len(frame.payload) > URGENT_MAX_BYTES


class _Lane:
    """One lane of an InboundQueue: each sender's frames in order, senders in turn."""

    def __init__(self) -> None:
        self.frames: dict[bytes, deque[Frame]] = {}  # sender -> its frames waiting
        self.turns: deque[bytes] = deque()  # senders with frames waiting, next one first

    def put(self, frame: Frame) -> None:
        waiting = self.frames.get(frame.sender)
        if waiting:
            waiting.append(frame)
        else:
            self.frames[frame.sender] = deque([frame])
            self.turns.append(frame.sender)

    def take(self) -> Frame:
        sender = self.turns.popleft()
        waiting = self.frames[sender]
        frame = waiting.popleft()
        if waiting:
            self.turns.append(sender)
        else:
            del self.frames[sender]
        return frame


class InboundQueue:
    """Frames from peers waiting for the application, in arrival order per peer and kind
    of traffic, taken from the peers in turn; read it with ``async for`` (or
    ``receive``), which ends once the network stopped and it is drained.

    Two lanes: small consensus frames (votes, proofs, sync requests, empty proposals; at
    most URGENT_MAX_BYTES) are taken before everything else, so a vote never waits behind
    the tx batches its sender sent before it (nodes spend most of their CPU checking
    those batches' signatures). A proposal that carries txs keeps its place behind its
    sender's earlier tx batches instead: it then finds those txs already checked and in
    the mempool, rather than checking them itself and leaving the batches to arrive stale.

    Bounded per peer by bytes over both lanes: each frame counts its payload plus
    FRAME_COST, and a peer whose waiting frames reach MAX_INBOUND_BYTES is not read from
    until the application takes some of them, so back-pressure falls on that peer's
    streams alone. A peer with nothing waiting is always let in one frame, and a frame (at
    most MAX_FRAME_SIZE) is below the bound: so the queue holds at most MAX_INBOUND_BYTES
    per validator or observer, and nothing is ever dropped.

    Taking peers in turn (round robin, within each lane) keeps a flooding peer from
    delaying the others: a frame waits behind at most one frame of each other peer in its
    lane, not behind everything a flooder has queued (measured: a byzantine validator
    sending ~1,500 signed proposals a second stopped three honest nodes from committing
    while their votes waited in one arrival-order queue behind its frames)."""

    def __init__(self, max_bytes_per_peer: int = MAX_INBOUND_BYTES) -> None:
        self.max_bytes_per_peer = max_bytes_per_peer
        self._lanes = (_Lane(), _Lane())  # consensus traffic first, then tx batches
        self._bytes: dict[bytes, int] = {}  # sender -> bytes it has waiting, both lanes
        self._readers = trio.lowlevel.ParkingLot()
        self._writers = trio.lowlevel.ParkingLot()
        self._closed = False

    def queued_bytes(self, sender: bytes) -> int:
        return self._bytes.get(sender, 0)

    async def put(self, frame: Frame) -> None:
        """Queue a frame, first waiting while its sender is at its bound.

        Raises trio.ClosedResourceError once the queue is closed."""
        cost = len(frame.payload) + FRAME_COST
        while True:
            if self._closed:
                raise trio.ClosedResourceError("the network stopped")
            held = self._bytes.get(frame.sender, 0)
            if not held or held + cost <= self.max_bytes_per_peer:
                break
            await self._writers.park()
        self._lanes[_behind_txs(frame)].put(frame)
        self._bytes[frame.sender] = held + cost
        self._readers.unpark()

    def receive_nowait(self) -> Frame:
        """The oldest frame of the peer whose turn it is in the first lane with frames
        waiting; raises trio.WouldBlock if none waits, trio.EndOfChannel if none ever
        will."""
        for lane in self._lanes:
            if lane.turns:
                frame = lane.take()
                break
        else:
            raise trio.EndOfChannel if self._closed else trio.WouldBlock
        held = self._bytes[frame.sender] - len(frame.payload) - FRAME_COST
        if held:
            self._bytes[frame.sender] = held
        else:
            del self._bytes[frame.sender]
        self._writers.unpark_all()
        return frame

    async def receive(self) -> Frame:
        await trio.lowlevel.checkpoint()
        while True:
            try:
                return self.receive_nowait()
            except trio.WouldBlock:
                await self._readers.park()

    def close(self) -> None:
        """No more frames come in; waiting writers fail, readers drain what is left."""
        self._closed = True
        self._readers.unpark_all()
        self._writers.unpark_all()

    def __aiter__(self) -> InboundQueue:
        return self

    async def __anext__(self) -> Frame:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


class RequestFailed(Exception):
    """A request got no answer: timeout, peer unreachable, stream reset or bad framing."""


class _BadFrame(Exception):
    pass


class _Unresponsive(Exception):
    """A peer with a live connection that stopped reading or sending (frozen, overloaded)."""


def peer_id_from_pubkey(pub: bytes) -> ID:
    """libp2p peer id of a validator, computed from its 32-byte Ed25519 genesis key."""
    return ID.from_pubkey(Ed25519PublicKey.from_bytes(pub))


def _check_size(payload: bytes) -> None:
    if len(payload) > MAX_FRAME_SIZE:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_FRAME_SIZE}")


def encode_frame(kind: Kind, payload: bytes) -> bytes:
    """One wire frame; exposed so tests and tools can speak the protocol."""
    _check_size(payload)
    return _HEADER.pack(len(payload) + 1, kind) + payload


async def _read_frames(stream: INetStream, buf: bytearray) -> list[tuple[Kind, bytes]]:
    """Read once, append to ``buf`` and return the complete frames in it (in order).

    Raises EOFError at end of stream and _BadFrame on a bad length or unknown kind, checked
    as soon as a header is complete so a huge length prefix is never buffered for."""
    data = await stream.read(READ_SIZE)
    if not data:
        raise EOFError
    buf += data
    frames = []
    pos = 0
    with memoryview(buf) as view:
        while len(buf) - pos >= 4:
            (size,) = _LENGTH.unpack_from(view, pos)
            if not 1 <= size <= MAX_FRAME_SIZE + 1:
                raise _BadFrame(f"length {size}")
            if len(buf) - pos > 4 and view[pos + 4] not in _KINDS:
                raise _BadFrame(f"kind {view[pos + 4]}")
            end = pos + 4 + size
            if end > len(buf):
                break
            frames.append((Kind(view[pos + 4]), bytes(view[pos + 5 : end])))
            pos = end
    del buf[:pos]
    return frames


async def _window_update_by_halves(stream: YamuxStream, *, bytes_read: int = 0) -> None:
    """What a yamux stream runs after each read: grant the peer more window once half of
    the receive window has been read, as go-yamux does (growing the window as py-libp2p
    does when updates come quickly).

    py-libp2p 0.8.1 also sends an update after any read that leaves credit owed: one
    update frame per frame read, so updates were half of the frames a validator wrote
    (each write costs ~190 us of CPU, sender and receiver together). A peer never waits
    for credit while we read: it can send a whole window before it stalls, and we grant
    credit back as soon as half of that window has been read."""
    async with stream.window_lock:
        buffered = len(stream.conn.stream_buffers.get(stream.stream_id, b""))
        owed = stream.target_recv_window - (stream.recv_window + buffered)
        if owed <= 0 or owed < stream.target_recv_window // 2:
            return
        increment = stream._grow_to_delta(buffered) + stream._apply_autotune_epoch(buffered)
    await stream.send_window_update(increment, skip_lock=True)


def _quiet(logger_name: str, level: int) -> None:
    """Raise a logger's threshold to ``level``, never lower one the runner set."""
    logger = logging.getLogger(logger_name)
    if logger.getEffectiveLevel() < level:
        logger.setLevel(level)


async def _reset(stream: INetStream) -> None:
    with trio.move_on_after(1.0, shield=True):  # a frozen peer can block even a reset
        try:
            await stream.reset()
        except Exception:
            log.debug("stream reset failed", exc_info=True)


class _AllowlistResourceManager(ResourceManager):
    """Refuses connections from peers outside the allowlist. The swarm calls this after the
    Noise handshake (authenticated ``peer_id``) and before registering the connection, so a
    refused peer never opens a stream. ``peer_id`` is None for the pre-handshake check."""

    def __init__(self, allowed: Iterable[ID]) -> None:
        super().__init__()
        self._allowed = frozenset(str(p) for p in allowed)

    def open_connection(
        self, peer_id: ID | None = None, endpoint_ip: str | None = None, direction: str = "inbound"
    ) -> ConnectionScope | None:
        if peer_id is not None and str(peer_id) not in self._allowed:
            log.warning("refused %s connection from unknown peer %s", direction, peer_id)
            return None
        return super().open_connection(peer_id, endpoint_ip=endpoint_ip, direction=direction)


class _Outbox:
    """Bounded FIFO of encoded frames for one peer stream, drained by one writer task.

    When full it drops the OLDEST frames: the newest consensus messages matter most and the
    engine re-sends the current height's messages anyway. Frames survive reconnects."""

    def __init__(self) -> None:
        self._frames: deque[bytes] = deque()
        self._bytes = 0
        self._wakeup = trio.Event()
        self.dropped = 0
        self.written_at = float("-inf")  # when the write loop last wrote (trio's clock)

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def put(self, frame: bytes) -> None:
        self._frames.append(frame)
        self._bytes += len(frame)
        while len(self._frames) > MAX_QUEUED_FRAMES or self._bytes > MAX_QUEUED_BYTES:
            self._bytes -= len(self._frames.popleft())
            self.dropped += 1
        self._wakeup.set()

    async def take(self) -> bytes:
        """Wait for frames, then remove and join up to ~WRITE_BATCH_BYTES of them."""
        while not self._frames:
            self._wakeup = trio.Event()
            await self._wakeup.wait()
        batch = [self._frames.popleft()]
        size = len(batch[0])
        while self._frames and size < WRITE_BATCH_BYTES:
            batch.append(self._frames.popleft())
            size += len(batch[-1])
        self._bytes -= size
        return b"".join(batch)


@dataclass(slots=True)
class _Peer:
    pubkey: bytes
    peer_id: ID
    addr: Multiaddr
    outboxes: dict[TProtocol, _Outbox] = field(
        default_factory=lambda: {p: _Outbox() for p in _STREAM_PROTOCOLS}
    )
    connected: bool = False
    connected_at: float = float("-inf")
    last_seen: float = float("-inf")  # any bytes from it on its streams to us


class P2PNetwork:
    """The node's network: run it with ``await nursery.start(net.run)``, read ``inbound``.

    Frames (consensus, txs) are delivered in order per peer while a connection lasts;
    frames accepted by ``send`` can still be lost when a peer dies or its queue overflows."""

    def __init__(
        self,
        seed: bytes,
        listen_addr: Multiaddr | str,
        validators: Mapping[bytes, Multiaddr | str],
        observers: Iterable[ID | str] = (),
    ) -> None:
        key_pair = create_new_key_pair(seed)
        self.pubkey = key_pair.public_key.to_bytes()
        self._listen_addr = Multiaddr(str(listen_addr))
        self._peers = {
            pub: _Peer(pub, peer_id_from_pubkey(pub), Multiaddr(str(addr)))
            for pub, addr in validators.items()
            if pub != self.pubkey
        }
        self._by_peer_id = {p.peer_id: p for p in self._peers.values()}
        self._observers = frozenset(ID.from_base58(str(p)) for p in observers)

        # Process-wide libp2p tuning (one node per process; libp2p pinned to 0.8.1).
        libp2p.network.swarm._HAPPY_EYEBALLS_DELAY = 0.005
        YamuxStream._auto_tune_and_send_window_update = _window_update_by_halves
        # libp2p is chatty at INFO, and logs every failed dial (a peer being down) as ERROR.
        _quiet("libp2p", logging.WARNING)
        _quiet("libp2p.transport.tcp", logging.CRITICAL)

        self._host = new_host(
            key_pair=key_pair,
            resource_manager=_AllowlistResourceManager([*self._by_peer_id, *self._observers]),
        )
        # Our reconnect loop retries; the swarm's own retries only delay it.
        self._host.get_network().retry_config = RetryConfig(max_retries=0)
        for protocol in _STREAM_PROTOCOLS:
            self._host.set_stream_handler(protocol, self._handle_stream)
        self._host.set_stream_handler(SYNC_PROTOCOL, self._handle_request)

        self.inbound = InboundQueue()

    @property
    def peer_id(self) -> ID:
        return self._host.get_id()

    def connected_peers(self) -> set[bytes]:
        """Validators to which our streams are up (dropped within PEER_TIMEOUT of silence)."""
        return {p.pubkey for p in self._peers.values() if p.connected}

    def dropped_frames(self) -> int:
        """Frames discarded so far because a peer's send queue was full (for metrics)."""
        return sum(box.dropped for p in self._peers.values() for box in p.outboxes.values())

    def queued_bytes(self, pubkey: bytes) -> int:
        """Bytes of frames waiting to be written to one validator: a sender that must not
        lose frames (a load or flood tool) waits while this is high."""
        return sum(box.queued_bytes for box in self._peers[pubkey].outboxes.values())

    def send(self, pubkey: bytes, kind: Kind, payload: bytes) -> None:
        """Queue a CONSENSUS or TXS frame for one validator; never blocks.

        Raises KeyError for an unknown validator and ValueError for another kind or an
        oversized payload."""
        self._peers[pubkey].outboxes[self._protocol_of(kind)].put(encode_frame(kind, payload))

    def broadcast(self, kind: Kind, payload: bytes) -> None:
        """``send`` to every other validator (the frame is encoded once)."""
        protocol = self._protocol_of(kind)
        frame = encode_frame(kind, payload)
        for peer in self._peers.values():
            peer.outboxes[protocol].put(frame)

    async def request(self, pubkey: bytes, kind: Kind, payload: bytes, timeout: float) -> bytes:
        """Send one request (e.g. SYNC_REQUEST) on a fresh sync stream and return the answer.

        A stream per request keeps big answers (blocks) off the consensus stream and needs no
        correlation ids; it also works for observers, to whom we keep no outbound stream.
        Raises RequestFailed on timeout or any network/framing error."""
        if kind is not Kind.SYNC_REQUEST:
            raise ValueError(f"kind {kind!r} is not a request")
        peer_id = peer_id_from_pubkey(pubkey)
        frame = encode_frame(kind, payload)
        stream = None
        try:
            with trio.fail_after(timeout):
                self._host.get_network().unblock_peer(peer_id)
                stream = await self._host.new_stream(peer_id, [SYNC_PROTOCOL])
                await stream.write(frame)
                buf = bytearray()
                while not (frames := await _read_frames(stream, buf)):
                    pass
        except trio.TooSlowError as exc:
            raise RequestFailed(f"no answer within {timeout} s") from exc
        except Exception as exc:
            raise RequestFailed(f"request failed: {exc!r}") from exc
        finally:
            if stream is not None:
                await _reset(stream)
        answer_kind, answer = frames[0]
        if answer_kind is not Kind.SYNC_RESPONSE:
            raise RequestFailed(f"unexpected answer kind {answer_kind!r}")
        return answer

    def respond(self, request: Frame, payload: bytes) -> None:
        """Answer a request; a no-op if the requester gave up or it was already answered."""
        if request.reply_to is None:
            raise ValueError("message is not a request")
        _check_size(payload)  # here, where the caller sees the error
        try:
            request.reply_to.send_nowait(payload)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            log.debug("dropped answer to %s: requester gone", request.sender.hex()[:16])

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, dial every validator and keep the links up until cancelled.

        Reports started once listening. On exit the ``inbound`` queue is closed."""
        try:
            async with self._host.run(listen_addrs=[self._listen_addr]):
                for peer in self._peers.values():
                    self._host.get_peerstore().add_addrs(peer.peer_id, [peer.addr], 0)  # keep
                async with trio.open_nursery() as nursery:
                    for peer in self._peers.values():
                        nursery.start_soon(self._peer_loop, peer)
                    log.info("p2p listening on %s as %s", self._listen_addr, self.peer_id)
                    task_status.started()
                    await trio.sleep_forever()  # until cancelled, even with no peer to dial
        finally:
            self.inbound.close()

    @staticmethod
    def _protocol_of(kind: Kind) -> TProtocol:
        if kind is Kind.HEARTBEAT or kind not in _STREAM_OF_KIND:
            raise ValueError(f"kind {kind!r} cannot be sent on a direct stream; use request()")
        return _STREAM_OF_KIND[kind]

    async def _deliver(self, frame: Frame) -> None:
        """Queue for the application; blocks (back-pressure on the sender's stream) only
        while the sender is at its bound in ``inbound``."""
        await self.inbound.put(frame)

    async def _peer_loop(self, peer: _Peer) -> None:
        """Keep our outbound streams to one validator open, redialing with back-off."""
        backoff = MIN_BACKOFF
        while True:
            attempt = trio.current_time()
            try:
                await self._serve_peer(peer)
            except Exception as exc:
                log.debug("link to %s: %r", peer.peer_id, exc)
            if peer.connected_at >= attempt:  # the link was up: retry promptly
                backoff = MIN_BACKOFF
            await trio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _serve_peer(self, peer: _Peer) -> None:
        network = self._host.get_network()
        streams: list[INetStream] = []
        try:
            for protocol in _STREAM_PROTOCOLS:
                network.unblock_peer(peer.peer_id)  # else refused for 60 s after a failed dial
                with trio.fail_after(DIAL_TIMEOUT):
                    streams.append(await self._host.new_stream(peer.peer_id, [protocol]))
            peer.last_seen = peer.connected_at = trio.current_time()
            peer.connected = True
            log.info("connected to %s", peer.peer_id)
            async with trio.open_nursery() as nursery:
                for protocol, stream in zip(_STREAM_PROTOCOLS, streams, strict=True):
                    nursery.start_soon(self._write_loop, stream, peer.outboxes[protocol])
                await self._heartbeat(peer)
        except* _Unresponsive as group:
            # Its TCP connection may be healthy (a frozen process): close it, so that both
            # sides start afresh when it wakes up.
            peer.connected = False
            log.warning("peer %s %s: closing its connection", peer.peer_id, group.exceptions[0])
            with trio.move_on_after(1.0, shield=True):
                await network.close_peer(peer.peer_id)
        finally:
            if peer.connected:
                peer.connected = False
                log.info("disconnected from %s", peer.peer_id)
            for stream in streams:
                await _reset(stream)

    async def _write_loop(self, stream: INetStream, outbox: _Outbox) -> None:
        """The only task writing to ``stream``. A failed or timed-out write raises, which
        tears the link down; the frames in that write are lost."""
        while True:
            data = await outbox.take()
            with trio.move_on_after(WRITE_TIMEOUT) as scope:
                await stream.write(data)
            if scope.cancelled_caught:
                raise _Unresponsive(f"blocked a write for {WRITE_TIMEOUT} s")
            outbox.written_at = trio.current_time()

    async def _heartbeat(self, peer: _Peer) -> None:
        """Send heartbeats until the peer has been silent for PEER_TIMEOUT.

        Any frame tells the peer we are alive, so a heartbeat goes only after a whole
        interval without a write to it: under load, heartbeats were a sixth of the writes
        a validator made (each write costs ~190 us of CPU, sender and receiver together)."""
        heartbeat = encode_frame(Kind.HEARTBEAT, b"")
        outboxes = peer.outboxes.values()
        while (now := trio.current_time()) - peer.last_seen < PEER_TIMEOUT:
            if now - max(outbox.written_at for outbox in outboxes) >= HEARTBEAT_INTERVAL:
                peer.outboxes[CONSENSUS_PROTOCOL].put(heartbeat)
            await trio.sleep(HEARTBEAT_INTERVAL)
        raise _Unresponsive(f"silent for {PEER_TIMEOUT} s")

    async def _handle_stream(self, stream: INetStream) -> None:
        """Reader of a validator's long-lived stream: only decodes and queues. Never lets an
        exception escape (a raising handler leaves a dead connection registered)."""
        try:
            peer = self._by_peer_id.get(stream.muxed_conn.peer_id)
            if peer is None:
                log.warning("stream from non-validator %s refused", stream.muxed_conn.peer_id)
                return
            buf = bytearray()
            while True:
                frames = await _read_frames(stream, buf)
                peer.last_seen = trio.current_time()
                for kind, payload in frames:
                    if kind not in _STREAM_OF_KIND:
                        raise _BadFrame(f"kind {kind!r} on a direct stream")
                    if kind is not Kind.HEARTBEAT:
                        await self._deliver(Frame(peer.pubkey, kind, payload))
        except _BadFrame as exc:
            log.warning("bad frame from %s, stream reset: %s", stream.muxed_conn.peer_id, exc)
        except Exception as exc:
            log.debug("stream from %s ended: %r", stream.muxed_conn.peer_id, exc)
        finally:
            await _reset(stream)

    async def _handle_request(self, stream: INetStream) -> None:
        """Serve one request on a sync stream (validators and observers may ask)."""
        try:
            peer_id = stream.muxed_conn.peer_id
            if peer_id not in self._by_peer_id and peer_id not in self._observers:
                log.warning("request from unknown peer %s refused", peer_id)
                await _reset(stream)
                return
            sender = peer_id.extract_public_key().to_bytes()
            buf = bytearray()
            with trio.fail_after(REPLY_WAIT):
                while not (frames := await _read_frames(stream, buf)):
                    pass
                (kind, payload), *extra = frames
                if extra or buf or kind is not Kind.SYNC_REQUEST:
                    raise _BadFrame("a sync stream carries exactly one SYNC_REQUEST")
                reply_send, reply_recv = trio.open_memory_channel[bytes](1)
                async with reply_recv:
                    await self._deliver(Frame(sender, kind, payload, reply_send))
                    answer = await reply_recv.receive()
                await stream.write(encode_frame(Kind.SYNC_RESPONSE, answer))
            await stream.close()  # not reset: that could discard the answer in flight
        except _BadFrame as exc:
            log.warning("bad request from %s: %s", stream.muxed_conn.peer_id, exc)
            await _reset(stream)
        except Exception as exc:
            log.debug("request from %s failed: %r", stream.muxed_conn.peer_id, exc)
            await _reset(stream)
