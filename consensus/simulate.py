"""A deterministic simulator: real engines, real ledger execution, a seeded faulty network.

Like TigerBeetle's VOPR and Diem's Twins, it runs n real ``Engine`` instances in one
process over a simulated network and clock (an event queue), injects faults, and checks
invariants on every commit. A run is a pure function of its ``SimConfig``: one
``random.Random(seed)`` draws every fault, so a failing seed is a reproducible bug
report (``SimConfig.command()`` prints the ``depnet sim`` line that replays it).

What is real: every node keeps a ``chain.state.State`` from a small genesis and
re-executes proposed blocks, which carry real signed transfers (signed once per process);
every consensus message is encoded to bytes, decoded and signature-checked as the node
does; each node has its own ``Signer`` over a ``MemorySignerStorage`` that survives its
crashes, and a list of committed blocks that stands for its store.

Faults: message drop, a delay distribution (with extra hold-back for reordering),
duplication, partitions that heal at a given time, crashes (``CrashKind``: a plain crash
and restart rebuilds the engine from the signer storage and the committed blocks; a
*wipe* also loses the blocks, so the node catches up by sync with its signer state and
lock kept; *amnesia* loses the signer state or rolls it back to an earlier record, so the
node may sign twice and counts as byzantine), clocks skewed by a given amount (every
node's clock is off by a few ms anyway), and byzantine validators, made only from honest
engines with shared keys or rewritten outbound messages (``consensus/byzantine.py``
lists the modes), never from a hand-written evil engine.

Invariants checked: no two honest nodes commit different blocks at a height; every
committed block re-executes on the reference state and its certificate verifies; honest
nodes' state roots agree; every evidence record verifies and accuses a byzantine or
amnesiac validator; at each commit, an honest engine holds no more than
``Retained.bound`` allows. Liveness: every non-byzantine node (amnesiac ones too) reaches the
target height by the deadline, which is measured from the time the last partition heals
and the last crashed node restarts.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from hashlib import sha256

from nacl.signing import SigningKey

from chain.block import Block, CommitCertificate
from chain.errors import InvalidBlock
from chain.genesis import Genesis, parse_genesis
from chain.state import State, execute_block
from chain.tx import ContractTerms, Milestone, Ref, SwapTerms, Tx, TxKind, sign_tx
from consensus.byzantine import ByzantineMode, Outbox
from consensus.engine import Engine, Retained
from consensus.events import (
    Action,
    Broadcast,
    Commit,
    CommitReceived,
    Event,
    MessageReceived,
    RequestSync,
    ScheduleTimeout,
    TimeoutFired,
    Timeouts,
)
from consensus.evidence import Equivocation, InvalidEvidence, verify_equivocation
from consensus.ledger_app import LedgerApp
from consensus.messages import BadMessage, Message, decode_message, encode_message
from consensus.signer import MemorySignerStorage, Signer
from consensus.validators import (
    InvalidCertificate,
    ValidatorSet,
    verify_certificate,
    verify_message,
)

CHAIN_ID = "depnet-sim"
GENESIS_TIME_MS = 1_764_000_000_000
TOKEN = "USD.BANK0"
ASK_TOKEN = "EUR.BANK0"  # what the load's swap offers ask for
ACCOUNTS = 8
TXS_PER_ACCOUNT = 40  # 320 pre-signed txs; later blocks are empty
TXS_PER_BLOCK = 4
SYNC_BATCH = 32
MAX_EVENTS = 3_000_000
DECODED_CACHE = 50_000  # decoded messages remembered (each is delivered to every peer)

# Simulated links take a few ms; timeouts are a few times that, as on a LAN.
SIM_TIMEOUTS = Timeouts(
    propose_ms=200,
    propose_delta_ms=100,
    prevote_ms=100,
    prevote_delta_ms=50,
    precommit_ms=100,
    precommit_delta_ms=50,
    resend_ms=150,
    commit_ms=0,
)


class Verdict(StrEnum):
    OK = "ok"
    SAFETY_VIOLATION = "safety_violation"
    LIVENESS_FAILURE = "liveness_failure"


@dataclass(frozen=True, slots=True)
class Partition:
    """From ``start_ms`` to ``end_ms`` nodes in different groups cannot reach each other.
    Nodes not listed in any group reach everyone."""

    groups: tuple[tuple[int, ...], ...]
    start_ms: int
    end_ms: int

    def spec(self) -> str:
        groups = "|".join(",".join(str(n) for n in group) for group in self.groups)
        return f"{groups}@{self.start_ms}-{self.end_ms}"

    @classmethod
    def parse(cls, spec: str) -> Partition:
        """The inverse of ``spec()``, e.g. ``0,1|2,3@1000-5000``; ValueError says why not."""
        groups, start, end = _window(spec, "0,1|2,3")
        try:
            parsed = tuple(tuple(int(n) for n in g.split(",")) for g in groups.split("|"))
        except ValueError:
            raise ValueError(f"{spec!r}: groups are node ids like 0,1|2,3") from None
        return cls(parsed, start, end)


class CrashKind(StrEnum):
    """What a crashed node has lost when it restarts; the value is its ``depnet sim`` flag."""

    CRASH = "crash"  # its memory only: signer state and committed blocks survive
    WIPE = "wipe"  # its blocks too, as an operator's wipe-and-resync: it catches up by sync
    AMNESIA = "amnesia"  # its signer state, lost or rolled back: it may sign twice


@dataclass(frozen=True, slots=True)
class Crash:
    """Node ``node`` stops at ``at_ms``, losing what ``kind`` says, and restarts at
    ``restart_ms``."""

    node: int
    at_ms: int
    restart_ms: int
    kind: CrashKind = CrashKind.CRASH

    def spec(self) -> str:
        return f"{self.node}@{self.at_ms}-{self.restart_ms}"

    @classmethod
    def parse(cls, spec: str, kind: CrashKind = CrashKind.CRASH) -> Crash:
        """The inverse of ``spec()``, e.g. ``2@1000-3000``; ValueError says why not."""
        node, start, end = _window(spec, "NODE")
        try:
            return cls(int(node), start, end, kind)
        except ValueError:
            raise ValueError(f"{spec!r}: NODE is a validator index") from None


@dataclass(frozen=True, slots=True)
class Skew:
    """Node ``node``'s clock runs ``ms`` ahead (negative: behind) of simulated time. It
    dates the blocks it proposes by that clock and judges others' blocks timely by it."""

    node: int
    ms: int

    def spec(self) -> str:
        return f"{self.node}={self.ms}"

    @classmethod
    def parse(cls, spec: str) -> Skew:
        """The inverse of ``spec()``, e.g. ``2=-30000``; ValueError says why not."""
        node, sep, ms = spec.partition("=")
        try:
            if not sep:
                raise ValueError
            return cls(int(node), int(ms))
        except ValueError:
            raise ValueError(f"{spec!r}: expected NODE=MS, e.g. 2=-30000") from None


