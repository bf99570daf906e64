"""A throwaway local network of validator processes, driven from Python: tests and benches.

``LocalNet.create(home, template)`` writes a network home (node/layout.py) on free
127.0.0.1 ports; ``start_all`` runs one ``depnet node run`` process per bank (through
cli/devnet/start.py, the code `depnet up` uses) and remembers every process it ever
started, so ``close`` can stop each of them by pid, frozen ones included. Faults are
signals sent to one bank's process (SIGKILL, SIGSTOP/SIGCONT, SIGTERM), a restart, or
wiping its data folder. Every wait polls a condition until a deadline (cli/devnet/wait.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from cli.devnet.client import NodeClient
from cli.devnet.errors import ApiError, DevnetError, LocalNetError, NodeExited, WaitTimeout
from cli.devnet.health import log_tails, rss_kb
from cli.devnet.start import free_ports, start_node
from cli.devnet.stop import STOP_TIMEOUT, stop_pids
from cli.devnet.wait import until
from node.config import NodeHome, load_template
from node.layout import NetworkHome, create_network

T = TypeVar("T")

HTTP_TIMEOUT = 15.0  # the machine may be busy: a node under load answers slowly


class LocalNet:
    """Validator processes of one network home; ``close()`` (or ``with``) stops them all."""

    def __init__(self, net: NetworkHome) -> None:
        self.net = net
        self.entries = {e.bank: e for e in net.nodes()}
        self.banks = list(self.entries)
        self.genesis = net.genesis()
        self.processes: dict[str, subprocess.Popen] = {}  # the current process per bank
        self.started: list[subprocess.Popen] = []  # every process ever started: all stopped
        self._clients: dict[str, NodeClient] = {}

    @classmethod
    def create(
        cls, home: Path, template: dict | None = None, *, banks: int | None = None
    ) -> LocalNet:
        template = template if template is not None else load_template()
        count = banks or len(template["banks"])
        ports = free_ports(2 * count)
        net = create_network(
            Path(home),
            template,
            banks=banks,
            ports=[(ports[2 * i], ports[2 * i + 1]) for i in range(count)],
            genesis_time_ms=time.time_ns() // 1_000_000,
        )
        return cls(net)

    def __enter__(self) -> LocalNet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- processes -------------------------------------------------------------------

    def home(self, bank: str) -> NodeHome:
        return self.net.node_home(bank)

    def pid(self, bank: str) -> int:
        return self.processes[bank].pid

    def start(self, bank: str) -> subprocess.Popen:
        if self.alive(bank):
            raise LocalNetError(f"{bank} is already running (pid {self.pid(bank)})")
        process = start_node(self.home(bank))
        self.processes[bank] = process
        self.started.append(process)
        return process

    def start_all(self) -> None:
        for bank in self.banks:
            self.start(bank)

    def alive(self, bank: str) -> bool:
        process = self.processes.get(bank)
        return process is not None and process.poll() is None

    def signal(self, bank: str, sig: signal.Signals) -> None:
        process = self.processes[bank]
        if process.poll() is not None:
            raise LocalNetError(f"{bank} exited with {process.returncode}\n{self.logs(bank)}")
        os.kill(process.pid, sig)

    def kill(self, bank: str) -> int:
        """SIGKILL (kill -9) and reap; returns the exit code (-9)."""
        self.signal(bank, signal.SIGKILL)
        return self.processes[bank].wait(timeout=STOP_TIMEOUT)

    def pause(self, bank: str) -> None:
        self.signal(bank, signal.SIGSTOP)

    def resume(self, bank: str) -> None:
        self.signal(bank, signal.SIGCONT)

    def terminate(self, bank: str, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM and wait for a clean exit; raises if it does not exit in time."""
        self.signal(bank, signal.SIGTERM)
        try:
            return self.processes[bank].wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise LocalNetError(f"{bank} ignored SIGTERM for {timeout} s") from None

    def restart(self, bank: str) -> subprocess.Popen:
        if self.alive(bank):
            self.terminate(bank)
        return self.start(bank)

    def wipe_data(self, bank: str) -> None:
        """Delete a stopped node's block store (``data/``). Its key and signer state stay:
        a validator that forgot what it signed could sign a conflicting vote."""
        if self.alive(bank):
            raise LocalNetError(f"stop {bank} before wiping its data")
        shutil.rmtree(self.home(bank).data_dir)

    def rss_kb(self, bank: str) -> int | None:
        return rss_kb(self.pid(bank)) if self.alive(bank) else None

    def close(self, timeout: float = 5.0) -> None:
        """Stop every process this object started (cli/devnet/stop.py) and reap them all."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        live = [p for p in self.started if p.poll() is None]
        stop_pids({p: p.pid for p in live}, timeout)
        for process in live:
            process.wait()

    def logs(self, bank: str, lines: int = 15) -> str:
        """The tail of a node's console output and JSON log, for failure messages."""
        return log_tails(self.home(bank), bank, lines)

    # --- HTTP ------------------------------------------------------------------------

    def url(self, bank: str) -> str:
        return self.entries[bank].api_url

    def client(self, bank: str) -> NodeClient:
        if bank not in self._clients:
            self._clients[bank] = NodeClient(self.entries[bank], timeout=HTTP_TIMEOUT)
        return self._clients[bank]

    def get(self, bank: str, path: str) -> Any:
        return self.client(bank).get(path)

    def try_get(self, bank: str, path: str) -> Any | None:
        """``get``, or None if the node does not answer (down, starting, frozen)."""
        try:
            return self.get(bank, path)
        except DevnetError:
            return None

    def status(self, bank: str) -> dict:
        return self.client(bank).status()

    def heights(self, banks: Iterable[str] | None = None) -> dict[str, int]:
        return {b: self.status(b)["height"] for b in (banks or self.banks)}

    def submit(self, bank: str, raws: Sequence[bytes]) -> dict:
        return self.client(bank).submit(raws)

    def tx(self, bank: str, tx_id: bytes) -> dict | None:
        """A tx's status on one node, or None if the node does not know it (404)."""
        try:
            return self.client(bank).tx(tx_id.hex())
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def block(self, bank: str, height: int) -> dict:
        return self.client(bank).block(height)

    def hash_at(self, bank: str, height: int) -> str:
        return self.block(bank, height)["hash"]

    # --- waiting ---------------------------------------------------------------------

    def wait_for(
        self, condition: Callable[[], T], timeout: float, what: str, banks: Iterable[str] = ()
    ) -> T:
        """Poll ``condition`` until it returns something truthy; return that. Fails with the
        nodes' logs when ``timeout`` passes or a node process (any in ``banks``) exits."""
        watched = {b: self.processes[b] for b in banks if b in self.processes}
        try:
            return until(condition, timeout, processes=watched)
        except NodeExited as exc:
            raise LocalNetError(
                f"{exc.bank} exited with {exc.returncode} while waiting for {what}\n"
                + self.logs(exc.bank)
            ) from None
        except WaitTimeout:
            tails = "\n".join(self.logs(b) for b in self.banks)
            raise LocalNetError(
                f"timed out after {timeout} s waiting for {what}\n{tails}"
            ) from None

    def wait_healthy(self, banks: Sequence[str] | None = None, timeout: float = 60.0) -> None:
        """Until every node in ``banks`` answers /status, sees all the other given nodes as
        peers and has committed a block."""
        banks = list(banks or self.banks)
        peers_needed = {self.entries[b].validator for b in banks}

        def healthy() -> bool:
            for bank in banks:
                status = self.try_get(bank, "/status")
                if status is None or status["height"] < 1:
                    return False
                others = peers_needed - {self.entries[bank].validator}
                if not others <= set(status.get("peer_ids", ())):
                    return False
            return True

        self.wait_for(healthy, timeout, f"{', '.join(banks)} to be up and committing", banks)

    def wait_height(
        self, height: int, banks: Sequence[str] | None = None, timeout: float = 60.0
    ) -> dict[str, int]:
        """Until every node in ``banks`` has committed ``height``; returns their heights."""
        banks = list(banks or self.banks)

        def reached() -> dict[str, int] | None:
            heights = {}
            for bank in banks:
                status = self.try_get(bank, "/status")
                if status is None or status["height"] < height:
                    return None
                heights[bank] = status["height"]
            return heights

        return self.wait_for(
            reached, timeout, f"{', '.join(banks)} to reach height {height}", banks
        )

    def wait_progress(
        self, blocks: int, banks: Sequence[str] | None = None, timeout: float = 60.0
    ) -> dict[str, int]:
        """Until every node in ``banks`` has committed ``blocks`` more blocks than the highest
        of them has now (so they commit together, not only catch up)."""
        banks = list(banks or self.banks)
        return self.wait_height(max(self.heights(banks).values()) + blocks, banks, timeout)


