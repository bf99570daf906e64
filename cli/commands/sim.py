"""`depnet sim`: run the consensus fault simulator and print its verdict.

Exit codes are the verdict, so scripts and CI can use the command directly: 0 every
invariant held and every honest node reached the target height, 1 an invariant broke
(safety, or an honest engine held more than its stated memory bounds), 2 the target
height was not reached after the faults healed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, TypeVar

import click

from cli.commands.common import CliError, SafeCommand

if TYPE_CHECKING:
    from consensus.simulate import SimResult

T = TypeVar("T")


def _delay(value: str) -> tuple[int, int]:
    low, sep, high = value.partition("-")
    try:
        return (int(low), int(high)) if sep else (int(low), int(low))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected MIN-MAX in ms, e.g. 2-30") from None


def _parsed(parse: Callable[[str], T], specs: tuple[str, ...]) -> tuple[T, ...]:
    try:
        return tuple(parse(spec) for spec in specs)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command(cls=SafeCommand)
@click.option("--nodes", default=4, show_default=True, help="Bank validators (n = 3f+1).")
@click.option("--heights", default=20, show_default=True, help="Target height.")
@click.option("--seed", default=0, show_default=True, help="Seed of every random choice.")
@click.option("--drop", default=0.0, show_default=True, help="Probability a message is lost.")
@click.option("--delay", default="2-30", show_default=True, help="Link delay MIN-MAX in ms.")
@click.option("--duplicate", default=0.0, show_default=True, help="Probability of a duplicate.")
@click.option("--reorder", default=0.0, show_default=True, help="Share of messages held back.")
@click.option("--byzantine", default=0, show_default=True, help="Faulty validators (f tolerated).")
@click.option(
    "--byzantine-mode",
    type=click.Choice(
        [
            "equivocate",
            "double-vote",
            "silent",
            "invalid-block",
            "many-values",
            "mutate",
            "far-future",
            "flood",
            "mixed",
        ]
    ),
    default="mixed",
    show_default=True,
    help="What the faulty validators do; mixed draws one per validator from the seed.",
)
@click.option(
    "--partition",
    "partitions",
    multiple=True,
    metavar="GROUPS@START-END",
    help="e.g. '0,1|2,3@1000-5000': the groups cannot talk from 1 s to 5 s. Repeatable.",
)
@click.option(
    "--crash",
    "crashes",
    multiple=True,
    metavar="NODE@START-END",
    help="e.g. 2@1000-3000: node 2 crashes at 1 s and restarts at 3 s. Repeatable.",
)
@click.option(
    "--wipe",
    "wipes",
    multiple=True,
    metavar="NODE@START-END",
    help="A crash that also loses the node's blocks (signer state kept): it resyncs. Repeatable.",
)
@click.option(
    "--amnesia",
    "amnesias",
    multiple=True,
    metavar="NODE@START-END",
    help="A crash that loses or rolls back the node's signer state; the node counts as "
    "byzantine. Repeatable.",
)
@click.option(
    "--skew",
    "skews",
    multiple=True,
    metavar="NODE=MS",
    help="e.g. 2=-30000: node 2's clock runs 30 s behind. Repeatable.",
)
@click.option("--deadline", type=int, help="ms after the faults heal to reach the target.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def sim(
    ctx: click.Context,
    nodes: int,
    heights: int,
    seed: int,
    drop: float,
    delay: str,
    duplicate: float,
    reorder: float,
    byzantine: int,
    byzantine_mode: str,
    partitions: tuple[str, ...],
    crashes: tuple[str, ...],
    wipes: tuple[str, ...],
    amnesias: tuple[str, ...],
    skews: tuple[str, ...],
    deadline: int | None,
    as_json: bool,
) -> None:
    """Run n real consensus engines over a simulated faulty network and check safety.

    Every run is reproducible: the same seed and flags print the same result. Exit code
    0 means ok, 1 a safety violation, 2 a liveness failure.
    """
    from consensus.simulate import (
        ByzantineMode,
        Crash,
        CrashKind,
        Partition,
        SimConfig,
        Skew,
        simulate,
    )

    low, high = _delay(delay)
    try:
        config = SimConfig(
            nodes=nodes,
            heights=heights,
            seed=seed,
            drop=drop,
            delay_min_ms=low,
            delay_max_ms=high,
            duplicate=duplicate,
            reorder=reorder,
            byzantine=byzantine,
            byzantine_mode=ByzantineMode(byzantine_mode),
            partitions=_parsed(Partition.parse, partitions),
            crashes=_parsed(Crash.parse, crashes)
            + _parsed(partial(Crash.parse, kind=CrashKind.WIPE), wipes)
            + _parsed(partial(Crash.parse, kind=CrashKind.AMNESIA), amnesias),
            skew=_parsed(Skew.parse, skews),
            deadline_ms=deadline,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        result = simulate(config)
    except Exception as exc:  # a simulator bug: the seed and flags reproduce it
        click.echo(f"reproduce: {config.command()}", err=True)
        detail = f": {exc}" if str(exc) else ""
        raise CliError(f"simulation failed with {type(exc).__name__}{detail}") from None
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        _print(result)
    ctx.exit(result.exit_code)


def _print(result: SimResult) -> None:
    from consensus.simulate import world

    cfg = result.config
    validators = world(cfg.nodes).validators
    index, f = validators.index, validators.f
    echo = click.echo
    run = f"{cfg.nodes} validators (f = {f}), seed {cfg.seed}"
    echo(f"depnet sim: {run}, target height {cfg.heights}")
    faults = [f"drop {cfg.drop:.0%}", f"delay {cfg.delay_min_ms}-{cfg.delay_max_ms} ms"]
    if cfg.duplicate:
        faults.append(f"duplicate {cfg.duplicate:.0%}")
    if cfg.reorder:
        faults.append(f"reorder {cfg.reorder:.0%}")
    # "byzantine 2" read like a count: name the validator index explicitly.
    faults += [f"byzantine: validator {v} ({mode})" for v, mode in sorted(result.byzantine.items())]
    faults += [f"partition {p.spec()}" for p in cfg.partitions]
    faults += [f"{c.kind} {c.spec()}" for c in cfg.crashes]
    faults += [f"clock of node {s.node} {s.ms:+} ms" for s in cfg.skew]
    echo(f"faults: {', '.join(faults)}")
    heights = sorted(result.committed.items())
    echo(
        f"heights committed: {min(h for _, h in heights)} by every honest node "
        f"({', '.join(f'node {i}: {h}' for i, h in heights)})"
    )
    echo(
        f"rounds used: highest round {result.max_round}; "
        f"{result.late_heights} heights needed more than one round"
    )
    echo(
        f"messages: {result.messages_sent} sent, {result.messages_delivered} delivered, "
        f"{result.messages_dropped} dropped, {result.messages_duplicated} duplicated; "
        f"{result.sync_requests} sync requests"
    )
    echo(f"evidence: {len(result.evidence)} equivocations")
    for ev in result.evidence[:5]:
        where = f"height {ev.height} round {ev.round}"
        echo(f"  validator {index(ev.validator)}: two {ev.kind}s at {where}")
    if len(result.evidence) > 5:
        echo(f"  ... and {len(result.evidence) - 5} more")
    echo(f"simulated time: {result.sim_time_ms} ms, {result.events} events")
    echo(f"verdict: {result.verdict.value.replace('_', ' ').upper()}")
    for violation in result.violations:
        echo(f"  {violation}")
    if result.violations:
        echo(f"reproduce: {cfg.command()}")
