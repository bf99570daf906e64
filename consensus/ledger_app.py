"""The engine's App over the ledger: build and check blocks on a chain State. No I/O.

The node and the simulator both run the real ledger under the engine; they differ only in
where candidate transactions come from and what the clock is, which they pass in.
Executing a block yields its ``Changes``; they are kept by block hash so that committing a
block the engine decided writes them instead of executing the block a second time.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable

from chain.block import Block, CommitCertificate
from chain.state import Changes, State, build_block, execute_block
from chain.tx import Tx


class LedgerApp:
    def __init__(
        self,
        state: State,
        *,
        proposer: bytes,
        max_txs: int,
        clock: Callable[[], int],
        candidates: Callable[[int], Iterable[Tx]],
        verified: Container[bytes] = (),
    ) -> None:
        self.state = state
        self.proposer = proposer
        self.max_txs = max_txs
        self.clock = clock
        self.candidates = candidates  # height -> txs to try, in an order they apply in
        self.verified = verified  # tx ids whose signatures were already checked
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
        )
        self.executed[built.block.hash] = built.changes
        return built.block

    def validate_block(self, block: Block) -> None:
        if block.hash not in self.executed:
            self.executed[block.hash] = execute_block(self.state, block, verified=self.verified)

    def take_changes(self, block: Block) -> Changes:
        """The changes of a decided block (executed now if it came by catch-up); raises
        InvalidBlock if it does not execute on this state."""
        changes = self.executed.pop(block.hash, None)
        self.executed.clear()  # every other candidate was built on the old head
        if changes is None:
            changes = execute_block(self.state, block, verified=self.verified)
        return changes
