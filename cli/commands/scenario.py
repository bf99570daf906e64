"""`depnet scenario run FILE | list`: fault experiments written as scenario files.

`run` creates a fresh network in a temporary home, offers load, applies the file's fault
timeline, checks every node, and prints per phase the heights, the commit rate, the
recovery time and the verdict; report.json, acks.log and timeline.png go to --out.
Exit status 1 when a phase or the check fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from cli.commands.common import SafeGroup, echo_json, json_option, print_table

if TYPE_CHECKING:
    from cli.devnet.experiment import ScenarioReport


@click.group(cls=SafeGroup)
def scenario() -> None:
    """Fault experiments on a fresh local network (configs/scenarios/*.toml)."""


@scenario.command("list")
def list_scenarios() -> None:
    """The bundled scenario files and what each one does."""
    from cli.devnet.scenario import bundled_scenarios, load_scenario

    rows = []
    for path in bundled_scenarios():
        found = load_scenario(path)
        note = "long" if found.slow else ""
        rows.append(
            [path.stem, found.validators, f"{found.load.duration:g} s", note, found.description]
        )
    print_table(["scenario", "validators", "load", "", "what"], rows)


@scenario.command()
@click.argument("file")
@click.option("--seed", type=int, default=1, show_default=True, help="Seeds load and timing.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for report.json, acks.log, timeline.png (default ./scenario-NAME).",
)
@json_option
def run(file: str, seed: int, out: Path | None, as_json: bool) -> None:
    """Run a scenario FILE (a path, or a name from `depnet scenario list`)."""
    from cli.devnet.experiment import run_scenario
    from cli.devnet.scenario import load_scenario, scenario_path

    found = load_scenario(scenario_path(file))
    out = out or Path(f"scenario-{found.name}")
    say = None if as_json else (lambda msg: click.echo(msg, err=True))
    report = run_scenario(found, out, seed=seed, progress=say)
    if as_json:
        echo_json(report.to_json())
    else:
        _print(report, out)
    if not report.ok:
        raise click.exceptions.Exit(1)


def _print(report: ScenarioReport, out: Path) -> None:
    from cli.commands.check import print_report

    rows = []
    for result in report.phases:
        phase = result.phase
        expected = {True: "commits", False: "no commits", None: "safety only"}[phase.liveness]
        if phase.recovery is not None:
            expected += f", recovers <= {phase.recovery:g} s"
        heights = " ".join(
            "-" if (h := result.heights_end.get(bank)) is None else str(h)
            for bank in report.scenario.banks
        )
        rows.append(
            [
                f"{result.start:.1f}-{result.end:.1f} s",
                phase.opened_by or "(start)",
                expected,
                heights,
                result.blocks,
                f"{result.tx_per_s:.1f}",
                "-" if result.recovery_s is None else f"{result.recovery_s:.1f} s",
                "[green]ok[/]" if result.ok else f"[red]FAIL[/] {'; '.join(result.problems)}",
            ]
        )
    banks = " ".join(report.scenario.banks)
    print_table(
        [
            "phase",
            "opened by",
            "expected",
            f"heights ({banks})",
            "blocks",
            "tx/s",
            "recovery",
            "verdict",
        ],
        rows,
    )
    click.echo()
    print_report(report.check)
    for problem in report.problems:
        click.secho(f"run: {problem}", fg="red")
    click.echo(
        f"{report.scenario.name}: {report.run_seconds:.0f} s, {report.blocks_committed} blocks, "
        f"{report.load['acked']} txs acknowledged; report in {out}/report.json, "
        f"picture in {out}/timeline.png"
    )
    verdict = "PASS" if report.ok else "FAIL"
    click.secho(f"scenario verdict: {verdict}", fg="green" if report.ok else "red")
