"""Creating a network home and starting its validator processes in the background.

A node started here runs ``python -m cli node run`` in its own session (so Ctrl-C in the
terminal that started it does not reach it) and writes its pid to ``<node home>/node.pid``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from cli.devnet.errors import DevnetError
from cli.devnet.health import console_log, running_pid
from node.config import NodeHome, load_template
from node.layout import NetworkHome, NodeEntry, create_network, default_ports


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


def start_network(net: NetworkHome) -> dict[str, subprocess.Popen]:
    """Start the nodes that are not running; return their processes by bank.

    Every port they need is checked first, so a busy port starts nothing."""
    to_start = [e for e in net.nodes() if running_pid(net.node_home(e.bank)) is None]
    for entry in to_start:
        for port in node_ports(entry):
            if port_in_use(port):
                raise DevnetError(
                    f"port {port} in use on 127.0.0.1 (needed by {entry.bank}); stop whatever "
                    "holds it, or re-create the network with `depnet init --force --base-port`"
                )
    return {e.bank: start_node(net.node_home(e.bank)) for e in to_start}


def init_network(
    home: Path, banks: int | None, banks_file: Path | None, base_port: int, *, force: bool
) -> NetworkHome:
    """Check that nothing is in the way (existing network, running nodes, busy ports), then
    write the network with node/layout.create_network."""
    net = NetworkHome(Path(home))
    if net.exists():
        if not force:
            raise DevnetError(f"a network already exists at {net.path} (use --force to replace it)")
        running = [e.bank for e in net.nodes() if running_pid(net.node_home(e.bank))]
        if running:
            raise DevnetError(f"nodes {', '.join(running)} are running; `depnet down` them first")
    template = load_template(banks_file, banks)
    count = len(template["banks"][:banks])
    for p2p, api in default_ports(count, base_port):
        for port in (p2p, api):
            if port_in_use(port):
                raise DevnetError(
                    f"port {port} in use on 127.0.0.1; pick other ports with --base-port"
                )
    return create_network(
        net.path,
        template,
        banks=banks,
        base_port=base_port,
        genesis_time_ms=time.time_ns() // 1_000_000,
        force=force,
    )


def node_ports(entry: NodeEntry) -> tuple[int, int]:
    """The node's (p2p, API) ports, read from its addresses."""
    return int(entry.p2p_address.rsplit("/", 1)[1]), int(entry.api_url.rsplit(":", 1)[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True if something listens on the port (bind as the node will, with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports that were free on 127.0.0.1 a moment ago (held together while
    choosing, so they differ; another program could still take one before a node binds)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()
