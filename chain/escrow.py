"""What the ledger holds in escrow: milestone contracts and swap offers.

Each is a state entry keyed by the id of the tx that opened it: unique (a tx applies at
most once) and known to its sender as soon as it is signed. A record is immutable; a rule
that settles part of it writes a new one into the ``Changes`` overlay, so a rejected tx or
a block thrown away leaves the committed record as it was. Settled records stay in the
state (and its root), so a late release, accept or cancel is refused with the reason
that says what happened to the money, and the API can still show them.

Whatever a record still locks is part of its token's outstanding supply: per token, the
balances plus what open contracts and offers lock add up to minted minus burned.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import IntEnum

from chain.tx import Milestone


class Settlement(IntEnum):
    """What happened to one milestone's amount: each happens to it at most once."""

    LOCKED = 0
    RELEASED = 1  # paid to the supplier on the approver's word
    REFUNDED = 2  # returned to the buyer: after the expiry, or on the supplier's cancel


class OfferStatus(IntEnum):
    OPEN = 0
    TAKEN = 1  # accepted: both legs settled
    CANCELLED = 2  # the locked amount went back to the maker


@dataclass(frozen=True, slots=True)
class Contract:
    """A contract in escrow; ``settled`` holds one Settlement per milestone."""

    buyer: bytes
    supplier: bytes
    approver: bytes
    token: str
    expiry_ms: int
    terms_hash: bytes
    milestones: tuple[Milestone, ...]
    settled: tuple[Settlement, ...]

    @property
    def locked(self) -> int:
        """What the contract still holds: the amounts of its unsettled milestones."""
        return self.total(Settlement.LOCKED)

    @property
    def is_open(self) -> bool:
        return Settlement.LOCKED in self.settled

    def total(self, settlement: Settlement) -> int:
        pairs = zip(self.milestones, self.settled, strict=True)
        return sum(m.amount for m, s in pairs if s is settlement)

    def index(self, name: str) -> int | None:
        """The position of the milestone named ``name``, or None."""
        for position, milestone in enumerate(self.milestones):
            if milestone.name == name:
                return position
        return None

    def settle(self, positions: Iterable[int], settlement: Settlement) -> Contract:
        """This contract with the milestones at ``positions`` settled as ``settlement``."""
        settled = list(self.settled)
        for position in positions:
            settled[position] = settlement
        return replace(self, settled=tuple(settled))

    def to_list(self) -> list:
        """The record as plain values: its state entry and its stored form."""
        return [
            self.buyer,
            self.supplier,
            self.approver,
            self.token,
            self.expiry_ms,
            self.terms_hash,
            [m.to_list() for m in self.milestones],
            [int(s) for s in self.settled],
        ]

    @classmethod
    def from_list(cls, fields: list) -> Contract:
        """From ``to_list`` values this node stored (not from peers: no limits needed)."""
        buyer, supplier, approver, token, expiry_ms, terms_hash, milestones, settled = fields
        return cls(
            buyer,
            supplier,
            approver,
            token,
            expiry_ms,
            terms_hash,
            tuple(Milestone(*m) for m in milestones),
            tuple(Settlement(s) for s in settled),
        )


@dataclass(frozen=True, slots=True)
class Offer:
    """A PvP swap offer: ``amount`` of ``token`` locked from ``maker``, for ``ask_amount``
    of ``ask_token`` from ``counterparty`` (empty: anyone) before ``expiry_ms``."""

    maker: bytes
    counterparty: bytes
    token: str
    amount: int
    ask_token: str
    ask_amount: int
    expiry_ms: int
    status: OfferStatus = OfferStatus.OPEN
    taker: bytes = b""  # who accepted it, once taken

    @property
    def locked(self) -> int:
        return self.amount if self.status is OfferStatus.OPEN else 0

    def to_list(self) -> list:
        return [
            self.maker,
            self.counterparty,
            self.token,
            self.amount,
            self.ask_token,
            self.ask_amount,
            self.expiry_ms,
            int(self.status),
            self.taker,
        ]

    @classmethod
    def from_list(cls, fields: list) -> Offer:
        """From ``to_list`` values this node stored."""
        *terms, status, taker = fields
        return cls(*terms, status=OfferStatus(status), taker=taker)
