"""Shared fixtures for the ledger and store tests: a small two-bank genesis with known keys.

Keys are derived from their names, so a subprocess (tests/crash_writer.py) and the test
that checks its work hold the same keys without passing secrets around.
"""

from __future__ import annotations

import functools
from collections.abc import Container, Iterable
from hashlib import sha256

import pytest
from nacl.signing import SigningKey

from chain.block import Block, CommitCertificate
from chain.codec import MAX_BLOCK_TXS
from chain.errors import Reason, TxRejected
from chain.genesis import Genesis, parse_genesis
from chain.state import TABLES, Built, Changes, State, build_block, check_tx
from chain.store import Store
from chain.tx import ContractTerms, Milestone, Ref, SwapTerms, Tx, TxKind, sign_tx

CHAIN_ID = "depnet-test"
GENESIS_TIME_MS = 1_764_000_000_000
USD, SGD = "USD.JPM", "SGD.DBS"


@functools.cache
def key(name: str) -> SigningKey:
    """The signing key named ``name`` (a bank role like 'jpm-issuer' or a wallet name)."""
    return SigningKey(sha256(f"depnet-test/{name}".encode()).digest())


@functools.cache
def pub(name: str) -> bytes:
    return bytes(key(name).verify_key)


def make_genesis(chain_id: str = CHAIN_ID) -> Genesis:
    """Two banks; alice (JPM) and bob (DBS) hold opening balances, carol is registered
    at JPM with nothing; 'dave' and 'erin' exist as keys but are not registered."""
    return parse_genesis(
        {
            "chain_id": chain_id,
            "genesis_time_ms": GENESIS_TIME_MS,
            "banks": [
                {
                    "name": "JPM",
                    "country": "US",
                    "validator": pub("jpm-validator").hex(),
                    "issuer": pub("jpm-issuer").hex(),
                    "tokens": [{"symbol": USD, "decimals": 2}],
                },
                {
                    "name": "DBS",
                    "country": "SG",
                    "validator": pub("dbs-validator").hex(),
                    "issuer": pub("dbs-issuer").hex(),
                    "tokens": [{"symbol": SGD, "decimals": 2}],
                },
            ],
            "accounts": [
                {"account": pub("alice").hex(), "bank": "JPM", "name": "alice",
                 "balances": {USD: 100_000}},
                {"account": pub("bob").hex(), "bank": "DBS", "name": "bob",
                 "balances": {SGD: 50_000, USD: 1_000}},
                {"account": pub("carol").hex(), "bank": "JPM", "name": "carol"},
            ],
        }
    )  # fmt: skip


def certificate(block: Block) -> CommitCertificate:
    """A certificate of the right shape (signature checks belong to consensus/)."""
    return certificate_for(block.height, block.hash)


def certificate_for(height: int, block_hash: bytes) -> CommitCertificate:
    signature = key("jpm-validator").sign(block_hash).signature
    return CommitCertificate(height, 0, block_hash, ((0, signature),))


def build_next(
    on: Store | State,
    txs: Iterable[Tx],
    *,
    verified: Container[bytes] = (),
    time_ms: int | None = None,
    evidence: tuple[bytes, ...] = (),
) -> Built:
    """The next block on a store's (or a bare state's) head, from the ``txs`` that apply,
    proposed by JPM's validator at ``time_ms`` (by default 1 ms after its parent),
    carrying the store's certificate of the parent (a fresh one for a bare state)."""
    state = on.state if isinstance(on, Store) else on
    if not state.height:
        last_cert = None
    elif isinstance(on, Store):
        last_cert = on.certificate(state.height)
    else:
        last_cert = certificate_for(state.height, state.last_hash)
    return build_block(
        state,
        txs,
        round=0,
        proposer=pub("jpm-validator"),
        time_ms=state.last_time_ms + 1 if time_ms is None else time_ms,
        last_cert=last_cert,
        max_txs=MAX_BLOCK_TXS,
        verified=verified,
        evidence=evidence,
    )


def commit(
    store: Store,
    txs: list[Tx],
    *,
    verified: Container[bytes] = (),
    time_ms: int | None = None,
    evidence: tuple[bytes, ...] = (),
) -> Block:
    """Build the next block from ``txs`` on the store's state and commit it; every tx
    must apply."""
    built = build_next(store, txs, verified=verified, time_ms=time_ms, evidence=evidence)
    assert not built.rejected, built.rejected
    store.commit_block(built.block, certificate(built.block), built.changes)
    return built.block


_DROPPED_WHEN_EMPTY = ("balances", "supply", "frozen")  # as State drops them


