"""`depnet init | up | down | status | logs`: a local network of bank validators.

`up` starts one background process per bank (cli/devnet/start.py) and waits until every node
answers and has committed a block; `status` asks every node and explains a stalled chain
in the words of the algorithm: which height and round, which banks' votes are missing,
and how many are needed.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click

from cli.commands.common import (
    CliError,
    F,
    SafeCommand,
    echo_json,
    home_option,
    json_option,
    open_network,
    print_table,
    short_hex,
)
from cli.devnet.client import NodeClient, try_status
from cli.devnet.errors import DevnetError, NodeExited
from cli.devnet.health import console_log, last_words, running_pid, tail
from cli.devnet.start import init_network, start_network
from cli.devnet.stop import STOP_TIMEOUT, stop_nodes
from cli.devnet.wait import STATUS_TIMEOUT, until_committed
from consensus.diagnose import EngineStatus
from consensus.diagnose import explain_stall as diagnose_stall
from node.layout import DEFAULT_BASE_PORT, NetworkHome

UP_TIMEOUT = 30.0
STALL_SECONDS = 3.0  # blocks normally commit every few hundred ms
LOG_TAIL_ON_FAILURE = 15


def init_options(f: F) -> F:
    """The options that shape a new network: shared by `init` and `up` (which may init)."""
    f = click.option(
        "--base-port",
        type=click.IntRange(1024, 65000),
        default=DEFAULT_BASE_PORT,
        show_default=True,
        help="First port; each node takes two (p2p, then API).",
    )(f)
    f = click.option(
        "--banks-file",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="A network template (JSON: banks, tokens, accounts) instead of the default.",
    )(f)
    return click.option(
        "--banks", type=click.IntRange(1), help="Use only the first N banks of the template."
    )(f)


# --- init ------------------------------------------------------------------------------


@click.command(cls=SafeCommand)
@home_option
@init_options
@click.option("--force", is_flag=True, help="Replace an existing network (its chain is lost).")
@json_option
def init(
    home: Path,
    banks: int | None,
    banks_file: Path | None,
    base_port: int,
    force: bool,
    as_json: bool,
) -> None:
    """Create keys, genesis, node homes and funded demo wallets for a local network."""
    net = init_network(home, banks, banks_file, base_port, force=force)
    nodes = net.nodes()
    if as_json:
        echo_json({"home": str(net.path), "nodes": [vars(n) for n in nodes]})
        return
    click.echo(f"initialised a network of {len(nodes)} banks at {net.path}")
    for entry in nodes:
        click.echo(f"  {entry.bank:<6} p2p {entry.p2p_address}  api {entry.api_url}")
    click.echo(f"wallets: {', '.join(w.name for w in net.wallets())}")
    click.echo("start it with `depnet up`")


# --- up --------------------------------------------------------------------------------


@click.command(cls=SafeCommand)
@home_option
@init_options
@click.option(
    "--timeout",
    type=float,
    default=UP_TIMEOUT,
    show_default=True,
    help="Seconds to wait for every node to commit a block.",
)
@json_option
def up(
    home: Path,
    banks: int | None,
    banks_file: Path | None,
    base_port: int,
    timeout: float,
    as_json: bool,
) -> None:
    """Start every validator in the background (initialising the network if needed).

    --banks, --banks-file and --base-port only matter when there is no network yet.
    Nodes already running are left alone, so `up` also restarts the ones that stopped.
    """
    net = NetworkHome(Path(home))
    if not net.exists():
        init_network(home, banks, banks_file, base_port, force=False)
        if not as_json:
            click.echo(f"initialised a network of {len(net.nodes())} banks at {net.path}")
    bring_up(net, timeout, as_json=as_json)


def bring_up(net: NetworkHome, timeout: float, *, as_json: bool) -> None:
    """Start what is not running, wait for a committed block everywhere, print the nodes."""
    started = time.monotonic()
    launched = start_network(net)
    statuses = wait_until_committed(net, launched, timeout)
    rows = [
        {
            "bank": e.bank,
            "peer_id": e.peer_id,
            "p2p_address": e.p2p_address,
            "api_url": e.api_url,
            "height": statuses[e.bank]["height"],
        }
        for e in net.nodes()
    ]
    if as_json:
        echo_json({"started": sorted(launched), "seconds": _secs(started), "nodes": rows})
        return
    if launched:
        click.echo(
            f"network up: {len(rows)} validators, first block committed in {_secs(started):.1f} s"
        )
    else:
        click.echo(f"network already up ({len(rows)} validators)")
    print_table(
        ["bank", "peer id", "p2p address", "API URL", "height"],
        [[r["bank"], r["peer_id"], r["p2p_address"], r["api_url"], r["height"]] for r in rows],
    )
    click.echo("stop it with `depnet down`; watch it with `depnet status`")


def wait_until_committed(
    net: NetworkHome, processes: dict[str, subprocess.Popen], timeout: float
) -> dict[str, dict]:
    """Wait for a committed block on every node, showing each node's progress on a
    terminal; a node that exits meanwhile is named with the tail of its output."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn

    screen = Console(stderr=True)  # stdout stays clean for --json
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        console=screen,
        transient=True,
        disable=not screen.is_terminal,
    )
    try:
        with progress:
            tasks = {
                e.bank: progress.add_task(f"{e.bank:<6} starting", total=None) for e in net.nodes()
            }

            def show(bank: str, status: dict) -> None:
                progress.update(
                    tasks[bank],
                    description=f"{bank:<6} height {status['height']}, {status['peers']} peers",
                )

            return until_committed(net, processes, timeout, show)
    except NodeExited as exc:
        raise _died(net, exc.bank, exc.returncode) from None


