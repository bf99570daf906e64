"""What goes into the engine and what comes out: events, actions, timeouts, and the App.

The engine (``consensus/engine.py``) is ``handle(event) -> list[Action]``. Its callers,
the node (``node/runner.py``) and the simulator (``consensus/simulate.py``), turn network
frames, timers and fetched blocks into these events, and carry the actions out in order
before they deliver the next event.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from chain.block import Block, CommitCertificate
from consensus.evidence import Equivocation
from consensus.messages import Message


class TimeoutKind(IntEnum):
    PROPOSE = 1
    PREVOTE = 2
    PRECOMMIT = 3
    COMMIT = 4  # wait after a decision before starting the next height
    RESEND = 5  # periodic re-broadcast of our own messages
    EMPTY_BLOCK = 6  # a height with no txs waits this long, then goes on without them


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Timeouts in ms; those of a round grow linearly with it, so that after the network
    stabilises some round lasts long enough for every honest message to arrive."""

    propose_ms: int = 1000
    propose_delta_ms: int = 500
    prevote_ms: int = 500
    prevote_delta_ms: int = 250
    precommit_ms: int = 500
    precommit_delta_ms: int = 250
    resend_ms: int = 500
    commit_ms: int = 0

    def __post_init__(self) -> None:
        if self.resend_ms <= 0:
            raise ValueError("resend_ms must be positive: the resend timer reschedules itself")
        if min(self.propose_ms, self.prevote_ms, self.precommit_ms, self.commit_ms) < 0:
            raise ValueError("timeouts cannot be negative")

    def delay(self, kind: TimeoutKind, round: int) -> int:
        if kind is TimeoutKind.PROPOSE:
            return self.propose_ms + self.propose_delta_ms * round
        if kind is TimeoutKind.PREVOTE:
            return self.prevote_ms + self.prevote_delta_ms * round
        if kind is TimeoutKind.PRECOMMIT:
            return self.precommit_ms + self.precommit_delta_ms * round
        if kind is TimeoutKind.COMMIT:
            return self.commit_ms
        return self.resend_ms


@dataclass(frozen=True, slots=True)
class EmptyBlocks:
    """CometBFT's ``create_empty_blocks`` and ``create_empty_blocks_interval``.

    With ``create`` and ``interval_ms`` 0 (the default) every height starts at once. Else
    a new height whose first round would propose no txs waits: for ``TxsAvailable`` (the
    mempool holds txs for this height), or for ``interval_ms`` when it is positive (then
    an idle network still makes one empty block per interval, which keeps block times and
    liveness visible). Every validator waits, not only the proposer, so that nobody's
    propose timeout runs out while the proposer waits; a proposal that arrives meanwhile
    is voted on as usual.
    """

    create: bool = True
    interval_ms: int = 0

    def __post_init__(self) -> None:
        if self.interval_ms < 0:
            raise ValueError("empty block interval cannot be negative")

    @property
    def wait_for_txs(self) -> bool:
        return not self.create or self.interval_ms > 0


# --- events ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A peer's proposal or vote whose signature and signer the caller already checked."""

    message: Message


@dataclass(frozen=True, slots=True)
class TimeoutFired:
    """A timer the engine asked for (``ScheduleTimeout``) ran out; stale ones are ignored."""

    kind: TimeoutKind
    height: int
    round: int


@dataclass(frozen=True, slots=True)
class CommitReceived:
    """A decided block with its certificate (from block sync); committed if it is for our
    height, its certificate verifies and the block re-executes."""

    block: Block
    cert: CommitCertificate


@dataclass(frozen=True, slots=True)
class TxsAvailable:
    """The mempool holds txs a block at ``height`` could take (see ``EmptyBlocks``). The node
    sends it when its mempool goes from empty to not, and after a commit that leaves txs."""

    height: int


Event = MessageReceived | TimeoutFired | CommitReceived | TxsAvailable


# --- actions --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Send our own signed ``message`` to every peer (it is already counted here)."""

    message: Message


@dataclass(frozen=True, slots=True)
class ScheduleTimeout:
    """Deliver ``timeout`` back to the engine after ``delay_ms``."""

    timeout: TimeoutFired
    delay_ms: int


@dataclass(frozen=True, slots=True)
class Commit:
    """Apply ``block`` and store it with ``cert`` before delivering the next event."""

    block: Block
    cert: CommitCertificate


@dataclass(frozen=True, slots=True)
class RequestSync:
    """Fetch decided blocks with certificates from ``from_height`` on from peers, and feed
    them back as ``CommitReceived`` in height order."""

    from_height: int


@dataclass(frozen=True, slots=True)
class ReportEvidence:
    """A validator equivocated, and this is the first proof of it we hold: keep it to
    propose and send it to peers (``consensus.evidence.EvidencePool``)."""

    evidence: Equivocation


Action = Broadcast | ScheduleTimeout | Commit | RequestSync | ReportEvidence


class App(Protocol):
    """The ledger as the engine sees it; deterministic and synchronous."""

    def build_block(self, height: int, round: int, last_cert: CommitCertificate | None) -> Block:
        """A new block for the next height, built by this validator (the proposer)."""
        ...

    def validate_block(self, block: Block) -> None:
        """Re-execute ``block`` on the current state; raise InvalidBlock if it does not
        apply. Called at most once per block hash per height by the engine."""
        ...

    def timely(self, block: Block) -> bool:
        """Whether ``block``'s time is acceptable by this validator's clock now. Asked
        afresh each time the engine prevotes on a fresh proposal; never part of valid(v)."""
        ...