def _window(spec: str, what: str) -> tuple[str, int, int]:
    """``WHAT@START-END`` -> (WHAT, START, END)."""
    head, sep, window = spec.rpartition("@")
    start, dash, end = window.partition("-")
    try:
        if not (sep and dash and head):
            raise ValueError
        return head, int(start), int(end)
    except ValueError:
        raise ValueError(f"{spec!r}: expected {what}@START-END (ms)") from None


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Everything a run depends on. Node ids are validator indexes 0..n-1; the twin
    engines of double-vote validators get ids n, n+1, ... in validator order. Byzantine
    validators are drawn from the seed among those without an amnesia crash, which are
    faulty already."""

    nodes: int = 4
    heights: int = 20
    seed: int = 0
    drop: float = 0.0
    delay_min_ms: int = 2
    delay_max_ms: int = 30
    duplicate: float = 0.0
    reorder: float = 0.0  # share of messages held back by up to 5x the max delay
    byzantine: int = 0
    byzantine_mode: ByzantineMode = ByzantineMode.MIXED
    partitions: tuple[Partition, ...] = ()
    crashes: tuple[Crash, ...] = ()
    skew: tuple[Skew, ...] = ()
    deadline_ms: int | None = None  # after the faults heal; default from ``heights``

    def __post_init__(self) -> None:
        # Crashes in the order the command line groups them (--crash, --wipe, --amnesia),
        # so that the config that ``command()`` prints is this one, event for event.
        kinds = list(CrashKind)
        ordered = tuple(sorted(self.crashes, key=lambda c: kinds.index(c.kind)))
        object.__setattr__(self, "crashes", ordered)
        if self.nodes < 1 or self.heights < 1:
            raise ValueError("need at least one node and one height")
        if not 0 <= self.byzantine < self.nodes - len(self.amnesiac):
            # The invariants are checked on honest nodes: without one, any run is "ok".
            raise ValueError(
                "byzantine and amnesiac validators together must be at most --nodes - 1 "
                "(one honest)"
            )
        for p in (self.drop, self.duplicate, self.reorder):
            if not 0.0 <= p < 1.0:
                raise ValueError("probabilities must be in [0, 1)")
        if not 0 <= self.delay_min_ms <= self.delay_max_ms:
            raise ValueError("delay must satisfy 0 <= min <= max")
        engines = self.nodes + self.byzantine  # at most one twin per byzantine validator
        for partition in self.partitions:
            if not 0 <= partition.start_ms <= partition.end_ms:
                raise ValueError(f"partition {partition.spec()}: need start <= end")
            if any(not 0 <= n < engines for group in partition.groups for n in group):
                raise ValueError(f"partition {partition.spec()}: no such node")
        for crash in self.crashes:
            if not 0 <= crash.node < self.nodes or not 0 <= crash.at_ms <= crash.restart_ms:
                raise ValueError(
                    f"{crash.kind} {crash.spec()}: unknown node or restart before crash"
                )
        for skew in self.skew:
            if not 0 <= skew.node < self.nodes:
                raise ValueError(f"skew {skew.spec()}: no such node")
        if len({skew.node for skew in self.skew}) != len(self.skew):
            raise ValueError("one clock skew per node")

    @property
    def amnesiac(self) -> frozenset[int]:
        """Validators with an amnesia crash: faulty, since they may sign twice."""
        return frozenset(c.node for c in self.crashes if c.kind is CrashKind.AMNESIA)

    @property
    def heal_ms(self) -> int:
        """When the last partition ends and the last crashed node is back."""
        ends = [p.end_ms for p in self.partitions] + [c.restart_ms for c in self.crashes]
        return max(ends, default=0)

    @property
    def effective_deadline_ms(self) -> int:
        """Generous, and scaled by the links: a height takes a few message delays without
        faults and a few rounds under heavy loss; 30 s more cover the rounds a long
        partition ran up, whose timeouts grew meanwhile."""
        if self.deadline_ms is not None:
            return self.heal_ms + self.deadline_ms
        mean_delay = (self.delay_min_ms + self.delay_max_ms) / 2
        mean_delay += self.reorder * 2.5 * (self.delay_max_ms + 1)
        per_height = 1_000 + 10 * mean_delay
        return self.heal_ms + 30_000 + int(per_height * self.heights)

    def command(self) -> str:
        """The ``depnet sim`` command line that replays this run exactly."""
        parts = [
            f"depnet sim --nodes {self.nodes} --heights {self.heights} --seed {self.seed}",
            f"--drop {self.drop:g}",
            f"--delay {self.delay_min_ms}-{self.delay_max_ms}",
        ]
        if self.duplicate:
            parts.append(f"--duplicate {self.duplicate:g}")
        if self.reorder:
            parts.append(f"--reorder {self.reorder:g}")
        if self.byzantine:
            parts.append(f"--byzantine {self.byzantine} --byzantine-mode {self.byzantine_mode}")
        parts += [f"--partition '{p.spec()}'" for p in self.partitions]
        parts += [f"--{c.kind} {c.spec()}" for c in self.crashes]
        parts += [f"--skew {s.spec()}" for s in self.skew]
        if self.deadline_ms is not None:
            parts.append(f"--deadline {self.deadline_ms}")
        return " ".join(parts)


@dataclass
class SimResult:
    config: SimConfig
    verdict: Verdict
    violations: list[str]
    committed: dict[int, int]  # honest node id -> committed height
    max_round: int  # highest round any decided block was decided in
    late_heights: int  # decided heights that needed more than round 0
    messages_sent: int
    messages_delivered: int
    messages_dropped: int
    messages_duplicated: int
    sync_requests: int
    evidence: list[Equivocation]
    byzantine: dict[int, ByzantineMode]  # validator index -> mode (amnesiac: config.amnesiac)
    sim_time_ms: int
    events: int
    decided_at_ms: dict[int, int]  # height -> when the first honest node committed it

    @property
    def exit_code(self) -> int:
        return {Verdict.OK: 0, Verdict.SAFETY_VIOLATION: 1, Verdict.LIVENESS_FAILURE: 2}[
            self.verdict
        ]

    def to_json(self) -> dict:
        return {
            "verdict": self.verdict.value,
            "violations": self.violations,
            "seed": self.config.seed,
            "nodes": self.config.nodes,
            "target_height": self.config.heights,
            "committed": {str(k): v for k, v in self.committed.items()},
            "heights_committed": min(self.committed.values(), default=0),
            "max_round": self.max_round,
            "heights_after_round_0": self.late_heights,
            "messages": {
                "sent": self.messages_sent,
                "delivered": self.messages_delivered,
                "dropped": self.messages_dropped,
                "duplicated": self.messages_duplicated,
                "sync_requests": self.sync_requests,
            },
            "byzantine": {str(k): v.value for k, v in self.byzantine.items()},
            "amnesiac": sorted(self.config.amnesiac),
            "evidence": [
                {"validator_index": world(self.config.nodes).validators.index(e.validator)}
                | e.to_json()
                for e in self.evidence
            ],
            "sim_time_ms": self.sim_time_ms,
            "events": self.events,
            "command": self.config.command(),
        }


# --- the world: keys, genesis, transactions (built once per process) -----------------------


@dataclass(frozen=True)
class World:
    genesis: Genesis
    validators: ValidatorSet
    keys: tuple[SigningKey, ...]
    pool: tuple[tuple[Tx, ...], ...]  # per account, transfers with nonces 0, 1, 2, ...
    verified: frozenset[bytes]  # ids of pool txs: signed by us, so checked once, here


def _key(label: str) -> SigningKey:
    return SigningKey(sha256(f"depnet-sim/{label}".encode()).digest())


@lru_cache(maxsize=4)
def _accounts() -> tuple[tuple[SigningKey, ...], tuple[tuple[Tx, ...], ...]]:
    keys = tuple(_key(f"account/{i}") for i in range(ACCOUNTS))
    pool = []
    for a, key in enumerate(keys):
        txs: list[Tx] = []
        for nonce in range(TXS_PER_ACCOUNT):
            txs.append(_load_tx(key, bytes(keys[(a + 1) % ACCOUNTS].verify_key), nonce, txs))
        pool.append(tuple(txs))
    return keys, tuple(pool)


def _load_tx(key: SigningKey, to: bytes, nonce: int, before: list[Tx]) -> Tx:
    """An account's tx ``nonce``, in a cycle of the kinds a client signs: a transfer; a
    contract (approved by the buyer itself) and the release of one of its milestones; a
    swap offer and its cancel. Their deadlines lie beyond any run, so no account's txs
    ever stop applying, whatever the faults delay."""
    step = nonce % 5
    far = GENESIS_TIME_MS + 10**9
    kind, fields = TxKind.TRANSFER, {"to": to, "token": TOKEN, "amount": 1 + nonce}
    if step == 1:
        terms = ContractTerms(
            bytes(key.verify_key), far, bytes(32), (Milestone("a", 1), Milestone("b", 1 + nonce))
        )
        kind, fields = TxKind.CONTRACT_OPEN, {**fields, "amount": 2 + nonce, "args": terms}
    elif step == 2:
        kind, fields = TxKind.CONTRACT_RELEASE, {"args": Ref(before[nonce - 1].tx_id, "a")}
    elif step == 3:
        terms = SwapTerms(ASK_TOKEN, 1 + nonce, far)
        kind, fields = TxKind.SWAP_OFFER, {"token": TOKEN, "amount": 1 + nonce, "args": terms}
    elif step == 4:
        kind, fields = TxKind.SWAP_CANCEL, {"args": Ref(before[nonce - 1].tx_id)}
    return sign_tx(key, kind, CHAIN_ID, nonce, memo=f"inv-{nonce}", **fields)  # type: ignore[arg-type]


@lru_cache(maxsize=8)
def world(nodes: int) -> World:
    """Genesis with ``nodes`` bank validators and a few funded client accounts at BANK0."""
    keys = tuple(_key(f"validator/{i}") for i in range(nodes))
    account_keys, pool = _accounts()
    genesis = parse_genesis(
        {
            "chain_id": CHAIN_ID,
            "genesis_time_ms": GENESIS_TIME_MS,
            "banks": [
                {
                    "name": f"BANK{i}",
                    "validator": bytes(keys[i].verify_key).hex(),
                    "issuer": bytes(_key(f"issuer/{i}").verify_key).hex(),
                    "tokens": [{"symbol": f"USD.BANK{i}", "decimals": 2}]
                    + ([{"symbol": ASK_TOKEN, "decimals": 2}] if i == 0 else []),
                }
                for i in range(nodes)
            ],
            "accounts": [
                {
                    "account": bytes(k.verify_key).hex(),
                    "bank": "BANK0",
                    "balances": {TOKEN: 1_000_000},
                }
                for k in account_keys
            ],
        }
    )
    verified = frozenset(tx.tx_id for txs in pool for tx in txs)
    return World(genesis, ValidatorSet(genesis.validators), keys, pool, verified)


def sim_app(world: World, proposer: bytes, clock: Callable[[], int]) -> LedgerApp:
    """The engine's App over a real State; blocks take the next pre-signed transfers."""
    state = State(world.genesis)

    def candidates(height: int) -> list[Tx]:
        pool = world.pool
        out = []
        for i in range(len(pool)):
            txs = pool[(height + i) % len(pool)]
            nonce = state.nonces.get(txs[0].sender, 0)
            if nonce < len(txs):
                out.append(txs[nonce])
        return out

    return LedgerApp(
        state,
        proposer=proposer,
        max_txs=TXS_PER_BLOCK,
        clock=clock,
        candidates=candidates,
        verified=world.verified,
    )


