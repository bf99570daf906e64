"""The mempool: admitted transactions waiting for a block. A data structure: no I/O, no clock.

Admission runs the ledger's own rules (``chain.state.apply_tx``) on a ``Changes`` overlay
laid over the committed ``State``: the overlay is the committed state plus every pending
transaction applied in admission order. So "funds including pending txs" and "the next
nonce including pending txs" are plain reads of the overlay, and the admission order is
itself an order in which ``build_block`` can apply the pending txs (per account, nonces
come in order, and every credit a tx relies on was admitted before it).

Nonce policy: a tx whose nonce is the sender's next pending nonce is *pending* (applied to
the overlay, offered to blocks). A tx up to ``nonce_window - 1`` nonces further ahead is
*queued*: its signature, chain and sender are checked, and it waits, outside the overlay,
until the gap before it fills; then it is promoted (and checked for funds). Gossip batches
and clients that pipeline payments through several nodes deliver nonces out of order, so
rejecting every future nonce would make a node refuse txs its peers accepted. A queued tx
that waits ``max_queue_blocks`` committed blocks without its gap filling is dropped, so a
lost tx cannot pin memory forever. Further ahead than the window, or a nonce already used
or already held by another pending/queued tx, is ``BAD_NONCE``: there is no replacement.

Admission control: the pool takes txs from clients up to ``max_size`` (from peers, which
bound their own clients, up to ``peer_room`` times that), and queued ones at most
``max_queued`` of them, so txs that cannot go into a block yet never crowd out those that
can (a pool full of txs waiting behind gaps admits nothing that would fill the gaps, and
its node's blocks shrink). Past either bound a tx is refused with ``MempoolFull`` after
dictionary lookups only, before its signature is verified: a node at capacity spends
nothing on the txs it turns away. ``max_size`` may be changed at any time;
:class:`PoolSizer` sizes it to a fraction of a second of the node's measured commit rate.

Nothing accepted is dropped silently: a tx this pool accepted and then let go (evicted
by a commit, expired behind a gap, refused when promoted) is remembered with its reason
in a memory of its own, bounded but much larger than the memory of refusals at
admission, which a flood of stale or re-gossiped txs can churn through.

A signature is verified once per node: verified tx ids are kept in a bounded set that the
runner passes to ``build_block`` / ``execute_block`` as ``verified=`` (Ed25519 verify is
the most expensive per-tx step a node runs). Cheap checks run before it, so a
stale or re-gossiped tx costs a few dict lookups, not a verification.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Literal

from chain.block import Block
from chain.errors import Reason, TxRejected
from chain.state import Changes, State, apply_tx, check_chain_and_sender
from chain.tx import ORDER_SENSITIVE_KINDS, Tx, verify_signature


class MempoolError(Exception):
    """A tx this pool cannot take for a reason of its own, not a ledger rule. ``reason``
    comes from the ledger's vocabulary, so callers report both kinds of refusal alike."""

    reason: Reason

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


class MempoolFull(MempoolError):
    """The pool is at its bound; the tx's signature was not checked. Transient: retry later."""

    reason = Reason.MEMPOOL_FULL


class PoolSizer:
    """Sizes a mempool by time: ``seconds`` of the node's commit rate, measured over the
    blocks of the last ``window`` seconds, within ``[floor, ceiling]``.

    A pool far larger than what the network commits in a few seconds only adds latency
    (every tx in it waits behind the others) and work (a commit rechecks what remains);
    one much smaller starves the proposer. The rate is what was committed, not what the
    node could commit, so an idle network gets the floor, which must hold a few full
    blocks; as load rises the measured rate, and the pool, follow it. No clock: the
    caller passes its time with each commit.
    """

    def __init__(
        self, *, floor: int, ceiling: int, seconds: float = 2.0, window: float = 10.0
    ) -> None:
        if not 1 <= floor <= ceiling or seconds <= 0 or window <= 0:
            raise ValueError("need 1 <= floor <= ceiling and positive seconds and window")
        self.floor = floor
        self.ceiling = ceiling
        self.seconds = seconds
        self.window = window
        self._commits: deque[tuple[float, int]] = deque()  # (time, txs) of recent blocks
        self._txs = 0  # sum of the txs in _commits

    def rate(self, now: float) -> float:
        """Committed tx/s over the window (0 until it spans a second)."""
        commits = self._commits
        while commits and commits[0][0] < now - self.window:
            self._txs -= commits.popleft()[1]
        if not commits or now - commits[0][0] < 1.0:
            return 0.0
        # The oldest block opens the span: its txs were committed before it began.
        return (self._txs - commits[0][1]) / (now - commits[0][0])

    def record(self, txs: int, now: float) -> int:
        """Note a commit of ``txs`` txs at ``now``; return the pool size to use now."""
        self._commits.append((now, txs))
        self._txs += txs
        return self.size(now)

    def size(self, now: float) -> int:
        return max(self.floor, min(self.ceiling, round(self.seconds * self.rate(now))))


