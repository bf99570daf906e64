"""Model-based tests: random sequences of valid and invalid transactions, blocks and store
reopenings, checked after every step against a model made of plain dicts.

The model restates the ledger rules in a few lines; hypothesis shrinks any disagreement
to the shortest sequence of operations that shows it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from chain.errors import Reason, TxRejected
from chain.state import Changes, State, check_tx, execute_block
from chain.store import Store
from chain.tx import MAX_AMOUNT, Tx, TxKind, decode_tx, sign_tx
from tests.ledger_helpers import CHAIN_ID, SGD, USD, commit, key, make_genesis, pub
from tests.ledger_helpers import view as state_view

GENESIS = make_genesis()
TOKENS = {USD: "jpm-issuer", SGD: "dbs-issuer"}  # token -> issuer
BANKS = {"jpm-issuer": "JPM", "dbs-issuer": "DBS"}
PEOPLE = ["alice", "bob", "carol", "dave", "erin"]  # dave and erin start unregistered
NAMES = PEOPLE + list(BANKS)
BY_KEY = {pub(name): name for name in NAMES}
# Mostly everyday amounts; sometimes near the cap on a token's outstanding supply.
AMOUNTS = st.one_of(st.integers(1, 60_000), st.integers(MAX_AMOUNT - 10**6, MAX_AMOUNT))


@dataclass
class Model:
    """The ledger as dicts keyed by names: what every step is checked against."""

    balances: Counter = field(default_factory=Counter)  # (name, token) -> amount
    nonces: Counter = field(default_factory=Counter)
    registered: dict[str, str] = field(default_factory=dict)  # name -> bank
    outstanding: Counter = field(default_factory=Counter)  # token -> minted - burned

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
        )

    def outcome(self, tx: Tx, signature_ok: bool) -> Reason | None:
        """The rules, restated: the reason ``tx`` must be rejected, or None."""
        sender, to = BY_KEY[tx.sender], BY_KEY.get(tx.to)
        if not signature_ok:
            return Reason.BAD_SIGNATURE
        if tx.chain_id != CHAIN_ID:
            return Reason.WRONG_CHAIN
        if sender not in self.registered:
            return Reason.SENDER_NOT_REGISTERED
        if tx.nonce != self.nonces[sender]:
            return Reason.BAD_NONCE
        if tx.kind is TxKind.REGISTER:
            if sender not in BANKS:
                return Reason.NOT_A_BANK
            return Reason.ALREADY_REGISTERED if to in self.registered else None
        if tx.token not in TOKENS:
            return Reason.UNKNOWN_TOKEN
        if tx.kind is TxKind.MINT:
            if sender != TOKENS[tx.token]:
                return Reason.NOT_ISSUER
            if to not in self.registered:
                return Reason.RECIPIENT_NOT_REGISTERED
            too_much = self.outstanding[tx.token] + tx.amount > MAX_AMOUNT
            return Reason.BAD_AMOUNT if too_much else None
        if tx.kind is TxKind.TRANSFER and to not in self.registered:
            return Reason.RECIPIENT_NOT_REGISTERED
        if self.balances[(sender, tx.token)] < tx.amount:
            return Reason.INSUFFICIENT_FUNDS
        return None

    def apply(self, tx: Tx) -> None:
        sender, to = BY_KEY[tx.sender], BY_KEY.get(tx.to)
        self.nonces[sender] += 1
        if tx.kind is TxKind.REGISTER:
            self.registered[to] = BANKS[sender]  # type: ignore[index]
        elif tx.kind is TxKind.MINT:
            self.balances[(to, tx.token)] += tx.amount
            self.outstanding[tx.token] += tx.amount
        elif tx.kind is TxKind.BURN:
            self.balances[(sender, tx.token)] -= tx.amount
            self.outstanding[tx.token] -= tx.amount
        else:
            self.balances[(sender, tx.token)] -= tx.amount
            self.balances[(to, tx.token)] += tx.amount

    def as_view(self) -> dict[str, dict]:
        """The model in the shape of tests.ledger_helpers.view."""
        return {
            "balances": {(pub(n), t): v for (n, t), v in self.balances.items() if v},
            "nonces": {pub(n): v for n, v in self.nonces.items() if v},
            "accounts": {pub(n): bank for n, bank in self.registered.items()},
            "supply": {t: v for t, v in self.outstanding.items() if v},
        }


class LedgerMachine(RuleBasedStateMachine):
    """One node's ledger and store, a second validator's replica, and the model."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="depnet-prop-"))
        self.store = Store.open(self.dir / "db", GENESIS)
        self.replica = State(GENESIS)  # another validator that only re-executes blocks
        self.changes = Changes(self.store.state)
        self.pending: list[Tx] = []  # applied to self.changes, not yet in a block
        self.model = Model.from_genesis()
        self.committed_model = self.model.copy()
        self.applied: dict[bytes, Tx] = {}  # tx id -> tx, pending or committed

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(
        signer=st.sampled_from(NAMES),
        kind=st.sampled_from(TxKind),
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
        if kind is TxKind.REGISTER:
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

    def _offer(self, tx: Tx, signature_ok: bool = True) -> None:
        """Offer ``tx`` to the block in progress; the model decides what must happen."""
        expected = self.model.outcome(tx, signature_ok=signature_ok)
        event(f"{tx.kind.name} {expected or 'applied'}")
        before, root_before = state_view(self.changes), self.changes.root_acc()
        try:
            check_tx(self.changes, tx)
        except TxRejected as exc:
            assert exc.reason is expected, (exc, expected)
            assert state_view(self.changes) == before
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
        before = state_view(self.changes)
        try:
            check_tx(self.changes, tx)
        except TxRejected as exc:
            assert exc.reason is Reason.BAD_NONCE
        else:
            raise AssertionError("a tx applied twice")
        assert state_view(self.changes) == before

    @rule(raw=st.binary(max_size=300))
    def garbage(self, raw: bytes) -> None:
        try:
            decode_tx(raw)
        except TxRejected as exc:
            assert exc.reason in (Reason.MALFORMED, Reason.BAD_AMOUNT, Reason.MEMO_TOO_LONG)
        else:
            raise AssertionError(f"random bytes decoded: {raw!r}")

    @rule()
    def seal_block(self) -> None:
        """The proposer builds a block from the pending txs; a replica re-executes it to
        the same root; the store commits it."""
        expected_root = self.changes.root_acc()
        block = commit(self.store, self.pending)
        assert int.from_bytes(block.header.state_root, "big") == expected_root
        assert list(block.txs) == self.pending
        replayed = execute_block(self.replica, block)
        assert replayed.root_acc() == expected_root
        self.replica.commit(replayed, block.header)
        for position, tx in enumerate(block.txs):
            assert self.store.tx_location(tx.tx_id) == (block.height, position)
        self.pending = []
        self.changes = Changes(self.store.state)
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
        self.changes = Changes(self.store.state)
        self.model = self.committed_model.copy()

    @invariant()
    def matches_the_model(self) -> None:
        assert state_view(self.changes) == self.model.as_view()
        assert state_view(self.store.state) == self.committed_model.as_view()

    @invariant()
    def supply_is_conserved_and_nothing_is_negative(self) -> None:
        entries = state_view(self.changes)
        for token in TOKENS:
            held = sum(v for (_, t), v in entries["balances"].items() if t == token)
            assert held == entries["supply"].get(token, 0)
        assert all(v > 0 for v in entries["balances"].values())

    @invariant()
    def roots_agree(self) -> None:
        state = self.store.state
        assert state.root_acc == state.computed_root_acc()
        assert self.replica.state_root == state.state_root
        assert self.store.head.state_root == state.state_root


LedgerMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLedgerMachine = LedgerMachine.TestCase
