"""Faults injected into a live node at runtime: a layer between the runner and its network.

Every frame the node sends or receives passes through ``FaultLayer``, which the admin API
(``/admin/faults``) reconfigures while the node runs, as Jepsen's nemesis or CometBFT's
e2e perturbations do from outside, but without docker: each node drops, delays or
duplicates its own frames, so a fault set on every node affects every link exactly once.

Link faults, each a rule on this node's OUTBOUND frames (the sender applies it):

* ``drop`` (rate), ``delay`` (ms, +- jitter) and ``duplicate`` (rate), each optionally
  only for frames ``from`` one bank (this node must be it), ``to`` one bank, and of one
  ``kind``: consensus, txs or sync (requests and answers of catch-up).
* ``partition`` (groups of banks): a node in one group loses every frame to AND from the
  banks of the other groups; a node in no group is untouched. The same command is set on
  every node, so each side drops the other twice over.
* ``oneway`` (from A, to B): A loses its frames to B, B discards what A still sends; B's
  frames to A arrive. ``heal`` ends partitions and one-way cuts.

Node faults: ``skew`` (ms) moves the wall clock that dates this node's proposals and
judges others' blocks timely (the ``wall_clock`` of Node and LedgerApp); ``byzantine``
(mode) rewrites the honest engine's outbound consensus messages with the simulator's
rewriters (``consensus.byzantine.Outbox``), re-signed with this node's own key:
``equivocate``, ``double-vote`` (every vote goes out with conflicting ones), ``silent``
(sends no consensus message and serves no blocks) and ``invalid-block``; ``off`` ends it.

Every random draw comes from one ``random.Random`` seeded by (seed, bank), so a run's
choices are reproducible from the seed. Every fault set or cleared is logged.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import trio
from nacl.signing import SigningKey

from chain.genesis import Genesis
from consensus.byzantine import ByzantineMode, Outbox
from consensus.messages import Message, encode_message
from node.logs import log_event
from node.p2p import Frame, Kind, Network, RequestFailed
from node.service import FaultsInForce, FaultSpecError

log = logging.getLogger("depnet.faults")

KINDS = {"consensus": Kind.CONSENSUS, "txs": Kind.TXS, "sync": Kind.SYNC_REQUEST}
_KIND_NAMES = {Kind.CONSENSUS: "consensus", Kind.TXS: "txs", Kind.SYNC_REQUEST: "sync"}
BYZANTINE_MODES = {
    "equivocate": ByzantineMode.EQUIVOCATE,
    # A live node runs one engine per key, so a double voter is made by rewriting: each of
    # its messages goes out with conflicting ones for the same slot.
    "double-vote": ByzantineMode.MANY_VALUES,
    "silent": ByzantineMode.SILENT,
    "invalid-block": ByzantineMode.INVALID_BLOCK,
}
MAX_DELAY_MS = 60_000
MAX_SKEW_MS = 24 * 3600 * 1000


# --- fault specs ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkRule:
    """One drop, delay or duplicate rule on outbound frames; ``None`` filters match all."""

    fault: str  # "drop" | "delay" | "duplicate"
    rate: float = 1.0  # drop, duplicate: share of matching frames
    ms: int = 0  # delay
    jitter: int = 0  # delay: +- uniformly
    src: str | None = None  # bank names as in genesis
    dst: str | None = None
    kind: str | None = None  # a key of KINDS

    @property
    def key(self) -> tuple[str, str | None, str | None, str | None]:
        """A rule replaces the one of the same fault and filters."""
        return (self.fault, self.src, self.dst, self.kind)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"fault": self.fault}
        if self.fault == "delay":
            data.update(ms=self.ms, jitter=self.jitter)
        else:
            data["rate"] = self.rate
        data.update({"from": self.src, "to": self.dst, "kind": self.kind})
        return {k: v for k, v in data.items() if v is not None}


@dataclass(frozen=True, slots=True)
class Partition:
    groups: tuple[tuple[str, ...], ...]

    def to_json(self) -> dict[str, Any]:
        return {"fault": "partition", "groups": [list(g) for g in self.groups]}


@dataclass(frozen=True, slots=True)
class OneWay:
    src: str
    dst: str

    def to_json(self) -> dict[str, Any]:
        return {"fault": "oneway", "from": self.src, "to": self.dst}


@dataclass(frozen=True, slots=True)
class Skew:
    ms: int

    def to_json(self) -> dict[str, Any]:
        return {"fault": "skew", "ms": self.ms}


@dataclass(frozen=True, slots=True)
class Byzantine:
    mode: str  # a key of BYZANTINE_MODES, or "off"

    def to_json(self) -> dict[str, Any]:
        return {"fault": "byzantine", "mode": self.mode}


@dataclass(frozen=True, slots=True)
class Heal:
    def to_json(self) -> dict[str, Any]:
        return {"fault": "heal"}


Fault = LinkRule | Partition | OneWay | Skew | Byzantine | Heal


def parse_fault(doc: object, banks: Iterable[str]) -> tuple[Fault, int | None]:
    """A fault spec (the JSON body of POST /admin/faults) and its optional ``seed``.

    Bank names are matched without regard to case and returned as genesis spells them.
    Raises FaultSpecError naming the field that is wrong."""
    if not isinstance(doc, dict):
        raise FaultSpecError("invalid_fault", 'a fault is a JSON object {"fault": ...}')
    spelled = {b.lower(): b for b in banks}
    spec = _Spec(doc, spelled)
    seed = spec.optional("seed", int)
    name = spec.required("fault", str)
    fault: Fault
    if name in ("drop", "duplicate"):
        fault = LinkRule(name, rate=spec.rate(), **spec.filters())
    elif name == "delay":
        ms = spec.integer("ms", 0, MAX_DELAY_MS)
        jitter = spec.integer("jitter", 0, ms, default=0)
        fault = LinkRule(name, ms=ms, jitter=jitter, **spec.filters())
    elif name == "partition":
        fault = Partition(spec.groups())
    elif name == "oneway":
        src, dst = spec.bank("from"), spec.bank("to")
        if src is None or dst is None or src == dst:
            raise FaultSpecError("invalid_fault", "oneway needs two different banks, from and to")
        fault = OneWay(src, dst)
    elif name == "heal":
        fault = Heal()
    elif name == "skew":
        fault = Skew(spec.integer("ms", -MAX_SKEW_MS, MAX_SKEW_MS))
    elif name == "byzantine":
        mode = spec.required("mode", str)
        if mode != "off" and mode not in BYZANTINE_MODES:
            modes = ", ".join([*BYZANTINE_MODES, "off"])
            raise FaultSpecError("invalid_fault", f"byzantine mode {mode!r} is not one of {modes}")
        fault = Byzantine(mode)
    else:
        known = "drop, delay, duplicate, partition, oneway, heal, skew, byzantine"
        raise FaultSpecError("unknown_fault", f"no fault {name!r}; faults: {known}")
    spec.no_extras()
    return fault, seed


class _Spec:
    """Reads the fields of one spec, remembering which were read (the rest are extras)."""

    def __init__(self, doc: dict, banks: Mapping[str, str]) -> None:
        self.doc = doc
        self.banks = banks
        self.read = {"fault", "seed"}

    def optional(self, name: str, kind: type) -> Any:
        self.read.add(name)
        value = self.doc.get(name)
        if value is not None and (type(value) is not kind):
            raise FaultSpecError("invalid_fault", f"{name} must be a {kind.__name__}")
        return value

    def required(self, name: str, kind: type) -> Any:
        value = self.optional(name, kind)
        if value is None:
            raise FaultSpecError("invalid_fault", f"missing field {name!r}")
        return value

    def integer(self, name: str, low: int, high: int, default: int | None = None) -> int:
        value = self.optional(name, int)
        if value is None and default is not None:
            return default
        if value is None or not low <= value <= high:
            raise FaultSpecError("invalid_fault", f"{name} must be an integer in {low}..{high}")
        return value

    def rate(self) -> float:
        self.read.add("rate")
        value = self.doc.get("rate")
        if type(value) not in (int, float) or not 0.0 <= value <= 1.0:
            raise FaultSpecError("invalid_fault", "rate must be a number in 0..1")
        return float(value)

    def bank(self, name: str) -> str | None:
        value = self.optional(name, str)
        if value is None:
            return None
        if value.lower() not in self.banks:
            names = ", ".join(self.banks.values())
            raise FaultSpecError("unknown_bank", f"{name}: no bank {value!r} (banks: {names})")
        return self.banks[value.lower()]

    def filters(self) -> dict[str, str | None]:
        kind = self.optional("kind", str)
        if kind is not None and kind not in KINDS:
            raise FaultSpecError("invalid_fault", f"kind must be one of {', '.join(KINDS)}")
        return {"src": self.bank("from"), "dst": self.bank("to"), "kind": kind}

    def groups(self) -> tuple[tuple[str, ...], ...]:
        self.read.add("groups")
        groups = self.doc.get("groups")
        if not (isinstance(groups, list) and len(groups) >= 2):
            raise FaultSpecError("invalid_fault", "groups must be a list of two or more lists")
        seen: list[str] = []
        parsed = []
        for group in groups:
            if not (isinstance(group, list) and group):
                raise FaultSpecError("invalid_fault", "each group must be a non-empty list")
            names = []
            for name in group:
                if not isinstance(name, str) or name.lower() not in self.banks:
                    listed = ", ".join(self.banks.values())
                    raise FaultSpecError("unknown_bank", f"no bank {name!r} (banks: {listed})")
                names.append(self.banks[name.lower()])
            parsed.append(tuple(names))
            seen += names
        if len(set(seen)) != len(seen):
            raise FaultSpecError("invalid_fault", "a bank is in two groups of the partition")
        return tuple(parsed)

    def no_extras(self) -> None:
        extra = sorted(set(self.doc) - self.read)
        if extra:
            raise FaultSpecError("invalid_fault", f"unknown field(s): {', '.join(extra)}")


# --- the layer ---------------------------------------------------------------------------


@dataclass
class LinkCounters:
    """Frames exchanged with one peer, by kind name; what a test reads to see a fault act."""

    sent: Counter[str] = field(default_factory=Counter)  # handed to the network
    received: Counter[str] = field(default_factory=Counter)  # passed on to the node
    dropped_out: Counter[str] = field(default_factory=Counter)
    dropped_in: Counter[str] = field(default_factory=Counter)
    delayed: Counter[str] = field(default_factory=Counter)
    duplicated: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, dict[str, int]]:
        return {f.name: dict(getattr(self, f.name)) for f in fields(self)}


class FaultLayer:
    """The node's network as the runner, gossip and catch-up see it: ``inner`` with the
    faults in force applied. It offers what ``node.p2p.Network`` does, plus
    ``broadcast_consensus`` (the byzantine rewriters need the message, not its bytes)."""

    def __init__(
        self,
        inner: Network,
        genesis: Genesis,
        key: SigningKey,
        *,
        wall_clock: Callable[[], int],
        seed: int = 0,
    ) -> None:
        self.inner = inner
        self.chain_id = genesis.chain_id
        self.key = key
        self.pubkey = bytes(key.verify_key)
        self.bank_of = {b.validator: b.name for b in genesis.banks}
        self.key_of = {b.name: b.validator for b in genesis.banks}
        self.bank = self.bank_of[self.pubkey]
        self.base_clock = wall_clock
        self.counters: dict[bytes, LinkCounters] = {}
        self.inbound = _Inbound(self)
        self._nursery: trio.Nursery | None = None
        self._reset(seed)

    def _reseed(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(f"{seed}:{self.bank}")
        if self.byzantine is not None:
            self._outbox = self._make_outbox(self.byzantine)

    def _make_outbox(self, mode: str) -> Outbox:
        return Outbox(BYZANTINE_MODES[mode], self.key, self.chain_id, self.rng)

    def _reset(self, seed: int) -> None:
        self.byzantine: str | None = None
        self._outbox: Outbox | None = None
        self._reseed(seed)
        self.rules: dict[tuple, LinkRule] = {}
        self.partition: Partition | None = None
        self.oneways: list[OneWay] = []
        self.cut_to: frozenset[bytes] = frozenset()
        self.cut_from: frozenset[bytes] = frozenset()
        self.skew_ms = 0

    # --- control (the admin API) ----------------------------------------------------------

    def wall_clock(self) -> int:
        """The node's wall clock: the real one, moved by the skew in force."""
        return self.base_clock() + self.skew_ms

    def set(self, doc: object) -> FaultsInForce:
        """Apply one fault spec (see ``parse_fault``); a bad spec changes nothing."""
        fault, seed = parse_fault(doc, self.key_of)
        if seed is not None:
            self._reseed(seed)
        match fault:
            case LinkRule():
                self.rules[fault.key] = fault
            case Partition():
                self.partition = fault
            case OneWay() if fault not in self.oneways:
                self.oneways.append(fault)
            case Heal():
                self.partition = None
                self.oneways = []
            case Skew(ms=ms):
                self.skew_ms = ms
            case Byzantine(mode="off"):
                self.byzantine = self._outbox = None
            case Byzantine(mode=mode):
                self.byzantine = mode
                self._outbox = self._make_outbox(mode)
        self._cut()
        log_event(log, "fault set", fault=fault.to_json(), seed=self.seed, at_ms=self.base_clock())
        return self.in_force()

    def clear(self) -> FaultsInForce:
        """End every fault; the seed stays."""
        self._reset(self.seed)
        log_event(log, "faults cleared", seed=self.seed, at_ms=self.base_clock())
        return self.in_force()

    def in_force(self) -> FaultsInForce:
        faults: list[Fault] = [*self.rules.values(), *self.oneways]
        if self.partition is not None:
            faults.append(self.partition)
        if self.skew_ms:
            faults.append(Skew(self.skew_ms))
        if self.byzantine is not None:
            faults.append(Byzantine(self.byzantine))
        return FaultsInForce(
            bank=self.bank,
            seed=self.seed,
            faults=[f.to_json() for f in faults],
            skew_ms=self.skew_ms,
            byzantine=self.byzantine,
            cut_to=sorted(self.bank_of[k] for k in self.cut_to),
            cut_from=sorted(self.bank_of[k] for k in self.cut_from),
            frames={self.bank_of[k]: c.to_json() for k, c in sorted(self.counters.items())},
        )

    def _cut(self) -> None:
        """Which peers' links are cut, from the partition and one-way cuts in force."""
        to: set[str] = set()
        frm: set[str] = set()
        if self.partition is not None:
            mine = next((g for g in self.partition.groups if self.bank in g), None)
            if mine is not None:
                others = {b for g in self.partition.groups if g is not mine for b in g}
                to |= others
                frm |= others
        for cut in self.oneways:
            if cut.src == self.bank:
                to.add(cut.dst)
            if cut.dst == self.bank:
                frm.add(cut.src)
        self.cut_to = frozenset(self.key_of[b] for b in to)
        self.cut_from = frozenset(self.key_of[b] for b in frm)

    # --- the Network the node uses --------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the inner network; delayed frames are sent from tasks of this nursery."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.inner.run)
            self._nursery = nursery
            task_status.started()

    def connected_peers(self) -> set[bytes]:
        """Peers with a live link that no partition or one-way cut severs."""
        return self.inner.connected_peers() - self.cut_to - self.cut_from

    def dropped_frames(self) -> int:
        return self.inner.dropped_frames()

    def broadcast(self, kind: Kind, payload: bytes) -> None:
        if not (self.rules or self.cut_to):  # nothing to apply: encode once, as p2p does
            self.inner.broadcast(kind, payload)
            for peer in self._peers():
                self._count(peer).sent[_KIND_NAMES[kind]] += 1
            return
        for peer in self._peers():
            self._send(peer, kind, payload)

    def broadcast_consensus(self, msg: Message) -> None:
        """Broadcast one of the engine's messages, rewritten if this node is byzantine."""
        if self._outbox is None:
            self.broadcast(Kind.CONSENSUS, encode_message(msg))
            return
        for peer, data in self._outbox.rewrite(msg, self._peers()):
            self._send(peer, Kind.CONSENSUS, data)

    async def request(self, pubkey: bytes, kind: Kind, payload: bytes, timeout: float) -> bytes:
        """A catch-up request: lost (RequestFailed) if either direction is cut or dropped."""
        if pubkey in self.cut_from or pubkey in self.cut_to:
            self._count(pubkey).dropped_out["sync"] += 1
            raise RequestFailed("link cut by a fault")
        dropped, delay, _ = self._draw(pubkey, kind)
        if dropped:
            self._count(pubkey).dropped_out["sync"] += 1
            raise RequestFailed("request dropped by a fault")
        if delay:
            self._count(pubkey).delayed["sync"] += 1
            await trio.sleep(delay)
        self._count(pubkey).sent["sync"] += 1
        answer = await self.inner.request(pubkey, kind, payload, timeout)
        self._count(pubkey).received["sync"] += 1
        return answer

    def respond(self, request: Frame, payload: bytes) -> None:
        peer = request.sender
        assert request.reply_to is not None
        dropped, delay, _ = self._draw(peer, Kind.SYNC_REQUEST)
        if peer in self.cut_to or dropped:
            self._count(peer).dropped_out["sync"] += 1
            request.reply_to.close()  # the asker sees the loss now, not after its timeout
            return
        self._count(peer).sent["sync"] += 1
        if delay and self._nursery is not None:
            self._count(peer).delayed["sync"] += 1
            self._nursery.start_soon(self._later, delay, self.inner.respond, request, payload)
        else:
            self.inner.respond(request, payload)

    # --- applying the faults --------------------------------------------------------------

    def _peers(self) -> list[bytes]:
        return sorted(k for k in self.bank_of if k != self.pubkey)

    def _count(self, peer: bytes) -> LinkCounters:
        counters = self.counters.get(peer)
        if counters is None:
            counters = self.counters[peer] = LinkCounters()
        return counters

    def _draw(self, peer: bytes, kind: Kind) -> tuple[bool, float, bool]:
        """(drop?, delay in seconds, duplicate?) for one outbound frame to ``peer``."""
        dropped = duplicate = False
        delay_ms = 0.0
        name = _KIND_NAMES[kind]
        dst = self.bank_of.get(peer)
        for rule in self.rules.values():
            if (
                (rule.src is not None and rule.src != self.bank)
                or (rule.dst is not None and rule.dst != dst)
                or (rule.kind is not None and rule.kind != name)
            ):
                continue
            if rule.fault == "drop":
                dropped = dropped or self.rng.random() < rule.rate
            elif rule.fault == "duplicate":
                duplicate = duplicate or self.rng.random() < rule.rate
            else:
                jitter = self.rng.uniform(-rule.jitter, rule.jitter) if rule.jitter else 0.0
                delay_ms = max(delay_ms, rule.ms + jitter)
        return dropped, max(delay_ms, 0.0) / 1000, duplicate

    def _send(self, peer: bytes, kind: Kind, payload: bytes) -> None:
        counters = self._count(peer)
        name = _KIND_NAMES[kind]
        dropped, delay, duplicate = self._draw(peer, kind)
        if peer in self.cut_to or dropped:
            counters.dropped_out[name] += 1
            return
        copies = 2 if duplicate else 1
        counters.sent[name] += copies
        if duplicate:
            counters.duplicated[name] += 1
        for _ in range(copies):
            if delay and self._nursery is not None:
                counters.delayed[name] += 1
                self._nursery.start_soon(self._later, delay, self.inner.send, peer, kind, payload)
            else:
                self.inner.send(peer, kind, payload)

    @staticmethod
    async def _later(delay: float, send: Callable[..., None], *args: Any) -> None:
        await trio.sleep(delay)
        try:
            send(*args)
        except (KeyError, ValueError, trio.ClosedResourceError):  # the peer or asker is gone
            log.debug("delayed frame not sent", exc_info=True)

    def admit(self, frame: Frame) -> bool:
        """Whether an inbound frame reaches the node (counted either way)."""
        counters = self._count(frame.sender)
        name = _KIND_NAMES.get(frame.kind, "sync")
        refused = frame.sender in self.cut_from or (
            frame.kind is Kind.SYNC_REQUEST and self.byzantine == "silent"
        )
        if refused:
            counters.dropped_in[name] += 1
            if frame.reply_to is not None:
                frame.reply_to.close()
            return False
        counters.received[name] += 1
        return True


class _Inbound:
    """The inner network's inbound frames that the faults in force let through."""

    def __init__(self, layer: FaultLayer) -> None:
        self.layer = layer

    def __aiter__(self) -> _Inbound:
        return self

    async def __anext__(self) -> Frame:
        async for frame in self.layer.inner.inbound:
            if self.layer.admit(frame):
                return frame
        raise StopAsyncIteration