@dataclass(frozen=True, slots=True)
class TxStatus:
    """Where a tx stands on this node. The pool answers pending, queued (waiting for an
    earlier nonce), rejected (``code`` is a ``Reason`` value) or unknown; committed (at
    ``height``, index ``position`` in the block) comes from the store's tx index."""

    status: Literal["pending", "queued", "committed", "rejected", "unknown"]
    height: int | None = None
    position: int | None = None
    code: str | None = None
    message: str | None = None

    @classmethod
    def committed(cls, height: int, position: int) -> TxStatus:
        return cls("committed", height=height, position=position)


_PENDING = TxStatus("pending")
_QUEUED = TxStatus("queued")
_UNKNOWN = TxStatus("unknown")
_OVERLAY_SLACK = 4096
# Txs a task admits (decode, verify, apply) between trio checkpoints, ~3 ms of CPU: the
# node's one thread also reads its peers' streams and runs consensus, and a client's
# batch of 250 (or a peer's of 2,000) would otherwise hold it for 10-80 ms.
ADMIT_SLICE = 64
# Txs from peers may fill the pool to at least this many times max_size. Every node refills
# from its own clients at once after a commit, so its peers' share arrives on top of its
# own: a pool that refused it left those txs to wait for their own node's turn to propose
# (at twice the capacity offered, clients retrying after 250 ms: p99 3.6 s with 1.25 and a
# one-second pool, 1.1 s with 2 and a half-second pool). See ``peer_room_for``.
PEER_ROOM = 2.0


def peer_room_for(validators: int) -> float:
    """How many times ``max_size`` a pool holds for txs from peers, in a network of
    ``validators``: each peer's share grows with their number. Two suits four validators;
    with seven, pools full at two refused a quarter of their peers' txs, whose signatures
    were then checked in the height that carried them (at saturation: 3 % fewer tx/s and a
    p99 of 2.9 s instead of 1.6 s)."""
    return max(PEER_ROOM, validators / 2)


