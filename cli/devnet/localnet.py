"""A throwaway local network of validator processes, driven from Python: tests and benches.

``LocalNet.create(home, template)`` writes a network home (node/layout.py) on free
127.0.0.1 ports; ``start_all`` runs one ``depnet node run`` process per bank (through
cli/processes.py, the code `depnet up` uses) and remembers every process it ever started,
so ``close`` can kill each of them by pid, frozen ones included. Faults are signals sent to
one bank's process (SIGKILL, SIGSTOP/SIGCONT, SIGTERM), a restart, or wiping its data
folder. Every wait polls a condition until a deadline; nothing sleeps for a guessed time.

Also here: funded-account templates and pre-signed transfer load, which the multi-process
tests (tests/test_node_network.py) and `depnet bench network` share.
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from chain.tx import Tx, TxKind, sign_tx
from cli.processes import console_log, start_node
from node.config import NodeHome, load_template
from node.layout import NetworkHome, Wallet, create_network

T = TypeVar("T")

HTTP_TIMEOUT = 15.0  # the machine may be busy: a node under load answers slowly
POLL_INTERVAL = 0.05
STOP_TIMEOUT = 10.0


class LocalNetError(AssertionError):
    """A wait ran out or a node process died; the message carries the nodes' log tails."""


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


def funded_template(
    accounts_per_bank: int, balance: int = 10**12, base: dict | None = None
) -> dict:
    """The default 4-bank template (or ``base``) with ``accounts_per_bank`` extra accounts per
    bank, each holding ``balance`` of its bank's first token at genesis."""
    template = copy.deepcopy(base if base is not None else load_template())
    accounts = list(template.get("accounts", []))
    for bank in template["banks"]:
        symbol = bank["tokens"][0]["symbol"]
        for i in range(accounts_per_bank):
            accounts.append(
                {
                    "name": f"load-{bank['name'].lower()}-{i}",
                    "bank": bank["name"],
                    "balances": {symbol: balance},
                }
            )
    template["accounts"] = accounts
    return template


@dataclass(frozen=True)
class Payer:
    """A funded account that sends load: its key, and its bank's token."""

    wallet: Wallet
    token: str

    @property
    def account(self) -> bytes:
        return bytes.fromhex(self.wallet.account)


def load_payers(net: NetworkHome) -> list[Payer]:
    """The ``load-*`` accounts of a ``funded_template`` network, in a stable order."""
    genesis = net.genesis()
    token_of = {b.name: b.tokens[0].symbol for b in genesis.banks}
    return [Payer(w, token_of[w.bank]) for w in net.wallets() if w.name.startswith("load-")]


def sign_transfers(
    chain_id: str,
    payers: Sequence[Payer],
    per_payer: int,
    *,
    seed: int = 1,
    first_nonce: dict[bytes, int] | None = None,
    max_amount: int = 1_000,
) -> list[list[Tx]]:
    """``per_payer`` transfers from each payer (nonces in order) to random other payers, in
    the payer's own token. Returns one list per payer."""
    if len(payers) < 2:
        raise ValueError("transfers need at least two payers (one pays the other)")
    rng = random.Random(seed)
    accounts = [p.account for p in payers]
    out = []
    for index, payer in enumerate(payers):
        key = payer.wallet.signing_key
        start = (first_nonce or {}).get(payer.account, 0)
        txs = []
        for n in range(per_payer):
            to = accounts[(index + rng.randrange(1, len(accounts))) % len(accounts)]
            txs.append(
                sign_tx(
                    key,
                    TxKind.TRANSFER,
                    chain_id,
                    start + n,
                    to=to,
                    token=payer.token,
                    amount=rng.randrange(1, max_amount + 1),
                    memo=f"INV-{index}-{start + n}",
                )
            )
        out.append(txs)
    return out


def interleave(per_payer: Iterable[Sequence[T]]) -> list[T]:
    """Round-robin over the lists (each list's own order is kept)."""
    lists = [list(x) for x in per_payer]
    out: list[T] = []
    for i in range(max((len(x) for x in lists), default=0)):
        out.extend(x[i] for x in lists if i < len(x))
    return out


