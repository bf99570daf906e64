"""Shared fixtures for the consensus tests: one engine under test (``Harness``) whose peers
the test plays with their real keys, and real blocks, built and executed on a real State of
the simulator's four-validator world."""

from __future__ import annotations

from chain.block import Block, CommitCertificate
from consensus.engine import Engine
from consensus.events import (
    Action,
    Broadcast,
    Commit,
    MessageReceived,
    TimeoutFired,
    TimeoutKind,
    Timeouts,
)
from consensus.messages import Proposal, Vote, VoteKind, proposal_sign_bytes, vote_sign_bytes
from consensus.signer import MemorySignerStorage, Signer
from consensus.simulate import (
    CHAIN_ID,
    GENESIS_TIME_MS,
    SimConfig,
    Simulation,
    apply_decided,
    sim_app,
    world,
)

W = world(4)
KEYS = W.keys
PUB = [bytes(k.verify_key) for k in KEYS]
ME = 0  # proposer of height 1 is validator (1 + round) % 4: 1, 2, 3, then us in round 3


class Harness:
    """Drives one engine; ``storage`` survives a simulated crash (``restart``)."""

    def __init__(self, storage: MemorySignerStorage | None = None, clock_ms: int = 1_000) -> None:
        self.storage = storage or MemorySignerStorage()
        self.app = sim_app(W, PUB[ME], lambda: GENESIS_TIME_MS + clock_ms)
        self.engine = Engine(
            CHAIN_ID,
            W.validators,
            Signer(KEYS[ME], self.storage, CHAIN_ID),
            self.app,
            height=1,
            last_cert=None,
            timeouts=Timeouts(),
        )
        self.started = self.engine.start()

    def restart(self) -> Harness:
        return Harness(self.storage)

    def feed(self, *msgs: Proposal | Vote) -> list[Action]:
        actions: list[Action] = []
        for msg in msgs:
            actions += self.engine.handle(MessageReceived(msg))
        return actions

    def fire(self, kind: TimeoutKind, round: int, height: int = 1) -> list[Action]:
        return self.engine.handle(TimeoutFired(kind, height, round))


def block(proposer: int, round: int = 0, time_offset: int = 0) -> Block:
    """A valid height-1 block built by ``proposer``; ``time_offset`` makes a different one."""
    app = sim_app(W, PUB[proposer], lambda: GENESIS_TIME_MS + 1_000 + time_offset)
    return app.build_block(1, round, None)


def propose(b: Block, round: int, pol_round: int = -1, height: int = 1) -> Proposal:
    proposer = W.validators.index(W.validators.proposer(height, round))
    sig = KEYS[proposer].sign(proposal_sign_bytes(CHAIN_ID, height, round, b.hash, pol_round))
    return Proposal(height, round, b, pol_round, PUB[proposer], sig.signature)


def vote(who: int, kind: VoteKind, round: int, block_hash: bytes | None, height: int = 1) -> Vote:
    sig = KEYS[who].sign(vote_sign_bytes(CHAIN_ID, kind, height, round, block_hash)).signature
    return Vote(kind, height, round, block_hash, PUB[who], sig)


def prevotes(who: list[int], round: int, block_hash: bytes | None) -> list[Vote]:
    return [vote(w, VoteKind.PREVOTE, round, block_hash) for w in who]


def precommits(who: list[int], round: int, block_hash: bytes | None) -> list[Vote]:
    return [vote(w, VoteKind.PRECOMMIT, round, block_hash) for w in who]


def sent_votes(actions: list[Action], kind: VoteKind) -> list[bytes | None]:
    return [
        a.message.block_hash
        for a in actions
        if isinstance(a, Broadcast)
        and isinstance(a.message, Vote)
        and a.message.kind is kind
        and a.message.validator == PUB[ME]
    ]


def commits(actions: list[Action]) -> list[Commit]:
    return [a for a in actions if isinstance(a, Commit)]


def decided_chain(heights: int) -> list[tuple[Block, CommitCertificate]]:
    """Blocks 1..heights with certificates, decided by a fault-free simulation."""
    sim = Simulation(SimConfig(nodes=4, heights=heights, seed=1))
    assert sim.run().verdict == "ok"
    return sim.nodes[1].committed


def block_on(parent: tuple[Block, CommitCertificate], proposer: int, round: int) -> Block:
    """A valid block for the height after ``parent``, built by ``proposer`` in ``round``."""
    block, cert = parent
    app = sim_app(W, PUB[proposer], lambda: GENESIS_TIME_MS + 5_000 + round)
    apply_decided(app, block)
    return app.build_block(block.height + 1, round, cert)