class Mempool:
    """Pending and queued transactions over the committed ``state`` (see the module doc).

    ``state`` is the node's committed State object; the runner commits each block into it
    and then calls :meth:`on_commit`.
    """

    def __init__(
        self,
        state: State,
        *,
        max_size: int,
        nonce_window: int = 64,
        max_queue_blocks: int = 100,
        max_queued: int | None = None,
        max_verified: int | None = None,
        max_rejected: int = 10_000,
        max_dropped: int = 100_000,
        peer_room: float = PEER_ROOM,
    ) -> None:
        limits = (max_size, nonce_window, max_queue_blocks, max_rejected, max_dropped)
        if min(limits) < 1 or (max_queued is not None and max_queued < 1) or peer_room < 1:
            raise ValueError("mempool limits must be positive (and peer_room at least 1)")
        self.max_size = max_size
        self.peer_room = peer_room
        self._max_queued = max_queued
        self.nonce_window = nonce_window
        self.max_queue_blocks = max_queue_blocks
        # Ids stay verified after they leave the pool (a tx evicted for funds may come back),
        # so the set is bigger than the pool; a forgotten id only costs a second verification.
        self.max_verified = 2 * max_size if max_verified is None else max_verified
        self.max_rejected = max_rejected
        self.max_dropped = max_dropped
        self._state = state
        self._overlay = Changes(state)
        self._pending: dict[bytes, Tx] = {}  # admission order = an order blocks can apply
        self._queued: dict[bytes, dict[int, Tx]] = {}  # sender -> nonce -> tx
        self._queued_since: dict[bytes, tuple[Tx, int]] = {}  # tx id -> (tx, height queued at)
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        self._rejected: OrderedDict[bytes, tuple[Reason, str]] = OrderedDict()  # at admission
        self._dropped: OrderedDict[bytes, tuple[Reason, str]] = OrderedDict()  # after it
        # Called when the pool goes from no pending tx to some: the node wakes a consensus
        # engine that waits for txs before it proposes (consensus.events.EmptyBlocks).
        self.on_first_pending: Callable[[], None] | None = None

    def __len__(self) -> int:
        return len(self._pending) + len(self._queued_since)

    def __contains__(self, tx_id: object) -> bool:
        return tx_id in self._pending or tx_id in self._queued_since

    @property
    def queued_count(self) -> int:
        return len(self._queued_since)

    @property
    def max_queued(self) -> int:
        """How many txs may wait for earlier nonces: as given, else a quarter of the pool
        (at least one window's worth, so one pipelining client always fits)."""
        if self._max_queued is not None:
            return self._max_queued
        return max(self.nonce_window, self.max_size // 4)

    @property
    def pending_count(self) -> int:
        """Txs a block could take now."""
        return len(self._pending)

    @property
    def full(self) -> bool:
        """True when every tx a client offers now would be refused with MempoolFull."""
        return len(self._pending) + len(self._queued_since) >= self.max_size

    @property
    def full_for_peers(self) -> bool:
        """True when every tx a peer gossips now would be refused: at ``peer_room`` times
        ``max_size``. A peer's tx was already admitted by the peer's own node, within that
        node's bound; refusing it here saves nothing (it comes back in a block) and moves
        its signature check onto the critical path of the height that carries it."""
        return len(self._pending) + len(self._queued_since) >= self.peer_room * self.max_size

    @property
    def pending(self) -> Mapping[bytes, Tx]:
        """The pending txs by id, decoded: a proposal's block reuses them (``Block.decode``)."""
        return self._pending

    @property
    def verified(self) -> Container[bytes]:
        """Tx ids whose signatures this node checked: pass as ``verified=`` to block execution."""
        return self._verified

    def next_nonce(self, account: bytes) -> int:
        """The nonce the account's next tx should carry, counting its pending txs."""
        return self._overlay.nonce(account)

    def check_room(self, *, from_peer: bool = False) -> None:
        """Raise MempoolFull if the pool takes no tx now (callers ask before decoding)."""
        if self.full_for_peers if from_peer else self.full:
            raise MempoolFull(f"mempool holds its maximum of {self.max_size} txs; retry later")

    def add(self, tx: Tx, *, from_peer: bool = False) -> None:
        """Admit a decoded tx, or raise TxRejected (DUPLICATE if already held) or MempoolFull.
        ``from_peer``: a peer gossiped it (see ``full_for_peers``)."""
        tx_id = tx.tx_id
        if tx_id in self._pending or tx_id in self._queued_since:
            raise TxRejected(Reason.DUPLICATE, "tx is already in the mempool")
        self.check_room(from_peer=from_peer)
        try:
            self._admit(tx)
        except TxRejected as exc:
            _remember(self._rejected, self.max_rejected, tx_id, exc)
            raise
        self._rejected.pop(tx_id, None)
        self._dropped.pop(tx_id, None)

    def candidates(self, max_txs: int) -> list[Tx]:
        """Up to ``max_txs`` pending txs in an order ``build_block`` can apply."""
        return list(islice(self._pending.values(), max_txs))

    def on_commit(self, block: Block) -> list[tuple[Tx, TxRejected]]:
        """Drop the block's txs and recheck the rest against the new committed state.

        Called after ``block`` was committed into the State this pool was built on. Returns
        the evicted txs with their reasons (also kept for :meth:`status`).

        If every tx of the block was pending here, the overlay is still exact and every
        remaining pending tx still applies in admission order: the overlay holds absolute
        values equal to old state + all pending = new state + remaining pending, and moving
        some txs earlier only adds credits before the others (a sender's own debits come in
        nonce order, so none of them can have moved ahead of an earlier one; two txs that
        settle the same offer or milestone never both pass admission). Two things break
        that argument, and then the pool rechecks: a block tx whose kind can make another
        sender's earlier tx fail (``ORDER_SENSITIVE_KINDS``: a compliance hold, a contract
        refund or cancel), and a block time that reaches a deadline a pending tx relied on
        (``valid_before_ms``: an offer's or a contract's expiry). Otherwise the commit costs
        one dict deletion per block tx. The recheck (also for a tx this node never saw, or
        a conflicting one) re-applies pending txs in admission order onto a fresh overlay,
        one ``apply_tx`` each: those that no longer apply are evicted, except that a tx now
        beyond a gap in its sender's nonces goes back to the queue.
        """
        state = self._state
        if state.height != block.height:
            raise ValueError(f"commit block {block.height} into the state before on_commit")
        committed = {tx.tx_id for tx in block.txs}
        for tx_id in committed:
            self._verified.pop(tx_id, None)  # a committed tx is stale: never verified again
        evicted: list[tuple[Tx, TxRejected]] = []
        overlay = self._overlay  # its time has moved on to after the block's (Changes.time_ms)
        if (
            committed <= self._pending.keys()
            and not self._overlay_oversized()
            and overlay.time_ms < overlay.valid_before_ms
            and not any(tx.kind in ORDER_SENSITIVE_KINDS for tx in block.txs)
        ):
            for tx_id in committed:
                del self._pending[tx_id]
            # Only the block's senders have a new next nonce.
            senders = {tx.sender for tx in block.txs}.intersection(self._queued)
        else:
            evicted.extend(self._recheck(committed))
            senders = set(self._queued)  # the overlay was rebuilt: any next nonce may move
        overlay = self._overlay
        for sender in senders:
            expected = overlay.nonce(sender)
            for nonce, tx in list(self._queued[sender].items()):
                if tx.tx_id in committed:
                    self._unqueue(tx)
                elif nonce < expected:
                    self._unqueue(tx)
                    evicted.append((tx, _stale(tx, overlay)))
            if sender in self._queued:
                failed = self._promote(sender)
                if failed is not None:
                    evicted.append(failed)
        evicted.extend(self._expire(state.height))
        for tx, exc in evicted:
            _remember(self._dropped, self.max_dropped, tx.tx_id, exc)
        return evicted

    def status(self, tx_id: bytes) -> TxStatus:
        """Pending, queued, dropped after acceptance or recently refused (with the reason),
        else unknown."""
        if tx_id in self._pending:
            return _PENDING
        if tx_id in self._queued_since:
            return _QUEUED
        rejected = self._dropped.get(tx_id) or self._rejected.get(tx_id)
        if rejected is None:
            return _UNKNOWN
        reason, detail = rejected
        return TxStatus("rejected", code=reason.value, message=detail or reason.value)

    def _admit(self, tx: Tx) -> None:
        """Cheap checks first (the queue's bound among them), then the signature, then the
        ledger rules on the overlay."""
        known = self._rejected.get(tx.tx_id)
        if known is not None and known[0] is Reason.BAD_SIGNATURE:
            raise TxRejected(*known)  # a tx id names its signature: it will never verify
        overlay = self._overlay
        check_chain_and_sender(overlay, tx)
        sender = tx.sender
        expected = overlay.nonce(sender)
        nonce = tx.nonce
        if nonce < expected:
            raise _stale(tx, overlay)
        if nonce >= expected + self.nonce_window:
            raise TxRejected(
                Reason.BAD_NONCE,
                f"nonce {nonce} is too far ahead: the next is {expected}, "
                f"the window {self.nonce_window}",
            )
        queue = self._queued.get(sender)
        if queue is not None and nonce in queue:
            raise TxRejected(Reason.BAD_NONCE, f"another tx with nonce {nonce} is queued")
        if nonce > expected and len(self._queued_since) >= self.max_queued:
            raise MempoolFull(
                f"{self.max_queued} txs already wait for earlier nonces; send nonce "
                f"{expected} first or retry later"
            )
        if tx.tx_id not in self._verified:
            verify_signature(tx)
            verified = self._verified
            verified[tx.tx_id] = None
            if len(verified) > self.max_verified:
                verified.popitem(last=False)
        if nonce > expected:
            self._queue(tx, self._state.height)
            return
        apply_tx(overlay, tx)
        self._pending[tx.tx_id] = tx
        if len(self._pending) == 1 and self.on_first_pending is not None:
            self.on_first_pending()
        if queue is not None:
            failed = self._promote(sender)
            if failed is not None:
                _remember(self._dropped, self.max_dropped, failed[0].tx_id, failed[1])

    def _recheck(self, committed: set[bytes]) -> list[tuple[Tx, TxRejected]]:
        """Rebuild the overlay from the committed state and the surviving pending txs."""
        overlay = Changes(self._state)
        pending: dict[bytes, Tx] = {}
        evicted: list[tuple[Tx, TxRejected]] = []
        demoted: list[Tx] = []
        for tx_id, tx in self._pending.items():
            if tx_id in committed:
                continue
            try:
                apply_tx(overlay, tx)
            except TxRejected as exc:
                if exc.reason is Reason.BAD_NONCE and tx.nonce > overlay.nonce(tx.sender):
                    demoted.append(tx)
                else:
                    evicted.append((tx, exc))
                continue
            pending[tx_id] = tx
        self._overlay = overlay
        self._pending = pending
        for tx in demoted:
            self._queue(tx, self._state.height)
        return evicted

    def _overlay_oversized(self) -> bool:
        """True once the overlay holds many entries no pending tx needs any more.

        Without a rebuild, entries written by txs that have since committed stay in the
        overlay (harmless: they equal the committed values). A pending tx writes at most
        four entries, so beyond that (plus slack) a rebuild, O(pool), frees them; it
        happens at most once per O(pool) admissions, so the cost stays O(1) per tx.
        """
        overlay = self._overlay
        entries = len(overlay.balances) + len(overlay.nonces) + len(overlay.accounts)
        return entries > 4 * len(self._pending) + _OVERLAY_SLACK

    def _expire(self, height: int) -> list[tuple[Tx, TxRejected]]:
        """Drop the txs queued ``max_queue_blocks`` blocks ago or more. ``_queued_since``
        is in queueing order, hence in height order: the scan stops at the first one that
        may stay, so a commit costs nothing per queued tx that is not expiring."""
        expired = []
        for tx, since in self._queued_since.values():
            if height - since < self.max_queue_blocks:
                break
            expired.append(tx)
        for tx in expired:
            self._unqueue(tx)
        reason = f"waited {self.max_queue_blocks} blocks for a gap to fill"
        return [(tx, TxRejected(Reason.BAD_NONCE, f"nonce {tx.nonce} {reason}")) for tx in expired]

    def _queue(self, tx: Tx, height: int) -> None:
        self._queued.setdefault(tx.sender, {})[tx.nonce] = tx
        self._queued_since[tx.tx_id] = (tx, height)

    def _unqueue(self, tx: Tx) -> None:
        del self._queued_since[tx.tx_id]
        queue = self._queued[tx.sender]
        del queue[tx.nonce]
        if not queue:
            del self._queued[tx.sender]

    def _promote(self, sender: bytes) -> tuple[Tx, TxRejected] | None:
        """Move the sender's queued txs whose gap has filled into pending, in nonce order.

        The first one the ledger rejects (funds, typically) is dropped and returned; the
        ones after it stay queued behind the new gap.
        """
        queue = self._queued[sender]
        overlay = self._overlay
        nonce = overlay.nonce(sender)
        failed = None
        while (tx := queue.pop(nonce, None)) is not None:
            del self._queued_since[tx.tx_id]
            try:
                apply_tx(overlay, tx)
            except TxRejected as exc:
                failed = (tx, exc)
                break
            self._pending[tx.tx_id] = tx
            nonce += 1
        if not queue:
            del self._queued[sender]
        return failed


def _remember(
    memory: OrderedDict[bytes, tuple[Reason, str]], bound: int, tx_id: bytes, exc: TxRejected
) -> None:
    """Keep a bounded memory of recent rejections so status can still explain them."""
    memory[tx_id] = (exc.reason, exc.detail)
    memory.move_to_end(tx_id)
    if len(memory) > bound:
        memory.popitem(last=False)


def _stale(tx: Tx, overlay: Changes) -> TxRejected:
    if tx.nonce < overlay.base.nonces.get(tx.sender, 0):
        return TxRejected(Reason.BAD_NONCE, f"nonce {tx.nonce} was already used")
    return TxRejected(Reason.BAD_NONCE, f"another tx with nonce {tx.nonce} is pending")
