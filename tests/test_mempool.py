"""The mempool: admission rules, nonce order, funds counting pending txs, eviction on commit."""

from __future__ import annotations

import contextlib
import math
import random
from pathlib import Path

import httpx
import pytest
from nacl.signing import SigningKey

import chain.state
import node.mempool
import node.service
import tests.ledger_helpers as ledger
from chain.block import Block
from chain.errors import Reason, TxRejected
from chain.genesis import parse_genesis
from chain.state import Changes, State, apply_tx, execute_block
from chain.tx import SIGNATURE_SIZE, Tx, TxKind, decode_tx, sign_tx
from node.api import create_app
from node.config import load_template
from node.layout import create_network
from node.mempool import Mempool, MempoolFull, PoolSizer, TxStatus, peer_room_for
from node.runner import Node
from tests.ledger_helpers import build_next
from tests.ledger_helpers import pub as pub_of

CHAIN = "depnet-test"
TOKEN = "USD.JPM"
PROPOSER = pub_of("jpm-validator")
BANK = SigningKey(b"\x01" * 32)
ALICE = SigningKey(b"\x02" * 32)
BOB = SigningKey(b"\x03" * 32)
CAROL = SigningKey(b"\x04" * 32)
OUTSIDER = SigningKey(b"\x05" * 32)  # never registered


def pub(key: SigningKey) -> bytes:
    return bytes(key.verify_key)


def make_state(alice: int = 100, bob: int = 0, carol: int = 0) -> State:
    accounts = [
        {"account": pub(key).hex(), "bank": "JPM", "name": name, "balances": balances}
        for key, name, balances in (
            (ALICE, "alice", {TOKEN: alice} if alice else {}),
            (BOB, "bob", {TOKEN: bob} if bob else {}),
            (CAROL, "carol", {TOKEN: carol} if carol else {}),
        )
    ]
    genesis = parse_genesis(
        {
            "chain_id": CHAIN,
            "genesis_time_ms": 1_000,
            "banks": [
                {
                    "name": "JPM",
                    "country": "US",
                    "validator": PROPOSER.hex(),
                    "issuer": pub(BANK).hex(),
                    "tokens": [{"symbol": TOKEN, "decimals": 2}],
                }
            ],
            "accounts": accounts,
        }
    )
    return State(genesis)


def pay(key: SigningKey, nonce: int, amount: int, to: SigningKey = CAROL, memo: str = "") -> Tx:
    return sign_tx(
        key, TxKind.TRANSFER, CHAIN, nonce, to=pub(to), token=TOKEN, amount=amount, memo=memo
    )


def commit(state: State, txs: list[Tx]) -> Block:
    """Build a block of exactly ``txs`` on ``state`` and commit it, as another proposer would."""
    built = build_next(state, txs)
    assert not built.rejected, built.rejected
    state.commit(built.changes, built.block.header)
    return built.block


def rejection(pool: Mempool, tx: Tx) -> TxRejected:
    with pytest.raises(TxRejected) as caught:
        pool.add(tx)
    return caught.value


def test_valid_transfer_is_pending_and_offered_to_blocks() -> None:
    pool = Mempool(make_state(), max_size=10, nonce_window=4)
    tx = pay(ALICE, 0, 10)
    pool.add(tx)
    assert pool.status(tx.tx_id) == TxStatus("pending")
    assert pool.candidates(10) == [tx]
    assert tx.tx_id in pool and len(pool) == 1
    assert pool.next_nonce(pub(ALICE)) == 1


def test_bad_signature_is_rejected_and_remembered() -> None:
    pool = Mempool(make_state(), max_size=10, nonce_window=4)
    good = pay(ALICE, 0, 10)
    forged = decode_tx(good.body + pay(BOB, 0, 10).signature)  # decodes; signature is Bob's
    assert rejection(pool, forged).reason is Reason.BAD_SIGNATURE
    assert pool.status(forged.tx_id).status == "rejected"
    assert pool.status(forged.tx_id).code == "bad_signature"
    assert len(pool) == 0 and pool.next_nonce(pub(ALICE)) == 0


