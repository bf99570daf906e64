"""Memory under a byzantine sender: one validator that floods (many values per slot, far
rounds, far heights, the next height) for a long simulated time cannot make an honest
engine hold more than ``Retained.bound`` states, and the chain goes on meanwhile."""

from __future__ import annotations

from dataclasses import fields

from consensus.byzantine import ByzantineMode
from consensus.engine import Retained
from consensus.simulate import SimConfig, Simulation

FLOOD_MS = 60_000


def peak_retained(sim: Simulation) -> tuple[Retained, int]:
    """Step the run to its end, checking every honest engine against its bound after every
    event; returns the largest count of each kind seen and the highest round reached."""
    peak = dict.fromkeys((f.name for f in fields(Retained)), 0)
    top_round = 0
    while sim.step():
        for node in sim.honest:
            engine = node.engine
            if engine is None:
                continue
            held = engine.retained()
            bound = Retained.bound(sim.world.validators, engine.round)
            assert not held.exceeding(bound), (node.id, engine.height, held.exceeding(bound))
            for name, count in peak.items():
                peak[name] = max(count, getattr(held, name))
            top_round = max(top_round, engine.round)
    return Retained(**peak), top_round


def test_a_flooding_validator_cannot_grow_an_honest_engine_past_its_bounds() -> None:
    config = SimConfig(
        nodes=4,
        heights=100_000,  # never reached: the run ends at the deadline
        seed=5,
        drop=0.05,
        byzantine=1,
        byzantine_mode=ByzantineMode.FLOOD,
        deadline_ms=FLOOD_MS,
    )
    sim = Simulation(config)
    peak, top_round = peak_retained(sim)
    assert sim.now >= FLOOD_MS - 1_000 and not sim.violations, sim.violations
    # The flood did reach every structure it aims at...
    assert peak.evidence >= 100 and peak.ahead >= 1 and peak.far_rounds >= 1
    assert peak.next_height >= 3 and peak.votes > 2 * 4  # more than one value per voter
    # ... and the counts stayed within the bounds of the rounds actually reached.
    bound = Retained.bound(sim.world.validators, top_round)
    assert not peak.exceeding(bound), peak.exceeding(bound)
    # The honest nodes kept deciding all along.
    assert min(len(node.committed) for node in sim.honest) >= 100
