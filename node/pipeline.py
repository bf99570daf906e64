"""Where the time of a height goes: its stages, timed on the node's clock, as a histogram.

A height runs: start (the engine enters it) -> proposal (received, or built and sent by
this validator) -> executed (this validator has checked the block and prevoted) -> prevote
quorum (it precommits) -> precommit quorum (the engine decides) -> committed (stored and
applied to the mempool) -> the next height's start (after the commit timeout). Each stage
is observed as the seconds since the one before, under the label of the stage reached, in
``depnet_height_stage_seconds`` on the node's registry, so `/metrics` shows which stage a
throughput limit lives in. Stages a height skips (a decision fetched by block sync) are
left out of that height.

Only the runner's consensus task calls this, with the event it fed the engine and the
actions it got back; nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Histogram

from consensus.events import Broadcast, Commit, Event, MessageReceived
from consensus.messages import Proposal, Step, Vote, VoteKind

STAGES = ("proposal", "executed", "prevote_quorum", "precommit_quorum", "committed", "next")
STAGE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)


class HeightPipeline:
    """The stage times of the height in progress; see the module docstring."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.stage_seconds = Histogram(
            "depnet_height_stage_seconds",
            "Seconds from one stage of a height to the next, by the stage reached "
            "(proposal, executed, prevote_quorum, precommit_quorum, committed, next).",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        self._height = 0
        self._handled_at = 0.0
        self._last: tuple[str, float] | None = None  # the stage reached last, and when
        self._reached: set[str] = set()

    def before(self, event: Event, height: int, now: float) -> None:
        """Called with each event before the engine handles it (a proposal's arrival)."""
        self._enter(height, now)
        self._handled_at = now
        if (
            isinstance(event, MessageReceived)
            and isinstance(event.message, Proposal)
            and event.message.height == height
        ):
            self._mark("proposal", now)

    def after(self, actions: Sequence[object], height: int, step: Step, now: float) -> None:
        """Called with the engine's actions, before they are carried out. A height the
        event moved the engine to began when the event was handed to it."""
        self._enter(height, self._handled_at)
        for action in actions:
            if isinstance(action, Broadcast):
                msg = action.message
                if isinstance(msg, Proposal) and msg.height == height:
                    self._mark("proposal", now)
                elif isinstance(msg, Vote) and msg.height == height:
                    self._mark(
                        "executed" if msg.kind is VoteKind.PREVOTE else "prevote_quorum", now
                    )
            elif isinstance(action, Commit):
                self._mark("precommit_quorum", now)
        if step is not Step.PROPOSE:
            self._mark("executed", now)

    def committed(self, now: float) -> None:
        """Called once a decided block was stored and applied."""
        if "precommit_quorum" in self._reached:
            self._mark("committed", now)

    def _enter(self, height: int, now: float) -> None:
        if height == self._height:
            return
        if self._last is not None and self._last[0] == "committed":
            self.stage_seconds.labels("next").observe(now - self._last[1])
        self._height, self._last, self._reached = height, ("start", now), set()

    def _mark(self, stage: str, now: float) -> None:
        if stage in self._reached or self._last is None:
            return
        self._reached.add(stage)
        self.stage_seconds.labels(stage).observe(now - self._last[1])
        self._last = (stage, now)