class ChainScan:
    """Reads one node's committed blocks as they come: which height holds each tx id, and
    any tx id seen twice (which must never happen)."""

    def __init__(self, localnet: LocalNet, bank: str) -> None:
        self.localnet = localnet
        self.bank = bank
        self.height = 0
        self.tx_heights: dict[str, int] = {}  # tx id hex -> height
        self.txs: dict[str, dict] = {}  # tx id hex -> the tx's JSON
        self.duplicates: list[str] = []
        self.blocks: dict[int, dict] = {}  # height -> {hash, state_root, time_ms, cert}

    def update(self, upto: int | None = None) -> int:
        """Read every block up to ``upto`` (default: the node's head); returns the height."""
        head = upto if upto is not None else self.localnet.status(self.bank)["height"]
        for height in range(self.height + 1, head + 1):
            block = self.localnet.block(self.bank, height)
            self.blocks[height] = {
                "hash": block["hash"],
                "state_root": block["header"]["state_root"],
                "time_ms": block["header"]["time_ms"],
                "cert": block["cert"],
            }
            for tx in block["txs"]:
                if tx["tx_id"] in self.tx_heights:
                    self.duplicates.append(tx["tx_id"])
                self.tx_heights[tx["tx_id"]] = height
                self.txs[tx["tx_id"]] = tx
            self.height = height
        return self.height
