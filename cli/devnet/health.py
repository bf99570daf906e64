"""Whether a node process is ours and alive, what it uses, and what it last printed.

A pid file can outlive its process and the pid can be reused, so a pid only counts as
our node while that process's command line still names the node's home.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from pathlib import Path

from node.config import NodeHome


def console_log(home: NodeHome) -> Path:
    """The node process's stdout/stderr: what it prints before its own log is set up."""
    return home.path / "console.log"


def running_pid(home: NodeHome) -> int | None:
    """The pid of this node's live process, or None (no pid file, or a stale one)."""
    try:
        pid = int(home.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _is_node(pid, home) else None


def _is_node(pid: int, home: NodeHome) -> bool:
    if not alive(pid):
        return False
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc (macOS): trust the pid file
    return str(home.path.resolve()).encode() in args


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
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


def rss_kb(pid: int) -> int | None:
    """Resident set size of a live process in KiB (Linux /proc), else None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a live process (Linux /proc), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tail(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of a text file (empty if it does not exist)."""
    try:
        with path.open(errors="replace") as f:
            return [line.rstrip("\n") for line in deque(f, maxlen=lines)]
    except FileNotFoundError:
        return []


def last_words(home: NodeHome, lines: int) -> list[str]:
    """What a node that died at start printed last: its console output, else its log."""
    return tail(console_log(home), lines) or tail(home.log_file, lines)


def log_tails(home: NodeHome, bank: str, lines: int = 15) -> str:
    """The tail of a node's console output and JSON log under headers, for failure
    messages that must show what every node was doing."""
    out = []
    for path in (console_log(home), home.log_file):
        with contextlib.suppress(OSError):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {bank} {path.name} ---\n" + "\n".join(text))
    return "\n".join(out)
