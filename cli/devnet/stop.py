"""Stopping node processes: SIGTERM for a clean exit, SIGKILL for those that ignore it.

One routine serves `depnet down` (processes found by their pid files) and the local-network
harness (processes it started itself).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from cli.devnet.health import alive, running_pid
from node.config import NodeHome

STOP_TIMEOUT = 10.0
POLL_INTERVAL = 0.05

K = TypeVar("K")


@dataclass(frozen=True)
class Stopped:
    bank: str
    pid: int
    killed: bool  # True if it ignored SIGTERM until the timeout and got SIGKILL


def stop_pids(pids: Mapping[K, int], timeout: float = STOP_TIMEOUT) -> dict[K, bool]:
    """SIGCONT and SIGTERM each process, SIGKILL those still alive after ``timeout``.

    SIGCONT first because a paused (SIGSTOPped) process cannot act on SIGTERM; to a
    running one it means nothing. Returns, per key, whether the process had to be killed.
    """
    for pid in pids.values():
        send_signal(pid, signal.SIGCONT)
        send_signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(pid) for pid in pids.values()):
        time.sleep(POLL_INTERVAL)
    killed = {}
    for key, pid in pids.items():
        killed[key] = alive(pid)
        if killed[key]:
            send_signal(pid, signal.SIGKILL)
    return killed


def stop_nodes(homes: dict[str, NodeHome], timeout: float = STOP_TIMEOUT) -> list[Stopped]:
    """Stop every node of ``homes`` that runs (by its pid file); remove the pid files."""
    running = {bank: pid for bank, home in homes.items() if (pid := running_pid(home))}
    killed = stop_pids(running, timeout)
    for home in homes.values():
        home.pid_file.unlink(missing_ok=True)
    return [Stopped(bank, pid, killed[bank]) for bank, pid in running.items()]


def send_signal(pid: int, sig: signal.Signals) -> None:
    """``os.kill`` that ignores a process which exited on its own meanwhile."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
