"""What an engine reports about itself, and what the reports of several say about a stall.

``Engine.status()`` returns an ``EngineStatus``; a node serves it as JSON (``to_json``)
and `depnet status` reads it back from every live node (``from_json``) to explain why
no block commits (``explain_stall``). The reasoning is Algorithm 1's: a round ends with
2f+1 prevotes and then 2f+1 precommits, so the validators missing from the first vote
kind short of its quorum are the reason the round cannot end.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from consensus.messages import Step, VoteKind


@dataclass(frozen=True, slots=True)
class EngineStatus:
    """One engine at one instant: where it is, and whose votes it holds in its round."""

    height: int
    round: int
    step: Step
    proposer: bytes  # of the current round
    proposal: bytes | None  # hash of the first proposal held for the current round
    prevotes: tuple[bytes, ...]  # validators whose votes of the current round we hold
    precommits: tuple[bytes, ...]
    quorum: int
    validators: int
    locked_round: int
    valid_round: int
    evidence: int

    def votes(self, kind: VoteKind) -> tuple[bytes, ...]:
        return self.prevotes if kind is VoteKind.PREVOTE else self.precommits

    def to_json(self) -> dict:
        return {
            "height": self.height,
            "round": self.round,
            "step": self.step.name.lower(),
            "proposer": self.proposer.hex(),
            "proposal": None if self.proposal is None else self.proposal.hex(),
            "prevotes": [k.hex() for k in self.prevotes],
            "precommits": [k.hex() for k in self.precommits],
            "quorum": self.quorum,
            "validators": self.validators,
            "locked_round": self.locked_round,
            "valid_round": self.valid_round,
            "evidence": self.evidence,
        }

    @classmethod
    def from_json(cls, data: Mapping) -> EngineStatus:
        """The inverse of ``to_json``; ValueError names the first field that is wrong."""
        try:
            return cls(
                height=_int(data["height"]),
                round=_int(data["round"]),
                step=Step[str(data["step"]).upper()],
                proposer=bytes.fromhex(data["proposer"]),
                proposal=None if data["proposal"] is None else bytes.fromhex(data["proposal"]),
                prevotes=tuple(bytes.fromhex(k) for k in data["prevotes"]),
                precommits=tuple(bytes.fromhex(k) for k in data["precommits"]),
                quorum=_int(data["quorum"]),
                validators=_int(data["validators"]),
                locked_round=_int(data["locked_round"]),
                valid_round=_int(data["valid_round"]),
                evidence=_int(data["evidence"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an engine status ({type(exc).__name__}: {exc})") from None


def _int(value: object) -> int:
    if type(value) is not int:
        raise ValueError(f"{value!r} is not an integer")
    return value


@dataclass(frozen=True, slots=True)
class Stall:
    """The round that tells most about a stall, with the votes the live engines hold in it.
    Validator keys are in genesis order."""

    height: int
    round: int
    quorum: int
    validators: tuple[bytes, ...]
    prevotes: tuple[bytes, ...]
    precommits: tuple[bytes, ...]
    proposer: bytes
    proposal_seen: bool

    @property
    def short(self) -> VoteKind | None:
        """The first vote kind of the round short of its quorum, if any."""
        for kind in (VoteKind.PREVOTE, VoteKind.PRECOMMIT):
            if len(self.votes(kind)) < self.quorum:
                return kind
        return None

    @property
    def silent(self) -> tuple[bytes, ...]:
        """The validators missing from the vote kind short of its quorum."""
        kind = self.short
        if kind is None:
            return ()
        return tuple(v for v in self.validators if v not in self.votes(kind))

    def votes(self, kind: VoteKind) -> tuple[bytes, ...]:
        return self.prevotes if kind is VoteKind.PREVOTE else self.precommits

    def to_json(self, name: Callable[[bytes], str]) -> dict:
        """The stall with validators named by ``name`` (a bank name), and a one-line
        summary of it."""
        kind = self.short
        summary = f"stalled at height {self.height} round {self.round}: "
        if kind is None:
            summary += "a quorum has voted but the block is not committed yet"
        else:
            summary += (
                f"{kind.name.lower()}s from {len(self.votes(kind))} of {len(self.validators)} "
                f"banks ({', '.join(map(name, self.silent))} silent); {self.quorum} needed"
            )
        if not self.proposal_seen:
            summary += f"; no proposal from {name(self.proposer)}, this round's proposer"
        return {
            "height": self.height,
            "round": self.round,
            "quorum": self.quorum,
            "validators": len(self.validators),
            "prevotes": [name(v) for v in self.prevotes],
            "precommits": [name(v) for v in self.precommits],
            "silent": [name(v) for v in self.silent],
            "proposer": name(self.proposer),
            "summary": summary,
        }


def explain_stall(statuses: Sequence[EngineStatus], validators: Sequence[bytes]) -> Stall:
    """Merge the live engines' views of the round that tells most about a stall: the
    lowest current round among the engines at the highest height (engines further ahead
    have already voted in it). ``statuses`` must not be empty."""
    height = max(s.height for s in statuses)
    at_height = [s for s in statuses if s.height == height]
    round_ = min(s.round for s in at_height)
    in_round = [s for s in at_height if s.round == round_]

    def merged(kind: VoteKind) -> tuple[bytes, ...]:
        seen = {v for s in in_round for v in s.votes(kind)}
        return tuple(v for v in validators if v in seen)

    return Stall(
        height=height,
        round=round_,
        quorum=in_round[0].quorum,
        validators=tuple(validators),
        prevotes=merged(VoteKind.PREVOTE),
        precommits=merged(VoteKind.PRECOMMIT),
        proposer=in_round[0].proposer,
        proposal_seen=any(s.proposal is not None for s in in_round),
    )
