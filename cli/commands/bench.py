"""`depnet bench ledger | network`: measure throughput on this machine.

The benchmarks themselves are cli/devnet/bench.py; here they get their options, and
their figures are printed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from cli.commands.common import F, SafeGroup
from cli.devnet import bench as benchmarks


@click.group(cls=SafeGroup)
def bench() -> None:
    """Measure throughput on this machine."""


def accounts_option(default: int, help: str) -> Callable[[F], F]:
    return click.option(
        "--accounts", type=click.IntRange(min=2), default=default, show_default=True, help=help
    )


def seed_option(help: str) -> Callable[[F], F]:
    return click.option("--seed", type=int, default=1, show_default=True, help=help)


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")


@bench.command("ledger")
@click.option("--txs", type=click.IntRange(min=1), default=50_000, show_default=True)
@accounts_option(10_000, "Registered accounts that send and receive the transfers.")
@click.option("--block-size", type=click.IntRange(1, 10_000), default=1_000, show_default=True)
@seed_option("Seeds keys and payments.")
@json_option
def ledger(as_json: bool, **options: int) -> None:
    """Decode, verify, apply and commit TXS transfers in blocks through a temporary store."""
    result = benchmarks.run_ledger_bench(**options)
    if as_json:
        click.echo(json.dumps(result))
    else:
        _print_table(result)


class RateList(click.ParamType):
    """``500,1000,2000`` -> [500, 1000, 2000]; each a non-negative integer."""

    name = "rates"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, list):
            return value
        try:
            rates = [int(part) for part in str(value).split(",") if part.strip()]
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of integers", param, ctx)
        if not rates or min(rates) < 0:
            self.fail(f"{value!r} must list one or more rates >= 0", param, ctx)
        return rates


@bench.command("network")
@click.option(
    "--duration",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="Seconds of load.",
)
@click.option(
    "--rate",
    type=click.IntRange(min=0),
    default=500,
    show_default=True,
    help="Offered load in tx/s, spread over the nodes; 0: a closed loop that keeps "
    "--in-flight txs uncommitted per node (measures capacity).",
)
@click.option(
    "--in-flight",
    type=click.IntRange(min=1),
    default=1_000,
    show_default=True,
    help="Closed loop: txs each node has accepted and not yet committed.",
)
@click.option("--batch", type=click.IntRange(1, 1_000), default=250, show_default=True)
@accounts_option(1_000, "Funded accounts that pay each other (spread over the banks).")
@click.option(
    "--banks",
    type=click.IntRange(1, 16),
    default=4,
    show_default=True,
    help="Validators; banks beyond the template's are added (B5, B6, ...).",
)
@click.option(
    "--warmup",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="Seconds of load left out of the rate and latency figures.",
)
@seed_option("Seeds the payments.")
@click.option(
    "--idle",
    is_flag=True,
    help="Offer nothing for --duration: blocks/s and CPU of an idle network.",
)
@click.option(
    "--sweep",
    "rates",
    type=RateList(),
    default=None,
    help="Comma-separated offered rates (0: closed loop), one fresh network each, e.g. "
    "500,1000,2000,4000: prints offered vs committed tx/s and latency.",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="With --sweep: draw the throughput-latency curve into this PNG.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the JSON figures to this file.",
)
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Create the network home here and keep it (logs, stores); default: a temp dir.",
)
@json_option
def network(
    keep: Path | None,
    as_json: bool,
    rates: list[int] | None,
    plot: Path | None,
    out: Path | None,
    **load: Any,
) -> None:
    """Run a local network under transfer load and report tx/s, latency and memory."""
    if plot is not None and rates is None:
        raise click.UsageError("--plot draws a --sweep; give --sweep too")
    progress = None if as_json else click.echo
    spec = benchmarks.NetworkLoad(**load)
    if rates is None:
        result = benchmarks.run_network_bench(spec, keep, progress=progress)
    else:
        result = benchmarks.run_sweep(spec, rates, keep, progress=progress)
        if plot is not None:
            benchmarks.plot_sweep(result, plot)
    text = json.dumps(result) if as_json else json.dumps(result, indent=2)
    if out is not None:
        out.write_text(json.dumps(result, indent=2) + "\n")
    click.echo(text)


def _print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ledger: {result['txs']:,} transfers in {result['blocks']:,} blocks")
    table.add_column("phase")
    table.add_column("seconds", justify="right")
    table.add_column("µs per tx", justify="right")
    for name, seconds in result["phase_seconds"].items():
        table.add_row(name, f"{seconds:.3f}", f"{result['phase_us_per_tx'][name]:.1f}")
    table.add_row("total", f"{result['seconds']:.3f}", f"{1e6 / result['tx_per_s']:.1f}")
    console = Console()
    console.print(table)
    console.print(
        f"[bold]{result['tx_per_s']:,} tx/s[/bold] end to end on one core; "
        f"signature checks alone {result['verify_per_s']:,}/s; "
        f"store {result['store_mb']} MB for {result['accounts']:,} accounts"
    )
