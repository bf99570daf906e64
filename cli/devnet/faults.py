"""Faults on a running local network: what `depnet fault` and the scenario runner call.

Process faults act on a node's process through its pid file (the one `depnet up` and
``LocalNet`` write): SIGKILL, SIGSTOP/SIGCONT, a restart, or a wipe of its block store.
Network and byzantine faults are set inside each node, on its fault layer
(node/faults.py), through the node's admin API (``/admin/faults``), which asks for the
token in the node's home (``admin.token``, created when the node first starts).

A network fault is posted to every node (each applies its own side of it: a partition
cuts each side off from the other, a drop rule ``--to B`` drops every node's frames to
B); a node that is down is reported, not waited for. Every function raises DevnetError
(one readable line) when nothing could be done.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cli.devnet.client import NodeClient
from cli.devnet.errors import ApiError, DevnetError, NodeUnreachable
from cli.devnet.health import alive, running_pid
from cli.devnet.start import start_node
from cli.devnet.stop import send_signal, stop_pids
from cli.devnet.wait import until
from node.layout import NetworkHome

ADMIN_PATH = "/admin/faults"
LINK_KINDS = ("consensus", "txs", "sync")
BYZANTINE_MODES = ("equivocate", "double-vote", "silent", "invalid-block", "off")
START_TIMEOUT = 30.0
KILL_TIMEOUT = 5.0


@dataclass(frozen=True)
class NodeFaults:
    """One node's answer: the faults in force on it (``GET /admin/faults`` JSON), or why
    it could not be asked."""

    bank: str
    state: dict[str, Any] | None
    error: str | None = None


# --- network and byzantine faults (the node's admin API) ------------------------------------


def admin_client(net: NetworkHome, bank: str, timeout: float = 5.0) -> NodeClient:
    """A client of ``bank``'s node that carries its admin token."""
    entry = net.node(bank)
    path = net.node_home(entry.bank).admin_token_file
    try:
        token = path.read_text().strip()
    except OSError:
        raise DevnetError(
            f"no admin token for {entry.bank} at {path}; it is created when the node first "
            "starts (`depnet up`)"
        ) from None
    client = NodeClient(entry, timeout=timeout)
    client.headers["Authorization"] = f"Bearer {token}"
    return client


def set_fault(
    net: NetworkHome, spec: dict[str, Any], banks: Iterable[str] | None = None
) -> list[NodeFaults]:
    """Post one fault spec (node/faults.py ``parse_fault``) to ``banks`` (default: every
    node). Raises DevnetError if the spec is refused or no node took it."""
    return _each(net, banks, lambda client: client.post(ADMIN_PATH, spec))


def clear(net: NetworkHome, banks: Iterable[str] | None = None) -> list[NodeFaults]:
    """End every network and byzantine fault on ``banks`` (default: every node)."""
    return _each(net, banks, lambda client: client.delete(ADMIN_PATH))


def list_faults(net: NetworkHome) -> list[NodeFaults]:
    """What is in force on each node, with its frame counters per peer; never raises for
    a node that is down (its entry carries the error)."""
    results = []
    for entry in net.nodes():
        try:
            with admin_client(net, entry.bank) as client:
                results.append(NodeFaults(entry.bank, client.get(ADMIN_PATH)))
        except DevnetError as exc:
            results.append(NodeFaults(entry.bank, None, str(exc)))
    return results


def partition(
    net: NetworkHome, groups: Sequence[Sequence[str]], *, seed: int | None = None
) -> list[NodeFaults]:
    """Cut the groups of banks off from each other (banks in no group reach everyone)."""
    if len(groups) < 2:
        raise DevnetError("a partition needs two or more groups of banks")
    spec = {"fault": "partition", "groups": [[net.node(b).bank for b in g] for g in groups]}
    return set_fault(net, _seeded(spec, seed))


def partition_oneway(net: NetworkHome, src: str, dst: str) -> list[NodeFaults]:
    """``src``'s frames to ``dst`` are lost; ``dst``'s frames to ``src`` arrive."""
    spec = {"fault": "oneway", "from": net.node(src).bank, "to": net.node(dst).bank}
    return set_fault(net, spec)


def heal(net: NetworkHome) -> list[NodeFaults]:
    """End every partition and one-way cut (link rules, skew and byzantine stay)."""
    return set_fault(net, {"fault": "heal"})


@dataclass(frozen=True)
class Frames:
    """Which frames a link fault applies to: from one bank, to one bank, of one kind
    (LINK_KINDS); None matches any."""

    src: str | None = None
    dst: str | None = None
    kind: str | None = None


ALL_FRAMES = Frames()


def drop(
    net: NetworkHome, rate: float, frames: Frames = ALL_FRAMES, *, seed: int | None = None
) -> list[NodeFaults]:
    """Lose ``rate`` (0..1) of the frames."""
    return set_fault(net, _link(net, "drop", frames, seed, rate=rate))


def delay(
    net: NetworkHome,
    ms: int,
    jitter: int = 0,
    frames: Frames = ALL_FRAMES,
    *,
    seed: int | None = None,
) -> list[NodeFaults]:
    """Hold the frames back ``ms`` +- ``jitter`` milliseconds."""
    return set_fault(net, _link(net, "delay", frames, seed, ms=ms, jitter=jitter))


def duplicate(
    net: NetworkHome, rate: float, frames: Frames = ALL_FRAMES, *, seed: int | None = None
) -> list[NodeFaults]:
    """Send ``rate`` (0..1) of the frames twice."""
    return set_fault(net, _link(net, "duplicate", frames, seed, rate=rate))


