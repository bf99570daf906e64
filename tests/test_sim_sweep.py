"""CI-sized sweep: hundreds of seeds, each a random mix of faults, 4 and 7 validators.

Every fault mix keeps the faulty validators (byzantine of any mode, amnesiac, or with a
clock far off) at most f, so every run must be safe and, once the partitions heal and
crashed nodes restart, live. A failure prints its seed and the `depnet sim` command that
replays it exactly. ``make sweep`` runs the same test over 5,000 mixes
(``DEPNET_SWEEP_RUNS``).
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter

import pytest

from consensus.simulate import (
    ByzantineMode,
    Crash,
    CrashKind,
    Partition,
    SimConfig,
    Skew,
    Verdict,
    simulate,
)

RUNS = int(os.environ.get("DEPNET_SWEEP_RUNS", "600"))
SWEEP = [(4, seed) for seed in range(RUNS - RUNS // 3)] + [(7, seed) for seed in range(RUNS // 3)]


def fault_mix(nodes: int, seed: int) -> SimConfig:
    """A random but reproducible mix: loss, delay, duplication, reordering, up to two
    partitions, up to two crashes (some of them wipes), and a budget of f faulty
    validators spent on byzantine ones of any mode, then perhaps on an amnesiac one or
    a skewed clock."""
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
        kind = rng.choice([CrashKind.CRASH, CrashKind.CRASH, CrashKind.WIPE])
        crashes.append(Crash(rng.randrange(nodes), at, at + rng.randint(0, 2_500), kind))
    skew = []
    spare = f - byzantine
    if spare and rng.random() < 0.3:
        amnesiac = rng.randrange(nodes)
        for _ in range(rng.randint(1, 3)):
            at = rng.randint(0, 1_500)
            crashes.append(Crash(amnesiac, at, at + rng.randint(0, 500), CrashKind.AMNESIA))
    elif spare and rng.random() < 0.3:
        skew.append(Skew(rng.randrange(nodes), rng.choice([-30_000, -3_000, 3_000, 10_500])))
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
        skew=tuple(skew),
    )


def test_sweep_of_random_fault_mixes_is_safe_and_live() -> None:
    assert len(SWEEP) >= 500
    failures = []
    faults: Counter[str] = Counter()
    started = time.perf_counter()
    for nodes, seed in SWEEP:
        config = fault_mix(nodes, seed)
        result = simulate(config)
        faults.update(str(mode) for mode in result.byzantine.values())
        faults.update(str(crash.kind) for crash in config.crashes)
        faults.update("skew" for _ in config.skew)
        if result.verdict is not Verdict.OK:
            failures.append(
                f"{nodes} validators, seed {seed}: {result.verdict.value}: "
                f"{'; '.join(result.violations[:2])}\n  reproduce: {config.command()}"
            )
    elapsed = time.perf_counter() - started
    print(f"\nsweep: {len(SWEEP)} runs in {elapsed:.1f} s; faults: {dict(sorted(faults.items()))}")
    # Every new mode and fault is in the mix, not only in the code.
    assert set(faults) >= {str(m) for m in ByzantineMode if m is not ByzantineMode.MIXED}
    assert set(faults) >= {str(k) for k in CrashKind} | {"skew"}
    if failures:
        pytest.fail(f"{len(failures)} of {len(SWEEP)} runs failed:\n" + "\n".join(failures))