def apply_decided(app: LedgerApp, block: Block) -> None:
    """Commit a decided block; raises InvalidBlock if it does not execute here."""
    app.state.commit(app.take_changes(block), block.header)


# --- the simulation -----------------------------------------------------------------------


@dataclass
class _Node:
    id: int
    key: SigningKey
    mode: ByzantineMode | None  # None: honest
    outbox: Outbox | None  # rewrites what a byzantine node sends; None: sent as signed
    skew_ms: int
    storage: MemorySignerStorage = field(default_factory=MemorySignerStorage)
    committed: list[tuple[Block, CommitCertificate]] = field(default_factory=list)
    engine: Engine | None = None
    app: LedgerApp | None = None
    epoch: int = 0  # bumped on crash: timers and sync replies of a dead incarnation are void
    crash_next: bool = False  # crash in the middle of carrying out the next actions


class _RecordingStorage(MemorySignerStorage):
    """Signer storage that keeps every record saved, for an amnesia crash to roll back to."""

    def __init__(self) -> None:
        super().__init__()
        self.history: list[bytes] = []

    def save(self, data: bytes) -> None:
        super().save(data)
        self.history.append(data)


# --- what the event queue holds ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Deliver:
    """Wire bytes reach a node."""

    node: int
    data: bytes


@dataclass(frozen=True, slots=True)
class _Timer:
    """A timeout the engine scheduled; void if the node crashed since (another epoch)."""

    node: int
    epoch: int
    timeout: TimeoutFired


