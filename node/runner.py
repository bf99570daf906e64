"""A validator node: wires the consensus engine to the network, the store, timers and the API.

Everything that decides lives in ``chain/`` and ``consensus/``; the query side is
``node/service.py``, catch-up ``node/blocksync.py``, tx gossip ``node/txgossip.py`` and
the faults injected at runtime ``node/faults.py``, which stands between this module and
the network and owns the node's wall clock (a fault can skew it).
This module only moves events in and carries actions out. One task owns the engine
(``_consensus_loop``): every input — a peer's message, a timer, a block fetched by
catch-up — becomes an event on one channel, so the engine sees one event at a time and its
actions run in order (a Commit is stored before the next event is handled, as the engine
requires).
"""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import signal
import time
from collections import OrderedDict
from collections.abc import Callable
from hashlib import sha256
from pathlib import Path

import trio
from nacl.signing import SigningKey

from chain.block import Block, CommitCertificate
from chain.codec import MAX_BLOCK_EVIDENCE
from chain.store import WRITE_BUFFER_BYTES, Store
from consensus.engine import Engine
from consensus.events import (
    Broadcast,
    Commit,
    EmptyBlocks,
    MessageReceived,
    ReportEvidence,
    RequestSync,
    ScheduleTimeout,
    TxsAvailable,
)
from consensus.evidence import MAX_EVIDENCE_AGE, Equivocation, EvidencePool, encode_evidence
from consensus.ledger_app import LedgerApp
from consensus.messages import Message as ConsensusMessage
from consensus.messages import signer_of
from consensus.signer import FileSignerStorage, Signer
from consensus.validators import ValidatorSet, verify_message
from node.api import create_app, serve_api
from node.blocksync import BlockSync
from node.config import ConfigError, NodeConfig, NodeHome
from node.faults import FaultLayer
from node.logs import log_event, setup_logging
from node.mempool import Mempool, PoolSizer, peer_room_for
from node.metrics import Metrics
from node.p2p import Frame, Kind, Network, P2PNetwork
from node.pipeline import HeightPipeline
from node.service import CatchUp, LocalService
from node.txgossip import TxGossip
from node.wire import decode_consensus

log = logging.getLogger("depnet.node")

DECODED_CACHE_SIZE = 64  # consensus frames remembered decoded (resends repeat them verbatim)


def now_ms() -> int:
    """The wall clock that dates the blocks this node proposes; the node reads no other."""
    return time.time_ns() // 1_000_000


