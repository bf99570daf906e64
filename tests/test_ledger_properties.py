"""Model-based tests: random sequences of valid and invalid transactions of every kind,
blocks at times that let expiries and due times pass, and store reopenings, checked after
every step against a model made of plain dicts.

The model restates the ledger rules in a few lines; hypothesis shrinks any disagreement
to the shortest sequence of operations that shows it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from chain.errors import Reason, TxRejected
from chain.escrow import Contract, Offer, OfferStatus, Settlement
from chain.state import Changes, State, check_tx, execute_block
from chain.store import Store
from chain.tx import (
    MAX_AMOUNT,
    ContractTerms,
    Milestone,
    Ref,
    SwapTerms,
    Tx,
    TxKind,
    decode_tx,
    sign_tx,
)
from tests.ledger_helpers import CHAIN_ID, SGD, USD, commit, key, make_genesis, pub, view

GENESIS = make_genesis()
TOKENS = {USD: "jpm-issuer", SGD: "dbs-issuer"}  # token -> issuer
BANKS = {"jpm-issuer": "JPM", "dbs-issuer": "DBS"}
PEOPLE = ["alice", "bob", "carol", "dave", "erin"]  # dave and erin start unregistered
NAMES = PEOPLE + list(BANKS)
BY_KEY = {pub(name): name for name in NAMES}
# Mostly everyday amounts; sometimes near the cap on a token's outstanding supply.
AMOUNTS = st.one_of(st.integers(1, 60_000), st.integers(MAX_AMOUNT - 10**6, MAX_AMOUNT))
# How far ahead of the block time an expiry or a due time lies: some already passed,
# some passing at the next block, some a few blocks or gaps away.
AHEAD = st.sampled_from([-5, 0, 1, 2, 800, 30_000, 100_000, 100_000])
DUE_AHEAD = st.sampled_from([1, 2, 800, 30_000])  # a milestone's, when it has one
# How far the next block's time lies after this one's.
GAPS = st.sampled_from([1, 1, 1, 700, 25_000, 90_000])
UNKNOWN_ID = bytes(32)
# Thousands of stores are created, synced and reopened: in memory where the OS offers it
# (what they check is the ledger's logic; tests/test_store_crash.py checks durability).
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None
SIMPLE_KINDS = [TxKind.REGISTER, TxKind.MINT, TxKind.BURN, TxKind.TRANSFER]
HOLD_KINDS = [TxKind.FREEZE, TxKind.UNFREEZE]


@dataclass
class ModelContract:
    buyer: str
    supplier: str
    approver: str
    token: str
    expiry: int
    milestones: list[tuple[str, int, int]]  # (name, amount, due or 0)
    settled: list[Settlement]
    terms_hash: bytes

    def copy(self) -> ModelContract:
        return ModelContract(**{**self.__dict__, "settled": list(self.settled)})

    def locked(self) -> int:
        return sum(a for (_, a, _), s in zip(self.milestones, self.settled, strict=True) if not s)

    def record(self) -> Contract:
        """The record the ledger must hold for this contract."""
        return Contract(
            pub(self.buyer), pub(self.supplier), pub(self.approver), self.token, self.expiry,
            self.terms_hash, tuple(Milestone(*m) for m in self.milestones), tuple(self.settled),
        )  # fmt: skip


@dataclass
class ModelOffer:
    maker: str
    counterparty: str | None
    token: str
    amount: int
    ask_token: str
    ask_amount: int
    expiry: int
    status: OfferStatus = OfferStatus.OPEN
    taker: str | None = None

    def copy(self) -> ModelOffer:
        return ModelOffer(**self.__dict__)

    def record(self) -> Offer:
        """The record the ledger must hold for this offer."""
        return Offer(
            pub(self.maker), pub(self.counterparty) if self.counterparty else b"", self.token,
            self.amount, self.ask_token, self.ask_amount, self.expiry, self.status,
            pub(self.taker) if self.taker else b"",
        )  # fmt: skip


@dataclass
class Model:
    """The ledger as dicts keyed by names: what every step is checked against."""

    balances: Counter = field(default_factory=Counter)  # (name, token) -> amount
    nonces: Counter = field(default_factory=Counter)
    registered: dict[str, str] = field(default_factory=dict)  # name -> bank
    outstanding: Counter = field(default_factory=Counter)  # token -> minted - burned
    frozen: set[str] = field(default_factory=set)
    contracts: dict[bytes, ModelContract] = field(default_factory=dict)
    offers: dict[bytes, ModelOffer] = field(default_factory=dict)

    @classmethod
    def from_genesis(cls) -> Model:
        model = cls(registered={name: bank for name, bank in BANKS.items()})
        for account in GENESIS.accounts:
            model.registered[account.name] = account.bank
            for token, amount in account.balances:
                model.balances[(account.name, token)] += amount
                model.outstanding[token] += amount
        return model

    def copy(self) -> Model:
        return Model(
            Counter(self.balances),
            Counter(self.nonces),
            dict(self.registered),
            Counter(self.outstanding),
            set(self.frozen),
            {k: c.copy() for k, c in self.contracts.items()},
            {k: o.copy() for k, o in self.offers.items()},
        )

    def outcome(self, tx: Tx, signature_ok: bool, now: int) -> Reason | None:
        """The rules, restated: the reason ``tx`` must be rejected at block time ``now``,
        or None."""
        sender, to = BY_KEY[tx.sender], BY_KEY.get(tx.to)
        if not signature_ok:
            return Reason.BAD_SIGNATURE
        if tx.chain_id != CHAIN_ID:
            return Reason.WRONG_CHAIN
        if sender not in self.registered:
            return Reason.SENDER_NOT_REGISTERED
        if tx.nonce != self.nonces[sender]:
            return Reason.BAD_NONCE
        kind = tx.kind
        if kind is TxKind.REGISTER:
            if sender not in BANKS:
                return Reason.NOT_A_BANK
            return Reason.ALREADY_REGISTERED if to in self.registered else None
        if kind in HOLD_KINDS:
            if sender not in BANKS:
                return Reason.NOT_A_BANK
            if to not in self.registered:
                return Reason.RECIPIENT_NOT_REGISTERED
            if self.registered[to] != BANKS[sender]:
                return Reason.NOT_REGISTERING_BANK
            if kind is TxKind.FREEZE:
                return Reason.ALREADY_FROZEN if to in self.frozen else None
            return None if to in self.frozen else Reason.NOT_FROZEN
        if kind in (TxKind.CONTRACT_RELEASE, TxKind.CONTRACT_REFUND, TxKind.CONTRACT_CANCEL):
            return self._contract_outcome(tx, sender, now)
        if kind in (TxKind.SWAP_ACCEPT, TxKind.SWAP_CANCEL):
            return self._offer_outcome(tx, sender, now)
        if tx.token not in TOKENS:
            return Reason.UNKNOWN_TOKEN
        if kind is TxKind.MINT:
            if sender != TOKENS[tx.token]:
                return Reason.NOT_ISSUER
            if to not in self.registered:
                return Reason.RECIPIENT_NOT_REGISTERED
            if to in self.frozen:
                return Reason.ACCOUNT_FROZEN
            too_much = self.outstanding[tx.token] + tx.amount > MAX_AMOUNT
            return Reason.BAD_AMOUNT if too_much else None
        if kind is TxKind.SWAP_OFFER and tx.args.ask_token not in TOKENS:
            return Reason.UNKNOWN_TOKEN
        if kind is not TxKind.BURN and tx.to and to not in self.registered:
            return Reason.RECIPIENT_NOT_REGISTERED
        if kind is TxKind.CONTRACT_OPEN and BY_KEY.get(tx.args.approver) not in self.registered:
            return Reason.APPROVER_NOT_REGISTERED
        if sender in self.frozen or (kind in (TxKind.TRANSFER, TxKind.CONTRACT_OPEN)
                                     and to in self.frozen):  # fmt: skip
            return Reason.ACCOUNT_FROZEN
        if kind is TxKind.CONTRACT_OPEN:
            dues = [due for _, _, due in _milestones(tx) if due]
            if now >= min([tx.args.expiry_ms, *dues]):
                return Reason.BAD_EXPIRY
        if kind is TxKind.SWAP_OFFER and now >= tx.args.expiry_ms:
            return Reason.BAD_EXPIRY
        if self.balances[(sender, tx.token)] < tx.amount:
            return Reason.INSUFFICIENT_FUNDS
        return None

    def _contract_outcome(self, tx: Tx, sender: str, now: int) -> Reason | None:
        contract = self.contracts.get(tx.args.id)
        if contract is None:
            return Reason.UNKNOWN_CONTRACT
        if tx.kind is TxKind.CONTRACT_RELEASE:
            if sender != contract.approver:
                return Reason.NOT_APPROVER
            names = [name for name, _, _ in contract.milestones]
            if tx.args.milestone not in names:
                return Reason.UNKNOWN_MILESTONE
            at = names.index(tx.args.milestone)
            if contract.settled[at] is Settlement.RELEASED:
                return Reason.MILESTONE_RELEASED
            if contract.settled[at] is Settlement.REFUNDED:
                return Reason.CONTRACT_CLOSED
            if now >= contract.expiry:
                return Reason.CONTRACT_EXPIRED
            due = contract.milestones[at][2]
            if due and now >= due:
                return Reason.MILESTONE_OVERDUE
            return Reason.ACCOUNT_FROZEN if contract.supplier in self.frozen else None
        if not contract.locked():
            return Reason.CONTRACT_CLOSED
        if tx.kind is TxKind.CONTRACT_REFUND:
            if sender != contract.buyer:
                return Reason.NOT_BUYER
            if now < contract.expiry:
                return Reason.CONTRACT_NOT_EXPIRED
        elif sender != contract.supplier:
            return Reason.NOT_SUPPLIER
        return Reason.ACCOUNT_FROZEN if contract.buyer in self.frozen else None

    def _offer_outcome(self, tx: Tx, sender: str, now: int) -> Reason | None:
        offer = self.offers.get(tx.args.id)
        if offer is None:
            return Reason.UNKNOWN_OFFER
        if offer.status is OfferStatus.TAKEN:
            return Reason.OFFER_TAKEN
        if offer.status is OfferStatus.CANCELLED:
            return Reason.OFFER_CANCELLED
        if tx.kind is TxKind.SWAP_CANCEL:
            if sender != offer.maker and now < offer.expiry:
                return Reason.NOT_OFFERER
            return Reason.ACCOUNT_FROZEN if offer.maker in self.frozen else None
        if offer.counterparty and sender != offer.counterparty:
            return Reason.NOT_COUNTERPARTY
        if now >= offer.expiry:
            return Reason.OFFER_EXPIRED
        if sender in self.frozen or offer.maker in self.frozen:
            return Reason.ACCOUNT_FROZEN
        if self.balances[(sender, offer.ask_token)] < offer.ask_amount:
            return Reason.INSUFFICIENT_FUNDS
        return None

    def apply(self, tx: Tx) -> None:
        sender, to = BY_KEY[tx.sender], BY_KEY.get(tx.to)
        self.nonces[sender] += 1
        kind = tx.kind
        if kind is TxKind.REGISTER:
            self.registered[to] = BANKS[sender]  # type: ignore[index]
        elif kind is TxKind.FREEZE:
            self.frozen.add(to)  # type: ignore[arg-type]
        elif kind is TxKind.UNFREEZE:
            self.frozen.discard(to)  # type: ignore[arg-type]
        elif kind is TxKind.MINT:
            self.balances[(to, tx.token)] += tx.amount
            self.outstanding[tx.token] += tx.amount
        elif kind is TxKind.BURN:
            self.balances[(sender, tx.token)] -= tx.amount
            self.outstanding[tx.token] -= tx.amount
        elif kind is TxKind.TRANSFER:
            self.balances[(sender, tx.token)] -= tx.amount
            self.balances[(to, tx.token)] += tx.amount
        elif kind is TxKind.CONTRACT_OPEN:
            self.balances[(sender, tx.token)] -= tx.amount
            milestones = _milestones(tx)
            self.contracts[tx.tx_id] = ModelContract(
                sender, to, BY_KEY[tx.args.approver], tx.token, tx.args.expiry_ms,  # type: ignore[arg-type]
                milestones, [Settlement.LOCKED] * len(milestones), tx.args.terms_hash,
            )  # fmt: skip
        elif kind is TxKind.CONTRACT_RELEASE:
            contract = self.contracts[tx.args.id]
            at = [name for name, _, _ in contract.milestones].index(tx.args.milestone)
            contract.settled[at] = Settlement.RELEASED
            self.balances[(contract.supplier, contract.token)] += contract.milestones[at][1]
        elif kind in (TxKind.CONTRACT_REFUND, TxKind.CONTRACT_CANCEL):
            contract = self.contracts[tx.args.id]
            self.balances[(contract.buyer, contract.token)] += contract.locked()
            contract.settled = [s or Settlement.REFUNDED for s in contract.settled]
        elif kind is TxKind.SWAP_OFFER:
            self.balances[(sender, tx.token)] -= tx.amount
            terms = tx.args
            self.offers[tx.tx_id] = ModelOffer(
                sender, to, tx.token, tx.amount, terms.ask_token, terms.ask_amount,
                terms.expiry_ms,
            )  # fmt: skip
        elif kind is TxKind.SWAP_ACCEPT:
            offer = self.offers[tx.args.id]
            self.balances[(sender, offer.ask_token)] -= offer.ask_amount
            self.balances[(offer.maker, offer.ask_token)] += offer.ask_amount
            self.balances[(sender, offer.token)] += offer.amount
            offer.status, offer.taker = OfferStatus.TAKEN, sender
        else:  # SWAP_CANCEL
            offer = self.offers[tx.args.id]
            self.balances[(offer.maker, offer.token)] += offer.amount
            offer.status = OfferStatus.CANCELLED

    def locked(self, token: str) -> int:
        return sum(c.locked() for c in self.contracts.values() if c.token == token) + sum(
            o.amount for o in self.offers.values() if o.token == token and not o.status
        )

    def as_view(self) -> dict[str, dict]:
        """The model in the shape of tests.ledger_helpers.view."""
        return {
            "balances": {(pub(n), t): v for (n, t), v in self.balances.items() if v},
            "nonces": {pub(n): v for n, v in self.nonces.items() if v},
            "accounts": {pub(n): bank for n, bank in self.registered.items()},
            "supply": {t: v for t, v in self.outstanding.items() if v},
            "contracts": {cid: c.record() for cid, c in self.contracts.items()},
            "offers": {oid: o.record() for oid, o in self.offers.items()},
            "frozen": {pub(n): True for n in self.frozen},
        }


def _milestones(tx: Tx) -> list[tuple[str, int, int]]:
    return [(m.name, m.amount, m.due_ms) for m in tx.args.milestones]


class LedgerMachine(RuleBasedStateMachine):
    """One node's ledger and store, a second validator's replica, and the model."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="depnet-prop-", dir=SCRATCH))
        self.store = Store.open(self.dir / "db", GENESIS)
        self.replica = State(GENESIS)  # another validator that only re-executes blocks
        self.time = GENESIS.genesis_time_ms + 1  # the time of the block in progress
        self.changes = Changes(self.store.state, self.time)
        self.pending: list[Tx] = []  # applied to self.changes, not yet in a block
        self.model = Model.from_genesis()
        self.committed_model = self.model.copy()
        self.applied: dict[bytes, Tx] = {}  # tx id -> tx, pending or committed
        self.committed_records = _records(view(self.store.state))

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @initialize(data=st.data())
    def deals_in_flight(self, data: st.DataObject) -> None:
        """Every run starts with a contract (alice buys from bob, 30/70) and an offer (bob
        sells SGD for USD) in flight, so the rules that settle them meet them from the
        first step on, before or after their deadlines."""
        expiry = self.time + data.draw(st.sampled_from([2, 800, 30_000, 100_000]))
        due = data.draw(st.sampled_from([0, 0, min(expiry, self.time + 700)]))
        approver = data.draw(st.sampled_from(["carol", "alice", "jpm-issuer"]))
        terms = ContractTerms(
            pub(approver), expiry, bytes(32), (Milestone("m0", 300, due), Milestone("m1", 700))
        )
        self._offer(sign_tx(key("alice"), TxKind.CONTRACT_OPEN, CHAIN_ID, 0, to=pub("bob"),
                            token=USD, amount=1_000, args=terms))  # fmt: skip
        counterparty = data.draw(st.sampled_from([b"", pub("alice"), pub("carol")]))
        swap = SwapTerms(USD, 1_000, self.time + data.draw(st.sampled_from([2, 800, 90_000])))
        self._offer(sign_tx(key("bob"), TxKind.SWAP_OFFER, CHAIN_ID, 0, to=counterparty,
                            token=SGD, amount=1_350, args=swap))  # fmt: skip

    @rule(
        signer=st.sampled_from(NAMES),
        kind=st.sampled_from(SIMPLE_KINDS + HOLD_KINDS),
        to=st.sampled_from(NAMES),
        token=st.sampled_from([USD, SGD, USD, SGD, "EUR.BNP"]),
        amount=AMOUNTS,
        nonce_shift=st.sampled_from([0, 0, 0, 0, 1, -1]),
        chain_id=st.sampled_from([CHAIN_ID] * 9 + ["depnet-other"]),
        forge=st.sampled_from([False] * 9 + [True]),
    )
    def submit(
        self,
        signer: str,
        kind: TxKind,
        to: str,
        token: str,
        amount: int,
        nonce_shift: int,
        chain_id: str,
        forge: bool,
    ) -> None:
        """A transaction, valid or not, offered to the block in progress."""
        nonce = max(0, self.model.nonces[signer] + nonce_shift)
        if kind in (TxKind.REGISTER, *HOLD_KINDS):
            fields = {"to": pub(to)}
        elif kind is TxKind.BURN:
            fields = {"token": token, "amount": amount}
        else:
            fields = {"to": pub(to), "token": token, "amount": amount}
        tx = sign_tx(key(signer), kind, chain_id, nonce, memo=f"INV-{nonce}", **fields)
        if forge:  # a signature that verifies for no one
            tx = decode_tx(tx.raw[:-64] + bytes(64))
        self._offer(tx, signature_ok=not forge)

    @rule(data=st.data())
    def pay(self, data: st.DataObject) -> None:
        """A transfer the model says is valid (random ones mostly are not)."""
        held = sorted((k, v) for k, v in self.model.balances.items() if v)
        if not held:
            return
        (sender, token), balance = data.draw(st.sampled_from(held))
        to = data.draw(st.sampled_from(sorted(self.model.registered)))
        amount = data.draw(st.integers(1, balance))
        tx = sign_tx(
            key(sender), TxKind.TRANSFER, CHAIN_ID, self.model.nonces[sender],
            to=pub(to), token=token, amount=amount,
        )  # fmt: skip
        self._offer(tx)

    @rule(data=st.data(), token=st.sampled_from(sorted(TOKENS)), burn=st.booleans())
    def issue_or_redeem(self, data: st.DataObject, token: str, burn: bool) -> None:
        """A bank mints its token to a registered account, or a holder burns some."""
        if burn:
            holders = sorted(n for (n, t), v in self.model.balances.items() if t == token and v)
            if holders:
                holder = data.draw(st.sampled_from(holders))
                amount = data.draw(st.integers(1, self.model.balances[(holder, token)]))
            else:  # everything was redeemed: a burn now must fail for lack of funds
                holder = data.draw(st.sampled_from(sorted(self.model.registered)))
                amount = data.draw(AMOUNTS)
            tx = sign_tx(
                key(holder), TxKind.BURN, CHAIN_ID, self.model.nonces[holder],
                token=token, amount=amount,
            )  # fmt: skip
        else:
            issuer = TOKENS[token]
            to = data.draw(st.sampled_from(sorted(self.model.registered)))
            tx = sign_tx(
                key(issuer), TxKind.MINT, CHAIN_ID, self.model.nonces[issuer],
                to=pub(to), token=token, amount=data.draw(AMOUNTS),
            )  # fmt: skip
        self._offer(tx)

    @rule(bank=st.sampled_from(sorted(BANKS)), person=st.sampled_from(PEOPLE))
    def admit(self, bank: str, person: str) -> None:
        """A bank registers someone (already registered or not)."""
        nonce = self.model.nonces[bank]
        self._offer(sign_tx(key(bank), TxKind.REGISTER, CHAIN_ID, nonce, to=pub(person)))

    @rule(bank=st.sampled_from(sorted(BANKS)), person=st.sampled_from(NAMES), hold=st.booleans())
    def hold(self, bank: str, person: str, hold: bool) -> None:
        """A bank freezes or unfreezes an account (its own client or not)."""
        kind = TxKind.FREEZE if hold else TxKind.UNFREEZE
        self._offer(sign_tx(key(bank), kind, CHAIN_ID, self.model.nonces[bank], to=pub(person)))

    @rule(data=st.data())
    def open_contract(self, data: st.DataObject) -> None:
        """A buyer locks 1 to 3 milestones for a supplier, with an approver and an expiry."""
        buyer = data.draw(self._mostly(self._holders()))
        token = data.draw(st.sampled_from([USD, SGD] * 4 + ["EUR.BNP"]))
        total = data.draw(self._spend(buyer, token))
        count = data.draw(st.integers(1, min(3, total)))
        cuts = sorted(data.draw(st.sets(st.integers(1, total - 1), min_size=count - 1,
                                        max_size=count - 1)) if count > 1 else [])  # fmt: skip
        amounts = [b - a for a, b in pairwise([0, *cuts, total])]
        expiry = max(1, self.time + data.draw(AHEAD))
        milestones = tuple(
            Milestone(f"m{i}", amount, min(expiry, self.time + data.draw(DUE_AHEAD))
                      if data.draw(st.booleans()) else 0)
            for i, amount in enumerate(amounts)
        )  # fmt: skip
        registered = sorted(self.model.registered)
        approver = data.draw(self._mostly(registered))
        terms = ContractTerms(pub(approver), expiry, bytes(32), milestones)
        tx = sign_tx(
            key(buyer), TxKind.CONTRACT_OPEN, CHAIN_ID, self.model.nonces[buyer],
            to=pub(data.draw(self._mostly(registered))), token=token, amount=total, args=terms,
        )  # fmt: skip
        self._offer(tx)

    @precondition(lambda self: self.model.contracts)
    @rule(data=st.data(), kind=st.sampled_from(
        [TxKind.CONTRACT_RELEASE, TxKind.CONTRACT_RELEASE, TxKind.CONTRACT_REFUND,
         TxKind.CONTRACT_CANCEL]))  # fmt: skip
    def settle_contract(self, data: st.DataObject, kind: TxKind) -> None:
        """A release, refund or cancel: mostly by the party the rule wants, on a contract
        that exists, naming one of its milestones."""
        contract_id = data.draw(self._some_id(self.model.contracts))
        contract = self.model.contracts.get(contract_id)
        party = None
        if contract is not None:
            party = {
                TxKind.CONTRACT_RELEASE: contract.approver,
                TxKind.CONTRACT_REFUND: contract.buyer,
                TxKind.CONTRACT_CANCEL: contract.supplier,
            }[kind]
        signer = data.draw(self._mostly([party] if party else NAMES))
        milestone = ""
        if kind is TxKind.CONTRACT_RELEASE:
            names = [name for name, _, _ in contract.milestones] if contract else []
            milestone = data.draw(st.sampled_from([*names, *names, "m9"]))
        tx = sign_tx(
            key(signer), kind, CHAIN_ID, self.model.nonces[signer],
            args=Ref(contract_id, milestone),
        )  # fmt: skip
        self._offer(tx)

    @rule(data=st.data())
    def make_offer(self, data: st.DataObject) -> None:
        """A maker locks some of one token, asking for another, from someone or anyone."""
        maker = data.draw(self._mostly(self._holders()))
        token = data.draw(st.sampled_from([USD, SGD] * 4 + ["EUR.BNP"]))
        asks = [SGD if token == USD else USD] * 9 + ["EUR.BNP"]
        ask_token = data.draw(st.sampled_from([t for t in asks if t != token]))
        amount = data.draw(self._spend(maker, token))
        counterparty = data.draw(st.sampled_from([None, None, *sorted(self.model.registered)]))
        small = st.integers(1, 5_000)
        ask = data.draw(st.one_of(small, small, small, AMOUNTS))
        terms = SwapTerms(ask_token, ask, max(1, self.time + data.draw(AHEAD)))
        tx = sign_tx(
            key(maker), TxKind.SWAP_OFFER, CHAIN_ID, self.model.nonces[maker],
            to=pub(counterparty) if counterparty else b"", token=token, amount=amount,
            args=terms,
        )  # fmt: skip
        self._offer(tx)

    @precondition(lambda self: self.model.offers)
    @rule(data=st.data(), accept=st.booleans())
    def take_offer(self, data: st.DataObject, accept: bool) -> None:
        """An accept or a cancel, mostly of an offer that exists, by whoever."""
        offer_id = data.draw(self._some_id(self.model.offers))
        offer = self.model.offers.get(offer_id)
        likely = NAMES
        if offer is not None and not accept:
            likely = [offer.maker]
        elif offer is not None:
            likely = [offer.counterparty] if offer.counterparty else self._holders(offer.ask_token)
        signer = data.draw(self._mostly(likely))
        kind = TxKind.SWAP_ACCEPT if accept else TxKind.SWAP_CANCEL
        nonce = self.model.nonces[signer]
        self._offer(sign_tx(key(signer), kind, CHAIN_ID, nonce, args=Ref(offer_id)))

    def _holders(self, token: str | None = None) -> list[str]:
        """Who holds something (of ``token``), by name."""
        held = self.model.balances
        return sorted({n for (n, t), v in held.items() if v and token in (None, t)})

    @staticmethod
    def _mostly(names: list[str]) -> st.SearchStrategy[str]:
        """One of ``names`` (if any) four times in five, else anyone: the rules meet
        strangers too."""
        likely = st.sampled_from(names or NAMES)
        return st.one_of(likely, likely, likely, likely, st.sampled_from(NAMES))

    def _spend(self, name: str, token: str) -> st.SearchStrategy[int]:
        """Mostly an amount ``name`` holds of ``token``; sometimes any amount."""
        held = self.model.balances[(name, token)]
        if not held:
            return AMOUNTS
        affordable = st.integers(1, held)
        return st.one_of(affordable, affordable, affordable, AMOUNTS)

    @staticmethod
    def _some_id(records: dict[bytes, object]) -> st.SearchStrategy[bytes]:
        """Mostly a record that exists (there are few), sometimes one that does not."""
        return st.sampled_from([*sorted(records) * 3, UNKNOWN_ID])

    def _offer(self, tx: Tx, signature_ok: bool = True) -> None:
        """Offer ``tx`` to the block in progress; the model decides what must happen."""
        expected = self.model.outcome(tx, signature_ok=signature_ok, now=self.time)
        event(f"{tx.kind.name} {expected or 'applied'}")
        before, root_before = view(self.changes), self.changes.root_acc()
        try:
            check_tx(self.changes, tx)
        except TxRejected as exc:
            assert exc.reason is expected, (exc, expected)
            assert view(self.changes) == before
            assert self.changes.root_acc() == root_before
            return
        assert expected is None, f"accepted a tx the model rejects with {expected}"
        assert tx.tx_id not in self.applied
        self.applied[tx.tx_id] = tx
        self.pending.append(tx)
        self.model.apply(tx)

    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        """An applied transaction, offered again, never applies a second time."""
        if not self.applied:
            return
        tx = data.draw(st.sampled_from(sorted(self.applied.values(), key=lambda t: t.tx_id)))
        before = view(self.changes)
        try:
            check_tx(self.changes, tx)
        except TxRejected as exc:
            assert exc.reason is Reason.BAD_NONCE
        else:
            raise AssertionError("a tx applied twice")
        assert view(self.changes) == before

    @rule(raw=st.binary(max_size=300))
    def garbage(self, raw: bytes) -> None:
        try:
            decode_tx(raw)
        except TxRejected as exc:
            assert exc.reason in (Reason.MALFORMED, Reason.BAD_AMOUNT, Reason.MEMO_TOO_LONG)
        else:
            raise AssertionError(f"random bytes decoded: {raw!r}")

    @rule(gap=GAPS)
    def seal_block(self, gap: int) -> None:
        """The proposer builds a block from the pending txs, dated at the time they were
        checked at; a replica re-executes it to the same root; the store commits it. The
        next block comes ``gap`` ms later: expiries and due times pass."""
        expected_root = self.changes.root_acc()
        block = commit(self.store, self.pending, time_ms=self.time)
        assert block.header.time_ms == self.time
        assert int.from_bytes(block.header.state_root, "big") == expected_root
        assert list(block.txs) == self.pending
        replayed = execute_block(self.replica, block)
        assert replayed.root_acc() == expected_root
        self.replica.commit(replayed, block.header)
        for position, tx in enumerate(block.txs):
            assert self.store.tx_location(tx.tx_id) == (block.height, position)
        self.pending = []
        self.time += gap
        self.changes = Changes(self.store.state, self.time)
        self.committed_model = self.model.copy()

    @rule()
    def reopen(self) -> None:
        """Close and reopen the store: the committed state comes back, pending txs do not."""
        head, root = self.store.head, self.store.state.state_root
        self.store.close()
        self.store = Store.open(self.dir / "db", GENESIS)
        assert self.store.head == head
        assert self.store.state.state_root == root
        for tx in self.pending:
            del self.applied[tx.tx_id]
        self.pending = []
        self.changes = Changes(self.store.state, self.time)
        self.model = self.committed_model.copy()

    @invariant()
    def matches_the_model(self) -> None:
        assert view(self.changes) == self.model.as_view()
        assert view(self.store.state) == self.committed_model.as_view()

    @invariant()
    def supply_is_conserved_and_nothing_is_negative(self) -> None:
        """Per token: balances + what contracts and offers lock == minted - burned."""
        entries = view(self.changes)
        for token in TOKENS:
            held = sum(v for (_, t), v in entries["balances"].items() if t == token)
            locked = sum(r.locked for r in _records(entries).values() if r.token == token)
            assert held + locked == entries["supply"].get(token, 0)
            assert locked == self.model.locked(token)
        assert all(v > 0 for v in entries["balances"].values())

    @invariant()
    def settlements_are_final(self) -> None:
        """A milestone is released or refunded at most once and never both, so a contract
        pays out at most what it locked; an offer is settled (taken or cancelled) at most
        once. Checked on the ledger's own records, block after block."""
        committed = _records(view(self.store.state))
        _only_forward(self.committed_records, committed)
        _only_forward(committed, _records(view(self.changes)))
        self.committed_records = committed
        for record in committed.values():
            if isinstance(record, Contract):
                paid = record.total(Settlement.RELEASED) + record.total(Settlement.REFUNDED)
                assert paid + record.locked == sum(m.amount for m in record.milestones)

    @invariant()
    def roots_agree(self) -> None:
        state = self.store.state
        assert state.root_acc == state.computed_root_acc()
        assert self.replica.state_root == state.state_root
        assert self.store.head.state_root == state.state_root


def _records(entries: dict[str, dict]) -> dict[bytes, Contract | Offer]:
    return {**entries["contracts"], **entries["offers"]}


def _only_forward(before: dict[bytes, Contract | Offer], after: dict[bytes, Contract | Offer]):
    """Every record of ``before`` is in ``after``, changed only where it was unsettled."""
    for record_id, old in before.items():
        new = after[record_id]
        if isinstance(old, Offer):
            assert old.status is OfferStatus.OPEN or new == old
            assert (new.maker, new.amount, new.ask_amount) == (
                old.maker,
                old.amount,
                old.ask_amount,
            )
        else:
            for was, now in zip(old.settled, new.settled, strict=True):
                assert was is Settlement.LOCKED or now is was
            assert new.milestones == old.milestones


# 2,000 runs of up to 20 steps on every `make test`: about 30 s of one core (measured on
# the 2-core CI-like machine, 32 s alone and 56 s wall under load).
LedgerMachine.TestCase.settings = settings(
    max_examples=2_000,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLedgerMachine = LedgerMachine.TestCase
