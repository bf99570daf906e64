"""Shared fixtures for the ledger and store tests: a small two-bank genesis with known keys.

Keys are derived from their names, so a subprocess (tests/crash_writer.py) and the test
that checks its work hold the same keys without passing secrets around.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from hashlib import sha256

from nacl.signing import SigningKey

from chain.block import Block, CommitCertificate
from chain.codec import MAX_BLOCK_TXS
from chain.genesis import Genesis, parse_genesis
from chain.state import Built, Changes, State, build_block
from chain.store import Store
from chain.tx import Tx

CHAIN_ID = "depnet-test"
GENESIS_TIME_MS = 1_764_000_000_000
USD, SGD = "USD.JPM", "SGD.DBS"


def key(name: str) -> SigningKey:
    """The signing key named ``name`` (a bank role like 'jpm-issuer' or a wallet name)."""
    return SigningKey(sha256(f"depnet-test/{name}".encode()).digest())


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


def build_next(on: Store | State, txs: Iterable[Tx], *, verified: Container[bytes] = ()) -> Built:
    """The next block on a store's (or a bare state's) head, from the ``txs`` that apply,
    proposed by JPM's validator 1 ms after its parent, carrying the store's certificate
    of the parent (a fresh one for a bare state)."""
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
        time_ms=state.last_time_ms + 1,
        last_cert=last_cert,
        max_txs=MAX_BLOCK_TXS,
        verified=verified,
    )


def commit(store: Store, txs: list[Tx], *, verified: Container[bytes] = ()) -> Block:
    """Build the next block from ``txs`` on the store's state and commit it; every tx
    must apply."""
    built = build_next(store, txs, verified=verified)
    assert not built.rejected, built.rejected
    store.commit_block(built.block, certificate(built.block), built.changes)
    return built.block


def view(source: State | Changes) -> dict[str, dict]:
    """Every entry of a state, or of a state with uncommitted changes on top, as plain dicts
    (zero balances and supplies dropped, as State drops them)."""
    base = source if isinstance(source, State) else source.base
    balances = dict(base.balances)
    nonces = dict(base.nonces)
    accounts = dict(base.accounts)
    supply = dict(base.supply)
    if isinstance(source, Changes):
        balances.update(source.balances)
        nonces.update(source.nonces)
        accounts.update(source.accounts)
        supply.update(source.supply)
    return {
        "balances": {k: v for k, v in balances.items() if v},
        "nonces": nonces,
        "accounts": accounts,
        "supply": {k: v for k, v in supply.items() if v},
    }
