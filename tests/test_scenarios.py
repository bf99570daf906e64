"""Scenario files: parsing (every mistake is one line naming file and key), the timeline
and its phases, the judging of phases from sampled heights, and (marked ``network``) each
bundled scenario run on real validator processes with its verdict asserted.

The long variants (``slow = true`` in the file) run with `make scenarios-long`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.devnet.experiment import Applied, Sample, equivocators, judge_phases, run_scenario
from cli.devnet.scenario import (
    Phase,
    ScenarioError,
    bundled_scenarios,
    load_scenario,
    parse_scenario,
    resolve,
)
from cli.devnet.workload import Committed
from cli.main import main

BANKS = ["JPM", "HSBC", "DBS", "BNP"]
MINIMAL = {
    "name": "t",
    "validators": 4,
    "load": {"rate": 10, "accounts": 4, "duration": "20s"},
    "fault": [{"at": "5s", "until": "10s", "command": "kill BNP", "recovery": "8s"}],
}


def with_changes(**changes: object) -> dict:
    doc = json.loads(json.dumps(MINIMAL))
    doc.update(changes)
    return doc


def with_fault(**fields: object) -> dict:
    fault = {**MINIMAL["fault"][0], **fields}  # type: ignore[index]
    return with_changes(fault=[{k: v for k, v in fault.items() if v is not None}])


# --- parsing -----------------------------------------------------------------------------


def test_every_bundled_scenario_parses_and_covers_the_fault_catalogue() -> None:
    scenarios = {p.stem: load_scenario(p) for p in bundled_scenarios()}
    assert {
        "crash-f", "crash-f-7", "crash-f-plus-1", "partition-2-2", "partition-1-3",
        "isolate-proposer", "oneway-proposer", "drop-30", "delay-200", "duplicate",
        "clock-skew", "equivocate", "double-vote", "silent", "invalid-block",
        "power-cycles", "power-cycles-10", "wipe-resync", "pause-f",
    } <= set(scenarios)  # fmt: skip
    for name, scenario in scenarios.items():
        assert scenario.name == name and scenario.description
    assert scenarios["crash-f-7"].validators == 7 and scenarios["crash-f-7"].slow


@pytest.mark.parametrize(
    ("doc", "key", "what"),
    [
        (with_changes(colour="red"), "colour", "unknown key"),
        (with_changes(load={"rate": 10, "accounts": 4}), "load.duration", "missing"),
        (with_changes(load={"rate": 0, "accounts": 4, "duration": "9s"}), "load.rate", ">= 1"),
        (with_fault(at="10 s"), "fault[0].at", "not a duration"),
        (with_fault(at="25s", until=None), "fault[0].at", "not inside"),
        (with_fault(until="4s"), "fault[0].until", "not after"),
        (with_fault(command="explode BNP"), "fault[0].command", "unknown fault 'explode'"),
        (with_fault(command="kill CITI"), "fault[0].command", "unknown bank 'CITI'"),
        (with_fault(command="partition JPM,HSBC"), "fault[0].command", "groups"),
        (with_fault(command="partition --oneway JPM"), "fault[0].command", "'A -> B'"),
        (with_fault(command="partition --oneway JPM -> ABN"), "fault[0].command", "'ABN'"),
        (with_fault(command="drop --rate 3"), "fault[0].command", "between 0 and 1"),
        (with_fault(command="skew DBS"), "fault[0].command", "--ms N"),
        (with_fault(command="byzantine JPM lie"), "fault[0].command", "double-vote"),
        (with_fault(command="wipe DBS"), "fault[0].until", "cannot be undone"),
        (with_fault(until=None), "fault[0].recovery", "needs 'until'"),
        (with_fault(liveness="no"), "fault[0].liveness", "true or false"),
        (with_changes(validators=9), "validators", "only 7 banks"),
        (
            with_changes(power_cycles={"cycles": 10, "down": "2s", "from": "1s", "to": "9s"}),
            "power_cycles.down",
            "one node is down at a time",
        ),
    ],
)
def test_a_mistake_is_one_line_naming_file_and_key(doc: dict, key: str, what: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(doc, "bad.toml")
    message = str(caught.value)
    assert message.startswith(f"bad.toml: {key}: ") and what in message, message
    assert "\n" not in message


@pytest.mark.parametrize(
    "command",
    [
        "partition JPM,HSBC / DBS,BNP",
        "partition JPM,HSBC DBS,BNP",
        "partition --oneway JPM -> DBS",
        "partition --oneway JPM->DBS",
        "drop --rate 0.3 --from JPM --to DBS --kind consensus",
        "delay --ms 200 --jitter 100",
        "skew DBS --ms -30000",
        "byzantine HSBC double-vote",
    ],
)
def test_commands_are_written_as_depnet_fault_takes_them(command: str) -> None:
    (fault,) = parse_scenario(with_fault(command=command), "ok.toml").faults
    assert fault.command == command and fault.undo() is not None


def test_a_file_that_is_not_toml_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('name = "x"\n[load\n')
    with pytest.raises(ScenarioError, match=r"broken\.toml: not valid TOML"):
        load_scenario(path)


def test_phases_carry_the_expectations_of_the_faults_in_force() -> None:
    scenario = load_scenario(Path("configs/scenarios/partition-2-2.toml"))
    before, during, after = scenario.phases(seed=1)
    assert (before.start, before.liveness, before.recovery) == (0.0, True, None)
    assert during.faults == ("partition JPM,HSBC / DBS,BNP",) and not during.liveness
    assert (after.opened_by, after.liveness, after.recovery, after.heals) == (
        "heal",
        True,
        10.0,
        True,
    )


def test_a_separate_heal_step_ends_a_fault() -> None:
    doc = with_changes(
        fault=[
            {"at": "5s", "command": "partition JPM / HSBC,DBS,BNP", "liveness": True},
            {"at": "9s", "command": "heal", "recovery": "6s"},
        ]
    )
    scenario = parse_scenario(doc, "heal.toml")
    phases = scenario.phases(seed=1)
    assert [p.faults for p in phases] == [(), ("partition JPM / HSBC,DBS,BNP",), ()]
    assert phases[2].recovery == 6.0
    assert scenario.bands(1) == [(5.0, 9.0, "partition JPM / HSBC,DBS,BNP"), (9.0, None, "heal")]


def test_power_cycles_take_every_node_down_in_turn_from_the_seed() -> None:
    doc = with_changes(
        fault=[], power_cycles={"cycles": 3, "down": "0.5s", "from": "1s", "to": "19s"}
    )
    scenario = parse_scenario(doc, "cycles.toml")
    steps = scenario.steps(seed=7)
    assert len(steps) == 3 * 4 * 2
    down: set[str] = set()
    for step in steps:  # in time order: one node down at a time, every kill undone
        kind, bank = step.command.split()
        if kind == "kill":
            assert not down
            down.add(bank)
        else:
            assert down == {bank}
            down.clear()
    kills = [s.command for s in steps if s.kind == "kill"]
    assert sorted(kills) == sorted(f"kill {b}" for b in BANKS for _ in range(3))
    assert scenario.steps(seed=7) == steps and scenario.steps(seed=8) != steps


def test_placeholders_name_the_proposer_and_the_other_banks() -> None:
    assert resolve("partition {proposer} / {rest}", "DBS", BANKS) == "partition DBS / JPM,HSBC,BNP"
    assert resolve("partition --oneway {proposer} -> {rest}", "JPM", BANKS) == (
        "partition --oneway JPM -> HSBC,DBS,BNP"
    )
    assert resolve("kill BNP", "JPM", BANKS) == "kill BNP"


def test_the_banks_made_to_equivocate_or_double_vote_are_the_ones_check_must_see_accused() -> None:
    commands = [
        "byzantine JPM equivocate",
        "byzantine JPM off",
        "byzantine HSBC double-vote",
        "byzantine DBS silent",
        "byzantine BNP invalid-block",
        "kill DBS",
        "heal",
    ]
    assert equivocators(commands) == {"JPM", "HSBC"}
    assert equivocators(["byzantine DBS silent", "partition JPM / HSBC,DBS,BNP"]) == set()


# --- judging phases ----------------------------------------------------------------------


def phase(start: float, liveness: bool = True, recovery: float | None = None) -> Phase:
    return Phase(start, start + 10, (), liveness, recovery, "x", heals=recovery is not None)


def climbing(banks: list[str], start: float, end: float, height: int) -> list[Sample]:
    """Every bank one block higher every second from ``start`` to ``end``."""
    return [
        Sample(t + 0.1 * i, bank, height + int(t - start))
        for t in range(int(start), int(end))
        for i, bank in enumerate(banks)
    ]


def test_commits_where_none_were_expected_fail_the_phase() -> None:
    samples = climbing(BANKS, 0, 20, 1)
    (stalled,) = judge_phases([phase(0, liveness=False)], [], samples, [], 10.0)
    assert not stalled.ok and "committed while no commit was expected" in stalled.problems[0]
    flat = [Sample(s.at, s.bank, 5) for s in samples]
    (quiet,) = judge_phases([phase(0, liveness=False)], [], flat, [], 10.0)
    assert quiet.ok and quiet.blocks == 0


def test_recovery_is_the_time_until_every_answering_node_passes_the_old_top() -> None:
    samples = [Sample(t, b, 10) for t in range(0, 10) for b in BANKS]  # stalled at 10
    samples += climbing(BANKS[:3], 10, 20, 10)  # three resume at 10 s: 11 at 11 s
    samples += [Sample(15.5, "BNP", 10), Sample(16.5, "BNP", 15)]  # BNP catches up at 16.5
    applied = [Applied(10.0, 10.0, "heal")]
    ok, late = (
        judge_phases([phase(0, liveness=False), phase(10, recovery=bound)], applied, samples,
                     [Committed(12.0, 12, 30)], 20.0)[1]
        for bound in (8.0, 5.0)
    )  # fmt: skip
    assert ok.ok and ok.recovery_s == pytest.approx(6.5) and ok.tx_per_s == pytest.approx(3.0)
    assert not late.ok and "over the 5 s bound" in late.problems[0]
    never = [s for s in samples if s.bank != "BNP" or s.at < 10] + [Sample(19, "BNP", 10)]
    (_, stuck) = judge_phases(
        [phase(0, liveness=False), phase(10, recovery=8.0)], applied, never, [], 20.0
    )
    assert stuck.recovery_s is None and "no recovery observed" in stuck.problems[0]


# --- the command ---------------------------------------------------------------------------


def test_scenario_list_names_every_file() -> None:
    result = CliRunner().invoke(main, ["scenario", "list"])
    assert result.exit_code == 0
    for path in bundled_scenarios():
        assert path.stem in result.output


def test_an_unknown_scenario_name_is_one_line() -> None:
    result = CliRunner().invoke(main, ["scenario", "run", "no-such-thing"])
    assert result.exit_code == 1 and "no such scenario file" in result.output


# --- running them --------------------------------------------------------------------------


def _scenario_params() -> list:
    params = []
    for path in bundled_scenarios():
        scenario = load_scenario(path)
        marks = [pytest.mark.network]
        if scenario.slow:
            marks.append(pytest.mark.slow)
            marks.append(
                pytest.mark.skipif(
                    not os.environ.get("DEPNET_SLOW"),
                    reason="long variant: `make scenarios-long`",
                )
            )
        params.append(pytest.param(path, marks=marks, id=path.stem))
    return params


@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", _scenario_params())
def test_scenario_verdict(path: Path, tmp_path: Path) -> None:
    scenario = load_scenario(path)
    started = time.monotonic()
    report = run_scenario(scenario, tmp_path / "out", seed=1)
    recovery = "-" if report.recovery_s is None else f"{report.recovery_s:.1f} s"
    print(
        f"\nscenario {scenario.name}: run {time.monotonic() - started:.0f} s, "
        f"{report.blocks_committed} blocks, recovery {recovery}, "
        f"{report.load['acked']} txs acknowledged"
    )
    failures = [f"{p.start:.1f} s: {'; '.join(p.problems)}" for p in report.phases if p.problems]
    failures += [v.line() for v in report.check.violations] + report.problems
    assert report.ok, "\n".join(failures)
    assert report.load["acked"] > 0
    assert (tmp_path / "out" / "timeline.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "out" / "report.json").read_text())["verdict"] == "ok"
