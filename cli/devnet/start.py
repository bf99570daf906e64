"""Validator processes on this machine: start in the background, find by pid file, stop.

A node started by `depnet up` runs in its own session (so Ctrl-C in the terminal that
started it does not reach it) and writes its pid to ``<node home>/node.pid``. A pid file
can outlive its process and the pid can be reused, so a pid only counts as our node while
that process's command line still names the node's home.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from node.config import NodeHome

STOP_TIMEOUT = 10.0


def console_log(home: NodeHome) -> Path:
    """The node process's stdout/stderr: what it prints before its own log is set up."""
    return home.path / "console.log"


def node_command(home: NodeHome) -> list[str]:
    return [sys.executable, "-m", "cli", "node", "run", "--home", str(home.path.resolve())]


def start_node(home: NodeHome) -> subprocess.Popen:
    """Start one validator in the background and record its pid."""
    with console_log(home).open("ab") as out:
        process = subprocess.Popen(
            node_command(home),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    home.pid_file.write_text(f"{process.pid}\n")
    return process


def running_pid(home: NodeHome) -> int | None:
    """The pid of this node's live process, or None (no pid file, or a stale one)."""
    try:
        pid = int(home.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _is_node(pid, home) else None


def _is_node(pid: int, home: NodeHome) -> bool:
    if not _alive(pid):
        return False
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc (macOS): trust the pid file
    return str(home.path.resolve()).encode() in args


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie still answers kill(0); its parent just has not reaped it yet
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass(frozen=True)
class Stopped:
    bank: str
    pid: int
    killed: bool  # True if it ignored SIGTERM until the timeout and got SIGKILL


def stop_nodes(homes: dict[str, NodeHome], timeout: float = STOP_TIMEOUT) -> list[Stopped]:
    """SIGTERM every running node, SIGKILL those still alive after ``timeout``."""
    running = {bank: pid for bank, home in homes.items() if (pid := running_pid(home))}
    for pid in running.values():
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(pid) for pid in running.values()):
        time.sleep(0.05)
    stopped = []
    for bank, pid in running.items():
        killed = _alive(pid)
        if killed:
            _signal(pid, signal.SIGKILL)
        stopped.append(Stopped(bank, pid, killed))
    for home in homes.values():
        home.pid_file.unlink(missing_ok=True)
    return stopped


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # it exited on its own meanwhile
        os.kill(pid, sig)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True if something listens on the port (bind as the node will, with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def tail(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of a text file (empty if it does not exist)."""
    try:
        with path.open(errors="replace") as f:
            return [line.rstrip("\n") for line in deque(f, maxlen=lines)]
    except FileNotFoundError:
        return []