def view(source: State | Changes) -> dict[str, dict]:
    """Every entry of a state, or of a state with uncommitted changes on top, as plain dicts
    (zero balances and supplies and lifted holds dropped, as State drops them)."""
    base = source if isinstance(source, State) else source.base
    tables = {name: dict(getattr(base, name)) for name in TABLES}
    if isinstance(source, Changes):
        for name in TABLES:
            tables[name].update(getattr(source, name))
    for name in _DROPPED_WHEN_EMPTY:
        tables[name] = {k: v for k, v in tables[name].items() if v}
    return tables


def rejection(changes: Changes, t: Tx) -> Reason:
    """Run the full admission check of ``t``; assert that it was rejected and that it
    changed nothing, the state root included. Returns the reason."""
    before, root_before = view(changes), changes.root_acc()
    with pytest.raises(TxRejected) as info:
        check_tx(changes, t)
    assert view(changes) == before
    assert changes.root_acc() == root_before
    return info.value.reason


def at_time(changes: Changes, time_ms: int) -> Changes:
    """The same writes, with the rules reading block time ``time_ms`` from now on: what
    a later block on top of them would see."""
    later = Changes(changes.base, time_ms)
    for name in TABLES:
        getattr(later, name).update(getattr(changes, name))
    return later


# -- programmable payments ------------------------------------------------------------------

T0 = GENESIS_TIME_MS + 1  # the block time of a fresh Changes on the genesis state
EXPIRY = T0 + 60_000
TERMS_HASH = sha256(b"depnet-test terms").digest()


def contract_terms(
    approver: str = "carol",
    milestones: dict[str, int] | None = None,
    *,
    expiry_ms: int = EXPIRY,
    due: dict[str, int] | None = None,
) -> ContractTerms:
    """Terms of a contract approved by ``approver``: 30/70 of 1,000 by default."""
    milestones = {"shipment": 300, "delivery": 700} if milestones is None else milestones
    due = due or {}
    return ContractTerms(
        pub(approver),
        expiry_ms,
        TERMS_HASH,
        tuple(Milestone(name, amount, due.get(name, 0)) for name, amount in milestones.items()),
    )


class Book:
    """A ledger in progress for rule tests: txs signed with each sender's next nonce and
    applied on one Changes, whose block time a test moves on with ``at``. ``applied``
    keeps the applied txs in order, so a test can put them in blocks."""

    def __init__(self, genesis: Genesis | None = None) -> None:
        self.changes = Changes(State(genesis or make_genesis()))
        self.applied: list[Tx] = []

    def sign(self, signer: str, kind: TxKind, **fields: object) -> Tx:
        nonce = self.changes.nonce(pub(signer))
        return sign_tx(key(signer), kind, CHAIN_ID, nonce, **fields)  # type: ignore[arg-type]

    def do(self, signer: str, kind: TxKind, **fields: object) -> Tx:
        t = self.sign(signer, kind, **fields)
        check_tx(self.changes, t)
        self.applied.append(t)
        return t

    def refused(self, signer: str, kind: TxKind, **fields: object) -> Reason:
        """The reason ``kind`` by ``signer`` is rejected (asserting it changed nothing)."""
        return rejection(self.changes, self.sign(signer, kind, **fields))

    def at(self, time_ms: int) -> Book:
        self.changes = at_time(self.changes, time_ms)
        return self

    def balance(self, name: str, token: str) -> int:
        return self.changes.balance(pub(name), token)

    # the kinds, spelled with their usual fields

    def open_contract(
        self,
        buyer: str = "alice",
        supplier: str = "bob",
        terms: ContractTerms | None = None,
        token: str = USD,
    ) -> bytes:
        terms = terms or contract_terms()
        total = sum(m.amount for m in terms.milestones)
        t = self.do(
            buyer, TxKind.CONTRACT_OPEN, to=pub(supplier), token=token, amount=total, args=terms
        )
        return t.tx_id

    def on(self, signer: str, kind: TxKind, ref_id: bytes, milestone: str = "") -> Tx:
        """A release, refund or cancel of a contract, or an accept or cancel of an offer."""
        return self.sign(signer, kind, args=Ref(ref_id, milestone))

    def offer(
        self,
        maker: str = "bob",
        give: tuple[str, int] = (SGD, 1_350),
        ask: tuple[str, int] = (USD, 1_000),
        *,
        to: str | None = None,
        expiry_ms: int = EXPIRY,
    ) -> bytes:
        t = self.do(
            maker,
            TxKind.SWAP_OFFER,
            to=pub(to) if to else b"",
            token=give[0],
            amount=give[1],
            args=SwapTerms(ask[0], ask[1], expiry_ms),
        )
        return t.tx_id