def test_wrong_chain_is_rejected() -> None:
    pool = Mempool(make_state(), max_size=10, nonce_window=4)
    tx = sign_tx(ALICE, TxKind.TRANSFER, "other-chain", 0, to=pub(BOB), token=TOKEN, amount=1)
    assert rejection(pool, tx).reason is Reason.WRONG_CHAIN


def test_unregistered_sender_is_rejected() -> None:
    pool = Mempool(make_state(), max_size=10, nonce_window=4)
    assert rejection(pool, pay(OUTSIDER, 0, 1)).reason is Reason.SENDER_NOT_REGISTERED


def test_ledger_rules_apply_at_admission() -> None:
    pool = Mempool(make_state(), max_size=10, nonce_window=4)
    tx = sign_tx(ALICE, TxKind.TRANSFER, CHAIN, 0, to=pub(OUTSIDER), token=TOKEN, amount=1)
    assert rejection(pool, tx).reason is Reason.RECIPIENT_NOT_REGISTERED
    mint = sign_tx(ALICE, TxKind.MINT, CHAIN, 0, to=pub(BOB), token=TOKEN, amount=1)
    assert rejection(pool, mint).reason is Reason.NOT_ISSUER
    assert pool.next_nonce(pub(ALICE)) == 0


def test_funds_count_pending_txs() -> None:
    pool = Mempool(make_state(alice=100), max_size=10, nonce_window=4)
    pool.add(pay(ALICE, 0, 60))
    overspend = pay(ALICE, 1, 60)
    error = rejection(pool, overspend)
    assert error.reason is Reason.INSUFFICIENT_FUNDS
    assert pool.status(overspend.tx_id).code == "insufficient_funds"
    pool.add(pay(ALICE, 1, 40))
    assert pool.next_nonce(pub(ALICE)) == 2


def test_pending_credit_funds_a_later_spend_in_block_order() -> None:
    state = make_state(alice=100, bob=0)
    pool = Mempool(state, max_size=10, nonce_window=4)
    credit = pay(ALICE, 0, 50, to=BOB)
    spend = pay(BOB, 0, 50, to=CAROL)
    pool.add(credit)
    pool.add(spend)
    built = build_next(state, pool.candidates(10), verified=pool.verified)
    assert built.block.txs == (credit, spend) and not built.rejected


def test_duplicate_is_rejected_as_duplicate() -> None:
    pool = Mempool(make_state(), max_size=10, nonce_window=4)
    tx = pay(ALICE, 0, 10)
    pool.add(tx)
    assert rejection(pool, tx).reason is Reason.DUPLICATE
    assert pool.candidates(10) == [tx]


def test_used_and_taken_nonces_are_rejected() -> None:
    state = make_state()
    pool = Mempool(state, max_size=10, nonce_window=4)
    pool.add(pay(ALICE, 0, 10))
    rival = pay(ALICE, 0, 10, memo="same nonce, another tx")
    error = rejection(pool, rival)
    assert error.reason is Reason.BAD_NONCE and "pending" in error.detail
    pool.on_commit(commit(state, pool.candidates(10)))
    error = rejection(pool, rival)
    assert error.reason is Reason.BAD_NONCE and "already used" in error.detail


def test_nonce_beyond_window_is_rejected() -> None:
    pool = Mempool(make_state(), max_size=10, nonce_window=4)
    pool.add(pay(ALICE, 3, 1))  # next is 0: 3 is the last nonce inside the window
    error = rejection(pool, pay(ALICE, 4, 1))
    assert error.reason is Reason.BAD_NONCE and "too far ahead" in error.detail