def skew(net: NetworkHome, bank: str, ms: int) -> NodeFaults:
    """Run ``bank``'s wall clock ``ms`` ahead (negative: behind)."""
    (result,) = set_fault(net, {"fault": "skew", "ms": ms}, [bank])
    return result


def byzantine(net: NetworkHome, bank: str, mode: str, *, seed: int | None = None) -> NodeFaults:
    """Switch ``bank``'s validator to a byzantine ``mode`` (BYZANTINE_MODES; off ends it)."""
    (result,) = set_fault(net, _seeded({"fault": "byzantine", "mode": mode}, seed), [bank])
    return result


def _link(
    net: NetworkHome, fault: str, frames: Frames, seed: int | None, **values: Any
) -> dict[str, Any]:
    spec: dict[str, Any] = {"fault": fault, **values}
    for field, bank in (("from", frames.src), ("to", frames.dst)):
        if bank is not None:
            spec[field] = net.node(bank).bank
    if frames.kind is not None:
        spec["kind"] = frames.kind
    return _seeded(spec, seed)


def _seeded(spec: dict[str, Any], seed: int | None) -> dict[str, Any]:
    return spec if seed is None else {**spec, "seed": seed}


def _each(net: NetworkHome, banks: Iterable[str] | None, call: Any) -> list[NodeFaults]:
    """``call(admin client)`` on each node; a refused spec stops at once (every node would
    refuse it), a node that is down is noted and skipped."""
    entries = net.nodes() if banks is None else [net.node(b) for b in banks]
    results = []
    for entry in entries:
        try:
            with admin_client(net, entry.bank) as client:
                results.append(NodeFaults(entry.bank, call(client)))
        except ApiError as exc:
            raise DevnetError(f"{entry.bank} refused the fault: {exc}") from None
        except DevnetError as exc:
            results.append(NodeFaults(entry.bank, None, str(exc)))
    if all(r.state is None for r in results):
        reasons = "; ".join(r.error or "" for r in results)
        raise DevnetError(f"no node took the fault: {reasons}")
    return results


# --- process faults ---------------------------------------------------------------------


def _pid(net: NetworkHome, bank: str) -> int:
    home = net.node_home(net.node(bank).bank)
    pid = running_pid(home)
    if pid is None:
        raise DevnetError(f"{net.node(bank).bank} is not running (`depnet up` starts it)")
    return pid


def kill(net: NetworkHome, bank: str) -> int:
    """SIGKILL ``bank``'s node (no clean shutdown); returns the pid it had."""
    pid = _pid(net, bank)
    send_signal(pid, signal.SIGKILL)
    until(lambda: not alive(pid), KILL_TIMEOUT)
    return pid


def pause(net: NetworkHome, bank: str) -> int:
    """SIGSTOP: the process freezes with its connections open (peers see silence)."""
    pid = _pid(net, bank)
    send_signal(pid, signal.SIGSTOP)
    return pid


def resume(net: NetworkHome, bank: str) -> int:
    """SIGCONT a paused node."""
    pid = _pid(net, bank)
    send_signal(pid, signal.SIGCONT)
    return pid


def stop(net: NetworkHome, bank: str) -> int | None:
    """SIGTERM (SIGKILL if ignored) ``bank``'s node if it runs; returns its old pid."""
    home = net.node_home(net.node(bank).bank)
    pid = running_pid(home)
    if pid is not None:
        stop_pids({bank: pid})
    return pid


def start(net: NetworkHome, bank: str, timeout: float = START_TIMEOUT) -> subprocess.Popen:
    """Start ``bank``'s node and wait until its API answers. The caller owns the process
    (a test harness stops it by its pid)."""
    entry = net.node(bank)
    process = start_node(net.node_home(entry.bank))

    def answers() -> bool:
        with NodeClient(entry, timeout=1.0) as client:
            try:
                client.head()
            except NodeUnreachable:
                return False
            return True

    try:
        until(answers, timeout, processes={entry.bank: process})
    except DevnetError as exc:
        raise DevnetError(f"{entry.bank} did not come back: {exc}") from None
    return process


def restart(net: NetworkHome, bank: str, timeout: float = START_TIMEOUT) -> subprocess.Popen:
    """Stop ``bank``'s node (if it runs) and start it again."""
    stop(net, bank)
    return start(net, bank, timeout)


def wipe(net: NetworkHome, bank: str, timeout: float = START_TIMEOUT) -> subprocess.Popen:
    """Stop ``bank``'s node, delete its block store, and start it: it resyncs from its
    peers. Its key and signer state stay: a validator that forgot what it signed could
    sign a conflicting vote."""
    stop(net, bank)
    shutil.rmtree(net.node_home(net.node(bank).bank).data_dir, ignore_errors=True)
    return start(net, bank, timeout)


def wait_caught_up(net: NetworkHome, bank: str, timeout: float = 60.0) -> dict:
    """Until ``bank``'s node has caught up with its peers; returns its status."""
    entry = net.node(bank)
    with NodeClient(entry, timeout=2.0) as client:

        def caught_up() -> dict | None:
            try:
                status = client.status()
            except NodeUnreachable:
                return None
            return status if status["height"] >= 1 and not status["syncing"] else None

        started = time.monotonic()
        try:
            return until(caught_up, timeout)
        except DevnetError:
            raise DevnetError(
                f"{entry.bank} did not catch up within {time.monotonic() - started:.0f} s"
            ) from None