def expected_balances(
    genesis_balances: dict[tuple[bytes, str], int], txs: Iterable[Tx]
) -> dict[tuple[bytes, str], int]:
    """Balances after applying every transfer once (a tiny model of the ledger)."""
    balances = dict(genesis_balances)
    for tx in txs:
        balances[(tx.sender, tx.token)] = balances.get((tx.sender, tx.token), 0) - tx.amount
        balances[(tx.to, tx.token)] = balances.get((tx.to, tx.token), 0) + tx.amount
    return balances


def rss_kb(pid: int) -> int | None:
    """Resident set size of a live process in KiB (Linux /proc), else None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class LocalNet:
    """Validator processes of one network home; ``close()`` (or ``with``) kills them all."""

    def __init__(self, net: NetworkHome) -> None:
        self.net = net
        self.entries = {e.bank: e for e in net.nodes()}
        self.banks = list(self.entries)
        self.genesis = net.genesis()
        self.processes: dict[str, subprocess.Popen] = {}  # the current process per bank
        self.started: list[subprocess.Popen] = []  # every process ever started: all killed
        self._clients: dict[str, httpx.Client] = {}

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
        """Stop every process this object started: SIGCONT (a frozen one cannot exit) and
        SIGTERM, then SIGKILL whatever is still running after ``timeout``; reap them all."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        live = [p for p in self.started if p.poll() is None]
        for process in live:
            for sig in (signal.SIGCONT, signal.SIGTERM):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, sig)
        deadline = time.monotonic() + timeout
        for process in live:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                process.wait()

    def logs(self, bank: str, lines: int = 15) -> str:
        """The tail of a node's console output and JSON log, for failure messages."""
        out = []
        for path in (console_log(self.home(bank)), self.home(bank).log_file):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {bank} {path.name} ---\n" + "\n".join(text))
        return "\n".join(out)

    # --- HTTP ------------------------------------------------------------------------

    def url(self, bank: str) -> str:
        return self.entries[bank].api_url

    def client(self, bank: str) -> httpx.Client:
        if bank not in self._clients:
            self._clients[bank] = httpx.Client(base_url=self.url(bank), timeout=HTTP_TIMEOUT)
        return self._clients[bank]

    def get(self, bank: str, path: str) -> Any:
        response = self.client(bank).get(path)
        response.raise_for_status()
        return response.json()

    def try_get(self, bank: str, path: str) -> Any | None:
        """``get``, or None if the node does not answer (down, starting, frozen)."""
        try:
            return self.get(bank, path)
        except httpx.HTTPError:
            return None

    def status(self, bank: str) -> dict:
        return self.get(bank, "/status")

    def heights(self, banks: Iterable[str] | None = None) -> dict[str, int]:
        return {b: self.status(b)["height"] for b in (banks or self.banks)}

    def submit(self, bank: str, raws: Sequence[bytes]) -> dict:
        response = self.client(bank).post("/txs", json={"txs": [raw.hex() for raw in raws]})
        response.raise_for_status()
        return response.json()

    def tx(self, bank: str, tx_id: bytes) -> dict | None:
        """A tx's status on one node, or None if the node does not know it (404)."""
        response = self.client(bank).get(f"/txs/{tx_id.hex()}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()

    # --- waiting ---------------------------------------------------------------------

    def wait_for(
        self, condition: Callable[[], T], timeout: float, what: str, banks: Iterable[str] = ()
    ) -> T:
        """Poll ``condition`` until it returns something truthy; return that. Fails with the
        nodes' logs when ``timeout`` passes or a node process (any in ``banks``) exits."""
        deadline = time.monotonic() + timeout
        watched = list(banks)
        while True:
            for bank in watched:
                process = self.processes.get(bank)
                if process is not None and process.poll() is not None:
                    raise LocalNetError(
                        f"{bank} exited with {process.returncode} while waiting for {what}\n"
                        + self.logs(bank)
                    )
            result = condition()
            if result:
                return result
            if time.monotonic() > deadline:
                tails = "\n".join(self.logs(b) for b in self.banks)
                raise LocalNetError(f"timed out after {timeout} s waiting for {what}\n{tails}")
            time.sleep(POLL_INTERVAL)

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

    def block(self, bank: str, height: int) -> dict:
        return self.get(bank, f"/blocks/{height}")

    def hash_at(self, bank: str, height: int) -> str:
        return self.block(bank, height)["hash"]


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
