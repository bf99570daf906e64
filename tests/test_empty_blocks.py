"""Idle quietly: a height with no txs waits for them (TxsAvailable) or for the empty block
interval, in the engine and in a network of real nodes on a virtual clock."""

from __future__ import annotations

from dataclasses import replace

import trio
from trio.testing import MockClock

from consensus.engine import Engine
from consensus.events import (
    Broadcast,
    EmptyBlocks,
    MessageReceived,
    ScheduleTimeout,
    TimeoutFired,
    TimeoutKind,
    Timeouts,
    TxsAvailable,
)
from consensus.messages import Proposal, Vote, VoteKind
from consensus.signer import MemorySignerStorage, Signer
from consensus.simulate import CHAIN_ID, GENESIS_TIME_MS, sim_app
from node.layout import NetworkHome
from tests.consensus_helpers import KEYS, PUB, W, block, propose
from tests.test_node_reactor import build_nodes, mint_tx, network, wait_until

__all__ = ["network"]  # the fixture, used by name

PROPOSER = 1  # of height 1, round 0
WAITING = EmptyBlocks(create=True, interval_ms=1_000)


def engine(who: int, empty_blocks: EmptyBlocks) -> tuple[Engine, list]:
    app = sim_app(W, PUB[who], lambda: GENESIS_TIME_MS + 1_000)
    signer = Signer(KEYS[who], MemorySignerStorage(), CHAIN_ID)
    eng = Engine(CHAIN_ID, W.validators, signer, app, 1, None, Timeouts(), empty_blocks)
    return eng, eng.start()


def proposals(actions: list) -> list[Proposal]:
    messages = [a.message for a in actions if isinstance(a, Broadcast)]
    return [m for m in messages if isinstance(m, Proposal)]


def timeouts(actions: list) -> list[tuple[TimeoutKind, int]]:
    return [(a.timeout.kind, a.delay_ms) for a in actions if isinstance(a, ScheduleTimeout)]


def test_by_default_a_height_starts_at_once() -> None:
    _, started = engine(PROPOSER, EmptyBlocks())
    assert len(proposals(started)) == 1
    _, started = engine(0, EmptyBlocks())
    assert (TimeoutKind.PROPOSE, 1_000) in timeouts(started)


def test_proposer_waits_for_txs_then_proposes() -> None:
    eng, started = engine(PROPOSER, WAITING)
    assert proposals(started) == []
    assert timeouts(started) == [(TimeoutKind.RESEND, 500), (TimeoutKind.EMPTY_BLOCK, 1_000)]
    assert eng.handle(TxsAvailable(2)) == []  # a later height's txs do not start this one
    assert len(proposals(eng.handle(TxsAvailable(1)))) == 1
    assert eng.handle(TimeoutFired(TimeoutKind.EMPTY_BLOCK, 1, 0)) == []  # no second proposal


def test_proposer_proposes_an_empty_block_when_the_interval_runs_out() -> None:
    eng, _ = engine(PROPOSER, WAITING)
    (proposal,) = proposals(eng.handle(TimeoutFired(TimeoutKind.EMPTY_BLOCK, 1, 0)))
    assert (proposal.height, proposal.round) == (1, 0)
    assert eng.handle(TxsAvailable(1)) == []  # the wait is over: nothing more to start


def test_others_start_their_propose_timeout_only_when_the_wait_ends() -> None:
    """Their propose timeout must not run out while the proposer waits; a proposal that
    arrives meanwhile is voted on as usual."""
    eng, started = engine(0, WAITING)
    assert (TimeoutKind.PROPOSE, 1_000) not in timeouts(started)
    assert (TimeoutKind.PROPOSE, 1_000) in timeouts(eng.handle(TxsAvailable(1)))

    eng, _ = engine(0, WAITING)
    b = block(PROPOSER)
    (prevote,) = [
        a.message for a in eng.handle(MessageReceived(propose(b, 0))) if isinstance(a, Broadcast)
    ]
    assert isinstance(prevote, Vote) and prevote.kind is VoteKind.PREVOTE
    assert prevote.block_hash == b.hash


def test_without_empty_blocks_or_interval_only_txs_start_a_height() -> None:
    eng, started = engine(PROPOSER, EmptyBlocks(create=False, interval_ms=0))
    assert proposals(started) == [] and TimeoutKind.EMPTY_BLOCK not in dict(timeouts(started))
    assert len(proposals(eng.handle(TxsAvailable(1)))) == 1


async def test_idle_network_commits_at_most_a_block_a_second_and_a_tx_promptly(
    network: NetworkHome, autojump_clock: MockClock
) -> None:
    nodes = build_nodes(network)
    first = nodes[0]
    assert first.engine.empty_blocks == WAITING  # the node config's defaults
    mint = mint_tx(network)
    try:
        async with trio.open_nursery() as nursery:
            for node in nodes:
                await nursery.start(node.run_reactor)
            await wait_until(lambda: first.store.state.height >= 1, "a first block")
            height = first.store.state.height
            await trio.sleep(30)
            blocks = first.store.state.height - height
            assert 10 <= blocks <= 30 * 1.0 + 1, blocks  # quiet, but still alive

            submitted = trio.current_time()
            (result,) = await first.service.submit([mint.raw])
            assert result.accepted
            await wait_until(
                lambda: all(n.store.tx_location(mint.tx_id) for n in nodes), "the tx's commit"
            )
            assert trio.current_time() - submitted < 0.5  # no wait for the interval
            nursery.cancel_scope.cancel()
    finally:
        for node in nodes:
            node.store.close()


def test_interval_is_a_node_config_key(network: NetworkHome) -> None:
    home = network.node_home(network.nodes()[0].bank)
    config = replace(home.load_config(), create_empty_blocks=False, empty_block_interval_ms=0)
    home.save_config(config)
    (node, *_) = build_nodes(network)
    try:
        assert node.engine.empty_blocks == EmptyBlocks(create=False, interval_ms=0)
    finally:
        node.store.close()
