"""`depnet fault ...`: break a running local network on purpose, and mend it.

Process faults (kill, pause, resume, restart, wipe) act on one bank's node process;
network faults (partition, heal, drop, delay, duplicate) are set inside every node;
skew and byzantine inside one. `depnet fault list` shows what is in force on each node
and `depnet fault clear` ends every network and byzantine fault. The logic lives in
cli/devnet/faults.py; this module parses, calls and prints.

Partitions name groups of banks separated by spaces (a lone ``/`` between groups is
allowed): ``depnet fault partition JPM,HSBC / DBS,BNP``. A one-way cut names the sender
then the receiver: ``depnet fault partition --oneway JPM DBS`` (also ``JPM->DBS``; quote
``'->'`` if written apart, or the shell reads ``>`` as a redirection).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cli.commands.common import (
    CliError,
    F,
    SafeGroup,
    echo_json,
    home_option,
    json_option,
    open_network,
    print_table,
)
from cli.devnet import faults
from cli.devnet.faults import Frames, NodeFaults


@click.group(cls=SafeGroup)
def fault() -> None:
    """Inject faults into the running network (`depnet up`): crash, freeze, partition,
    lose, delay or duplicate frames, skew a clock, make a validator byzantine."""


def _report(results: list[NodeFaults], what: str) -> None:
    took = [r.bank for r in results if r.state is not None]
    click.echo(f"{what}: set on {', '.join(took)}")
    for r in results:
        if r.error is not None:
            click.echo(f"warning: {r.bank} not reached: {r.error}", err=True)


# --- process faults ---------------------------------------------------------------------


@fault.command()
@home_option
@click.argument("bank")
def kill(home: Path, bank: str) -> None:
    """SIGKILL BANK's node (no clean shutdown)."""
    pid = faults.kill(open_network(home), bank)
    click.echo(f"killed {bank} (pid {pid}); `depnet fault restart {bank}` brings it back")


@fault.command()
@home_option
@click.argument("bank")
def pause(home: Path, bank: str) -> None:
    """SIGSTOP BANK's node: it freezes with its connections open."""
    pid = faults.pause(open_network(home), bank)
    click.echo(f"paused {bank} (pid {pid}); `depnet fault resume {bank}` wakes it")


@fault.command()
@home_option
@click.argument("bank")
def resume(home: Path, bank: str) -> None:
    """SIGCONT a paused node."""
    pid = faults.resume(open_network(home), bank)
    click.echo(f"resumed {bank} (pid {pid})")


@fault.command()
@home_option
@click.argument("bank")
def restart(home: Path, bank: str) -> None:
    """Stop BANK's node (if it runs) and start it again."""
    process = faults.restart(open_network(home), bank)
    click.echo(f"restarted {bank} (pid {process.pid})")


@fault.command()
@home_option
@click.argument("bank")
def wipe(home: Path, bank: str) -> None:
    """Stop BANK's node, delete its block store (key and signer state kept), start it:
    it resyncs from its peers."""
    process = faults.wipe(open_network(home), bank)
    click.echo(f"wiped {bank}'s block store and restarted it (pid {process.pid}); it resyncs")


# --- network faults ---------------------------------------------------------------------


def seed_option(f: F) -> F:
    return click.option(
        "--seed", type=int, help="Seed of the nodes' random draws (reproducible runs)."
    )(f)


def link_options(f: F) -> F:
    """--from, --to and --kind: which frames a link fault applies to (default all)."""
    f = seed_option(f)
    f = click.option(
        "--kind", type=click.Choice(faults.LINK_KINDS), help="Only frames of this kind."
    )(f)
    f = click.option("--to", "dst", metavar="BANK", help="Only frames to this bank.")(f)
    return click.option("--from", "src", metavar="BANK", help="Only frames from this bank.")(f)


@fault.command(context_settings={"ignore_unknown_options": True})
@home_option
@click.option("--oneway", is_flag=True, help="SENDER RECEIVER: only SENDER's frames are lost.")
@seed_option
@click.argument("groups", nargs=-1, required=True)
def partition(home: Path, oneway: bool, seed: int | None, groups: tuple[str, ...]) -> None:
    """Cut groups of banks off from each other: `partition JPM,HSBC / DBS,BNP`.

    With --oneway: `partition --oneway JPM DBS` loses JPM's frames to DBS while DBS's
    frames to JPM arrive (`JPM->DBS` is read the same)."""
    net = open_network(home)
    words = [w for w in " ".join(groups).replace("->", " ").split() if w != "/"]
    if oneway:
        if len(words) != 2:
            raise CliError("--oneway takes two banks: SENDER RECEIVER (e.g. JPM DBS)")
        _report(faults.partition_oneway(net, *words), f"one-way cut {words[0]} -> {words[1]}")
        return
    parts = [[b for b in w.split(",") if b] for w in words]
    if len(parts) < 2 or not all(parts):
        raise CliError("name two or more groups of banks, e.g. JPM,HSBC / DBS,BNP")
    shown = " | ".join(",".join(p) for p in parts)
    _report(faults.partition(net, parts, seed=seed), f"partition {shown}")


