"""What a byzantine validator sends in the simulator: its honest engine's messages, rewritten.

Like Diem's Twins and ByzzFuzz, a faulty validator runs the real ``Engine``; its faults
live on its outbound side only (or, for ``double-vote``, in a second engine holding its
key), so every behaviour here is one a holder of a real key can show, and no hand-written
evil engine drifts away from the code it attacks. What a rewriter changes it re-signs
with the validator's own key, outside its ``Signer`` (that is what makes it byzantine):
honest nodes see valid signatures and must stay safe and live by the protocol alone.

* ``equivocate``: its proposal goes to some peers with its block and to others with a
  conflicting valid block; some peers get both.
* ``double-vote``: its key runs in two engines (Twins), each signing freely.
* ``silent``: sends nothing and serves no blocks.
* ``invalid-block``: its proposals carry a block that does not re-execute, and its votes
  for its own block are rewritten to vote for that block.
* ``many-values``: every proposal and vote goes out with ``FANOUT`` conflicting ones for
  the same (height, round, step), in a different order to each peer. The votes name the
  real blocks of the height it knows of (its own conflicting proposals, the blocks it
  voted for) as well as nil and random hashes, so honest nodes that received different
  proposals first see each of their values backed.
* ``mutate``: ByzzFuzz's message mutations, drawn per message and per peer: a field
  dropped or garbled on the wire, the round or height moved, the value, the vote kind or
  the proof-of-lock round changed, the message withheld, or an old one replayed.
* ``far-future``: every vote also goes out for height 2**63-1, for a height 2 to 1,000
  ahead, for a round far beyond the current one, and for the next height.
* ``flood``: ``many-values`` and ``far-future`` at once: the most a single key can make
  honest engines hold (``consensus.engine`` bounds it; the simulator tests the bounds).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, MutableSequence, Sequence
from dataclasses import replace
from enum import StrEnum
from hashlib import sha256
from typing import Any, Protocol, TypeVar

import msgpack
from nacl.signing import SigningKey

from chain.block import MAX_HEIGHT, Block
from consensus.engine import ROUND_WINDOW
from consensus.messages import MAX_ROUND, Message, Proposal, Vote, VoteKind, encode_message

T = TypeVar("T")


class Rng(Protocol):
    """The seeded source of every choice a byzantine validator makes; the simulator and the
    node's fault layer pass a ``random.Random`` built from their seed, so consensus/ holds
    no randomness of its own and a run replays exactly."""

    def random(self) -> float: ...

    def randint(self, a: int, b: int) -> int: ...

    def randrange(self, stop: int) -> int: ...

    def randbytes(self, n: int) -> bytes: ...

    def choice(self, seq: Sequence[T]) -> T: ...

    def shuffle(self, x: MutableSequence[Any]) -> None: ...


FANOUT = 6  # conflicting values a many-values validator adds to each message
REPLAYS = 16  # own messages a mutating validator remembers to replay


class ByzantineMode(StrEnum):
    EQUIVOCATE = "equivocate"
    DOUBLE_VOTE = "double-vote"
    SILENT = "silent"
    INVALID_BLOCK = "invalid-block"
    MANY_VALUES = "many-values"
    MUTATE = "mutate"
    FAR_FUTURE = "far-future"
    FLOOD = "flood"
    MIXED = "mixed"  # each byzantine validator draws one of the above from the seed


Sends = list[tuple[int, bytes]]  # (peer, wire bytes), in sending order


class Outbox:
    """The outbound side of one byzantine validator: what each peer receives when its
    engine broadcasts ``msg``. Every random choice comes from the simulation's ``rng``."""

    def __init__(self, mode: ByzantineMode, key: SigningKey, chain_id: str, rng: Rng) -> None:
        self.mode = mode
        self.key = key
        self.chain_id = chain_id
        self.rng = rng
        self._invalid: dict[bytes, bytes] = {}  # invalid-block: our block's hash -> the bad one
        self._sent: deque[Message] = deque(maxlen=REPLAYS)  # mutate: candidates for replay
        self._blocks: dict[int, list[bytes]] = {}  # height -> hashes of blocks we sent or voted

    def rewrite(self, msg: Message, peers: Sequence[int]) -> Sends:
        self._learn(msg)
        match self.mode:
            case ByzantineMode.SILENT:
                return []
            case ByzantineMode.EQUIVOCATE if isinstance(msg, Proposal):
                return self._equivocate(msg, peers)
            case ByzantineMode.INVALID_BLOCK:
                return _to_all(peers, [self._invalidate(msg)])
            case ByzantineMode.MANY_VALUES:
                return self._shuffled(peers, self._many_values(msg))
            case ByzantineMode.MUTATE:
                return self._mutate(msg, peers)
            case ByzantineMode.FAR_FUTURE:
                return _to_all(peers, [msg, *self._far_future(msg)])
            case ByzantineMode.FLOOD:
                return self._shuffled(peers, self._many_values(msg) + self._far_future(msg))
        return _to_all(peers, [msg])

    def _learn(self, msg: Message) -> None:
        """Remember the blocks of the last few heights that ``msg`` names."""
        value = msg.block.hash if isinstance(msg, Proposal) else msg.block_hash
        known = self._blocks.setdefault(msg.height, [])
        if value is not None and value not in known:
            known.append(value)
        for height in [h for h in self._blocks if h < msg.height - 2]:
            del self._blocks[height]

    def _value(self, height: int) -> bytes | None:
        """A value to vote for at ``height``: a block we know of, nil, or a random hash."""
        known = self._blocks.get(height, [])
        return self.rng.choice([*known, *known, None, self.rng.randbytes(32)])

    def _sign(self, msg: Message) -> Message:
        return replace(msg, signature=self.key.sign(msg.sign_bytes(self.chain_id)).signature)

    def _shuffled(self, peers: Sequence[int], msgs: list[Message]) -> Sends:
        wire = [encode_message(m) for m in msgs]
        sends: Sends = []
        for peer in peers:
            self.rng.shuffle(wire)
            sends += [(peer, data) for data in wire]
        return sends

    def _equivocate(self, proposal: Proposal, peers: Sequence[int]) -> Sends:
        """The real proposal to some peers, a conflicting valid one to the others, and
        both to a few (so that honest nodes can catch it)."""
        real = encode_message(proposal)
        fake = encode_message(self._sign(replace(proposal, block=_other_block(proposal, 1))))
        sends: Sends = []
        for peer in peers:
            first, second = (real, fake) if self.rng.random() < 0.5 else (fake, real)
            sends.append((peer, first))
            if self.rng.random() < 0.3:
                sends.append((peer, second))
        return sends

    def _invalidate(self, msg: Message) -> Message:
        """Swap our block for one with a wrong state root, and our votes for it along."""
        if isinstance(msg, Proposal):
            header = msg.block.header
            bad_root = sha256(b"not the state root" + header.state_root).digest()
            bad = replace(msg.block, header=replace(header, state_root=bad_root))
            self._invalid[msg.block.hash] = bad.hash
            return self._sign(replace(msg, block=bad))
        if msg.block_hash in self._invalid:
            return self._sign(replace(msg, block_hash=self._invalid[msg.block_hash]))
        return msg

    def _many_values(self, msg: Message) -> list[Message]:
        """``msg`` and ``FANOUT`` conflicting messages for its slot: other valid blocks
        for a proposal; nil and random hashes for a vote."""
        if isinstance(msg, Proposal):
            others = [replace(msg, block=_other_block(msg, i)) for i in range(1, FANOUT + 1)]
            for other in others:
                self._learn(other)
        else:
            values = dict.fromkeys(self._value(msg.height) for _ in range(FANOUT))  # in order
            others = [replace(msg, block_hash=v) for v in values if v != msg.block_hash]
        return [msg, *map(self._sign, others)]

    def _far_future(self, msg: Message) -> list[Message]:
        """Votes claiming heights and rounds we are not at: 2**63-1, 2 to 1,000 heights
        ahead, the next height, and a round beyond the window engines keep messages for."""
        if not isinstance(msg, Vote):
            return []
        rng, h, r = self.rng, msg.height, msg.round
        far_round = rng.choice([rng.randint(1, 50), rng.randint(1, MAX_ROUND - r)])
        claims = [
            replace(msg, height=MAX_HEIGHT),
            replace(msg, height=min(h + rng.randint(2, 1_000), MAX_HEIGHT)),
            replace(msg, height=h + 1, round=rng.randint(0, ROUND_WINDOW), block_hash=None),
            replace(msg, round=r + ROUND_WINDOW + far_round),
        ]
        return [self._sign(m) for m in claims if m.round <= MAX_ROUND]

    def _mutate(self, msg: Message, peers: Sequence[int]) -> Sends:
        """ByzzFuzz: each peer gets ``msg`` unchanged or with one or two mutations."""
        self._sent.append(msg)
        sends: Sends = []
        for peer in peers:
            out: Message | None = msg
            for _ in range(self.rng.choice([0, 0, 1, 1, 2])):
                if out is None:
                    break
                out = self.rng.choice(_MUTATIONS)(self, out)
            if out is None:
                continue
            data = encode_message(out if out is msg else self._sign(out))
            if self.rng.random() < 0.1:
                data = self._garble(data)
            sends.append((peer, data))
        return sends

    def _garble(self, data: bytes) -> bytes:
        """A field dropped, repeated or replaced by a value of another type, after signing."""
        fields = msgpack.unpackb(data, raw=False)
        at = self.rng.randrange(len(fields))
        action = self.rng.randrange(3)
        if action == 0:
            del fields[at]
        elif action == 1:
            fields.insert(at, fields[at])
        else:
            fields[at] = self.rng.choice([None, -1, 2**64 - 1, 1.5, "x", b"", [fields[at]]])
        return msgpack.packb(fields, use_bin_type=True)

    def _withhold(self, msg: Message) -> Message | None:
        return None

    def _move_round(self, msg: Message) -> Message:
        return replace(msg, round=max(0, msg.round + self.rng.choice([-1, 1, 1, 2, 7])))

    def _move_height(self, msg: Message) -> Message:
        return replace(msg, height=max(1, msg.height + self.rng.choice([-1, 1, 2])))

    def _change_value(self, msg: Message) -> Message:
        if isinstance(msg, Proposal):
            other = replace(msg, block=_other_block(msg, self.rng.randint(1, 1_000)))
            self._learn(other)
            return other
        return replace(msg, block_hash=self._value(msg.height))

    def _change_kind_or_pol_round(self, msg: Message) -> Message:
        if isinstance(msg, Proposal):
            return replace(msg, pol_round=self.rng.randint(-1, max(-1, msg.round - 1)))
        other = VoteKind.PRECOMMIT if msg.kind is VoteKind.PREVOTE else VoteKind.PREVOTE
        return replace(msg, kind=other)

    def _replay(self, msg: Message) -> Message:
        return self.rng.choice(self._sent)


_MUTATIONS: tuple[Callable[[Outbox, Message], Message | None], ...] = (
    Outbox._withhold,
    Outbox._move_round,
    Outbox._move_height,
    Outbox._change_value,
    Outbox._change_kind_or_pol_round,
    Outbox._replay,
)


def _to_all(peers: Sequence[int], msgs: list[Message]) -> Sends:
    wire = [encode_message(m) for m in msgs]
    return [(peer, data) for peer in peers for data in wire]


def _other_block(proposal: Proposal, shift_ms: int) -> Block:
    """A valid block conflicting with the proposal's: the same but dated a little later."""
    header = proposal.block.header
    return replace(proposal.block, header=replace(header, time_ms=header.time_ms + shift_ms))
