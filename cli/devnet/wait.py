"""Waiting on a network: poll a condition until a deadline, never sleep a guessed time.

A watched node process that exits ends the wait at once (``NodeExited``), so a node
that died at start fails in a second, not after the whole timeout.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

from cli.devnet.client import NodeClient
from cli.devnet.errors import DevnetError, NodeExited, NodeUnreachable, WaitTimeout
from node.layout import NetworkHome

T = TypeVar("T")

POLL_INTERVAL = 0.05
STATUS_TIMEOUT = 1.0


def until(
    condition: Callable[[], T],
    timeout: float,
    *,
    processes: Mapping[str, subprocess.Popen] | None = None,
    interval: float = POLL_INTERVAL,
) -> T:
    """Call ``condition`` every ``interval`` until it returns something truthy; return that.

    Raises NodeExited if a process of ``processes`` (by bank) exits, WaitTimeout once
    ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        for bank, process in (processes or {}).items():
            if process.poll() is not None:
                raise NodeExited(bank, process.returncode)
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout} s")
        time.sleep(interval)


def until_committed(
    net: NetworkHome,
    processes: Mapping[str, subprocess.Popen],
    timeout: float,
    on_status: Callable[[str, dict], None] | None = None,
) -> dict[str, dict]:
    """Poll every node's /status until all answer at height >= 1; return the statuses.

    ``on_status(bank, status)`` sees each answer as it comes (for a progress display)."""
    entries = net.nodes()
    statuses: dict[str, dict] = {}
    with contextlib.ExitStack() as closing:
        clients = {
            e.bank: closing.enter_context(NodeClient(e, timeout=STATUS_TIMEOUT)) for e in entries
        }

        def all_committed() -> bool:
            for bank, client in clients.items():
                try:
                    statuses[bank] = status = client.status()
                except NodeUnreachable:
                    continue
                if on_status is not None:
                    on_status(bank, status)
            return len(statuses) == len(entries) and all(
                s["height"] >= 1 for s in statuses.values()
            )

        try:
            until(all_committed, timeout, processes=processes, interval=0.1)
        except WaitTimeout:
            waiting = [b for b in clients if statuses.get(b, {}).get("height", 0) < 1]
            raise DevnetError(
                f"no committed block after {timeout:.0f} s on {', '.join(waiting)}; "
                "see `depnet status` and `depnet logs BANK`"
            ) from None
    return statuses
