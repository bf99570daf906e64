"""The engine's App over the ledger: build and check blocks on a chain State. No I/O.

The node and the simulator both run the real ledger under the engine; they differ only in
where candidate transactions come from and what the clock is, which they pass in.
Executing a block yields its ``Changes``; they are kept by block hash so that committing a
block the engine decided writes them instead of executing the block a second time.

A block's evidence is checked by the node's ``EvidencePool`` (``consensus/evidence.py``)
after the ledger executed the block: the ledger checks only that the header commits to
it; whether each proof verifies, is recent and is new is consensus's rule, and every
validator applies it before it prevotes. The proposer includes what its pool holds.

Time is not part of validity. Whether a block is valid is a fact every honest node agrees
on; whether it is dated too far ahead depends on the reader's clock, and a verdict that
differs between nodes, or changes as time passes, must never stop a node from committing
a decided block. So ``timely`` is asked only when this validator chooses its prevote, as
in CometBFT's proposer-based timestamps.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable

from chain.block import Block, CommitCertificate
from chain.state import Changes, State, build_block, execute_block
from chain.tx import Tx
from consensus.evidence import EvidencePool

MAX_BLOCK_DRIFT_MS = 10_000  # a fresh proposal dated further ahead of our clock gets nil


class LedgerApp:
    def __init__(
        self,
        state: State,
        *,
        proposer: bytes,
        max_txs: int,
        clock: Callable[[], int],
        candidates: Callable[[int], Iterable[Tx]],
        evidence: EvidencePool,
        verified: Container[bytes] = (),
        max_drift_ms: int = MAX_BLOCK_DRIFT_MS,
    ) -> None:
        self.state = state
        self.proposer = proposer
        self.max_txs = max_txs
        self.clock = clock
        self.candidates = candidates  # height -> txs to try, in an order they apply in
        self.evidence = evidence
        self.verified = verified  # tx ids whose signatures were already checked
        self.max_drift_ms = max_drift_ms
        self.executed: dict[bytes, Changes] = {}

    def build_block(self, height: int, round: int, last_cert: CommitCertificate | None) -> Block:
        built = build_block(
            self.state,
            self.candidates(height),
            round=round,
            proposer=self.proposer,
            time_ms=self.clock(),
            last_cert=last_cert,
            max_txs=self.max_txs,
            verified=self.verified,
            evidence=self.evidence.proposable(height),
        )
        self.executed[built.block.hash] = built.changes
        return built.block

    def validate_block(self, block: Block) -> None:
        if block.hash not in self.executed:
            changes = execute_block(self.state, block, verified=self.verified)
            self.evidence.check(block.height, block.evidence)
            self.executed[block.hash] = changes

    def timely(self, block: Block) -> bool:
        """Not dated more than ``max_drift_ms`` ahead of our clock now: a proposer with a
        runaway clock cannot push block times, which must grow, out of everyone's reach."""
        return block.header.time_ms <= self.clock() + self.max_drift_ms

    def take_changes(self, block: Block) -> Changes:
        """The changes of a decided block (executed now if it came by catch-up), its
        evidence now committed in the pool; raises InvalidBlock if it does not execute on
        this state."""
        changes = self.executed.pop(block.hash, None)
        self.executed.clear()  # every other candidate was built on the old head
        if changes is None:
            changes = execute_block(self.state, block, verified=self.verified)
        self.evidence.update(block.height, block.evidence)
        return changes
