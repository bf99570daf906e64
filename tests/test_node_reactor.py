"""Validator nodes (real engine, store, mempool, tx gossip and catch-up) on trio's MockClock,
wired together in memory instead of libp2p.

Every timer, interval and block time of a node runs on trio's clock and an injected wall
clock, so with ``autojump_clock`` the virtual seconds of consensus timeouts pass as soon as
every task waits: the runs are deterministic and take a fraction of a real second.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from prometheus_client import generate_latest
from trio.testing import MockClock

from chain.tx import Tx, TxKind, sign_tx
from node.config import load_template
from node.layout import NetworkHome, create_network
from node.p2p import MAX_FRAME_SIZE, Frame, Kind, RequestFailed
from node.runner import Node

GENESIS_TIME_MS = 1_700_000_000_000
WAIT = 120.0  # virtual seconds


class MemoryNet:
    """A Network in memory: a frame reaches the inbound channel of every running peer at
    once. ``hub`` maps each validator's public key to its MemoryNet."""

    def __init__(self, hub: dict[bytes, MemoryNet], pubkey: bytes) -> None:
        self.hub = hub
        self.pubkey = pubkey
        hub[pubkey] = self
        self._send, self.inbound = trio.open_memory_channel[Frame](math.inf)
        self.up = False
        self.requests = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.up = True
        try:
            task_status.started()
            await trio.sleep_forever()
        finally:
            self.up = False

    def connected_peers(self) -> set[bytes]:
        return {key for key, net in self.hub.items() if net is not self and net.up}

    def dropped_frames(self) -> int:
        return 0

    def send(self, pubkey: bytes, kind: Kind, payload: bytes) -> None:
        if self.hub[pubkey].up:
            self.hub[pubkey]._send.send_nowait(Frame(self.pubkey, kind, payload))

    def broadcast(self, kind: Kind, payload: bytes) -> None:
        for key in self.connected_peers():
            self.send(key, kind, payload)

    async def request(self, pubkey: bytes, kind: Kind, payload: bytes, timeout: float) -> bytes:
        self.requests += 1
        reply_send, reply_recv = trio.open_memory_channel[bytes](1)
        self.hub[pubkey]._send.send_nowait(Frame(self.pubkey, kind, payload, reply_send))
        try:
            with trio.fail_after(timeout):
                return await reply_recv.receive()
        except (trio.TooSlowError, trio.EndOfChannel) as exc:
            raise RequestFailed(repr(exc)) from exc

    def respond(self, request: Frame, payload: bytes) -> None:
        assert request.reply_to is not None
        request.reply_to.send_nowait(payload)


def virtual_wall_clock() -> int:
    """Block times on the virtual clock (MockClock starts at 0)."""
    return GENESIS_TIME_MS + int(trio.current_time() * 1000)


@pytest.fixture
def network(tmp_path: Path) -> NetworkHome:
    return create_network(tmp_path / "net", load_template(), genesis_time_ms=GENESIS_TIME_MS)


def build_nodes(network: NetworkHome) -> list[Node]:
    hub: dict[bytes, MemoryNet] = {}
    nodes = []
    for entry in network.nodes():
        home = network.node_home(entry.bank)
        net = MemoryNet(hub, bytes.fromhex(entry.validator))
        nodes.append(Node(home, home.load_config(), wall_clock=virtual_wall_clock, net=net))
    return nodes


def mint_tx(network: NetworkHome) -> Tx:
    """The first bank mints 7 of its token to one of its accounts (nonce 0)."""
    genesis = network.genesis()
    bank = genesis.banks[0]
    account = next(a.account for a in genesis.accounts if a.bank == bank.name)
    issuer = network.wallet(bank.name).signing_key
    return sign_tx(issuer, TxKind.MINT, genesis.chain_id, 0, to=account,
                   token=bank.tokens[0].symbol, amount=7)  # fmt: skip


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` on the virtual clock; fail after WAIT virtual seconds."""
    with trio.move_on_after(WAIT):
        while not condition():
            await trio.sleep(0.05)
        return
    pytest.fail(f"no {what} within {WAIT} virtual seconds")


@pytest.mark.parametrize("answer_bytes", [MAX_FRAME_SIZE, 1], ids=["full", "one-block"])
async def test_validators_commit_on_virtual_time_and_a_late_one_catches_up(
    network: NetworkHome, autojump_clock: MockClock, answer_bytes: int
) -> None:
    """With ``answer_bytes`` 1, every sync answer holds one block (never none): the late
    node still catches up, one request per block."""
    nodes = build_nodes(network)
    first, *_, late = nodes
    for node in nodes:
        node.sync.max_answer_bytes = answer_bytes
    mint = mint_tx(network)
    try:
        async with trio.open_nursery() as nursery:
            for node in nodes[:-1]:  # 3 of 4: a quorum; the 4th's rounds time out
                await nursery.start(node.run_reactor)
            await wait_until(
                lambda: min(n.store.state.height for n in nodes[:-1]) >= 5, "5 heights"
            )
            (result,) = await first.service.submit([mint.raw])
            assert result.accepted
            await wait_until(
                lambda: all(n.store.tx_location(mint.tx_id) for n in nodes[:-1]),
                "commit of the minted tx on every running node",
            )
            assert trio.current_time() >= 5 * first.config.timeouts.commit_ms / 1000

            await nursery.start(late.run_reactor)
            target = first.store.state.height
            await wait_until(lambda: late.store.state.height >= target, "catch-up")
            assert late.store.tx_location(mint.tx_id) == first.store.tx_location(mint.tx_id)
            assert late.net.requests >= (target if answer_bytes == 1 else 1)
            height = min(n.store.state.height for n in nodes)
            assert len({n.store.block(height).hash for n in nodes}) == 1

            # The gauges read the store: /metrics is right with no /status call before it.
            text = generate_latest(late.service.registry).decode()  # what /metrics sends
            assert f"depnet_height {float(late.store.state.height)}" in text
            nursery.cancel_scope.cancel()
    finally:
        for node in nodes:
            node.store.close()


async def test_a_reader_waiting_for_the_next_head_wakes_at_the_commit(
    network: NetworkHome, autojump_clock: MockClock
) -> None:
    """``next_head`` (GET /head?after=) answers at the commit that passes ``after``, and
    with the tip unchanged when its wait ends first (nodes that do not run commit nothing)."""
    nodes = build_nodes(network)
    first = nodes[0]
    try:
        idle = await first.service.next_head(0, 2.0)
        assert idle.height == 0 and trio.current_time() == pytest.approx(2.0)
        async with trio.open_nursery() as nursery:
            for node in nodes:
                await nursery.start(node.run_reactor)
            await wait_until(lambda: first.store.state.height >= 2, "2 heights")
            known = first.store.state.height
            asked_at = trio.current_time()
            head = await first.service.next_head(known, 600.0)
            assert head.height == known + 1 == first.store.state.height
            assert trio.current_time() - asked_at < 600.0
            nursery.cancel_scope.cancel()
    finally:
        for node in nodes:
            node.store.close()
