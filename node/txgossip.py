"""Transaction gossip: accepted txs go to every validator in batches, and come in from them.

Direct streams deliver what they accept, but a peer that restarts or is cut off loses what
was in flight, so txs still pending after a re-gossip interval are sent again. A tx is sent
again only if it was already pending at the previous re-gossip tick, so under load fresh
txs are not sent twice. Time is trio's clock, so this runs on a test's virtual clock too.
"""

from __future__ import annotations

from hashlib import sha256

import trio

from chain.errors import TxRejected
from chain.tx import decode_tx
from node.mempool import ADMIT_SLICE, Mempool, MempoolError
from node.p2p import Kind, Network
from node.wire import decode_tx_batch, encode_tx_batch

GOSSIP_INTERVAL = 0.005  # accepted txs are gossiped in a batch every few ms
REGOSSIP_INTERVAL = 3.0  # txs pending this long are sent to peers again
REGOSSIP_MAX_TXS = 5_000
GOSSIP_BATCH_TXS = 2_000


class TxGossip:
    def __init__(self, mempool: Mempool, net: Network) -> None:
        self.mempool = mempool
        self.net = net
        self.outgoing: list[bytes] = []  # raw txs accepted here, not yet sent
        self._queued = trio.Event()  # set when ``outgoing`` gets its first tx

    def queue(self, raw: bytes) -> None:
        """Send a tx this node accepted with the next batch."""
        self.outgoing.append(raw)
        self._queued.set()

    async def admit(self, payload: bytes) -> None:
        """Admit a peer's batch (a msgpack list of raw txs) into the mempool.

        A tx already known or no longer valid here is skipped: there is nothing to report
        to a peer. Raises BadMessage if the batch is not a list of tx-sized bins."""
        for index, raw in enumerate(decode_tx_batch(payload)):
            if index % ADMIT_SLICE == ADMIT_SLICE - 1:
                await trio.lowlevel.checkpoint()
            if sha256(raw).digest() in self.mempool:
                # Pending txs are re-gossiped every few seconds; a tx id is the hash of its
                # bytes, so one already held needs no decoding (decoding was most of a
                # node's CPU under load).
                continue
            if self.mempool.full_for_peers:
                return  # the rest would be refused too: decode and verify none of them
            try:
                self.mempool.add(decode_tx(raw), from_peer=True)
            except (TxRejected, MempoolError):
                continue

    async def run(self) -> None:
        """Send queued txs in batches, GOSSIP_INTERVAL after the first of a batch came (an
        idle node does not wake up to find nothing to send); re-send those still pending
        every REGOSSIP_INTERVAL."""
        pending_before: set[bytes] = set()
        next_regossip = trio.current_time() + REGOSSIP_INTERVAL
        while True:
            with trio.move_on_at(next_regossip):
                await self._queued.wait()
                await trio.sleep(GOSSIP_INTERVAL)  # let the batch fill
            self._queued = trio.Event()
            if trio.current_time() >= next_regossip:
                pending = self.mempool.candidates(REGOSSIP_MAX_TXS)
                self.outgoing.extend(tx.raw for tx in pending if tx.tx_id in pending_before)
                pending_before = {tx.tx_id for tx in pending}
                next_regossip = trio.current_time() + REGOSSIP_INTERVAL
            while self.outgoing:
                batch = self.outgoing[:GOSSIP_BATCH_TXS]
                self.outgoing = self.outgoing[GOSSIP_BATCH_TXS:]
                self.net.broadcast(Kind.TXS, encode_tx_batch(batch))
