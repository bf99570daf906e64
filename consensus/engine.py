"""Tendermint consensus as a pure state machine: ``handle(event) -> list[Action]``.

This is Algorithm 1 of Buchman, Kwon and Milosevic, "The latest gossip on BFT consensus"
(2018): each upon-rule of the paper is one method with the paper's rule above it, and
``_try_round_rules`` lists them in the paper's order. The engine never does I/O, never
reads a clock and draws no random numbers: the node (``node/runner.py``) and the
simulator (``consensus/simulate.py``) feed it events and carry out its actions
(``consensus/events.py``), in order, before delivering the next event. Votes are counted
by ``consensus/votes.py``.

What the paper leaves to the implementation, and how it is done here:

* Messages are assumed eventually delivered; real links lose them. A ``RESEND`` timer
  re-broadcasts this validator's own proposal and votes of the current and previous
  round (and its precommit for the previous height), so a lost message costs one resend
  interval. A re-proposal travels with the prevotes that justify it (its POL). The timer
  starts afresh with each height: a height decided within one interval resends nothing
  (under load a proposal carries thousands of txs, and a tick at a fixed pace re-sent
  about every other one).
* A validator that missed a decision asks for it: on a message two heights ahead at
  once, and at each resend tick while f+1 validators claim a higher height (one alone
  for a few ticks per height: it may be lying) or a precommit quorum names a block it
  never got, it emits ``RequestSync``; the caller fetches decided blocks with their
  certificates and feeds them back as ``CommitReceived``, which commits after checking
  both.
* Decisions are applied by the caller: after a ``Commit`` the engine waits for the
  ``COMMIT`` timeout before it starts the next height, so it never builds or validates a
  block on a state that has not applied the commit yet.
* Memory is bounded against a validator that signs as much as it likes: messages are
  kept for rounds up to ours + ``ROUND_WINDOW`` (beyond, one integer per validator),
  proposals only from the round's proposer, evidence once per validator, height and kind.
  ``Retained.bound`` states every bound as a number; ``Engine.retained`` counts what is
  held, and the simulator checks one against the other at every commit.
* Safety lives in ``consensus/signer.py``: the engine asks the signer for every vote, and
  after a restart resumes from what the signer says it signed (round, step, the votes of
  that round) and from its lock, which keeps the locked block and its polka so that a
  restarted validator can still re-propose it with its proof.
* Votes are counted per value from distinct validators; an equivocator's conflicting
  votes are kept as evidence and count for each value it signed (see ``consensus/votes.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chain.block import Block, CommitCertificate
from chain.errors import InvalidBlock
from consensus.diagnose import EngineStatus
from consensus.events import (
    Action,
    App,
    Broadcast,
    Commit,
    EmptyBlocks,
    Event,
    MessageReceived,
    ReportEvidence,
    RequestSync,
    ScheduleTimeout,
    TimeoutFired,
    TimeoutKind,
    Timeouts,
    TxsAvailable,
)
from consensus.evidence import Equivocation, detect, slot_kind
from consensus.messages import Message, Proposal, Step, Vote, VoteKind, signer_of
from consensus.signer import DoubleSignRefused, Lock, SignedRecord, Signer
from consensus.validators import InvalidCertificate, ValidatorSet, verify_certificate
from consensus.votes import MAX_VALUES_PER_VALIDATOR, HeightVoteSet

# Memory bounds against a byzantine validator that signs as much as it likes; see
# ``_on_message``, ``_buffer_next_height``, ``_record`` and ``consensus/votes.py``.
ROUND_WINDOW = 4  # messages of rounds up to ours + this are kept; beyond, one int per sender
MAX_PROPOSALS_PER_ROUND = 4  # an equivocating proposer cannot fill memory
MAX_FUTURE_MESSAGES = 2_000  # buffered messages for the next height
MAX_PENDING_COMMITS = 1_000  # decided blocks received ahead of our height
EVIDENCE_HEIGHTS = 100  # equivocations of older heights are dropped
AHEAD_TICKS = 20  # resend ticks per height one validator's claim to be ahead is believed


@dataclass(frozen=True, slots=True)
class Retained:
    """Counts of what peers can make an engine hold (``Engine.retained``)."""

    votes: int  # of our height
    proposals: int  # of our height
    blocks: int  # of our height, from its proposals and our lock
    next_height: int  # messages buffered for height + 1
    next_height_proposals: int  # of those, proposals (each with a block)
    pending_commits: int  # decided blocks received ahead of our height
    evidence: int
    ahead: int  # validators whose claim of a higher height we keep
    far_rounds: int  # validators whose highest round beyond the window we keep

    @staticmethod
    def bound(validators: ValidatorSet, round: int) -> Retained:
        """The most an engine in ``round`` of its height holds, whatever peers send.

        Messages are kept for rounds 0 to ``round + ROUND_WINDOW``; in each, per kind of
        vote, a validator's votes count for ``MAX_VALUES_PER_VALIDATOR`` values plus
        those f+1 others voted for (each needs an honest vote: at most n - f);
        ``MAX_PROPOSALS_PER_ROUND`` proposals per round, and the locked block. Evidence:
        three kinds per validator for each of the last ``EVIDENCE_HEIGHTS`` heights and
        ours. Claims ahead and far rounds: one integer per validator.
        """
        rounds = round + ROUND_WINDOW + 1
        n = validators.n
        return Retained(
            votes=2 * rounds * n * (MAX_VALUES_PER_VALIDATOR + n - validators.f),
            proposals=rounds * MAX_PROPOSALS_PER_ROUND,
            blocks=rounds * MAX_PROPOSALS_PER_ROUND + 1,
            next_height=MAX_FUTURE_MESSAGES,
            next_height_proposals=(ROUND_WINDOW + 1) * MAX_PROPOSALS_PER_ROUND,
            pending_commits=MAX_PENDING_COMMITS,
            evidence=3 * n * (EVIDENCE_HEIGHTS + 1),
            ahead=n,
            far_rounds=n,
        )

    def exceeding(self, bound: Retained) -> list[str]:
        """The counts above ``bound``, each as "name count > bound"."""
        return [
            f"{name} {getattr(self, name)} > {getattr(bound, name)}"
            for name in self.__slots__
            if getattr(self, name) > getattr(bound, name)
        ]


@dataclass
class _Height:
    """Everything Algorithm 1 keeps for one height; replaced wholesale at the next (line 53)."""

    votes: HeightVoteSet
    round: int = 0
    step: Step = Step.PROPOSE
    locked_round: int = -1  # line 7
    locked_hash: bytes | None = None  # line 6 (the block itself is in ``blocks`` if known)
    valid_round: int = -1  # line 9
    valid_block: Block | None = None  # line 8
    proposals: dict[int, list[Proposal]] = field(default_factory=dict)
    blocks: dict[bytes, Block] = field(default_factory=dict)
    validity: dict[bytes, bool] = field(default_factory=dict)
    fired: set[tuple[int, int]] = field(default_factory=set)  # (round, line): "first time"
    own: dict[tuple[int, Step], Message] = field(default_factory=dict)  # what we signed
    missing_block: bool = False  # a precommit quorum for a block we never received
    waiting_for_txs: bool = False  # round 0 not begun: no txs yet (EmptyBlocks)
    decision: tuple[Block, CommitCertificate] | None = None


class Engine:
    """One validator's Tendermint instance, from ``height`` on. See the module docstring."""

    def __init__(
        self,
        chain_id: str,
        validators: ValidatorSet,
        signer: Signer,
        app: App,
        height: int,
        last_cert: CommitCertificate | None,
        timeouts: Timeouts | None = None,
        empty_blocks: EmptyBlocks | None = None,
    ) -> None:
        if signer.pubkey not in validators:
            raise ValueError("the signer's key is not in the validator set")
        if height < 1 or (height > 1) != (last_cert is not None):
            raise ValueError("an engine at height > 1 needs the previous height's certificate")
        self.chain_id = chain_id
        self.validators = validators
        self.signer = signer
        self.app = app
        self.timeouts = timeouts or Timeouts()
        self.empty_blocks = empty_blocks or EmptyBlocks()
        self._txs_height = 0  # the highest height TxsAvailable named
        self._height = height
        self._last_cert = last_cert
        self._s = _Height(HeightVoteSet(validators))
        self._future: dict[tuple, Message] = {}  # messages for height + 1, deduplicated
        self._pending_commits: dict[int, tuple[Block, CommitCertificate]] = {}
        # validator index -> (highest height it claimed above ours, resend ticks left in
        # which that claim alone makes us ask for sync)
        self._ahead: dict[int, tuple[int, int]] = {}
        self._sync_asked_at = 0  # our height when we last asked for sync on a far message
        self._last_precommit: Vote | None = None  # ours, that helped decide the last height
        self._evidence: list[Equivocation] = []
        self._evidence_slots: set[tuple[bytes, int, str]] = set()
        self._resend_key: tuple[int, int] | None = None
        self._actions: list[Action] = []
        self._started = False

    # --- read-only status ---------------------------------------------------------------

    @property
    def height(self) -> int:
        return self._height

    @property
    def round(self) -> int:
        return self._s.round

    @property
    def step(self) -> Step:
        return self._s.step

    @property
    def locked_round(self) -> int:
        return self._s.locked_round

    @property
    def evidence(self) -> list[Equivocation]:
        return list(self._evidence)

    def retained(self) -> Retained:
        """What peers have made us hold, counted; ``Retained.bound`` says how much may be."""
        s = self._s
        return Retained(
            votes=s.votes.kept,
            proposals=sum(map(len, s.proposals.values())),
            blocks=len(s.blocks),
            next_height=len(self._future),
            next_height_proposals=sum(isinstance(m, Proposal) for m in self._future.values()),
            pending_commits=len(self._pending_commits),
            evidence=len(self._evidence),
            ahead=len(self._ahead),
            far_rounds=s.votes.far_rounds,
        )

    def voters(self, kind: VoteKind, round: int | None = None) -> tuple[bytes, ...]:
        """Validators whose ``kind`` votes we hold for our height and ``round`` (default:
        the current one), in genesis order."""
        votes = self._s.votes
        round = self._s.round if round is None else round
        vote_set = votes.prevotes(round) if kind is VoteKind.PREVOTE else votes.precommits(round)
        return tuple(self.validators.pubkeys[i] for i in vote_set.voters())

    def status(self) -> EngineStatus:
        """For the node's status endpoint and `depnet status` (``consensus/diagnose.py``)."""
        s = self._s
        proposals = s.proposals.get(s.round, [])
        return EngineStatus(
            height=self._height,
            round=s.round,
            step=s.step,
            proposer=self.validators.proposer(self._height, s.round),
            proposal=proposals[0].block.hash if proposals else None,
            prevotes=self.voters(VoteKind.PREVOTE),
            precommits=self.voters(VoteKind.PRECOMMIT),
            quorum=self.validators.quorum,
            validators=self.validators.n,
            locked_round=s.locked_round,
            valid_round=s.valid_round,
            evidence=len(self._evidence),
        )

    # --- driving the engine -------------------------------------------------------------

    def start(self) -> list[Action]:
        """Begin at our height (Algorithm 1, line 10), resuming where the signer says we
        were if we already signed at this height before a restart."""
        if self._started:
            raise RuntimeError("engine already started")
        self._started = True
        self._enter_height()
        self._advance()
        return self._take()

    def handle(self, event: Event) -> list[Action]:
        """One step of the state machine. No I/O: the caller carries the actions out."""
        if not self._started:
            raise RuntimeError("call start() before handle()")
        if isinstance(event, MessageReceived):
            self._on_message(event.message)
        elif isinstance(event, TimeoutFired):
            self._on_timeout(event)
        elif isinstance(event, TxsAvailable):
            self._on_txs_available(event.height)
        else:
            self._on_commit_received(event.block, event.cert)
        self._advance()
        return self._take()

    def _take(self) -> list[Action]:
        actions, self._actions = self._actions, []
        return actions

    # --- rounds -------------------------------------------------------------------------

    def _start_round(self, round: int) -> None:
        """StartRound (lines 11-21), after waiting for txs in round 0 if ``EmptyBlocks``
        says so (not when there is a valid block to re-propose)."""
        s = self._s
        s.round, s.step = round, Step.PROPOSE
        if (
            round == 0
            and s.valid_block is None
            and self.empty_blocks.wait_for_txs
            and self._txs_height < self._height
        ):
            s.waiting_for_txs = True
            if self.empty_blocks.interval_ms > 0:
                timeout = TimeoutFired(TimeoutKind.EMPTY_BLOCK, self._height, 0)
                self._actions.append(ScheduleTimeout(timeout, self.empty_blocks.interval_ms))
            return
        self._propose_or_wait(round)

    def _propose_or_wait(self, round: int) -> None:
        """Lines 14-21."""
        s = self._s
        if self.validators.proposer(self._height, round) == self.signer.pubkey:
            if s.valid_block is not None:  # lines 15-16: re-propose what may have been decided
                block, pol_round = s.valid_block, s.valid_round
            else:  # line 18
                block, pol_round = self.app.build_block(self._height, round, self._last_cert), -1
            try:
                proposal = self.signer.sign_proposal(self._height, round, block, pol_round)
            except DoubleSignRefused:
                # We proposed another block in this round before a restart; wait like
                # any other validator rather than propose twice.
                self._schedule(TimeoutKind.PROPOSE)
                return
            self._broadcast(proposal)  # line 19
            self._actions.extend(Broadcast(v) for v in self._pol_votes(proposal))
        else:
            self._schedule(TimeoutKind.PROPOSE)  # line 21

    def _enter_height(self) -> None:
        """Line 10/54: start our height at round 0, unless the signer already signed at
        it. That happens after a restart, and also when sync brings the engine to the
        signer's height (a node whose blocks were wiped but whose signer state was kept):
        either way the lock it persisted and the round it reached must be taken back, or
        it would prevote against its lock in a later round (line 23). The resend timer
        of the height before is left to lapse."""
        self._schedule_resend()
        lock = self.signer.lock
        if lock is not None and lock.height == self._height:
            self._restore_lock(lock)
        last = self.signer.last
        if last is not None and last.height == self._height:
            self._resume(last)
        else:
            self._start_round(0)

    def _restore_lock(self, lock: Lock) -> None:
        """Take back the lock from before a restart, with its block and polka: the locked
        block is also our best valid value, so we re-propose it, with its proof (line 15)."""
        s = self._s
        s.locked_round, s.locked_hash = lock.round, lock.block_hash
        s.valid_round, s.valid_block = lock.round, lock.block
        s.blocks[lock.block_hash] = lock.block
        for vote in lock.polka:
            self._add_vote(vote)

    def _resume(self, last: SignedRecord) -> None:
        """Re-enter the round and step we last signed in, so that after a restart we never
        sign anything else there; our votes of that round and of the one before are
        counted and sent again (and then resent on the timer, as ``_resend`` does for a
        running engine): peers still in the previous round may need our precommit there
        to leave it (line 47), since one validator ahead is not enough to skip (line 55)."""
        s = self._s
        s.round = last.round
        for round in (last.round - 1, last.round):
            for record in self.signer.signed_in(self._height, round):
                if record.step is Step.PROPOSE:  # our proposal's block died with the crash
                    continue
                me = self.signer.pubkey
                self._broadcast(
                    Vote(
                        record.step.vote_kind(),
                        self._height,
                        record.round,
                        record.block_hash,
                        me,
                        record.signature,
                    )
                )
        if last.step is Step.PROPOSE:
            self._start_round(last.round)  # the signer returns the same proposal or refuses
        else:
            s.step = last.step

    # --- the upon-rules of Algorithm 1 ----------------------------------------------------

    def _advance(self) -> None:
        """Fire every upon-rule of Algorithm 1 whose condition holds, until none does."""
        while self._s.step is not Step.COMMIT:
            if self._decide_on_precommit_quorum():  # line 49
                return
            if self._skip_to_higher_round():  # line 55
                continue
            if not self._try_round_rules():
                return

    def _try_round_rules(self) -> bool:
        """The rules of the current round, in the paper's order. True if one changed the
        state (then every rule is tried again); lines 34 and 47 only start a timer."""
        if self._prevote_on_proposal():  # lines 22, 28
            return True
        self._start_prevote_timeout()  # line 34
        if self._lock_on_polka():  # line 36
            return True
        if self._precommit_nil_on_nil_polka():  # line 44
            return True
        self._start_precommit_timeout()  # line 47
        return False

    def _prevote_on_proposal(self) -> bool:
        """Lines 22 and 28 for the round's proposals in arrival order: the first one a rule
        fires on gets our prevote (one prevote, if the proposer equivocated)."""
        s = self._s
        if s.step is not Step.PROPOSE:
            return False
        return any(
            self._prevote_fresh_proposal(proposal) or self._prevote_reproposal(proposal)
            for proposal in s.proposals.get(s.round, ())
        )

    # 22: upon <PROPOSAL, h_p, round_p, v, -1> from proposer(h_p, round_p)
    #     while step_p = propose
    def _prevote_fresh_proposal(self, proposal: Proposal) -> bool:
        """Line 23 with proposer-based timestamps' timely(v): the block's time must suit
        our clock now. Only here: a re-proposal (line 28) comes with 2f+1 prevotes, so f+1
        honest validators found it timely; and a decided block (line 49, or by sync) is
        committed whatever our clock says, or a node whose clock runs behind, or which
        once judged a block early, could never follow the chain."""
        if proposal.pol_round != -1:
            return False
        s, block = self._s, proposal.block
        # 23: if valid(v) and timely(v) and (lockedRound_p = -1 or lockedValue_p = v)
        ok = (
            (s.locked_round == -1 or s.locked_hash == block.hash)
            and self._valid(block)
            and self.app.timely(block)
        )
        self._prevote(block.hash if ok else None)  # 24, 26
        return True

    # 28: upon <PROPOSAL, h_p, round_p, v, vr> from proposer(h_p, round_p)
    #     AND 2f+1 <PREVOTE, h_p, vr, id(v)>
    #     while step_p = propose and (vr >= 0 and vr < round_p)
    def _prevote_reproposal(self, proposal: Proposal) -> bool:
        s, block, vr = self._s, proposal.block, proposal.pol_round
        if vr < 0 or not s.votes.prevotes(vr).has_two_thirds_for(block.hash):
            return False  # vr < round_p holds for every decoded proposal
        # 29: if valid(v) and (lockedRound_p <= vr or lockedValue_p = v)
        ok = (s.locked_round <= vr or s.locked_hash == block.hash) and self._valid(block)
        self._prevote(block.hash if ok else None)  # 30, 32
        return True

    # 34: upon 2f+1 <PREVOTE, h_p, round_p, *> while step_p = prevote for the first time
    def _start_prevote_timeout(self) -> None:
        s = self._s
        if (
            s.step is Step.PREVOTE
            and s.votes.prevotes(s.round).has_two_thirds_any()
            and self._first_time(34)
        ):
            self._schedule(TimeoutKind.PREVOTE)  # 35

    # 36: upon <PROPOSAL, h_p, round_p, v, *> from proposer(h_p, round_p)
    #     AND 2f+1 <PREVOTE, h_p, round_p, id(v)>
    #     while valid(v) and step_p >= prevote for the first time
    def _lock_on_polka(self) -> bool:
        """The block may have come with any proposal of this height: its hash names it."""
        s = self._s
        if s.step is Step.PROPOSE or (s.round, 36) in s.fired:
            return False
        prevotes = s.votes.prevotes(s.round)
        polka = prevotes.two_thirds_majority()
        block = s.blocks.get(polka) if polka is not None else None
        if block is None or not self._valid(block):
            return False
        s.fired.add((s.round, 36))
        if s.step is Step.PREVOTE:  # 37-41
            s.locked_round, s.locked_hash = s.round, block.hash
            self._lock_and_precommit(block, prevotes.votes_for(block.hash))
            s.step = Step.PRECOMMIT
        s.valid_round, s.valid_block = s.round, block  # 42-43
        return True

    # 44: upon 2f+1 <PREVOTE, h_p, round_p, nil> while step_p = prevote
    def _precommit_nil_on_nil_polka(self) -> bool:
        s = self._s
        if s.step is not Step.PREVOTE or not s.votes.prevotes(s.round).has_two_thirds_for(None):
            return False
        self._vote(VoteKind.PRECOMMIT, None)  # 45
        s.step = Step.PRECOMMIT  # 46
        return True

    # 47: upon 2f+1 <PRECOMMIT, h_p, round_p, *> for the first time
    def _start_precommit_timeout(self) -> None:
        s = self._s
        if s.votes.precommits(s.round).has_two_thirds_any() and self._first_time(47):
            self._schedule(TimeoutKind.PRECOMMIT)  # 48

    # 49: upon <PROPOSAL, h_p, r, v, *> from proposer(h_p, r)
    #     AND 2f+1 <PRECOMMIT, h_p, r, id(v)> while decision_p[h_p] = nil
    def _decide_on_precommit_quorum(self) -> bool:
        """In any round. The block may have come with any proposal of this height: its
        hash names it."""
        s = self._s
        for round in s.votes.precommit_quorum_rounds:
            precommits = s.votes.precommits(round)
            block_hash = precommits.two_thirds_majority()
            block = s.blocks.get(block_hash) if block_hash is not None else None
            if block is None:
                s.missing_block = True  # decided without us seeing the block: sync fetches it
                continue
            if self._valid(block):  # 50
                signatures = tuple(
                    (self.validators.index(v.validator), v.signature)
                    for v in precommits.votes_for(block.hash)
                )
                self._decide(block, CommitCertificate(self._height, round, block.hash, signatures))
                return True
        return False

    # 55: upon f+1 <*, h_p, round, *, *> with round > round_p
    def _skip_to_higher_round(self) -> bool:
        """f+1 validators in a higher round mean at least one honest validator is there;
        follow it instead of waiting out our timeouts."""
        s = self._s
        round = s.votes.highest_round_with_f_plus_one_above(s.round)
        if round is None:
            return False
        self._start_round(round)  # 56
        return True

    # 57: OnTimeoutPropose(h_p, round_p): if h = h_p and round = round_p and step_p = propose
    def _on_timeout_propose(self) -> None:
        if self._s.step is Step.PROPOSE:
            self._prevote(None)  # 59-60

    # 61: OnTimeoutPrevote(h_p, round_p): if h = h_p and round = round_p and step_p = prevote
    def _on_timeout_prevote(self) -> None:
        s = self._s
        if s.step is Step.PREVOTE:
            self._vote(VoteKind.PRECOMMIT, None)  # 63
            s.step = Step.PRECOMMIT  # 64

    # 65: OnTimeoutPrecommit(h_p, round_p): if h = h_p and round = round_p
    def _on_timeout_precommit(self) -> None:
        s = self._s
        if s.step is not Step.COMMIT:
            self._start_round(s.round + 1)  # 67

    def _pol_votes(self, proposal: Proposal) -> list[Vote]:
        """The prevotes that justify a re-proposal (its proof of lock). Peers need them for
        line 28 and may have lost them long ago (resending covers recent rounds only), so
        the proposer relays them with its proposal, as CometBFT's gossip does."""
        if proposal.pol_round < 0:
            return []
        return self._s.votes.prevotes(proposal.pol_round).votes_for(proposal.block.hash)

    def _first_time(self, line: int) -> bool:
        key = (self._s.round, line)
        if key in self._s.fired:
            return False
        self._s.fired.add(key)
        return True

    def _valid(self, block: Block) -> bool:
        """valid(v), cached per block hash for the height. Consensus's own rules: the block
        names the proposer of the round it was built in and carries a valid certificate of
        its parent. Everything else (chain, height, parent, time order, transactions, state
        root) is the ledger's, asked through ``App.validate_block``."""
        s = self._s
        known = s.validity.get(block.hash)
        if known is None:
            known = s.validity[block.hash] = (
                block.header.proposer == self.validators.proposer(block.height, block.header.round)
                and (
                    block.last_cert is None
                    or _certified(block.last_cert, self.validators, self.chain_id)
                )
                and self._app_accepts(block)
            )
        return known

    def _app_accepts(self, block: Block) -> bool:
        try:
            self.app.validate_block(block)
        except InvalidBlock:
            return False
        return True

    def _decide(self, block: Block, cert: CommitCertificate) -> None:
        """Lines 51-54, split in two: commit now, start the next height on the COMMIT
        timeout, once the caller has applied the block."""
        s = self._s
        s.step, s.decision = Step.COMMIT, (block, cert)
        ours = s.own.get((cert.round, Step.PRECOMMIT))
        useful = isinstance(ours, Vote) and ours.block_hash == block.hash
        self._last_precommit = ours if useful else None
        self._actions.append(Commit(block, cert))
        self._schedule(TimeoutKind.COMMIT)

    def _next_height(self) -> None:
        decision = self._s.decision
        assert decision is not None
        self._height += 1
        self._last_cert = decision[1]
        # Line 53: the lock and the valid value are reset with everything else.
        self._s = _Height(HeightVoteSet(self.validators))
        # We progressed: the claims still above us are believed afresh.
        self._ahead = {i: (h, AHEAD_TICKS) for i, (h, _) in self._ahead.items() if h > self._height}
        self._prune_evidence()
        pending = self._pending_commits.pop(self._height, None)
        if pending is not None:
            self._on_commit_received(*pending)
            if self._s.step is Step.COMMIT:
                return
        buffered = list(self._future.values())
        self._future = {}
        self._enter_height()  # line 54
        for msg in buffered:
            self._on_message(msg)

    # --- inputs -------------------------------------------------------------------------

    def _on_message(self, msg: Message) -> None:
        """Memory: a message of our height is kept only up to ``ROUND_WINDOW`` rounds
        above ours; further ahead only the sender's highest round is (for line 55), and
        peers resend their messages of the round they are in once we get there."""
        signer = signer_of(msg)
        if signer not in self.validators:
            return
        index = self.validators.index(signer)
        if msg.height == self._height:
            if self._s.step is Step.COMMIT:
                return
            if msg.round > self._s.round + ROUND_WINDOW:
                self._s.votes.note_far_round(index, msg.round)
            else:
                self._add_message(msg)
            return
        if msg.height < self._height:
            return
        claimed, ticks = self._ahead.get(index, (0, AHEAD_TICKS))
        self._ahead[index] = (max(claimed, msg.height), ticks)
        if msg.height == self._height + 1:
            self._buffer_next_height(msg)
        elif self._sync_asked_at != self._height:
            # Two heights ahead cannot be pipelining: we missed a decision.
            self._sync_asked_at = self._height
            self._actions.append(RequestSync(self._height))

    def _buffer_next_height(self, msg: Message) -> None:
        """Keep a message for height + 1 until we get there (a peer that decided first
        already proposes and votes there). Memory: proposals only from the proposer of
        (height + 1, r) for r <= ROUND_WINDOW, ``MAX_PROPOSALS_PER_ROUND`` per round (at
        most 20 blocks of up to ``MAX_MESSAGE_BYTES``); ``MAX_FUTURE_MESSAGES`` messages
        in all (votes ~200 bytes). What does not fit is dropped; resends bring it back."""
        key = _message_key(msg)
        if key in self._future or msg.round > ROUND_WINDOW:
            return
        if isinstance(msg, Proposal):
            if msg.proposer != self.validators.proposer(self._height + 1, msg.round):
                return
            held = sum(
                isinstance(m, Proposal) and m.round == msg.round for m in self._future.values()
            )
            if held >= MAX_PROPOSALS_PER_ROUND:
                return
        if len(self._future) < MAX_FUTURE_MESSAGES:
            self._future[key] = msg

    def _add_message(self, msg: Message) -> None:
        if isinstance(msg, Proposal):
            self._add_proposal(msg)
        else:
            self._add_vote(msg)

    def _add_proposal(self, proposal: Proposal) -> None:
        s = self._s
        if proposal.proposer != self.validators.proposer(self._height, proposal.round):
            return  # only the round's proposer may propose (lines 22, 28, 36, 49)
        if proposal.block.header.round > proposal.round:
            return  # a block cannot have been built in a later round than it is proposed in
        s.votes.add_sender(proposal.round, self.validators.index(proposal.proposer))
        held = s.proposals.setdefault(proposal.round, [])
        for other in held:
            if other.block.hash == proposal.block.hash and other.pol_round == proposal.pol_round:
                return
        if held:
            self._record(held[0], proposal)
        if len(held) < MAX_PROPOSALS_PER_ROUND:
            held.append(proposal)
            s.blocks.setdefault(proposal.block.hash, proposal.block)

    def _add_vote(self, vote: Vote) -> None:
        _, prior = self._s.votes.add(vote)
        if prior is not None and prior.block_hash != vote.block_hash:
            self._record(prior, vote)

    def _record(self, first: Message, second: Message) -> None:
        """Keep the first proof that a validator equivocated, per validator, height and
        message kind: one proves it faulty, more add nothing; the caller is given it to
        put on the chain. Memory: at most 3 records (~1 KB each: proposals keep only their
        block's header) per validator per height, for the last ``EVIDENCE_HEIGHTS`` heights."""
        evidence = detect(first, second)
        if evidence is None:
            return
        if evidence.key not in self._evidence_slots:
            self._evidence_slots.add(evidence.key)
            self._evidence.append(evidence.without_blocks())
            self._actions.append(ReportEvidence(self._evidence[-1]))

    def _prune_evidence(self) -> None:
        oldest = self._height - EVIDENCE_HEIGHTS
        if self._evidence and self._evidence[0].height < oldest:
            self._evidence = [e for e in self._evidence if e.height >= oldest]
            self._evidence_slots = {s for s in self._evidence_slots if s[1] >= oldest}

    def _on_txs_available(self, height: int) -> None:
        self._txs_height = max(self._txs_height, height)
        if height == self._height:
            self._stop_waiting_for_txs()

    def _stop_waiting_for_txs(self) -> None:
        """Begin round 0 (lines 14-21) if it still waits for txs, on TxsAvailable or when
        the empty block interval ran out."""
        s = self._s
        if s.waiting_for_txs and s.round == 0 and s.step is Step.PROPOSE:
            s.waiting_for_txs = False
            self._propose_or_wait(0)

    def _on_timeout(self, event: TimeoutFired) -> None:
        s = self._s
        if event.kind is TimeoutKind.RESEND:
            if (event.height, event.round) == self._resend_key:
                self._resend()
                self._schedule_resend()
            return
        if event.height != self._height:
            return
        if event.kind is TimeoutKind.COMMIT:
            if s.step is Step.COMMIT:
                self._next_height()
            return
        if event.kind is TimeoutKind.EMPTY_BLOCK:
            self._stop_waiting_for_txs()
            return
        if event.round != s.round:
            return
        if event.kind is TimeoutKind.PROPOSE:
            self._on_timeout_propose()
        elif event.kind is TimeoutKind.PREVOTE:
            self._on_timeout_prevote()
        elif event.kind is TimeoutKind.PRECOMMIT:
            self._on_timeout_precommit()

    def _on_commit_received(self, block: Block, cert: CommitCertificate) -> None:
        if cert.height != block.height or cert.block_hash != block.hash:
            return
        if block.height > self._height:
            if (
                block.height not in self._pending_commits
                and block.height - self._height <= MAX_PENDING_COMMITS
                and _certified(cert, self.validators, self.chain_id)
            ):
                self._pending_commits[block.height] = (block, cert)
            return
        if block.height < self._height or self._s.step is Step.COMMIT:
            return
        if _certified(cert, self.validators, self.chain_id) and self._valid(block):
            self._decide(block, cert)

    def _resend(self) -> None:
        """Re-broadcast what we signed in the current and previous round, our precommit
        for the last decision, and ask for sync if we seem to be behind."""
        s = self._s
        for (round, _), msg in s.own.items():
            # The previous round too: we may have left it on 2f+1 precommits that include
            # ours, and peers still there need ours to leave it as well.
            if s.round - 1 <= round <= s.round:
                self._actions.append(Broadcast(msg))
                if isinstance(msg, Proposal):
                    self._actions.extend(Broadcast(v) for v in self._pol_votes(msg))
        if self._last_precommit is not None:
            self._actions.append(Broadcast(self._last_precommit))
        if self._behind() or s.missing_block:
            self._actions.append(RequestSync(self._height))

    def _behind(self) -> bool:
        """Whether claims of a higher height make a sync request worth it (one resend tick).

        f+1 validators claiming it include an honest one. One validator alone may be the
        only one that can serve the block (the rest wait for a precommit it lost in a
        crash), so its claim is believed too, but only for ``AHEAD_TICKS`` ticks per
        height we reach: a byzantine validator claiming height 2**63-1 costs that many
        requests per height, not one per tick for ever."""
        if len(self._ahead) > self.validators.f:
            return True
        believed = False
        for index, (claimed, ticks) in self._ahead.items():
            if ticks > 0:
                self._ahead[index] = (claimed, ticks - 1)
                believed = True
        return believed

    # --- outputs ------------------------------------------------------------------------

    def _prevote(self, block_hash: bytes | None) -> None:
        self._vote(VoteKind.PREVOTE, block_hash)
        self._s.step = Step.PREVOTE

    def _vote(self, kind: VoteKind, block_hash: bytes | None) -> None:
        """A prevote, or a precommit for nil."""
        try:
            vote = self.signer.sign_vote(kind, self._height, self._s.round, block_hash)
        except DoubleSignRefused:
            return  # signed otherwise here before a restart: stay silent, the step advances
        self._broadcast(vote)

    def _lock_and_precommit(self, block: Block, polka: list[Vote]) -> None:
        try:
            vote = self.signer.lock_and_precommit(self._height, self._s.round, block, polka)
        except DoubleSignRefused:
            return
        self._broadcast(vote)

    def _broadcast(self, msg: Message) -> None:
        step = Step.PROPOSE if isinstance(msg, Proposal) else Step.of_vote(msg.kind)
        self._s.own[(msg.round, step)] = msg
        self._actions.append(Broadcast(msg))
        self._add_message(msg)  # we count our own messages as every peer does

    def _schedule(self, kind: TimeoutKind) -> None:
        s = self._s
        delay = self.timeouts.delay(kind, s.round)
        self._actions.append(ScheduleTimeout(TimeoutFired(kind, self._height, s.round), delay))

    def _schedule_resend(self) -> None:
        self._resend_key = (self._height, self._s.round)
        self._schedule(TimeoutKind.RESEND)


def _certified(cert: CommitCertificate, validators: ValidatorSet, chain_id: str) -> bool:
    try:
        verify_certificate(cert, validators, chain_id)
    except InvalidCertificate:
        return False
    return True


def _message_key(msg: Message) -> tuple:
    if isinstance(msg, Proposal):
        return ("proposal", msg.round, msg.proposer, msg.block.hash, msg.pol_round)
    return (slot_kind(msg), msg.round, msg.validator, msg.block_hash)
