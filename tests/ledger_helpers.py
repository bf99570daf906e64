"""Shared fixtures for the ledger and store tests: a small two-bank genesis with known keys.

Keys are derived from their names, so a subprocess (tests/crash_writer.py) and the test
that checks its work hold the same keys without passing secrets around.
"""

from __future__ import annotations

from hashlib import sha256

from nacl.signing import SigningKey

from chain.block import Block, CommitCertificate
from chain.genesis import Genesis, parse_genesis
from chain.state import Changes, State, build_block
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
    signature = key("jpm-validator").sign(block.hash).signature
    return CommitCertificate(block.height, 0, block.hash, ((0, signature),))


def commit(store: Store, txs: list[Tx], *, verified: set[bytes] | None = None) -> Block:
    """Build the next block from ``txs`` on the store's state and commit it; every tx
    must apply."""
    state = store.state
    last_cert = store.certificate(state.height) if state.height else None
    built = build_block(
        state,
        txs,
        round=0,
        proposer=pub("jpm-validator"),
        time_ms=state.last_time_ms + 1,
        last_cert=last_cert,
        max_txs=len(txs) or 1,
        verified=verified or (),
    )
    assert not built.rejected, built.rejected
    store.commit_block(built.block, certificate(built.block), built.changes)
    return built.block


def view(source: State | Changes) -> dict[str, dict]:
    """Every entry of a state, or of a state with uncommitted changes on top, as plain dicts
    (zero balances dropped, as State drops them)."""
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
        "supply": supply,
    }
