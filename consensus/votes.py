"""The votes of one height, counted as Algorithm 1 counts them.

Like CometBFT's ``HeightVoteSet``, the engine asks this module the paper's questions
(``votes.prevotes(r).two_thirds_majority()``, ``votes.precommits(r).has_two_thirds_any()``)
and keeps none of the counting itself.

Algorithm 1 counts messages from distinct validators for a value. An equivocating
validator's votes therefore count for every value it signed, and the engine keeps the
conflict as evidence. Counting only each validator's first vote instead would let an
equivocator show different nodes different quorums, so that a proof of lock relayed to a
peer would not add up there and the network could stall. Safety is unaffected: two
quorums for different values in one round share at least f+1 validators, so one honest
validator would have to have voted twice.
"""

from __future__ import annotations

from consensus.messages import Vote, VoteKind
from consensus.validators import ValidatorSet

MAX_VALUES_PER_VALIDATOR = 3  # values one validator's votes count for in one slot


class VoteSet:
    """The votes of one (round, vote kind): who voted, and who voted for each value.

    Memory: a validator's votes for more than ``MAX_VALUES_PER_VALIDATOR`` values are
    dropped, unless f+1 validators (so at least one honest) already voted for the value:
    at most n - f values per slot can have that, so memory stays bounded, and the same
    stall cannot come back through the bound (an equivocator showing a peer three junk
    values first, then its vote in a relayed proof of lock being dropped there).
    """

    __slots__ = ("by_value", "first", "validators")

    def __init__(self, validators: ValidatorSet) -> None:
        self.validators = validators
        self.first: dict[int, Vote] = {}  # each validator's first vote in this slot
        self.by_value: dict[bytes | None, dict[int, Vote]] = {}

    def add(self, index: int, vote: Vote) -> tuple[bool, Vote | None]:
        """Record ``vote``; returns (counted, earlier conflicting vote of the same validator)."""
        voters = self.by_value.get(vote.block_hash)
        if voters is not None and index in voters:
            return False, None
        prior = self.first.get(index)
        backed = voters is not None and len(voters) > self.validators.f  # one of them honest
        if prior is None:
            self.first[index] = vote
        elif (
            not backed
            and sum(index in v for v in self.by_value.values()) >= MAX_VALUES_PER_VALIDATOR
        ):
            return False, prior
        if voters is None:
            voters = self.by_value[vote.block_hash] = {}
        voters[index] = vote
        return True, prior

    def has_two_thirds_any(self) -> bool:
        """2f+1 votes from distinct validators, for any values ("2f+1 ⟨PREVOTE, h, r, *⟩")."""
        return len(self.first) >= self.validators.quorum

    def has_two_thirds_for(self, block_hash: bytes | None) -> bool:
        """2f+1 votes for ``block_hash`` (None: for nil)."""
        return self.count(block_hash) >= self.validators.quorum

    def two_thirds_majority(self) -> bytes | None:
        """The non-nil value with 2f+1 votes, if any (only one, unless > f are faulty)."""
        for block_hash, voters in self.by_value.items():
            if block_hash is not None and len(voters) >= self.validators.quorum:
                return block_hash
        return None

    def count(self, block_hash: bytes | None) -> int:
        return len(self.by_value.get(block_hash, ()))

    def votes_for(self, block_hash: bytes | None) -> list[Vote]:
        """The votes for a value, in validator order."""
        voters = self.by_value.get(block_hash, {})
        return [voters[i] for i in sorted(voters)]

    def voters(self) -> list[int]:
        """Indexes of the validators with any vote here, in genesis order."""
        return sorted(self.first)


class HeightVoteSet:
    """Every vote of one height by (round, kind), and who sent anything in each round.

    Memory: the engine adds votes only for rounds up to its own round plus a small window
    (``consensus.engine.ROUND_WINDOW``); of a validator's messages in rounds beyond that,
    only the highest round is kept (``note_far_round``: one integer per validator), which
    is all line 55 needs. Each kept (round, kind) holds at most
    n * (``MAX_VALUES_PER_VALIDATOR`` + n - f) votes of ~200 bytes (see ``VoteSet``);
    ``kept`` counts them all.
    """

    def __init__(self, validators: ValidatorSet) -> None:
        self.validators = validators
        self._sets: dict[tuple[int, VoteKind], VoteSet] = {}
        self._senders: dict[int, set[int]] = {}  # round -> validator indexes
        self._far: dict[int, int] = {}  # validator index -> highest round beyond the window
        self.precommit_quorum_rounds: list[int] = []  # a value reached 2f+1 precommits here
        self.kept = 0  # votes held, over every round and kind

    def prevotes(self, round: int) -> VoteSet:
        return self._get(round, VoteKind.PREVOTE)

    def precommits(self, round: int) -> VoteSet:
        return self._get(round, VoteKind.PRECOMMIT)

    def _get(self, round: int, kind: VoteKind) -> VoteSet:
        found = self._sets.get((round, kind))
        return found if found is not None else VoteSet(self.validators)  # empty, not kept

    def add(self, vote: Vote) -> tuple[bool, Vote | None]:
        """Record a vote from a validator; returns (counted, the same validator's earlier
        conflicting vote in this slot, if any)."""
        index = self.validators.index(vote.validator)
        votes = self._sets.get((vote.round, vote.kind))
        if votes is None:
            votes = self._sets[(vote.round, vote.kind)] = VoteSet(self.validators)
        counted, prior = votes.add(index, vote)
        if counted:
            self.kept += 1
            self.add_sender(vote.round, index)
            if (
                vote.kind is VoteKind.PRECOMMIT
                and vote.block_hash is not None
                and votes.count(vote.block_hash) == self.validators.quorum
            ):
                self.precommit_quorum_rounds.append(vote.round)
        return counted, prior

    def add_sender(self, round: int, index: int) -> None:
        """A message of any kind from validator ``index`` in ``round`` (proposals count too)."""
        self._senders.setdefault(round, set()).add(index)

    def note_far_round(self, index: int, round: int) -> None:
        """A message from validator ``index`` in a round too far ahead to be kept."""
        self._far[index] = max(round, self._far.get(index, round))

    @property
    def far_rounds(self) -> int:
        """Validators whose highest round beyond the window is kept (one integer each)."""
        return len(self._far)

    def highest_round_with_f_plus_one_above(self, round: int) -> int | None:
        """The highest round above ``round`` in which f+1 validators (so at least one
        honest) sent something; None if there is none. Of rounds too far ahead only each
        validator's highest is known: if f+1 validators sent messages far ahead, the
        lowest of their rounds is one that an honest validator has reached or passed."""
        f = self.validators.f
        higher = [r for r, who in self._senders.items() if r > round and len(who) > f]
        far = sorted(self._far.values(), reverse=True)
        if len(far) > f and far[f] > round:
            higher.append(far[f])
        return max(higher, default=None)
