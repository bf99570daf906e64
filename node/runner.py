"""A validator node: wires the consensus engine to the network, the store, timers and the API.

Everything that decides lives in ``chain/`` and ``consensus/``; this module only moves
events in and carries actions out. One task owns the engine (``_consensus_loop``): every
input — a peer's message, a timer, a block fetched by catch-up — becomes an event on one
channel, so the engine sees one event at a time and its actions run in order (a Commit is
stored before the next event is handled, as the engine requires).
"""

from __future__ import annotations

import errno
import logging
import signal
import time
from collections import OrderedDict
from hashlib import sha256
from pathlib import Path

import msgpack
import trio
from nacl.signing import SigningKey
from prometheus_client import CollectorRegistry

from chain.block import Block, CommitCertificate
from chain.errors import InvalidBlock, TxRejected
from chain.store import Store
from chain.tx import decode_tx
from consensus.engine import Engine
from consensus.events import (
    Broadcast,
    Commit,
    CommitReceived,
    MessageReceived,
    RequestSync,
    ScheduleTimeout,
)
from consensus.ledger_app import LedgerApp
from consensus.messages import BadMessage, decode_message, encode_message
from consensus.messages import Message as ConsensusMessage
from consensus.signer import FileSignerStorage, Signer
from consensus.validators import (
    InvalidCertificate,
    ValidatorSet,
    verify_certificate,
    verify_message,
)
from node.api import (
    AccountInfo,
    AccountTx,
    AccountTxs,
    CommittedBlock,
    Head,
    NodeService,
    NodeStatus,
    SubmitResult,
    TxStatus,
    create_app,
    serve_api,
)
from node.config import ConfigError, NodeConfig, NodeHome
from node.logs import log_event, setup_logging
from node.mempool import Mempool, MempoolError
from node.metrics import Metrics
from node.p2p import Kind, Message, P2PNetwork, RequestFailed

log = logging.getLogger("depnet.node")

MAX_BLOCK_DRIFT_MS = 10_000  # a proposal dated further in the future is refused
GOSSIP_INTERVAL = 0.005  # accepted txs are gossiped in a batch every few ms
REGOSSIP_INTERVAL = 3.0  # txs pending this long are sent to peers again
REGOSSIP_MAX_TXS = 5_000
GOSSIP_BATCH_TXS = 2_000
GOSSIP_YIELD_EVERY = 200  # txs of a gossip batch admitted between checkpoints
DECODED_CACHE_SIZE = 64  # consensus frames remembered decoded (resends repeat them verbatim)
SYNC_BATCH = 64  # blocks per catch-up request
SYNC_TIMEOUT = 5.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class NodeApp(LedgerApp):
    """The ledger App plus the one check that needs a real clock: a proposal dated far in
    the future is refused, so a proposer with a runaway clock cannot push block times
    (which must grow) out of reach of everyone after it."""

    def validate_block(self, block: Block) -> None:
        if block.hash not in self.executed and block.header.time_ms > (
            self.clock() + MAX_BLOCK_DRIFT_MS
        ):
            raise InvalidBlock("block time is too far in the future")
        super().validate_block(block)


