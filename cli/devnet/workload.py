"""Paced transfer load for fault experiments, with an ack log of what was committed.

A client under faults is told two different things: "accepted" (the tx is in one node's
mempool, which a crash can lose) and "committed" (it is in a block). Only the second is a
promise, so the ack log holds only txs this client saw in a committed block: one line
``<tx id hex> <bank> <height>`` each, naming the node that served the block. `depnet
check --acks` then proves every one of them is in the chain exactly once.

Two threads: the sender offers ``rate`` new transfers per second (nonces in order per
account, each account to its own bank's node, another node when that one does not
answer) and sends again every tx not yet seen committed after ``RESEND_AFTER`` seconds
(a duplicate is harmless: the node answers ``duplicate``, the ledger's nonces stop a
second commit); the follower reads each new block from a live node and writes the acks.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

from chain.tx import Tx
from cli.devnet.client import NodeClient
from cli.devnet.errors import DevnetError
from cli.devnet.load import interleave, load_payers, sign_transfers
from node.layout import NetworkHome

TICK = 0.2  # seconds between the sender's batches
RESEND_AFTER = 2.0  # seconds a sent tx may stay unseen before it is sent again
AVOID_FOR = 2.0  # seconds a node that did not answer is passed over
MAX_RESEND = 400  # txs sent again per tick at most
CLIENT_TIMEOUT = 1.0  # a paused node never answers: give up on it quickly


@dataclass(frozen=True)
class Committed:
    """A block the follower read: when (seconds after the load started), and its txs."""

    at: float
    height: int
    txs: int


@dataclass
class _Pending:
    index: int  # position in the offered order (nonce order per account)
    raw: bytes
    bank: str
    last_sent: float


class Workload:
    """Offered load and the ack log for one network; ``start``, ``stop_sending``,
    ``drain``, ``close``."""

    def __init__(
        self, net: NetworkHome, rate: int, duration: float, ack_log: Path, seed: int
    ) -> None:
        self.rate = rate
        self.banks = [e.bank for e in net.nodes()]
        self._clients = {e.bank: NodeClient(e, timeout=CLIENT_TIMEOUT) for e in net.nodes()}
        self._follow_clients = {e.bank: NodeClient(e, timeout=CLIENT_TIMEOUT) for e in net.nodes()}
        payers = load_payers(net)
        per_payer = math.ceil(rate * duration / len(payers)) + 1
        signed = sign_transfers(net.genesis().chain_id, payers, per_payer, seed=seed)
        bank_of = {p.account: p.wallet.bank for p in payers}
        self._offer: list[tuple[Tx, str]] = [(tx, bank_of[tx.sender]) for tx in interleave(signed)]
        self.ack_log = Path(ack_log)
        self._lock = threading.Lock()
        self._pending: dict[bytes, _Pending] = {}
        self._avoid: dict[str, float] = {}
        self._stop = threading.Event()
        self._sending = threading.Event()
        self._threads: list[threading.Thread] = []
        self._t0 = 0.0
        self.offered = 0
        self.sends = 0
        self.codes: Counter[str] = Counter()
        self.acked = 0
        self.committed: list[Committed] = []
        self.follow_height = 0

    # --- control ---------------------------------------------------------------------------

    def start(self, t0: float) -> None:
        self._t0 = t0
        self._sending.set()
        self._threads = [
            threading.Thread(target=self._send_loop, name="load-sender", daemon=True),
            threading.Thread(target=self._follow_loop, name="load-follower", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop_sending(self) -> None:
        """No new txs from now on; those sent and unseen are still sent again."""
        self._sending.clear()

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        for client in (*self._clients.values(), *self._follow_clients.values()):
            client.close()

    def stats(self) -> dict[str, object]:
        return {
            "offered": self.offered,
            "sends": self.sends,
            "acked": self.acked,
            "unacked_at_end": self.pending(),
            "refusals": dict(self.codes),
        }

    # --- the sender ------------------------------------------------------------------------

    def _send_loop(self) -> None:
        while not self._stop.wait(TICK):
            now = time.monotonic()
            batch: list[tuple[int, bytes, str]] = []
            if self._sending.is_set():
                due = min(len(self._offer), int(self.rate * (now - self._t0)))
                for index in range(self.offered, due):
                    tx, bank = self._offer[index]
                    batch.append((index, tx.raw, bank))
                    with self._lock:
                        self._pending[tx.tx_id] = _Pending(index, tx.raw, bank, now)
                self.offered = max(self.offered, due)
            with self._lock:
                stale = sorted(
                    (p.index, p.raw, p.bank)
                    for p in self._pending.values()
                    if now - p.last_sent >= RESEND_AFTER
                )[:MAX_RESEND]
            batch += stale
            batch.sort()
            by_bank: dict[str, list[bytes]] = {}
            for _, raw, bank in batch:
                by_bank.setdefault(bank, []).append(raw)
            for bank, raws in by_bank.items():
                self._submit(bank, raws)

    def _submit(self, bank: str, raws: Sequence[bytes]) -> None:
        """Send to ``bank``'s node, or the next node that answers; a tx refused or lost
        stays pending and goes again later."""
        now = time.monotonic()
        start = self.banks.index(bank)
        for target in self.banks[start:] + self.banks[:start]:
            if self._avoid.get(target, 0.0) > now:
                continue
            try:
                results = self._clients[target].submit(list(raws))["results"]
            except DevnetError:
                self._avoid[target] = time.monotonic() + AVOID_FOR
                continue
            sent = time.monotonic()
            with self._lock:
                self.sends += len(raws)
                for result in results:
                    if not result["accepted"]:
                        self.codes[result["code"]] += 1
                for raw in raws:
                    pending = self._pending.get(sha256(raw).digest())
                    if pending is not None:
                        pending.last_sent = sent
            return

    # --- the follower -----------------------------------------------------------------------

    def _follow_loop(self) -> None:
        source = 0
        while not self._stop.wait(0.1):
            bank = self.banks[source % len(self.banks)]
            try:
                self._read_new_blocks(bank)
            except DevnetError:
                source += 1

    def _read_new_blocks(self, bank: str) -> None:
        client = self._follow_clients[bank]
        head = client.status()["height"]
        for height in range(self.follow_height + 1, head + 1):
            block = client.block(height)
            seen = time.monotonic() - self._t0
            ids = [tx["tx_id"] for tx in block["txs"]]
            with self._lock:
                mine = [t for t in ids if self._pending.pop(bytes.fromhex(t), None) is not None]
                self.acked += len(mine)
                self.committed.append(Committed(seen, height, len(ids)))
                self.follow_height = height
            with self.ack_log.open("a") as log:
                log.writelines(f"{tx_id} {bank} {height}\n" for tx_id in mine)
