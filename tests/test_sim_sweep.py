"""CI-sized sweep: hundreds of seeds, each a random mix of faults, 4 and 7 validators.

Every fault mix keeps byzantine validators <= f, so every run must be safe and, once the
partitions heal and crashed nodes restart, live. A failure prints its seed and the
`depnet sim` command that replays it exactly.
"""

from __future__ import annotations

import random
import time

import pytest

from consensus.simulate import ByzantineMode, Crash, Partition, SimConfig, Verdict, simulate

SWEEP = [(4, seed) for seed in range(360)] + [(7, seed) for seed in range(160)]


def fault_mix(nodes: int, seed: int) -> SimConfig:
    """A random but reproducible mix: loss, delay, duplication, reordering, up to f byzantine
    validators of any kind, up to two partitions and up to two crashes."""
    rng = random.Random(f"sweep/{nodes}/{seed}")
    f = (nodes - 1) // 3
    byzantine = rng.randint(0, f)
    mode = rng.choice(list(ByzantineMode))
    engines = nodes + (byzantine if mode is ByzantineMode.DOUBLE_VOTE else 0)
    partitions = []
    for _ in range(rng.choice([0, 0, 1, 2])):
        ids = rng.sample(range(engines), engines)
        cut = rng.randint(1, engines - 1)
        start = rng.randint(0, 3_000)
        groups = (tuple(sorted(ids[:cut])), tuple(sorted(ids[cut:])))
        partitions.append(Partition(groups, start, start + rng.randint(100, 4_000)))
    crashes = []
    for _ in range(rng.choice([0, 0, 1, 2])):
        at = rng.randint(0, 4_000)
        crashes.append(Crash(rng.randrange(nodes), at, at + rng.randint(0, 2_500)))
    low = rng.randint(0, 10)
    return SimConfig(
        nodes=nodes,
        heights=8 if nodes == 4 else 6,
        seed=seed,
        drop=rng.choice([0.0, 0.1, 0.2, 0.35]),
        delay_min_ms=low,
        delay_max_ms=low + rng.randint(5, 80),
        duplicate=rng.choice([0.0, 0.0, 0.2]),
        reorder=rng.choice([0.0, 0.0, 0.3]),
        byzantine=byzantine,
        byzantine_mode=mode,
        partitions=tuple(partitions),
        crashes=tuple(crashes),
    )


def test_sweep_of_random_fault_mixes_is_safe_and_live() -> None:
    assert len(SWEEP) >= 500
    failures = []
    started = time.perf_counter()
    for nodes, seed in SWEEP:
        config = fault_mix(nodes, seed)
        result = simulate(config)
        if result.verdict is not Verdict.OK:
            failures.append(
                f"{nodes} validators, seed {seed}: {result.verdict.value}: "
                f"{'; '.join(result.violations[:2])}\n  reproduce: {config.command()}"
            )
    elapsed = time.perf_counter() - started
    print(f"\nsweep: {len(SWEEP)} runs in {elapsed:.1f} s")
    if failures:
        pytest.fail(f"{len(failures)} of {len(SWEEP)} runs failed:\n" + "\n".join(failures))