class Node(NodeService):
    """One bank's validator process."""

    def __init__(self, home: NodeHome, config: NodeConfig) -> None:
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
        self.store = Store.open(home.data_dir, self.genesis)
        self.mempool = Mempool(self.store.state, max_size=config.mempool_max_txs)
        self.app = NodeApp(
            self.store.state,
            proposer=self.pubkey,
            max_txs=config.block_max_txs,
            clock=now_ms,
            candidates=lambda _height: self.mempool.candidates(config.block_max_txs),
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
        )
        peers = {bytes.fromhex(p.validator): p.address for p in config.peers}
        self.net = P2PNetwork(seed, config.p2p_listen, peers, observers=config.observers)
        self.metrics = Metrics()
        self.events_send, self.events_recv = trio.open_memory_channel[object](10_000)
        self.outgoing_txs: list[bytes] = []
        self.decoded: OrderedDict[bytes, ConsensusMessage] = OrderedDict()  # sha256 -> message
        self.syncing = False
        self.last_commit_time = time.monotonic()
        self.shutdown = trio.Event()

    # --- the process ---------------------------------------------------------------------

    async def run(self) -> None:
        log_event(log, "node starting", height=self.store.state.height, bank=self.bank)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_signals)
            await nursery.start(self.net.run)
            nursery.start_soon(self._network_loop, nursery)
            nursery.start_soon(self._gossip_loop)
            nursery.start_soon(self._consensus_loop, nursery)
            try:
                await nursery.start(
                    serve_api,
                    create_app(self),
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
            await self.shutdown.wait()
            nursery.cancel_scope.cancel()
        self.store.close()
        log_event(log, "node stopped", height=self.store.state.height)

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                self.shutdown.set()
                return

    # --- consensus -----------------------------------------------------------------------

    async def _consensus_loop(self, nursery: trio.Nursery) -> None:
        self._carry_out(self.engine.start(), nursery)
        async for event in self.events_recv:
            self._carry_out(self.engine.handle(event), nursery)

    def _carry_out(self, actions: list, nursery: trio.Nursery) -> None:
        for action in actions:
            if isinstance(action, Broadcast):
                self.net.broadcast(Kind.CONSENSUS, encode_message(action.message))
            elif isinstance(action, ScheduleTimeout):
                nursery.start_soon(self._timer, action)
            elif isinstance(action, Commit):
                self._commit(action.block, action.cert)
            elif isinstance(action, RequestSync):
                self._start_sync(action.from_height, nursery)

    async def _timer(self, action: ScheduleTimeout) -> None:
        await trio.sleep(action.delay_ms / 1000)
        await self.events_send.send(action.timeout)

    def _commit(self, block: Block, cert: CommitCertificate) -> None:
        changes = self.app.take_changes(block)
        self.store.commit_block(block, cert, changes)
        self.mempool.on_commit(block)
        self.last_commit_time = time.monotonic()
        self.metrics.on_commit(block, self.last_commit_time)
        log_event(
            log,
            "committed",
            height=block.height,
            round=block.header.round,
            txs=len(block.txs),
            hash=block.hash.hex(),
        )

    # --- network -------------------------------------------------------------------------

    async def _network_loop(self, nursery: trio.Nursery) -> None:
        """Drain the network's inbound channel; nothing here may block on a peer."""
        async for message in self.net.inbound:
            try:
                await self._on_message(message, nursery)
            except Exception as exc:  # a peer's bytes must never stop the node
                if message.reply_to is not None:
                    message.reply_to.close()  # the asker gets a reset now, not a 30 s wait
                log_event(
                    log,
                    "bad message from peer",
                    logging.WARNING,
                    peer=message.sender.hex()[:16],
                    kind=message.kind.name,
                    error=repr(exc),
                )

    async def _on_message(self, message: Message, nursery: trio.Nursery) -> None:
        if message.kind is Kind.CONSENSUS:
            await self.events_send.send(MessageReceived(self._decode_consensus(message.payload)))
        elif message.kind is Kind.TXS:
            await self._admit_gossip(message.payload)
        elif message.kind is Kind.SYNC_REQUEST:
            self.net.respond(message, self._serve_sync(message.payload))

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
        msg = decode_message(payload)
        verify_message(msg, self.validators, self.genesis.chain_id)
        self.decoded[key] = msg
        if len(self.decoded) > DECODED_CACHE_SIZE:
            self.decoded.popitem(last=False)
        return msg

    async def _admit_gossip(self, payload: bytes) -> None:
        raws = msgpack.unpackb(payload, raw=False)
        if not isinstance(raws, list):
            raise BadMessage("tx batch must be a list")
        for index, raw in enumerate(raws):
            if index % GOSSIP_YIELD_EVERY == GOSSIP_YIELD_EVERY - 1:
                # A batch of 2,000 new txs is ~0.3 s of signature checks: let votes,
                # heartbeats and the API run in between.
                await trio.lowlevel.checkpoint()
            if type(raw) is bytes and sha256(raw).digest() in self.mempool:
                # Pending txs are re-gossiped every few seconds; a tx id is the hash of its
                # bytes, so one already held needs no decoding (decoding was most of a
                # node's CPU under load).
                continue
            try:
                self.mempool.add(decode_tx(raw))
            except (TxRejected, MempoolError):
                continue  # already known, or no longer valid here: nothing to report to a peer

    async def _gossip_loop(self) -> None:
        """Send accepted txs to every validator in batches; re-send those still pending.

        Direct streams deliver what they accept, but a peer that restarts or is cut off
        loses what was in flight. A tx is sent again only if it was already pending at the
        previous re-gossip tick, so under load fresh txs are not sent twice.
        """
        pending_before: set[bytes] = set()
        next_regossip = time.monotonic() + REGOSSIP_INTERVAL
        while True:
            await trio.sleep(GOSSIP_INTERVAL)
            if time.monotonic() >= next_regossip:
                pending = self.mempool.candidates(REGOSSIP_MAX_TXS)
                self.outgoing_txs.extend(tx.raw for tx in pending if tx.tx_id in pending_before)
                pending_before = {tx.tx_id for tx in pending}
                next_regossip = time.monotonic() + REGOSSIP_INTERVAL
            while self.outgoing_txs:
                batch = self.outgoing_txs[:GOSSIP_BATCH_TXS]
                self.outgoing_txs = self.outgoing_txs[GOSSIP_BATCH_TXS:]
                self.net.broadcast(Kind.TXS, msgpack.packb(batch, use_bin_type=True))

    # --- catch-up ------------------------------------------------------------------------

    def _serve_sync(self, payload: bytes) -> bytes:
        start, count = msgpack.unpackb(payload)
        if not (type(start) is int and type(count) is int and start >= 1):
            raise BadMessage("sync request is [from_height, count]")
        last = min(start + min(count, SYNC_BATCH) - 1, self.store.state.height)
        entries = [
            [block.encode(), cert.encode()] for block, cert in self.store.blocks(start, last)
        ]
        return msgpack.packb(entries, use_bin_type=True)

    def _start_sync(self, from_height: int, nursery: trio.Nursery) -> None:
        if not self.syncing:
            self.syncing = True
            nursery.start_soon(self._sync_task, from_height)

    async def _sync_task(self, from_height: int) -> None:
        """Fetch decided blocks with certificates from peers until none has more.

        Certificates are checked here so a byzantine peer cannot make the engine work on
        junk; the engine checks them again and re-executes before committing.
        """
        try:
            height = from_height
            while True:
                got = 0
                for peer in sorted(self.net.connected_peers()):
                    try:
                        reply = await self.net.request(
                            peer,
                            Kind.SYNC_REQUEST,
                            msgpack.packb([height, SYNC_BATCH]),
                            SYNC_TIMEOUT,
                        )
                        entries = msgpack.unpackb(reply, raw=False)
                        for raw_block, raw_cert in entries:
                            block, cert = (
                                Block.decode(raw_block),
                                CommitCertificate.decode(raw_cert),
                            )
                            if block.height != height or cert.block_hash != block.hash:
                                raise BadMessage("sync reply out of order")
                            verify_certificate(cert, self.validators, self.genesis.chain_id)
                            await self.events_send.send(CommitReceived(block, cert))
                            height += 1
                            got += 1
                    except (
                        RequestFailed,
                        BadMessage,
                        InvalidBlock,
                        InvalidCertificate,
                        ValueError,
                        TypeError,
                    ) as exc:
                        log_event(
                            log,
                            "sync from peer failed",
                            logging.WARNING,
                            peer=peer.hex()[:16],
                            error=repr(exc),
                        )
                        continue
                    if got:
                        break
                if not got:
                    return
        finally:
            self.syncing = False

    # --- NodeService (the HTTP API) -------------------------------------------------------

    @property
    def registry(self) -> CollectorRegistry:
        return self.metrics.registry

    async def submit(self, raws: list[bytes]) -> list[SubmitResult]:
        results = []
        accepted = []
        for raw in raws:
            try:
                tx = decode_tx(raw)
                self.mempool.add(tx)
            except (TxRejected, MempoolError) as exc:
                results.append(SubmitResult.rejected(raw, exc))
                self.metrics.on_reject(
                    exc.reason.value if isinstance(exc, TxRejected) else exc.code
                )
                continue
            self.outgoing_txs.append(tx.raw)
            accepted.append(tx.tx_id)
            results.append(SubmitResult.accepted(tx.tx_id))
        self.metrics.on_submit(accepted, time.monotonic())
        return results

    def tx_status(self, tx_id: bytes) -> TxStatus:
        location = self.store.tx_location(tx_id)
        if location is not None:
            return TxStatus.committed(*location)
        return self.mempool.status(tx_id)

    def account(self, account: bytes) -> AccountInfo | None:
        state = self.store.state
        bank = state.accounts.get(account)
        if bank is None:
            return None
        return AccountInfo(
            account=account,
            bank=bank,
            nonce=state.nonces.get(account, 0),
            next_nonce=self.mempool.next_nonce(account),
            balances={
                symbol: units
                for symbol in state.tokens
                if (units := state.balances.get((account, symbol), 0))
            },
        )

    def account_txs(
        self, account: bytes, before_height: int | None, limit: int
    ) -> AccountTxs | None:
        if account not in self.store.state.accounts:
            return None
        entries, next_before = self.store.account_page(
            account, before_height=before_height, limit=limit
        )
        located = self.store.txs_at([(height, position) for height, position, _ in entries])
        return AccountTxs(
            [
                AccountTx(height, position, time_ms, tx)
                for (height, position, _), (tx, time_ms) in zip(entries, located, strict=True)
            ],
            next_before,
        )

    def block(self, height: int) -> CommittedBlock | None:
        if not 1 <= height <= self.store.state.height:
            return None
        return CommittedBlock(self.store.block(height), self.store.certificate(height))

    def head(self) -> Head:
        state = self.store.state
        return Head(
            chain_id=state.chain_id,
            height=state.height,
            block_hash=state.last_hash,
            state_root=state.state_root,
            time_ms=state.last_time_ms,
        )

    def status(self) -> NodeStatus:
        engine = self.engine
        peers = self.net.connected_peers()
        self.metrics.update(
            round=engine.round,
            peers=len(peers),
            mempool_size=len(self.mempool),
            evidence=len(engine.evidence),
            dropped_frames=self.net.dropped_frames(),
        )
        return NodeStatus(
            bank=self.bank,
            chain_id=self.genesis.chain_id,
            height=self.store.state.height,
            round=engine.round,
            step=engine.step.name.lower(),
            peers=len(peers),
            mempool_size=len(self.mempool),
            evidence=len(engine.evidence),
            extra={
                "head_hash": self.store.state.last_hash.hex(),
                "state_root": self.store.state.state_root.hex(),
                "peer_ids": sorted(p.hex() for p in peers),
                "seconds_since_commit": round(time.monotonic() - self.last_commit_time, 3),
                "consensus": engine.status().to_json(),
            },
        )


def run_node(home: Path) -> None:
    """Entry point of `depnet node run`: run one validator in the foreground until SIGTERM."""
    node_home = NodeHome(home)
    config = node_home.load_config()
    setup_logging(node_home.log_file, config.bank)
    try:
        node = Node(node_home, config)
        trio.run(node.run)
    except Exception:  # the user sees one line (cli/node.py); the log keeps the traceback
        log.exception("node stopped")
        raise
