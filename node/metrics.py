"""The node's Prometheus metrics, on a registry of its own.

Each node owns a ``CollectorRegistry`` instead of the process-global default, so tests and
in-process simulations can run several nodes side by side without name clashes. Gauges
read their sources when ``/metrics`` is rendered, so they are right without anyone polling;
the runner calls the ``on_*`` methods as events happen.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from chain.block import Block

BLOCK_INTERVAL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
COMMIT_LATENCY_BUCKETS = (
    0.05,
    0.1,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    3.0,
    5.0,
    10.0,
    30.0,
    60.0,
)
MAX_TRACKED_TXS = 100_000  # submitted txs remembered for their commit latency


class Metrics:
    """Height, round, committed txs, mempool size, peers, evidence, block interval and
    submit-to-commit latency. Time values are the runner's (``trio.current_time()`` or any
    monotonic clock in seconds), so this class never reads a clock itself.

    Each gauge calls its source (keyword arguments) when the registry is rendered; the
    /metrics handler is async, so sources run in the node's trio thread, between events.
    """

    def __init__(
        self,
        *,
        height: Callable[[], float],
        round: Callable[[], float],
        peers: Callable[[], float],
        mempool_size: Callable[[], float],
        evidence: Callable[[], float],
        dropped_frames: Callable[[], float],
    ) -> None:
        self.registry = CollectorRegistry()
        # Process RSS, CPU seconds and open fds: the acceptance runs report RSS per node.
        ProcessCollector(registry=self.registry)
        r = self.registry
        for name, doc, source in (
            ("depnet_height", "Height of the last committed block.", height),
            ("depnet_round", "Consensus round at the current height.", round),
            ("depnet_mempool_size", "Transactions in the mempool.", mempool_size),
            ("depnet_peers", "Validator peers currently connected.", peers),
            ("depnet_evidence", "Equivocation proofs held.", evidence),
            ("depnet_dropped_frames", "Frames dropped so far from full peer send queues.",
             dropped_frames),
        ):  # fmt: skip
            Gauge(name, doc, registry=r).set_function(source)
        self.committed_txs = Counter(
            "depnet_committed_txs", "Transactions committed in blocks.", registry=r
        )
        self.submitted_txs = Counter(
            "depnet_submitted_txs", "Transactions accepted through this node's API.", registry=r
        )
        self.rejected_txs = Counter(
            "depnet_rejected_txs",
            "Transactions this node refused, by error code.",
            ["code"],
            registry=r,
        )
        self.block_interval = Histogram(
            "depnet_block_interval_seconds",
            "Time between consecutive blocks, from their header times.",
            buckets=BLOCK_INTERVAL_BUCKETS,
            registry=r,
        )
        self.commit_latency = Histogram(
            "depnet_commit_latency_seconds",
            "From acceptance by this node's API to commit, for txs submitted here.",
            buckets=COMMIT_LATENCY_BUCKETS,
            registry=r,
        )
        self._submitted_at: OrderedDict[bytes, float] = OrderedDict()
        self._last_block: tuple[int, int] | None = None  # (height, header time ms)

    def on_submit(self, tx_ids: Iterable[bytes], now: float) -> None:
        """Txs accepted through the API at ``now``; their commit will record a latency.

        At most ``MAX_TRACKED_TXS`` are remembered (oldest dropped): a tx that never commits
        must not hold memory forever, and one dropped only misses its latency sample.
        """
        submitted = self._submitted_at
        count = 0
        for tx_id in tx_ids:
            submitted[tx_id] = now
            count += 1
        self.submitted_txs.inc(count)
        while len(submitted) > MAX_TRACKED_TXS:
            submitted.popitem(last=False)

    def on_reject(self, code: str) -> None:
        """A tx refused with ``code``, a ``chain.errors.Reason`` value."""
        self.rejected_txs.labels(code).inc()

    def on_commit(self, block: Block, now: float) -> None:
        """A block was committed at ``now``.

        The block interval comes from header times, which every node sees alike, so it
        is also right for blocks replayed during catch-up (their local arrival times
        would all be bunched together).
        """
        header = block.header
        if self._last_block is not None and self._last_block[0] == header.height - 1:
            self.block_interval.observe((header.time_ms - self._last_block[1]) / 1000)
        self._last_block = (header.height, header.time_ms)
        self.committed_txs.inc(len(block.txs))
        submitted = self._submitted_at
        for tx in block.txs:
            at = submitted.pop(tx.tx_id, None)
            if at is not None:
                self.commit_latency.observe(now - at)