def _died(net: NetworkHome, bank: str, returncode: int) -> CliError:
    """Print the last lines of a node that exited during start; the error that names it."""
    home = net.node_home(bank)
    for line in last_words(home, LOG_TAIL_ON_FAILURE):
        click.echo(f"  {bank} | {line}", err=True)
    return CliError(
        f"node {bank} exited during start (status {returncode}); its output is above and in "
        f"{console_log(home)}; other nodes keep running (`depnet down` stops them)"
    )


# --- down ------------------------------------------------------------------------------


@click.command(cls=SafeCommand)
@home_option
@click.argument("banks", nargs=-1)
@click.option(
    "--timeout",
    type=float,
    default=STOP_TIMEOUT,
    show_default=True,
    help="Seconds to wait after SIGTERM before SIGKILL.",
)
def down(home: Path, banks: tuple[str, ...], timeout: float) -> None:
    """Stop the validators (all, or only the BANKS named): SIGTERM, then SIGKILL."""
    net = open_network(home)
    entries = [net.node(b) for b in banks] if banks else net.nodes()
    stopped = stop_nodes({e.bank: net.node_home(e.bank) for e in entries}, timeout)
    if not stopped:
        click.echo("no node was running")
        return
    for s in stopped:
        how = f" with SIGKILL after {timeout:.0f} s" if s.killed else ""
        click.echo(f"stopped {s.bank} (pid {s.pid}){how}")
    still = [e.bank for e in net.nodes() if running_pid(net.node_home(e.bank))]
    click.echo(f"still running: {', '.join(still)}" if still else "network is down")


# --- status ----------------------------------------------------------------------------


@click.command(cls=SafeCommand)
@home_option
@json_option
def status(home: Path, as_json: bool) -> None:
    """Every node's height, round and head; whether they agree; why the chain is stalled."""
    net = open_network(home)
    report = network_status(net)
    if as_json:
        echo_json(report)
        return
    rows = []
    for n in report["nodes"]:
        if not n["up"]:
            state = "[yellow]no answer[/]" if n["pid"] else "[red]down[/]"
            rows.append([n["bank"], state, *[""] * 8])
            continue
        state = "[green]up[/]"
        if n["syncing"]:
            state = f"[yellow]catching up: height {n['height']} of {n['network_height']}[/]"
        rows.append(
            [
                n["bank"],
                state,
                n["height"],
                n["round"],
                n["step"],
                short_hex(n["head_hash"]),
                f"{n['peers']}/{len(report['nodes']) - 1}",
                n["mempool"],
                n["evidence"],
                f"{n['seconds_since_commit']:.1f} s",
            ]
        )
    print_table(
        [
            "bank",
            "state",
            "height",
            "round",
            "step",
            "head",
            "peers",
            "mempool",
            "evidence",
            "since commit",
        ],
        rows,
    )
    click.echo(report["agreement"]["summary"])
    if report["stall"] is not None:
        click.echo(report["stall"]["summary"])


def network_status(net: NetworkHome) -> dict:
    """Ask every node at once (a frozen node costs one timeout, not one per node)."""
    entries = net.nodes()
    with ThreadPoolExecutor(len(entries)) as pool:
        answers = list(pool.map(lambda e: try_status(e, STATUS_TIMEOUT), entries))
    nodes = []
    for entry, answer in zip(entries, answers, strict=True):
        row: dict[str, Any] = {
            "bank": entry.bank,
            "api_url": entry.api_url,
            "pid": running_pid(net.node_home(entry.bank)),
            "up": answer is not None,
        }
        if answer is not None:
            row.update(
                height=answer["height"],
                round=answer["round"],
                step=answer["step"],
                head_hash=answer["head_hash"],
                peers=answer["peers"],
                mempool=answer["mempool_size"],
                evidence=answer["evidence"],
                seconds_since_commit=answer["seconds_since_commit"],
                consensus=answer.get("consensus", {}),
                syncing=answer.get("syncing", False),
                network_height=answer.get("network_height", answer["height"]),
            )
        nodes.append(row)
    live = [n for n in nodes if n["up"]]
    return {
        "nodes": nodes,
        "agreement": _agreement(net, live),
        "stall": explain_stall(net, nodes),
    }