@fault.command()
@home_option
def heal(home: Path) -> None:
    """End every partition and one-way cut."""
    _report(faults.heal(open_network(home)), "healed")


@fault.command()
@home_option
@click.option("--rate", type=click.FloatRange(0, 1), required=True, help="Share of frames lost.")
@link_options
def drop(
    home: Path, rate: float, src: str | None, dst: str | None, kind: str | None, seed: int | None
) -> None:
    """Lose a share of the frames between nodes."""
    results = faults.drop(open_network(home), rate, Frames(src, dst, kind), seed=seed)
    _report(results, f"drop {rate:g}{_filters(src, dst, kind)}")


@fault.command()
@home_option
@click.option("--ms", type=click.IntRange(0, 60_000), required=True, help="Delay per frame.")
@click.option("--jitter", type=click.IntRange(0), default=0, help="+- this many ms, uniformly.")
@link_options
def delay(
    home: Path,
    ms: int,
    jitter: int,
    src: str | None,
    dst: str | None,
    kind: str | None,
    seed: int | None,
) -> None:
    """Hold frames between nodes back."""
    if jitter > ms:
        raise CliError(f"--jitter {jitter} is larger than --ms {ms}")
    net = open_network(home)
    results = faults.delay(net, ms, jitter, Frames(src, dst, kind), seed=seed)
    _report(results, f"delay {ms}+-{jitter} ms{_filters(src, dst, kind)}")


@fault.command()
@home_option
@click.option("--rate", type=click.FloatRange(0, 1), required=True, help="Share sent twice.")
@link_options
def duplicate(
    home: Path, rate: float, src: str | None, dst: str | None, kind: str | None, seed: int | None
) -> None:
    """Send a share of the frames between nodes twice."""
    results = faults.duplicate(open_network(home), rate, Frames(src, dst, kind), seed=seed)
    _report(results, f"duplicate {rate:g}{_filters(src, dst, kind)}")


@fault.command()
@home_option
@click.argument("bank")
@click.option("--ms", type=int, required=True, help="Ahead (negative: behind), in ms.")
def skew(home: Path, bank: str, ms: int) -> None:
    """Run BANK's clock ahead or behind: it dates its blocks by it."""
    faults.skew(open_network(home), bank, ms)
    click.echo(f"{bank}'s clock now runs {ms:+d} ms off")


@fault.command()
@home_option
@click.argument("bank")
@click.argument("mode", type=click.Choice(faults.BYZANTINE_MODES))
@seed_option
def byzantine(home: Path, bank: str, mode: str, seed: int | None) -> None:
    """Make BANK's validator byzantine (its outbound messages are rewritten), or `off`."""
    faults.byzantine(open_network(home), bank, mode, seed=seed)
    click.echo(f"{bank} is honest again" if mode == "off" else f"{bank} is now byzantine: {mode}")


@fault.command()
@home_option
def clear(home: Path) -> None:
    """End every network and byzantine fault on every node."""
    _report(faults.clear(open_network(home)), "cleared every fault")


@fault.command(name="list")
@home_option
@json_option
def list_(home: Path, as_json: bool) -> None:
    """What is in force on each node (and, with --json, its frames per peer)."""
    results = faults.list_faults(open_network(home))
    if as_json:
        echo_json([{"bank": r.bank, "state": r.state, "error": r.error} for r in results])
        return
    rows = []
    for r in results:
        if r.state is None:
            rows.append([r.bank, "[yellow]no answer[/]", ""])
            continue
        shown = [describe(f) for f in r.state["faults"]]
        rows.append([r.bank, "up", "; ".join(shown) or "none"])
    print_table(["bank", "state", "faults in force"], rows)


def describe(spec: dict[str, Any]) -> str:
    """One fault spec in the words of the command that sets it."""
    name = spec["fault"]
    filters = _filters(spec.get("from"), spec.get("to"), spec.get("kind"))
    if name == "delay":
        return f"delay {spec['ms']}+-{spec['jitter']} ms{filters}"
    if name in ("drop", "duplicate"):
        return f"{name} {spec['rate']:g}{filters}"
    if name == "partition":
        return "partition " + " | ".join(",".join(g) for g in spec["groups"])
    if name == "oneway":
        return f"one-way cut {spec['from']} -> {spec['to']}"
    if name == "skew":
        return f"clock {spec['ms']:+d} ms"
    return f"byzantine {spec['mode']}"


def _filters(src: str | None, dst: str | None, kind: str | None) -> str:
    parts = [f"from {src}" if src else "", f"to {dst}" if dst else "", kind or ""]
    shown = " ".join(p for p in parts if p)
    return f" ({shown})" if shown else ""
