"""`depnet check`: verify what every node committed (cli/devnet/check.py) and print a
verdict table; exit status 1 when any invariant is broken."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from cli.commands.common import (
    SafeCommand,
    echo_json,
    home_option,
    json_option,
    open_network,
    print_table,
)

if TYPE_CHECKING:
    from cli.devnet.check import CheckReport

_MARK = {
    "ok": "[green]ok[/]",
    "violated": "[red]VIOLATED[/]",
    "skipped": "[dim]skipped[/]",
    "info": "[dim]info[/]",
}


@click.command(cls=SafeCommand)
@home_option
@click.option(
    "--acks",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The load generator's ack log: tx ids a client was told are committed.",
)
@click.option(
    "--equivocated",
    "equivocated",
    metavar="BANK",
    multiple=True,
    help="A bank made to equivocate or double-vote (`depnet fault byzantine BANK "
    "equivocate|double-vote`): a committed proof must accuse it. Repeat for several banks; "
    "check a few heights after the fault, so the proof has had time to be committed.",
)
@json_option
def check(home: Path, acks: Path | None, equivocated: tuple[str, ...], as_json: bool) -> None:
    """Check every node: one block per height, valid certificates, a replay from genesis,
    equal state roots, supply, every acknowledged tx committed once, and every committed
    proof of equivocation valid and committed once (and accusing each --equivocated bank).

    A running node is read through its API, a stopped one from its store.
    """
    from cli.devnet.check import check_chains, read_acks, read_network

    net = open_network(home)
    genesis = net.genesis()
    injected = {genesis.bank(name).name for name in equivocated}  # an unknown one: one line
    report = check_chains(
        read_network(net),
        genesis,
        None if acks is None else read_acks(acks),
        injected=injected or None,
    )
    if as_json:
        echo_json(report.to_json())
    else:
        print_report(report)
    if not report.ok:
        raise click.exceptions.Exit(1)


def print_report(report: CheckReport) -> None:
    """The node table, the verdict per check, then one row per violation."""
    print_table(
        ["node", "read from", "height", "evidence", "note"],
        [
            [n.bank, n.source, n.height, "-" if n.evidence is None else n.evidence, n.note]
            for n in report.nodes
        ],
    )
    click.echo()
    print_table(
        ["check", "verdict", "detail"],
        [[o.name, _MARK[o.status], o.detail] for o in report.outcomes],
    )
    if report.violations:
        click.echo()
        print_table(
            ["violated", "node", "height", "what"],
            [
                [v.check, v.node, "-" if v.height is None else v.height, v.detail]
                for v in report.violations
            ],
        )
    click.echo()
    if report.ok:
        click.secho("verdict: PASS", fg="green")
    else:
        count = len(report.violations)
        click.secho(f"verdict: FAIL ({count} violation{'s' * (count != 1)})", fg="red")