def _agreement(net: NetworkHome, live: list[dict]) -> dict:
    """Do the live nodes hold the same chain? Compared at the lowest height they all have."""
    if not live:
        return {
            "agree": None,
            "height": None,
            "hash": None,
            "summary": "no node answers: the network is down (`depnet up` starts it)",
        }
    height = min(n["height"] for n in live)
    hashes = {n["bank"]: n["head_hash"] for n in live if n["height"] == height}
    behind_of = [n for n in live if n["height"] > height]
    for n in behind_of:  # nodes ahead: look up their block at the common height
        with NodeClient(net.node(n["bank"]), timeout=STATUS_TIMEOUT) as client:
            try:
                hashes[n["bank"]] = client.block(height)["hash"] if height else "0" * 64
            except DevnetError:
                continue
    distinct = set(hashes.values())
    agree = len(distinct) == 1
    if agree:
        summary = f"{len(hashes)} live nodes agree on block {height} ({short_hex(distinct.pop())})"
        if behind_of:
            ahead = ", ".join(f"{n['bank']} at {n['height']}" for n in behind_of)
            summary += f"; {ahead}"
    else:
        listed = ", ".join(f"{bank} {short_hex(h)}" for bank, h in sorted(hashes.items()))
        summary = f"NODES DISAGREE at height {height}: {listed}"
    return {
        "agree": agree,
        "height": height,
        "hash": next(iter(hashes.values())) if agree else None,
        "hashes": hashes,
        "summary": summary,
    }


def explain_stall(net: NetworkHome, nodes: list[dict]) -> dict | None:
    """Why no block has committed for STALL_SECONDS, from the live engines' vote tallies
    (``consensus.diagnose.explain_stall``), and which nodes do not answer."""
    live = [n for n in nodes if n["up"]]
    if not live or min(n["seconds_since_commit"] for n in live) < STALL_SECONDS:
        return None
    genesis = net.genesis()
    bank_of = {b.validator: b.name for b in genesis.banks}
    statuses = [EngineStatus.from_json(n["consensus"]) for n in live]
    stall = diagnose_stall(statuses, genesis.validators).to_json(lambda v: bank_of.get(v, "?"))
    summary = stall.pop("summary")
    down = [n["bank"] for n in nodes if not n["up"]]
    if down:
        summary += f"; not answering: {', '.join(down)} (`depnet up` restarts stopped nodes)"
    seconds = min(n["seconds_since_commit"] for n in live)
    return stall | {"seconds_since_commit": seconds, "summary": summary}


# --- logs ------------------------------------------------------------------------------


@click.command(cls=SafeCommand)
@home_option
@click.argument("bank")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines (Ctrl-C stops).")
@click.option("-n", "--lines", type=click.IntRange(0), default=20, show_default=True)
@click.option(
    "--console",
    "process_output",
    is_flag=True,
    help="Show the process's stdout/stderr (start-up failures) instead of its log.",
)
@json_option
def logs(
    home: Path, bank: str, follow: bool, lines: int, process_output: bool, as_json: bool
) -> None:
    """Show a node's log (JSON lines, printed readably unless --json)."""
    net = open_network(home)
    node_home = net.node_home(net.node(bank).bank)
    path = console_log(node_home) if process_output else node_home.log_file
    if not path.exists():
        raise CliError(f"no log yet at {path} (has {bank} been started? `depnet up`)")
    show = click.echo if (as_json or process_output) else _echo_log_line
    for line in tail(path, lines):
        show(line)
    if follow:
        _follow(path, show)


def _echo_log_line(line: str) -> None:
    """``{"time":..,"level":..,"msg":..,...}`` -> ``time level msg key=value ...``."""
    try:
        record = json.loads(line)
    except ValueError:
        click.echo(line)
        return
    if not isinstance(record, dict):
        click.echo(line)
        return
    fields = " ".join(
        f"{k}={short_hex(v, 16) if isinstance(v, str) else v}"
        for k, v in record.items()
        if k not in ("ts", "time", "level", "bank", "logger", "msg", "exc")
    )
    click.echo(
        f"{record.get('time', '')} {record.get('level', ''):<7} {record.get('msg', '')}  "
        f"{fields}".rstrip()
    )
    if "exc" in record:
        click.echo(record["exc"])


def _follow(path: Path, show: Callable[[str], None]) -> None:
    with path.open(errors="replace") as f:
        f.seek(0, 2)
        try:
            while True:
                line = f.readline()
                if line:
                    show(line.rstrip("\n"))
                else:
                    time.sleep(0.2)
        except KeyboardInterrupt:
            return


def _secs(started: float) -> float:
    return round(time.monotonic() - started, 2)