class Node:
    """One bank's validator process.

    Intervals and timers run on trio's clock (``trio.current_time()``, ``trio.sleep``), and
    block times come from ``wall_clock`` (ms since the epoch), so a test can run a node on
    ``trio.testing.MockClock`` with a wall clock of its own, and with ``net`` a network
    in memory instead of libp2p.
    """

    def __init__(
        self,
        home: NodeHome,
        config: NodeConfig,
        *,
        wall_clock: Callable[[], int] = now_ms,
        net: Network | None = None,
    ) -> None:
        self.home = home
        self.config = config
        self.genesis = home.load_genesis(config)
        seed = home.load_key()
        self.key = SigningKey(seed)
        self.pubkey = bytes(self.key.verify_key)
        self.validators = ValidatorSet(self.genesis.validators)
        if self.pubkey not in self.genesis.validators:
            raise ConfigError("this node's validator key is not in genesis")
        self.bank = self.genesis.banks[self.validators.index(self.pubkey)].name
        if net is None:
            peers = {bytes.fromhex(p.validator): p.address for p in config.peers}
            net = P2PNetwork(seed, config.p2p_listen, peers, observers=config.observers)
        self.net = net
        self.faults = FaultLayer(net, self.genesis, self.key, wall_clock=wall_clock)
        # Each validator its own memtable size (4 MB, 5 MB, ...): see ``Store.open``.
        spread = WRITE_BUFFER_BYTES * (4 + self.validators.index(self.pubkey)) // 4
        self.store = Store.open(home.data_dir, self.genesis, write_buffer_bytes=spread)
        self.sizer = PoolSizer(
            floor=config.mempool_min_txs,
            ceiling=config.mempool_max_txs,
            seconds=config.mempool_seconds,
        )
        peer_room = peer_room_for(len(self.validators))
        self.mempool = Mempool(
            self.store.state,
            max_size=config.mempool_min_txs,
            peer_room=peer_room,
            # Twice the most the pool can hold: ids stay verified a while after they leave.
            max_verified=round(2 * peer_room * config.mempool_max_txs),
        )
        head = self.store.state.height
        self.evidence = EvidencePool.restore(
            self.validators,
            self.genesis.chain_id,
            head,
            self.store.evidence(head + 1 - MAX_EVIDENCE_AGE),
        )
        self.app = LedgerApp(
            self.store.state,
            proposer=self.pubkey,
            max_txs=config.block_max_txs,
            clock=self.faults.wall_clock,
            candidates=lambda _height: self.mempool.candidates(config.block_max_txs),
            evidence=self.evidence,
            verified=self.mempool.verified,
        )
        self.signer = Signer(self.key, FileSignerStorage(home.signer_file), self.genesis.chain_id)
        self.engine = Engine(
            self.genesis.chain_id,
            self.validators,
            self.signer,
            self.app,
            height=self.store.state.height + 1,
            last_cert=self.store.certificate(self.store.state.height),
            timeouts=config.timeouts,
            empty_blocks=EmptyBlocks(config.create_empty_blocks, config.empty_block_interval_ms),
        )
        self.metrics = Metrics(
            height=lambda: self.store.state.height,
            round=lambda: self.engine.round,
            peers=lambda: len(self.faults.connected_peers()),
            mempool_size=lambda: len(self.mempool),
            evidence=lambda: len(self.engine.evidence),
            dropped_frames=self.net.dropped_frames,
        )
        self.pipeline = HeightPipeline(self.metrics.registry)
        self.events_send, self.events_recv = trio.open_memory_channel[object](10_000)
        self.mempool.on_first_pending = lambda: self._txs_available(self.store.state.height + 1)
        self.gossip = TxGossip(self.mempool, self.faults)
        self.sync = BlockSync(
            self.store, self.faults, self.validators, self.genesis.chain_id, self.events_send.send
        )
        self.service = LocalService(
            bank=self.bank,
            store=self.store,
            mempool=self.mempool,
            engine=self.engine,
            metrics=self.metrics,
            gossip=self.gossip,
            peers=self.faults.connected_peers,
            since_commit=lambda: trio.current_time() - self.last_commit_time,
            catch_up=CatchUp.of(self.validators.n),
            room_again_ms=round(500 * config.mempool_seconds),
        )
        self.decoded: OrderedDict[bytes, ConsensusMessage] = OrderedDict()  # sha256 -> message
        self.last_commit_time = 0.0  # trio.current_time() of the last commit, or of the start
        self.shutdown = trio.Event()

    # --- the process ---------------------------------------------------------------------

    async def run(self) -> None:
        """The whole node, API included, until SIGTERM or SIGINT; then close the store."""
        log_event(log, "node starting", height=self.store.state.height, bank=self.bank)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_signals)
            await nursery.start(self.run_reactor)
            try:
                await nursery.start(
                    serve_api,
                    create_app(self.service, self.faults, self.home.admin_token()),
                    self.config.api_host,
                    self.config.api_port,
                    self.shutdown.wait,
                )
            except* OSError as group:  # hypercorn's bind error does not name the address
                if group.subgroup(lambda e: getattr(e, "errno", None) == errno.EADDRINUSE):
                    raise OSError(
                        errno.EADDRINUSE,
                        f"API port {self.config.api_port} in use (is another node running?)",
                    ) from None
                raise
            log_event(log, "node ready", api_port=self.config.api_port)
            _settle_heap()
            await self.shutdown.wait()
            nursery.cancel_scope.cancel()
        try:
            self.store.checkpoint()  # spares the next start re-executing the last blocks
        finally:
            self.store.close()
        log_event(log, "node stopped", height=self.store.state.height)

    async def run_reactor(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The node without its API: network, gossip and consensus, until cancelled.
        Reports started once the network listens."""
        self.last_commit_time = trio.current_time()
        async with trio.open_nursery() as nursery:
            await nursery.start(self.faults.run)
            nursery.start_soon(self._network_loop)
            nursery.start_soon(self.gossip.run)
            nursery.start_soon(self._consensus_loop, nursery)
            task_status.started()

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                self.shutdown.set()
                return

    # --- consensus -----------------------------------------------------------------------

    async def _consensus_loop(self, nursery: trio.Nursery) -> None:
        """The one task that owns the engine: every input is an event on one channel, so
        the engine sees one event at a time and a Commit is stored before the next."""
        self._carry_out(self.engine.start(), nursery)
        engine, pipeline = self.engine, self.pipeline
        async for event in self.events_recv:
            pipeline.before(event, engine.height, trio.current_time())
            actions = engine.handle(event)
            pipeline.after(actions, engine.height, engine.step, trio.current_time())
            self._carry_out(actions, nursery)

    def _carry_out(self, actions: list, nursery: trio.Nursery) -> None:
        for action in actions:
            if isinstance(action, Broadcast):
                self.faults.broadcast_consensus(action.message)
            elif isinstance(action, ScheduleTimeout):
                nursery.start_soon(self._timer, action)
            elif isinstance(action, Commit):
                self._commit(action.block, action.cert)
            elif isinstance(action, RequestSync):
                self.sync.start(action.from_height, nursery)
            elif isinstance(action, ReportEvidence):
                self._report(action.evidence)

    def _txs_available(self, height: int) -> None:
        """Tell the engine that a block at ``height`` would hold txs. Never blocks: with
        the event channel full (the engine ~10,000 events behind) the signal is dropped, and
        the empty block interval or the next commit's signal starts the height instead."""
        with contextlib.suppress(trio.WouldBlock):
            self.events_send.send_nowait(TxsAvailable(height))

    async def _timer(self, action: ScheduleTimeout) -> None:
        await trio.sleep(action.delay_ms / 1000)
        await self.events_send.send(action.timeout)

    def _commit(self, block: Block, cert: CommitCertificate) -> None:
        changes = self.app.take_changes(block)
        self.store.commit_block(block, cert, changes)
        self.mempool.on_commit(block)
        # Pending proofs go out again at each commit: a peer that lost them, or joined
        # since, gets them, and a proposer that holds them puts them in its next block.
        self._gossip_evidence(self.evidence.pending()[:MAX_BLOCK_EVIDENCE])
        self.last_commit_time = trio.current_time()
        self.mempool.max_size = self.sizer.record(len(block.txs), self.last_commit_time)
        self.pipeline.committed(self.last_commit_time)
        if self.mempool.pending_count:
            self._txs_available(block.height + 1)
        self.metrics.on_commit(block, self.last_commit_time)
        self.service.on_commit()
        log_event(
            log,
            "committed",
            height=block.height,
            round=block.header.round,
            txs=len(block.txs),
            evidence=len(block.evidence),
            hash=block.hash.hex(),
        )

    def _report(self, ev: Equivocation) -> None:
        """Our engine caught an equivocation: keep the proof to propose, send it on."""
        if self.evidence.add(ev):
            self._gossip_evidence([ev])
            log_event(log, "equivocation", **_described(ev))

    def _gossip_evidence(self, evidence: list[Equivocation]) -> None:
        for ev in evidence:
            self.faults.broadcast(Kind.EVIDENCE, encode_evidence(ev))

    # --- network -------------------------------------------------------------------------

    async def _network_loop(self) -> None:
        """Drain the network's inbound channel; nothing here may block on a peer."""
        async for frame in self.faults.inbound:
            try:
                await self._on_frame(frame)
            except Exception as exc:  # a peer's bytes must never stop the node
                if frame.reply_to is not None:
                    frame.reply_to.close()  # the asker gets a reset now, not a 30 s wait
                log_event(
                    log,
                    "bad message from peer",
                    logging.WARNING,
                    peer=frame.sender.hex()[:16],
                    kind=frame.kind.name,
                    error=repr(exc),
                )

    async def _on_frame(self, frame: Frame) -> None:
        if frame.kind is Kind.CONSENSUS:
            msg = self._decode_consensus(frame.payload)
            self.service.catch_up.observe(signer_of(msg), msg.height)
            await self.events_send.send(MessageReceived(msg))
        elif frame.kind is Kind.TXS:
            await self.gossip.admit(frame.payload)
        elif frame.kind is Kind.SYNC_REQUEST:
            self.faults.respond(frame, self.sync.serve(frame.sender, frame.payload))
        elif frame.kind is Kind.EVIDENCE:
            ev = self.evidence.receive(frame.payload)  # InvalidEvidence: a bad message
            if ev is not None:
                log_event(log, "equivocation reported by a peer", **_described(ev))

    def _decode_consensus(self, payload: bytes) -> ConsensusMessage:
        """Decode and verify a consensus frame, once per distinct frame.

        Validators re-send their proposal and votes byte for byte on every resend tick, and
        a proposal carries its whole block: decoding a 2,000-tx block again each time cost
        ~0.1 s of CPU per frame under load. Identical bytes decode to an identical message,
        so a recently seen frame reuses its decoded and verified message."""
        key = sha256(payload).digest()
        msg = self.decoded.get(key)
        if msg is not None:
            self.decoded.move_to_end(key)
            return msg
        msg = decode_consensus(payload, self.mempool.pending)
        verify_message(msg, self.validators, self.genesis.chain_id)
        self.decoded[key] = msg
        if len(self.decoded) > DECODED_CACHE_SIZE:
            self.decoded.popitem(last=False)
        return msg


def _described(ev: Equivocation) -> dict[str, object]:
    return {"validator": ev.validator.hex()[:16], "height": ev.height, "kind": ev.kind}


def _settle_heap() -> None:
    """Exempt what start-up built (modules, the API app, the libp2p host, the state
    loaded from the store) from the cyclic collector.

    Those ~150,000 objects live as long as the process, yet every full collection walked
    them all: 60-340 ms pauses at load, each stalling a height on every node. After this a
    full collection walks only what the node made since (txs, blocks, votes).
    """
    gc.collect()
    gc.freeze()


def run_node(home: Path) -> None:
    """Entry point of `depnet node run`: run one validator in the foreground until SIGTERM."""
    node_home = NodeHome(home)
    config = node_home.load_config()
    setup_logging(node_home.log_file, config.bank)
    try:
        node = Node(node_home, config)
        trio.run(node.run)
    except Exception:  # cli/commands/node.py shows one line; the log keeps the traceback
        log.exception("node stopped")
        raise
