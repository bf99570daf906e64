"""The simulator's verdicts: safety under byzantine faults, liveness after healing, a checker
that does catch forks, and exact reproducibility from a seed (also through `depnet sim`)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import replace

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from cli.main import main
from consensus.engine import AHEAD_TICKS
from consensus.signer import Signer
from consensus.simulate import (
    CHAIN_ID,
    ByzantineMode,
    Crash,
    CrashKind,
    Partition,
    SimConfig,
    Simulation,
    Skew,
    Verdict,
    simulate,
    world,
)


def twins_split(seed: int, byzantine: int, nodes: int = 4, heights: int = 5) -> SimConfig:
    """Diem's Twins scenario: every byzantine key runs in two engines, and a partition puts
    one engine of each on either side, each side with some honest validators."""
    base = SimConfig(
        nodes=nodes,
        heights=heights,
        seed=seed,
        byzantine=byzantine,
        byzantine_mode=ByzantineMode.DOUBLE_VOTE,
    )
    chosen = sorted(Simulation(base).byzantine)  # drawn from the seed, before anything else
    honest = [v for v in range(nodes) if v not in chosen]
    twins = list(range(nodes, nodes + len(chosen)))
    half = len(honest) // 2
    sides = (tuple(sorted(honest[:half] + chosen)), tuple(sorted(honest[half:] + twins)))
    return SimConfig(
        nodes=nodes,
        heights=heights,
        seed=seed,
        byzantine=byzantine,
        byzantine_mode=ByzantineMode.DOUBLE_VOTE,
        partitions=(Partition(sides, 0, 2_000),),
    )


def assert_ok(config: SimConfig) -> None:
    result = simulate(config)
    assert result.verdict is Verdict.OK, (result.violations, config.command())


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**32),
    nodes=st.sampled_from([4, 7]),
    drop=st.sampled_from([0.0, 0.1, 0.25]),
    mode=st.sampled_from(list(ByzantineMode)),
)
def test_no_two_honest_nodes_commit_different_blocks_with_f_byzantine(
    seed: int, nodes: int, drop: float, mode: ByzantineMode
) -> None:
    assert_ok(
        SimConfig(
            nodes=nodes,
            heights=6,
            seed=seed,
            drop=drop,
            duplicate=0.1,
            reorder=0.1,
            byzantine=(nodes - 1) // 3,
            byzantine_mode=mode,
        )
    )


@pytest.mark.parametrize("seed", range(5))
def test_twins_with_f_byzantine_keys_stay_safe_across_a_partition(seed: int) -> None:
    assert_ok(twins_split(seed, byzantine=1))


def test_checker_detects_the_fork_that_f_plus_1_twins_cause() -> None:
    """Not vacuous: with one byzantine validator too many, forks happen and are caught."""
    verdicts = [simulate(twins_split(seed, byzantine=2)) for seed in range(5)]
    forks = [r for r in verdicts if r.verdict is Verdict.SAFETY_VIOLATION]
    assert forks, "f+1 double voters never forked: the checker may be vacuous"
    assert any("fork at height" in v for r in forks for v in r.violations)
    assert all(r.exit_code == 1 for r in forks)


def test_every_honest_node_reaches_the_target_after_partitions_heal_under_35_percent_loss() -> None:
    for seed, nodes in [(1, 4), (2, 4), (3, 7)]:
        config = SimConfig(
            nodes=nodes,
            heights=12,
            seed=seed,
            drop=0.35,
            partitions=(
                Partition((tuple(range(nodes // 2)), tuple(range(nodes // 2, nodes))), 100, 3_000),
                Partition(((0,), tuple(range(1, nodes))), 3_500, 6_000),
            ),
        )
        result = simulate(config)
        assert result.verdict is Verdict.OK, (result.violations, config.command())
        assert min(result.committed.values()) >= 12
        assert result.max_round > 0  # the partitions did cost rounds


def test_crashed_nodes_restart_from_their_signer_state_and_catch_up() -> None:
    for seed in range(4):
        config = SimConfig(
            nodes=4,
            heights=15,
            seed=seed,
            drop=0.1,
            crashes=(Crash(0, 300, 2_500), Crash(1, 1_000, 1_200), Crash(0, 3_000, 3_001)),
        )
        result = simulate(config)
        assert result.verdict is Verdict.OK, (result.violations, config.command())
        assert result.sync_requests > 0  # node 0 was down for 2 s: it caught up by sync


def test_byzantine_equivocation_is_found_and_pinned_on_the_right_validator() -> None:
    for mode in (
        ByzantineMode.EQUIVOCATE,
        ByzantineMode.DOUBLE_VOTE,
        ByzantineMode.MANY_VALUES,
        ByzantineMode.MUTATE,
        ByzantineMode.FLOOD,
    ):
        result = simulate(SimConfig(nodes=4, heights=12, seed=3, byzantine=1, byzantine_mode=mode))
        assert result.verdict is Verdict.OK
        assert result.evidence, f"{mode}: no equivocation detected"
        accused = {world(4).validators.index(e.validator) for e in result.evidence}
        assert accused == set(result.byzantine)


def test_invalid_blocks_are_never_committed() -> None:
    for seed in range(3):
        config = SimConfig(
            nodes=4, heights=12, seed=seed, byzantine=1, byzantine_mode=ByzantineMode.INVALID_BLOCK
        )
        result = simulate(config)
        assert result.verdict is Verdict.OK, result.violations  # every commit re-executed


def test_no_quorum_left_is_a_liveness_failure() -> None:
    result = simulate(
        SimConfig(
            nodes=4,
            heights=3,
            byzantine=2,
            byzantine_mode=ByzantineMode.SILENT,
            deadline_ms=2_000,
        )
    )
    assert result.verdict is Verdict.LIVENESS_FAILURE and result.exit_code == 2
    assert "not reached" in result.violations[0]


def test_same_seed_and_flags_reproduce_the_run_exactly() -> None:
    config = SimConfig(
        nodes=4,
        heights=10,
        seed=99,
        drop=0.2,
        duplicate=0.1,
        reorder=0.2,
        byzantine=1,
        crashes=(Crash(2, 500, 900),),
    )
    first, second = simulate(config).to_json(), simulate(config).to_json()
    assert first == second
    assert simulate(replace(config, seed=100)).to_json() != first


def run_cli(command: str) -> tuple[int, str]:
    args = shlex.split(command)
    assert args[:2] == ["depnet", "sim"]
    result = CliRunner().invoke(main, args[1:])
    return result.exit_code, result.output


def test_cli_prints_the_verdict_and_exits_with_it() -> None:
    code, out = run_cli("depnet sim --nodes 4 --heights 8 --seed 7 --drop 0.2 --byzantine 1")
    assert code == 0, out
    assert "heights committed: 8" in out and "verdict: OK" in out
    assert run_cli("depnet sim --nodes 4 --heights 8 --seed 7 --drop 0.2 --byzantine 1")[1] == out

    fork = twins_split(0, byzantine=2).command()
    code, out = run_cli(fork)
    assert code == 1 and "SAFETY VIOLATION" in out and "fork at height" in out
    assert f"reproduce: {fork}" in out

    code, out = run_cli(
        "depnet sim --heights 3 --byzantine 2 --byzantine-mode silent --deadline 2000 --json"
    )
    assert code == 2
    doc = json.loads(out)
    assert doc["verdict"] == "liveness_failure" and doc["heights_committed"] < 3


def test_cli_json_reports_the_measures() -> None:
    code, out = run_cli(
        "depnet sim --nodes 7 --heights 5 --seed 3 --drop 0.1 --crash 1@100-900 "
        "--partition '0,1,2|3,4,5,6@0-500' --byzantine 2 --byzantine-mode equivocate --json"
    )
    assert code == 0, out
    doc = json.loads(out)
    assert doc["heights_committed"] >= 5 and doc["messages"]["sent"] > 0
    assert set(doc["byzantine"].values()) == {"equivocate"}
    assert doc["command"].startswith("depnet sim --nodes 7 --heights 5 --seed 3")


@pytest.mark.parametrize(
    "bad",
    [
        "--partition '0,1|2'",
        "--partition '0,1|2,7@0-9'",
        "--crash x@1-2",
        "--delay 9-1",
        "--drop 1.5",
        "--crash 9@1-2",
        "--skew 2",
        "--skew 9=100",
        "--skew 1=5 --skew 1=6",
        "--wipe 9@1-2",
        "--amnesia 1@5-2",
        "--amnesia 1@0-5 --amnesia 2@0-5 --amnesia 3@0-5 --byzantine 1",  # none honest
        "--byzantine-mode sneaky",
    ],
)
def test_cli_rejects_malformed_fault_specs(bad: str) -> None:
    code, out = run_cli(f"depnet sim --heights 1 {bad}")
    assert code == 2 and "Error" in out


def test_cli_reports_a_simulator_crash_in_one_line_with_its_reproducer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import consensus.simulate

    def broken(config: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(consensus.simulate, "simulate", broken)
    result = CliRunner().invoke(main, ["sim", "--heights", "3", "--seed", "9"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    reproduce, error = result.stderr.strip().splitlines()
    assert reproduce.startswith("reproduce: depnet sim --nodes 4 --heights 3 --seed 9")
    assert error == "error: simulation failed with RuntimeError: boom"


def test_cli_faults_line_names_byzantine_validators_not_a_count() -> None:
    """`byzantine 2 (double-vote)` read like a count of two; it is validator index 2."""
    args = ["sim", "--nodes", "7", "--heights", "1", "--seed", "3", "--byzantine", "2"]
    out = CliRunner().invoke(main, args).output
    [faults] = [line for line in out.splitlines() if line.startswith("faults: ")]
    chosen = sorted(
        Simulation(SimConfig(nodes=7, heights=1, seed=3, byzantine=2)).byzantine.items()
    )
    for index, mode in chosen:
        assert f"byzantine: validator {index} ({mode})" in faults
    assert CliRunner().invoke(main, args).output == out  # still deterministic


def test_a_run_without_honest_nodes_is_refused_not_vacuously_ok() -> None:
    """Safety and liveness are checked on honest nodes only: with every validator
    byzantine nothing was checked, the verdict was OK (exit 0), and the text output
    crashed on ``min()`` of no heights."""
    with pytest.raises(ValueError, match="honest"):
        SimConfig(nodes=4, heights=3, byzantine=4)
    result = CliRunner().invoke(main, ["sim", "--nodes", "4", "--heights", "3", "--byzantine", "4"])
    assert result.exit_code == 2 and "honest" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def proposers(sim: Simulation, node: int) -> set[int]:
    """Validator indexes whose blocks ``node`` committed."""
    index = sim.world.validators.index
    return {index(block.header.proposer) for block, _ in sim.nodes[node].committed}


def test_a_proposer_dating_its_blocks_too_far_ahead_is_refused_and_the_chain_goes_on() -> None:
    """Node 1's clock runs 10.5 s ahead: every honest node prevotes nil on its fresh
    proposals (more than 10 s ahead of their clocks), so none is ever decided, and the
    heights it should have proposed are decided in the next round."""
    for seed in range(3):
        sim = Simulation(SimConfig(nodes=4, heights=12, seed=seed, skew=(Skew(1, 10_500),)))
        result = sim.run()
        assert result.verdict is Verdict.OK, (result.violations, sim.config.command())
        assert 1 not in proposers(sim, 0) and proposers(sim, 0) == {0, 2, 3}
        assert result.late_heights >= 2  # heights 1, 5, 9 had node 1 as round-0 proposer


def test_honest_nodes_keep_committing_when_an_early_proposer_splits_them_and_goes_silent() -> None:
    """Issue 9's halt: node 1 dates its block so that one honest node (3, whose clock is
    0.5 s behind) finds it too far ahead and the two others accept it; with node 1's own
    votes that decides it, then node 1 goes silent. The three honest nodes can only go on
    together: node 3 must commit the block it refused (line 49 asks valid(v), not
    timely(v)). Caching the time verdict with valid(v) left node 3 stuck for good and the
    others without a quorum."""
    config = SimConfig(
        nodes=4,
        heights=40,
        seed=1,
        skew=(Skew(1, 10_000), Skew(3, -500)),
        crashes=(Crash(1, 2_000, 12_000),),
    )
    sim = Simulation(config)
    result = sim.run()
    assert result.verdict is Verdict.OK, (result.violations, config.command())
    assert 1 in proposers(sim, 3)  # node 3 committed blocks it had prevoted nil on
    silent = [h for h, t in result.decided_at_ms.items() if 2_000 < t < 12_000]
    assert len(silent) >= 5, "no progress while the early proposer was silent"


def test_a_node_whose_clock_runs_30_s_behind_follows_every_height() -> None:
    """Every block looks 30 s early to node 2, so it prevotes nil on every other
    proposer's block; the three others decide, and node 2 commits each decided block
    all the same (and its own blocks, dated after their parent, are timely to all)."""
    for seed in range(3):
        sim = Simulation(SimConfig(nodes=4, heights=15, seed=seed, skew=(Skew(2, -30_000),)))
        result = sim.run()
        assert result.verdict is Verdict.OK, (result.violations, sim.config.command())
        assert result.committed[2] >= 15 and proposers(sim, 2) == {0, 1, 2, 3}


def test_cli_runs_a_skewed_clock_and_prints_it_in_the_reproducer() -> None:
    config = SimConfig(nodes=4, heights=5, seed=2, skew=(Skew(2, -30_000),))
    assert "--skew 2=-30000" in config.command()
    code, out = run_cli(config.command())
    assert code == 0 and "clock of node 2 -30000 ms" in out and "verdict: OK" in out


@pytest.mark.parametrize("nodes", [4, 7])
@pytest.mark.parametrize(
    "mode",
    [
        ByzantineMode.MANY_VALUES,
        ByzantineMode.MUTATE,
        ByzantineMode.FAR_FUTURE,
        ByzantineMode.FLOOD,
    ],
)
def test_f_validators_rewriting_their_messages_are_neither_a_fork_nor_a_halt(
    mode: ByzantineMode, nodes: int
) -> None:
    for seed in range(3):
        assert_ok(
            SimConfig(
                nodes=nodes,
                heights=8,
                seed=seed,
                drop=0.1,
                reorder=0.1,
                byzantine=(nodes - 1) // 3,
                byzantine_mode=mode,
            )
        )


def test_far_future_claims_cost_a_bounded_number_of_sync_requests() -> None:
    """Votes at height 2**63-1 and 2 to 1,000 heights ahead, with every vote: each honest
    node asks for sync at most once per height for a message two heights ahead, and on
    at most AHEAD_TICKS resend ticks per height for a lone claim."""
    heights = 12
    result = simulate(
        SimConfig(
            nodes=4, heights=heights, seed=4, byzantine=1, byzantine_mode=ByzantineMode.FAR_FUTURE
        )
    )
    assert result.verdict is Verdict.OK, result.violations
    honest = len(result.committed)
    assert 0 < result.sync_requests <= honest * (heights + 1) * (AHEAD_TICKS + 1)


def test_a_wiped_validator_resyncs_from_height_1_and_reaches_the_target() -> None:
    """Its blocks are gone, its signer state is kept: it starts at height 1, refuses to
    sign anything below what it signed before (no evidence accuses it), and catches up by
    sync while the others go on."""
    for seed in range(4):
        config = SimConfig(
            nodes=4,
            heights=20,
            seed=seed,
            drop=0.1,
            crashes=(Crash(2, 600, 900, CrashKind.WIPE), Crash(0, 1_200, 1_300, CrashKind.WIPE)),
        )
        sim = Simulation(config)
        result = sim.run()
        assert result.verdict is Verdict.OK, (result.violations, config.command())
        assert not result.evidence and result.sync_requests > 0
        assert result.decided_at_ms[20] > 1_300  # the wipes came before the end...
        for node in (sim.nodes[0], sim.nodes[2]):  # ...and both came back and vote again
            signed = Signer(node.key, node.storage, CHAIN_ID).last
            assert len(node.committed) == 20 and signed is not None and signed.height >= 19


def test_amnesia_may_double_sign_and_is_counted_as_byzantine() -> None:
    """Node 1 restarts seven times with its signer state lost or rolled back: it signs
    again what it had signed otherwise, honest nodes catch it, and nothing else breaks."""
    found = []
    for seed in range(6):
        amnesia = tuple(Crash(1, t, t + 5, CrashKind.AMNESIA) for t in range(100, 1_500, 200))
        config = SimConfig(nodes=4, heights=30, seed=seed, drop=0.2, crashes=amnesia)
        assert config.amnesiac == {1}
        result = simulate(config)
        assert result.verdict is Verdict.OK, (result.violations, config.command())
        found += [world(4).validators.index(e.validator) for e in result.evidence]
    assert found and set(found) == {1}


def test_amnesiac_validators_count_against_the_byzantine_budget() -> None:
    amnesia = (Crash(1, 0, 10, CrashKind.AMNESIA), Crash(3, 0, 10, CrashKind.AMNESIA))
    with pytest.raises(ValueError, match="one honest"):
        SimConfig(nodes=4, byzantine=2, crashes=amnesia)
    for seed in range(20):  # byzantine validators are drawn among the others
        sim = Simulation(SimConfig(nodes=4, seed=seed, byzantine=1, crashes=amnesia))
        assert set(sim.byzantine) <= {0, 2}


def test_every_new_fault_replays_exactly_from_its_printed_command() -> None:
    """Crashes of every kind, in any order, byzantine rewriting and a skew: the command
    groups crashes by flag and the config orders them the same way, so the replay is the
    same run event for event."""
    config = SimConfig(
        nodes=4,
        heights=6,
        seed=11,
        drop=0.1,
        byzantine=1,
        byzantine_mode=ByzantineMode.MUTATE,
        crashes=(
            Crash(1, 200, 300, CrashKind.AMNESIA),
            Crash(2, 100, 700, CrashKind.WIPE),
            Crash(1, 150, 160),
        ),
        skew=(Skew(3, -3_000),),
    )
    command = config.command()
    assert "--crash 1@150-160 --wipe 2@100-700 --amnesia 1@200-300" in command
    assert "--byzantine-mode mutate" in command
    code, out = run_cli(command + " --json")
    assert code == 0, out
    assert json.loads(out) == simulate(config).to_json()


def test_a_run_is_the_same_in_another_process_whatever_its_hash_seed() -> None:
    """The order of a set of bytes changes with PYTHONHASHSEED: a byzantine rewriter that
    iterated one would print a command that replays another run. Two processes with two
    hash seeds run a flooding and a mutating validator and a wipe: the same JSON."""
    config = SimConfig(
        nodes=7,
        heights=5,
        seed=18,
        drop=0.1,
        byzantine=2,
        crashes=(Crash(3, 100, 400, CrashKind.WIPE),),
    )
    modes = set(Simulation(config).byzantine.values())
    assert modes == {ByzantineMode.FLOOD, ByzantineMode.MUTATE}
    args = [sys.executable, "-m", "cli", *shlex.split(config.command())[1:], "--json"]
    outputs = [
        subprocess.run(
            args,
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        for seed in ("1", "2")
    ]
    assert outputs[0] == outputs[1]
    assert json.loads(outputs[0]) == simulate(config).to_json()