@dataclass(frozen=True, slots=True)
class _SyncReply:
    """``peer`` answers the sync request ``node`` sent in ``epoch``."""

    node: int
    epoch: int
    peer: int
    from_height: int


@dataclass(frozen=True, slots=True)
class _CrashAt:
    node: int


@dataclass(frozen=True, slots=True)
class _RestartAt:
    node: int
    kind: CrashKind


_SimEvent = _Deliver | _Timer | _SyncReply | _CrashAt | _RestartAt


class Simulation:
    """One run. ``run()`` returns a SimResult; see the module docstring."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.world = world(config.nodes)
        self.now = 0
        self.queue: list[tuple[int, int, _SimEvent]] = []  # (time, sequence, event)
        self.seq = 0
        self.events = 0
        self.booted = False
        self.sent = self.delivered = self.dropped = self.duplicated = self.sync_requests = 0
        self.violations: list[str] = []
        self.decoded: dict[bytes, Message | None] = {}
        self.reference = State(self.world.genesis)
        self.decided: dict[int, tuple[bytes, bytes]] = {}  # height -> (block hash, state root)
        self.decided_rounds: dict[int, int] = {}
        self.decided_at: dict[int, int] = {}
        self.evidence: dict[tuple[bytes, int, int, str], Equivocation] = {}
        self.byzantine = self._choose_byzantine()
        self.nodes = self._make_nodes()
        self.honest = [node for node in self.nodes if node.mode is None]

    def _choose_byzantine(self) -> dict[int, ByzantineMode]:
        candidates = [v for v in range(self.config.nodes) if v not in self.config.amnesiac]
        chosen = sorted(self.rng.sample(candidates, self.config.byzantine))
        modes = [m for m in ByzantineMode if m is not ByzantineMode.MIXED]
        mode = self.config.byzantine_mode
        return {v: self.rng.choice(modes) if mode is ByzantineMode.MIXED else mode for v in chosen}

    def _make_nodes(self) -> list[_Node]:
        keys = self.world.keys
        skew = {s.node: s.ms for s in self.config.skew}
        nodes = []
        for v in range(self.config.nodes):
            mode = self.byzantine.get(v)
            outbox = self._outbox(v, mode)
            nodes.append(_Node(v, keys[v], mode, outbox, skew.get(v, self.rng.randrange(50))))
        for v, mode in self.byzantine.items():
            if mode is ByzantineMode.DOUBLE_VOTE:
                nodes.append(_Node(len(nodes), keys[v], mode, None, self.rng.randrange(50)))
        for v in self.config.amnesiac:
            nodes[v].storage = _RecordingStorage()
        return nodes

    def _outbox(self, v: int, mode: ByzantineMode | None) -> Outbox | None:
        if mode is None or mode is ByzantineMode.DOUBLE_VOTE:
            return None
        return Outbox(mode, self.world.keys[v], CHAIN_ID, self.rng)

    # --- the event loop -------------------------------------------------------------------

    def run(self) -> SimResult:
        while self.step():
            pass
        return self._result()

    def step(self) -> bool:
        """Carry out the next event (the first call boots every node); False once the run
        is over: every honest node reached the target, an invariant broke, or the deadline
        or the event budget passed. A test may look at the engines between steps."""
        if not self.booted:
            self.booted = True
            for node in self.nodes:
                self._boot(node)
            for crash in self.config.crashes:
                self._push(crash.at_ms, _CrashAt(crash.node))
                self._push(crash.restart_ms, _RestartAt(crash.node, crash.kind))
        if not self.queue or self.violations:
            return False
        time, _, event = heapq.heappop(self.queue)
        if time > self.config.effective_deadline_ms or self.events >= MAX_EVENTS:
            return False
        self.now = time
        self.events += 1
        self._dispatch(event)
        return not all(len(n.committed) >= self.config.heights for n in self.honest)

    def _push(self, time: int, event: _SimEvent) -> None:
        self.seq += 1  # ties run in the order pushed; events themselves are never compared
        heapq.heappush(self.queue, (time, self.seq, event))

    def _dispatch(self, event: _SimEvent) -> None:
        node = self.nodes[event.node]
        match event:
            case _Deliver(data=data):
                msg = self._decode(data)
                if node.engine is not None and msg is not None:
                    self.delivered += 1
                    self._handle(node, MessageReceived(msg))
            case _Timer(epoch=epoch, timeout=timeout):
                if node.engine is not None and node.epoch == epoch:
                    self._handle(node, timeout)
            case _SyncReply():
                self._serve_sync(event)
            case _CrashAt():
                if self.rng.random() < 0.5:
                    node.crash_next = True  # die half-way through the next batch of actions
                else:
                    self._crash(node)
            case _RestartAt(kind=kind):
                if node.engine is not None:
                    self._crash(node)
                self._lose(node, kind)
                self._boot(node)

    def _decode(self, data: bytes) -> Message | None:
        """Decode and verify as the node does; the result is the same for every receiver
        of the same bytes, so each distinct message is checked once per run."""
        if data not in self.decoded:
            if len(self.decoded) >= DECODED_CACHE:  # a flood of distinct messages
                self.decoded.clear()
            try:
                msg = decode_message(data)
                verify_message(msg, self.world.validators, CHAIN_ID)
                self.decoded[data] = msg
            except BadMessage:
                self.decoded[data] = None
        return self.decoded[data]

    # --- nodes ------------------------------------------------------------------------------

    def _boot(self, node: _Node) -> None:
        """Start (or restart) a node from what survives a crash: signer state and blocks."""
        node.app = sim_app(self.world, bytes(node.key.verify_key), lambda: self._clock(node))
        for block, _ in node.committed:
            apply_decided(node.app, block)
        last_cert = node.committed[-1][1] if node.committed else None
        node.engine = Engine(
            CHAIN_ID,
            self.world.validators,
            Signer(node.key, node.storage, CHAIN_ID),
            node.app,
            height=len(node.committed) + 1,
            last_cert=last_cert,
            timeouts=SIM_TIMEOUTS,
        )
        self._carry_out(node, node.engine.start())

    def _lose(self, node: _Node, kind: CrashKind) -> None:
        """What a restart finds gone: the blocks (wipe), or the signer state, lost or
        rolled back to a record saved earlier (amnesia)."""
        if kind is CrashKind.WIPE:
            node.committed = []
        elif kind is CrashKind.AMNESIA:
            assert isinstance(node.storage, _RecordingStorage)
            node.storage.data = self.rng.choice([None, *node.storage.history[:-1]])

    def _clock(self, node: _Node) -> int:
        """The node's wall clock: simulated time from genesis, off by the node's skew."""
        return GENESIS_TIME_MS + self.now + node.skew_ms

    def _crash(self, node: _Node) -> None:
        self._collect_evidence(node)
        node.engine = node.app = None
        node.epoch += 1
        node.crash_next = False

    def _handle(self, node: _Node, event: Event) -> None:
        assert node.engine is not None
        self._carry_out(node, node.engine.handle(event))

    def _carry_out(self, node: _Node, actions: list[Action]) -> None:
        if node.crash_next:
            actions = actions[: self.rng.randrange(len(actions) + 1)]
        for action in actions:
            if isinstance(action, Broadcast):
                self._broadcast(node, action.message)
            elif isinstance(action, ScheduleTimeout):
                timer = _Timer(node.id, node.epoch, action.timeout)
                self._push(self.now + action.delay_ms, timer)
            elif isinstance(action, Commit):
                self._commit(node, action.block, action.cert)
            elif isinstance(action, RequestSync):
                self._request_sync(node, action.from_height)
        if node.crash_next:
            self._crash(node)

    def _commit(self, node: _Node, block: Block, cert: CommitCertificate) -> None:
        assert node.app is not None and block.height == len(node.committed) + 1
        try:
            apply_decided(node.app, block)
        except InvalidBlock as exc:
            if node.mode is None:
                self.violations.append(
                    f"node {node.id} committed block {block.height} that does not execute: {exc}"
                )
            return
        node.committed.append((block, cert))
        if node.mode is None:
            self._check_commit(node, block, cert)
            self._check_retained(node)

    def _check_commit(self, node: _Node, block: Block, cert: CommitCertificate) -> None:
        """Safety, checked at the moment an honest node commits."""
        height = block.height
        try:
            verify_certificate(cert, self.world.validators, CHAIN_ID)
        except InvalidCertificate as exc:
            self.violations.append(f"node {node.id} height {height}: bad certificate: {exc}")
        if cert.block_hash != block.hash:
            self.violations.append(f"node {node.id} height {height}: certificate for another block")
        if height not in self.decided:
            try:
                changes = execute_block(self.reference, block, verified=self.world.verified)
            except InvalidBlock as exc:
                self.violations.append(f"height {height}: committed block is invalid: {exc}")
                return
            self.reference.commit(changes, block.header)
            self.decided[height] = (block.hash, self.reference.state_root)
            self.decided_rounds[height] = cert.round
            self.decided_at[height] = self.now
            return
        decided_hash, root = self.decided[height]
        if block.hash != decided_hash:
            self.violations.append(
                f"fork at height {height}: node {node.id} committed {block.hash.hex()[:12]}, "
                f"another honest node {decided_hash.hex()[:12]}"
            )
        elif node.app is not None and node.app.state.state_root != root:
            self.violations.append(f"node {node.id} height {height}: state root diverged")

    def _check_retained(self, node: _Node) -> None:
        """Memory, checked when a height's state is at its largest: at its decision."""
        assert node.engine is not None
        bound = Retained.bound(self.world.validators, node.engine.round)
        for excess in node.engine.retained().exceeding(bound):
            self.violations.append(f"node {node.id} at height {node.engine.height}: {excess}")

    # --- the network ------------------------------------------------------------------------

    def _broadcast(self, node: _Node, msg: Message) -> None:
        peers = [p.id for p in self.nodes if p.id != node.id]
        if node.outbox is not None:
            sends = node.outbox.rewrite(msg, peers)
        else:
            data = encode_message(msg)
            sends = [(peer, data) for peer in peers]
        for peer, data in sends:
            self._send(node, self.nodes[peer], data)

    def _reachable(self, a: int, b: int) -> bool:
        for p in self.config.partitions:
            if p.start_ms <= self.now < p.end_ms:
                group_a = next((g for g in p.groups if a in g), None)
                group_b = next((g for g in p.groups if b in g), None)
                if group_a is not None and group_b is not None and group_a != group_b:
                    return False
        return True

    def _delay(self) -> int:
        cfg = self.config
        delay = cfg.delay_min_ms + int(
            self.rng.random() * (cfg.delay_max_ms - cfg.delay_min_ms + 1)
        )
        if cfg.reorder and self.rng.random() < cfg.reorder:
            delay += int(self.rng.random() * 5 * (cfg.delay_max_ms + 1))
        return delay

    def _send(self, node: _Node, peer: _Node, data: bytes) -> None:
        self.sent += 1
        if not self._reachable(node.id, peer.id) or self.rng.random() < self.config.drop:
            self.dropped += 1
            return
        self._push(self.now + self._delay(), _Deliver(peer.id, data))
        if self.config.duplicate and self.rng.random() < self.config.duplicate:
            self.duplicated += 1
            self._push(self.now + self._delay(), _Deliver(peer.id, data))

    def _request_sync(self, node: _Node, from_height: int) -> None:
        """Ask one random reachable peer for decided blocks; request and reply can be lost."""
        self.sync_requests += 1
        peers = [
            p
            for p in self.nodes
            if p.id != node.id and p.engine is not None and p.mode is not ByzantineMode.SILENT
        ]
        if not peers:
            return
        peer = self.rng.choice(peers)
        lost = self.rng.random() < self.config.drop or self.rng.random() < self.config.drop
        if lost or not self._reachable(node.id, peer.id):
            return
        when = self.now + self._delay() + self._delay()
        self._push(when, _SyncReply(node.id, node.epoch, peer.id, from_height))

    def _serve_sync(self, reply: _SyncReply) -> None:
        node, peer = self.nodes[reply.node], self.nodes[reply.peer]
        if node.engine is None or node.epoch != reply.epoch or peer.engine is None:
            return
        start = reply.from_height - 1
        for block, cert in peer.committed[start : start + SYNC_BATCH]:
            if node.engine is None:  # crashed half-way through
                return
            self._handle(node, CommitReceived(block, cert))

    # --- the verdict ------------------------------------------------------------------------

    def _collect_evidence(self, node: _Node) -> None:
        if node.mode is not None or node.engine is None:
            return
        for ev in node.engine.evidence:
            self.evidence.setdefault((ev.validator, ev.height, ev.round, ev.kind), ev)

    def _check_evidence(self) -> None:
        for ev in self.evidence.values():
            try:
                verify_equivocation(ev, self.world.validators, CHAIN_ID)
            except InvalidEvidence as exc:
                self.violations.append(f"evidence does not verify: {exc}")
            accused = self.world.validators.index(ev.validator)
            if accused not in self.byzantine and accused not in self.config.amnesiac:
                self.violations.append(f"honest validator {accused} accused")

    def _result(self) -> SimResult:
        for node in self.honest:
            self._collect_evidence(node)
        self._check_evidence()
        committed = {n.id: len(n.committed) for n in self.honest}
        if self.violations:
            verdict = Verdict.SAFETY_VIOLATION
        elif any(h < self.config.heights for h in committed.values()):
            verdict = Verdict.LIVENESS_FAILURE
            behind = ", ".join(
                f"node {i} at {h}" for i, h in committed.items() if h < self.config.heights
            )
            limit = (
                f"in {MAX_EVENTS} events"
                if self.events >= MAX_EVENTS
                else f"by the deadline ({self.config.effective_deadline_ms} ms)"
            )
            self.violations.append(
                f"target height {self.config.heights} not reached {limit}: {behind}"
            )
        else:
            verdict = Verdict.OK
        rounds = self.decided_rounds.values()
        return SimResult(
            config=self.config,
            verdict=verdict,
            violations=self.violations,
            committed=committed,
            max_round=max(rounds, default=0),
            late_heights=sum(1 for r in rounds if r > 0),
            messages_sent=self.sent,
            messages_delivered=self.delivered,
            messages_dropped=self.dropped,
            messages_duplicated=self.duplicated,
            sync_requests=self.sync_requests,
            evidence=sorted(
                self.evidence.values(), key=lambda e: (e.height, e.round, e.kind, e.validator)
            ),
            byzantine=self.byzantine,
            sim_time_ms=self.now,
            events=self.events,
            decided_at_ms=self.decided_at,
        )


def simulate(config: SimConfig) -> SimResult:
    """Run one simulation; the same config always gives the same result."""
    return Simulation(config).run()