def test_future_nonce_waits_queued_until_the_gap_fills() -> None:
    pool = Mempool(make_state(), max_size=10, nonce_window=4)
    txs = [pay(ALICE, n, 1) for n in range(4)]
    for tx in (txs[2], txs[3], txs[1]):
        pool.add(tx)
    assert [pool.status(tx.tx_id).status for tx in txs] == ["unknown", *["queued"] * 3]
    assert pool.candidates(10) == [] and pool.queued_count == 3
    error = rejection(pool, pay(ALICE, 2, 1, memo="rival"))
    assert error.reason is Reason.BAD_NONCE and "queued" in error.detail
    pool.add(txs[0])
    assert pool.candidates(10) == txs
    assert pool.queued_count == 0 and pool.next_nonce(pub(ALICE)) == 4


def test_promoted_tx_that_overspends_is_dropped_and_later_ones_stay_queued() -> None:
    pool = Mempool(make_state(alice=100), max_size=10, nonce_window=4)
    too_big = pay(ALICE, 1, 95)
    after = pay(ALICE, 2, 1)
    pool.add(too_big)
    pool.add(after)
    pool.add(pay(ALICE, 0, 10))
    assert pool.status(too_big.tx_id).code == "insufficient_funds"
    assert pool.status(after.tx_id).status == "queued"
    pool.add(pay(ALICE, 1, 5))
    assert [tx.nonce for tx in pool.candidates(10)] == [0, 1, 2]


def test_full_pool_refuses_before_checking_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(node.mempool, "verify_signature", calls.append)
    pool = Mempool(make_state(), max_size=2, nonce_window=8)
    pool.add(pay(ALICE, 0, 1))
    pool.add(pay(ALICE, 5, 1))  # queued txs count too
    with pytest.raises(MempoolFull) as caught:
        pool.add(pay(ALICE, 1, 1))
    assert caught.value.reason is Reason.MEMPOOL_FULL
    assert len(calls) == 2 and len(pool) == 2


