"""The per-height stage times a node exports (node/pipeline.py), on a virtual clock."""

from __future__ import annotations

import trio
from prometheus_client import generate_latest
from trio.testing import MockClock

from node.layout import NetworkHome
from node.pipeline import STAGES
from tests.test_node_reactor import build_nodes, network, wait_until

__all__ = ["network"]  # the fixture, used by name


def stage_counts(text: str) -> dict[str, tuple[float, float]]:
    """stage -> (count, sum) from a /metrics text."""
    out: dict[str, list[float]] = {}
    for line in text.splitlines():
        for suffix, slot in (("_count", 0), ("_sum", 1)):
            prefix = f'depnet_height_stage_seconds{suffix}{{stage="'
            if line.startswith(prefix):
                stage = line[len(prefix) :].split('"', 1)[0]
                out.setdefault(stage, [0.0, 0.0])[slot] = float(line.rsplit(" ", 1)[1])
    return {stage: (c, s) for stage, (c, s) in out.items()}


async def test_every_stage_of_a_height_is_timed(
    network: NetworkHome, autojump_clock: MockClock
) -> None:
    nodes = build_nodes(network)
    try:
        async with trio.open_nursery() as nursery:
            for node in nodes:
                await nursery.start(node.run_reactor)
            await wait_until(lambda: min(n.store.state.height for n in nodes) >= 6, "6 heights")
            elapsed = trio.current_time()
            nursery.cancel_scope.cancel()
        for node in nodes:
            counts = stage_counts(generate_latest(node.service.registry).decode())
            assert set(counts) == set(STAGES)
            assert all(count >= 4 for count, _ in counts.values()), counts
            assert sum(total for _, total in counts.values()) <= elapsed
            # Idle: the wait for txs (EmptyBlocks) is the proposal stage, ~1 s a height.
            count, total = counts["proposal"]
            assert 0.8 <= total / count <= 1.2
    finally:
        for node in nodes:
            node.store.close()
