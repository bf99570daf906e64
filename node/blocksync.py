"""Catch-up by height, both sides: serving decided blocks and fetching them from peers.

A node that learns it is behind (the engine emits RequestSync) asks its connected peers,
in turn, for the blocks from its next height on, each with the certificate that decided
it. A request names a height and a count; the answer holds the ``(block, cert)`` pairs
from that height on (``node.wire`` has both formats): as many as the server has up to
``count`` (at most SYNC_BATCH), and no more than fit in one frame (MAX_FRAME_SIZE) and in
the asker's allowance, but always the first one. The asker goes on from wherever an
answer ends, so it makes progress with answers of any length. It checks each certificate
before the block reaches the engine, so a byzantine peer cannot make the engine work on
junk; the engine checks it again and re-executes before committing.

Whatever a peer answers, fetching from it ends in one of three typed errors (no answer,
bytes that are no answer, a certificate that proves nothing); the fetch loop logs it and
asks the next peer. Any other exception is a bug of this node and stops it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from chain.store import Store
from consensus.events import CommitReceived
from consensus.messages import BadMessage
from consensus.validators import InvalidCertificate, ValidatorSet, verify_certificate
from node.logs import log_event
from node.p2p import MAX_FRAME_SIZE, Kind, Network, RequestFailed
from node.wire import (
    ANSWER_OVERHEAD,
    ENTRY_OVERHEAD,
    SYNC_BATCH,
    decode_sync_answer,
    decode_sync_request,
    encode_sync_answer,
    encode_sync_request,
)

log = logging.getLogger("depnet.node")

SYNC_TIMEOUT = 5.0
SERVE_RATE = 16 * 1024 * 1024  # answer bytes a second one peer is served, on average
SERVE_BURST = 2 * MAX_FRAME_SIZE  # answer bytes one peer may be served at once

_PEER_FAULTS = (RequestFailed, BadMessage, InvalidCertificate)
"""What fetching from a peer can go wrong with, whatever the peer sends."""


@dataclass(eq=False)
class BlockSync:
    """``deliver`` hands a fetched, certified block to the engine (in height order)."""

    store: Store
    net: Network
    validators: ValidatorSet
    chain_id: str
    deliver: Callable[[CommitReceived], Awaitable[None]]
    max_answer_bytes: int = MAX_FRAME_SIZE
    clock: Callable[[], float] = trio.current_time
    running: bool = field(default=False, init=False)
    # sender -> (answer bytes it may still be served, clock() when that was so); one entry
    # per peer that asked, and only authenticated validators and observers can ask
    _allowance: dict[bytes, tuple[float, float]] = field(default_factory=dict, init=False)
    _next: int = field(default=0, init=False)  # the next height to fetch while running

    # --- serving ------------------------------------------------------------------------

    def serve(self, sender: bytes, payload: bytes) -> bytes:
        """The answer to ``sender``'s request: the first block asked for, then as many after
        it as fit in ``max_answer_bytes`` and in the sender's allowance. Raises BadMessage
        if the request is malformed.

        Serving costs ~20 ms of CPU per MB (blocks are read, decoded and encoded again), so
        a peer asking without pause for full answers would cost ~0.35 s a request of 5
        bytes. Each peer is therefore served SERVE_RATE bytes a second on average, in
        bursts of up to SERVE_BURST; beyond that it still gets the first block, so it
        makes progress. An honest node asks one request at a time and spends longer
        executing an answer's blocks than this rate gives it."""
        start, count = decode_sync_request(payload)
        now = self.clock()
        allowance, then = self._allowance.get(sender, (SERVE_BURST, now))
        allowance = min(SERVE_BURST, allowance + (now - then) * SERVE_RATE)
        budget = min(self.max_answer_bytes, allowance)
        last = min(start + min(count, SYNC_BATCH) - 1, self.store.state.height)
        entries: list[tuple[bytes, bytes]] = []
        size = ANSWER_OVERHEAD
        for block, cert in self.store.blocks(start, last):
            entry = (block.encode(), cert.encode())
            entry_size = ENTRY_OVERHEAD + len(entry[0]) + len(entry[1])
            if entries and size + entry_size > budget:
                break
            entries.append(entry)
            size += entry_size
        self._allowance[sender] = (allowance - size, now)
        return encode_sync_answer(entries)

    # --- fetching -----------------------------------------------------------------------

    def start(self, from_height: int, nursery: trio.Nursery) -> None:
        """Catch up from ``from_height`` in the background, unless already doing so."""
        if not self.running:
            self.running = True
            nursery.start_soon(self._catch_up, from_height)

    async def _catch_up(self, from_height: int) -> None:
        """Fetch blocks until a pass over every connected peer brings nothing new."""
        self._next = from_height
        try:
            while await self._fetch_round():
                pass
        finally:
            self.running = False

    async def _fetch_round(self) -> bool:
        """Ask the peers in turn until one answers in full; True if any block arrived."""
        start = self._next
        for peer in sorted(self.net.connected_peers()):
            try:
                await self._fetch_from(peer)
            except _PEER_FAULTS as exc:
                log_event(
                    log,
                    "sync from peer failed",
                    logging.WARNING,
                    peer=peer.hex()[:16],
                    error=repr(exc),
                )
                continue
            if self._next > start:
                return True
        return self._next > start

    async def _fetch_from(self, peer: bytes) -> None:
        request = encode_sync_request(self._next, SYNC_BATCH)
        reply = await self.net.request(peer, Kind.SYNC_REQUEST, request, SYNC_TIMEOUT)
        for block, cert in decode_sync_answer(reply):
            if block.height != self._next or cert.block_hash != block.hash:
                raise BadMessage("sync reply out of order")
            verify_certificate(cert, self.validators, self.chain_id)
            await self.deliver(CommitReceived(block, cert))
            self._next += 1