def test_signature_verified_once_across_admission_build_and_execute(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[bytes] = []
    real = node.mempool.verify_signature

    def counting(tx: Tx) -> None:
        calls.append(tx.tx_id)
        real(tx)

    monkeypatch.setattr(node.mempool, "verify_signature", counting)
    monkeypatch.setattr(chain.state, "verify_signature", counting)
    state = make_state(alice=100, bob=100)
    pool = Mempool(state, max_size=10, nonce_window=4)
    txs = [pay(ALICE, 0, 1), pay(BOB, 0, 1), pay(ALICE, 1, 1)]
    for tx in txs:
        pool.add(tx)
    with pytest.raises(TxRejected):
        pool.add(txs[0])  # duplicate: no second verification
    built = build_next(state, pool.candidates(10), verified=pool.verified)
    execute_block(state, built.block, verified=pool.verified)
    assert sorted(calls) == sorted(tx.tx_id for tx in txs)


def test_known_bad_signature_is_not_verified_again(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = Mempool(make_state(), max_size=10, nonce_window=4)
    good = pay(ALICE, 0, 10)
    forged = decode_tx(good.raw[:-SIGNATURE_SIZE] + bytes(SIGNATURE_SIZE))
    assert rejection(pool, forged).reason is Reason.BAD_SIGNATURE
    calls = []
    monkeypatch.setattr(node.mempool, "verify_signature", calls.append)
    assert rejection(pool, forged).reason is Reason.BAD_SIGNATURE
    assert calls == []


def test_commit_removes_committed_txs_and_keeps_the_rest_pending() -> None:
    state = make_state(alice=100, bob=100)
    pool = Mempool(state, max_size=10, nonce_window=4)
    txs = [pay(ALICE, 0, 10), pay(BOB, 0, 10), pay(ALICE, 1, 10)]
    for tx in txs:
        pool.add(tx)
    block = commit(state, [txs[1]])  # another proposer's pick, not our prefix
    assert pool.on_commit(block) == []
    assert pool.candidates(10) == [txs[0], txs[2]]
    assert pool.status(txs[1].tx_id) == TxStatus("unknown")  # committed: the store answers
    assert txs[1].tx_id not in pool.verified


def test_commit_of_a_rival_tx_evicts_what_it_invalidated() -> None:
    state = make_state(alice=100)
    pool = Mempool(state, max_size=10, nonce_window=4)
    ours = [pay(ALICE, 0, 10), pay(ALICE, 1, 80), pay(ALICE, 2, 5)]
    for tx in ours:
        pool.add(tx)
    rival = pay(ALICE, 0, 90, memo="submitted elsewhere")
    evicted = pool.on_commit(commit(state, [rival]))
    assert {tx.tx_id: exc.reason for tx, exc in evicted} == {
        ours[0].tx_id: Reason.BAD_NONCE,
        ours[1].tx_id: Reason.INSUFFICIENT_FUNDS,
    }
    assert pool.status(ours[0].tx_id).status == "rejected"
    assert pool.status(ours[1].tx_id).code == "insufficient_funds"
    # nonce 2 now lies beyond a gap (nonce 1 is free again): it waits instead of dying
    assert pool.status(ours[2].tx_id).status == "queued"
    assert pool.candidates(10) == []
    refill = pay(ALICE, 1, 3)
    pool.add(refill)
    assert pool.candidates(10) == [refill, ours[2]]


def test_committed_nonce_evicts_queued_tx_and_filled_gap_promotes() -> None:
    state = make_state(alice=100)
    pool = Mempool(state, max_size=10, nonce_window=4)
    stale = pay(ALICE, 1, 1, memo="loses to the committed nonce 1")
    waiting = pay(ALICE, 2, 1)
    pool.add(stale)
    pool.add(waiting)
    evicted = pool.on_commit(commit(state, [pay(ALICE, 0, 1), pay(ALICE, 1, 1)]))
    assert [(tx, exc.reason) for tx, exc in evicted] == [(stale, Reason.BAD_NONCE)]
    assert pool.candidates(10) == [waiting]


def test_queued_tx_expires_after_max_queue_blocks() -> None:
    state = make_state()
    pool = Mempool(state, max_size=10, nonce_window=4, max_queue_blocks=2)
    orphan = pay(ALICE, 2, 1)
    pool.add(orphan)
    assert pool.on_commit(commit(state, [])) == []
    evicted = pool.on_commit(commit(state, []))
    assert [tx for tx, _ in evicted] == [orphan]
    assert pool.status(orphan.tx_id).code == "bad_nonce" and len(pool) == 0


def test_rejection_memory_is_bounded() -> None:
    pool = Mempool(make_state(), max_size=10, nonce_window=4, max_rejected=2)
    bad = [pay(OUTSIDER, n, 1) for n in range(3)]
    for tx in bad:
        rejection(pool, tx)
    assert [pool.status(tx.tx_id).status for tx in bad] == ["unknown", "rejected", "rejected"]


def test_on_commit_before_state_commit_is_refused() -> None:
    state = make_state()
    pool = Mempool(state, max_size=10, nonce_window=4)
    built = build_next(state, [])
    with pytest.raises(ValueError):
        pool.on_commit(built.block)


@pytest.mark.parametrize("slack", [0, node.mempool._OVERLAY_SLACK])
@pytest.mark.parametrize("seed", range(4))
def test_pool_always_matches_a_fresh_replay_of_its_candidates(
    monkeypatch: pytest.MonkeyPatch, slack: int, seed: int
) -> None:
    """Random admissions out of order, rival txs and partial blocks: after every step the
    pool's candidates apply in order on the committed state, and its next nonces are
    what that replay gives. ``slack`` 0 forces the overlay rebuild on every commit."""
    monkeypatch.setattr(node.mempool, "_OVERLAY_SLACK", slack)
    rng = random.Random(seed)
    keys = [ALICE, BOB, CAROL]
    state = make_state(alice=300, bob=300, carol=300)
    pool = Mempool(state, max_size=200, nonce_window=6, max_queue_blocks=3)
    for _ in range(300):
        key = rng.choice(keys)
        sender = pub(key)
        nonce = max(pool.next_nonce(sender) + rng.choice([-1, 0, 0, 0, 1, 2, 3]), 0)
        to = rng.choice([k for k in keys if k is not key])
        tx = pay(key, nonce, rng.randint(1, 40), to=to, memo=str(rng.random()))
        with contextlib.suppress(TxRejected):
            pool.add(tx)
        if rng.random() < 0.1:
            picked = pool.candidates(rng.randint(0, 10))
            if rng.random() < 0.3:  # a rival proposer's block, built from txs we never saw
                rival = pay(key, state.nonces.get(sender, 0), 1, to=to, memo="rival")
                picked = [tx for tx in picked if tx.sender != sender] + [rival]
            pool.on_commit(commit(state, picked))
        replay = Changes(state)
        for tx in pool.candidates(1_000):
            apply_tx(replay, tx)  # raises if the pool's order were not a valid block order
        for k in keys:
            assert pool.next_nonce(pub(k)) == replay.nonce(pub(k))
            assert pool._overlay.balance(pub(k), TOKEN) == replay.balance(pub(k), TOKEN)
        for tx, since in pool._queued_since.values():
            assert tx.nonce > replay.nonce(tx.sender)
            assert state.height - since < pool.max_queue_blocks


# -- programmable payments: deadlines and order-sensitive kinds ------------------------------


def _ledger_pool() -> tuple[State, Mempool]:
    state = State(ledger.make_genesis())
    return state, Mempool(state, max_size=20, nonce_window=4)


def _seal(state: State, pool: Mempool, txs: list[Tx], time_ms: int | None = None) -> list:
    """Another proposer's block of exactly ``txs``, committed; returns what the pool evicts."""
    built = ledger.build_next(state, txs, time_ms=time_ms)
    assert not built.rejected, built.rejected
    state.commit(built.changes, built.block.header)
    return [(tx, exc.reason) for tx, exc in pool.on_commit(built.block)]


def test_the_pool_judges_time_by_the_next_block_on_the_committed_chain() -> None:
    """A refund is admitted once the next block's earliest time reaches the expiry: every
    node decides from the committed block time, none from its own clock."""
    state, pool = _ledger_pool()
    book = ledger.Book()
    contract_id = book.open_contract()
    pool.add(book.applied[0])
    assert _seal(state, pool, book.applied) == []
    refund = book.on("alice", TxKind.CONTRACT_REFUND, contract_id)
    assert rejection(pool, refund).reason is Reason.CONTRACT_NOT_EXPIRED
    assert _seal(state, pool, [], time_ms=ledger.EXPIRY - 1) == []
    pool.add(refund)  # the next block is dated at the expiry at the earliest
    assert pool.candidates(10) == [refund]


def test_a_pending_accept_is_evicted_when_a_block_reaches_the_offer_expiry() -> None:
    state, pool = _ledger_pool()
    book = ledger.Book()
    offer_id = book.offer("bob")
    assert _seal(state, pool, book.applied) == []
    accept = book.on("alice", TxKind.SWAP_ACCEPT, offer_id)
    pool.add(accept)
    assert _seal(state, pool, [], time_ms=ledger.EXPIRY - 2) == []  # still before it
    assert pool.candidates(10) == [accept]
    assert _seal(state, pool, [], time_ms=ledger.EXPIRY) == [(accept, Reason.OFFER_EXPIRED)]
    assert pool.candidates(10) == []


def test_a_hold_committed_ahead_of_a_pending_payment_evicts_it() -> None:
    """Both were pending here, payment first; a block carries only the hold. The pool
    cannot keep its overlay: the hold made the earlier payment fail."""
    state, pool = _ledger_pool()
    payment = sign_tx(ledger.key("alice"), TxKind.TRANSFER, ledger.CHAIN_ID, 0,
                      to=ledger.pub("carol"), token=ledger.USD, amount=10)  # fmt: skip
    hold = sign_tx(ledger.key("jpm-issuer"), TxKind.FREEZE, ledger.CHAIN_ID, 0,
                   to=ledger.pub("alice"))  # fmt: skip
    pool.add(payment)
    pool.add(hold)
    assert _seal(state, pool, [hold]) == [(payment, Reason.ACCOUNT_FROZEN)]


def test_queued_txs_take_at_most_their_share_and_are_refused_unverified(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Txs waiting behind a gap cannot fill the pool: past ``max_queued`` a future nonce is
    refused before its signature is checked, while the nonce that fills the gap still gets in."""
    calls = []
    real = node.mempool.verify_signature
    monkeypatch.setattr(node.mempool, "verify_signature", lambda tx: calls.append(real(tx)))
    pool = Mempool(make_state(), max_size=10, nonce_window=8, max_queued=2)
    pool.add(pay(ALICE, 2, 1))
    pool.add(pay(ALICE, 3, 1))
    with pytest.raises(MempoolFull):
        pool.add(pay(ALICE, 4, 1))
    assert len(calls) == 2
    pool.add(pay(ALICE, 0, 1))
    pool.add(pay(ALICE, 1, 1))  # fills the gap: 2 and 3 are promoted
    assert [tx.nonce for tx in pool.candidates(10)] == [0, 1, 2, 3]
    assert pool.queued_count == 0 and len(calls) == 4


def test_gap_expired_tx_stays_readable_after_a_flood_of_refusals() -> None:
    """An accepted tx that is later dropped keeps its reason in a memory of its own, which
    refusals at admission (stale gossip, say) cannot churn through."""
    state = make_state()
    pool = Mempool(state, max_size=10, nonce_window=4, max_queue_blocks=1, max_rejected=2)
    orphan = pay(ALICE, 2, 1)
    pool.add(orphan)
    assert pool.status(orphan.tx_id).status == "queued"
    (evicted,) = pool.on_commit(commit(state, []))
    assert evicted[0] == orphan
    for n in range(5):
        rejection(pool, pay(OUTSIDER, n, 1))
    status = pool.status(orphan.tx_id)
    assert (status.status, status.code) == ("rejected", "bad_nonce")
    assert "waited 1 blocks" in (status.message or "")


def test_every_accepted_tx_ends_committed_or_readably_rejected() -> None:
    """Random load with rival blocks, gaps and a tiny pool: each tx the pool ever accepted
    is, at the end, committed, still held, or has a readable rejection."""
    rng = random.Random(7)
    keys = [ALICE, BOB, CAROL]
    state = make_state(alice=200, bob=200, carol=200)
    pool = Mempool(state, max_size=12, nonce_window=5, max_queue_blocks=2, max_rejected=1)
    accepted: set[bytes] = set()
    committed: set[bytes] = set()
    for _ in range(400):
        key = rng.choice(keys)
        nonce = max(pool.next_nonce(pub(key)) + rng.choice([0, 0, 1, 2, 3]), 0)
        tx = pay(key, nonce, rng.randint(1, 60), to=rng.choice(keys), memo=str(rng.random()))
        with contextlib.suppress(TxRejected, MempoolFull):
            pool.add(tx)
            accepted.add(tx.tx_id)
        if rng.random() < 0.15:
            picked = pool.candidates(rng.randint(0, 6))
            if rng.random() < 0.3:
                rival = pay(key, state.nonces.get(pub(key), 0), 1, memo="rival")
                picked = [t for t in picked if t.sender != pub(key)] + [rival]
            pool.on_commit(commit(state, picked))
            committed.update(t.tx_id for t in picked)
    for tx_id in accepted - committed:
        assert pool.status(tx_id).status in ("pending", "queued", "rejected")


def test_pool_size_follows_the_commit_rate_within_floor_and_ceiling() -> None:
    sizer = PoolSizer(floor=100, ceiling=1_000, seconds=2.0, window=5.0)
    assert sizer.record(0, 0.0) == 100  # idle: the floor
    now = 0.0
    for _ in range(20):  # 300 tx/s
        now += 0.5
        size = sizer.record(150, now)
    assert size == pytest.approx(600, rel=0.05)
    for _ in range(20):  # 2,000 tx/s: capped
        now += 0.5
        size = sizer.record(1_000, now)
    assert size == 1_000
    assert sizer.size(now + 60.0) == 100  # nothing committed for a minute: the floor again


async def test_full_node_answers_429_before_verifying_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the real service and API: a full pool refuses the whole batch with 429 and
    Retry-After, and no signature is checked for it."""
    network = create_network(tmp_path / "net", load_template(), genesis_time_ms=1_000)
    entry = network.nodes()[0]
    home = network.node_home(entry.bank)
    node_ = Node(home, home.load_config())
    try:
        genesis = network.genesis()
        bank = genesis.banks[0]
        issuer = network.wallet(bank.name).signing_key
        account = next(a.account for a in genesis.accounts if a.bank == bank.name)
        token = bank.tokens[0].symbol
        mint = TxKind.MINT
        mints = [
            sign_tx(issuer, mint, genesis.chain_id, n, to=account, token=token, amount=1)
            for n in range(3)
        ]
        node_.mempool.max_size = 1
        transport = httpx.ASGITransport(app=create_app(node_.service))
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as http:
            answer = await http.post("/txs", json={"txs": [mints[0].raw.hex()]})
            assert answer.status_code == 200 and answer.json()["accepted"] == 1
            calls = []
            monkeypatch.setattr(node.mempool, "verify_signature", calls.append)
            monkeypatch.setattr(node.service, "decode_tx", calls.append)
            answer = await http.post("/txs", json={"txs": [m.raw.hex() for m in mints[1:]]})
        assert answer.status_code == 429 and answer.headers["retry-after"] == "1"
        assert answer.json()["error"]["code"] == "mempool_full"
        assert calls == [] and len(node_.mempool) == 1
    finally:
        node_.store.close()


def test_peers_txs_get_room_beyond_what_clients_get() -> None:
    """A peer's tx was admitted within the peer's own bound: refusing it here would only
    move its signature check into the block that carries it."""
    pool = Mempool(make_state(alice=100, bob=100), max_size=8, nonce_window=16)
    for n in range(8):
        pool.add(pay(ALICE, n, 1))
    with pytest.raises(MempoolFull):
        pool.add(pay(ALICE, 8, 1))
    room = math.ceil(pool.peer_room * 8)
    assert room > 8
    for n in range(room - 8):
        pool.add(pay(BOB, n, 1), from_peer=True)
    assert len(pool) == room and pool.full_for_peers
    with pytest.raises(MempoolFull):
        pool.add(pay(BOB, room - 8, 1), from_peer=True)


def test_peers_room_grows_with_the_validators() -> None:
    """Each peer's clients fill their own pool, and all of it is gossiped here."""
    assert [peer_room_for(n) for n in (1, 4, 7, 10)] == [2.0, 2.0, 3.5, 5.0]
    pool = Mempool(make_state(bob=100), max_size=4, nonce_window=16, peer_room=3.5)
    for n in range(13):
        pool.add(pay(BOB, n, 1), from_peer=True)
    assert not pool.full_for_peers  # 3.5 times 4 is 14
    pool.add(pay(BOB, 13, 1), from_peer=True)
    assert len(pool) == 14 and pool.full_for_peers
    with pytest.raises(MempoolFull):
        pool.add(pay(BOB, 14, 1), from_peer=True)
    with pytest.raises(ValueError):
        Mempool(make_state(), max_size=4, peer_room=0.5)
