"""The LevelDB store: what a commit writes, what reads return, what reopening restores,
and what it refuses (another genesis, a second process, changes that do not fit)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgpack
import plyvel
import pytest

from chain.block import CommitCertificate
from chain.errors import InvalidBlock, StoreError
from chain.state import Changes, State, apply_tx
from chain.store import Store
from chain.tx import TxKind, sign_tx
from tests.ledger_helpers import (
    CHAIN_ID,
    GENESIS_TIME_MS,
    SGD,
    USD,
    build_next,
    certificate,
    commit,
    key,
    make_genesis,
    pub,
    view,
)

GENESIS = make_genesis()


def pay(sender: str, nonce: int, to: str, token: str, amount: int, memo: str = ""):
    return sign_tx(
        key(sender), TxKind.TRANSFER, CHAIN_ID, nonce, to=pub(to), token=token, amount=amount,
        memo=memo,
    )  # fmt: skip


@contextmanager
def behind_the_store(path: Path) -> Iterator[plyvel.DB]:
    """The store's LevelDB opened directly, as another program editing it would."""
    db = plyvel.DB(str(path))
    try:
        yield db
    finally:
        db.close()


def refused_on_open(path: Path, match: str) -> None:
    with pytest.raises(StoreError, match=match):
        Store.open(path, GENESIS)


@pytest.fixture
def store(tmp_path: Path):
    with Store.open(tmp_path / "db", GENESIS) as opened:
        yield opened


def test_a_new_store_holds_the_genesis_state(store: Store) -> None:
    assert (store.head.height, store.head.hash, store.head.time_ms) == (
        0,
        bytes(32),
        GENESIS_TIME_MS,
    )
    assert store.head.state_root == State(GENESIS).state_root == store.state.state_root
    assert store.balances(pub("bob")) == {SGD: 50_000, USD: 1_000}
    assert store.bank_of(pub("carol")) == "JPM"
    assert store.bank_of(pub("dave")) is None
    assert store.supply(USD) == 101_000
    assert store.nonce(pub("alice")) == 0
    assert store.block(1) is None and store.certificate(1) is None


def test_committed_blocks_read_back_by_height_and_tx_id(store: Store) -> None:
    first = commit(store, [pay("alice", 0, "carol", USD, 10, "INV-1")])
    second = commit(store, [pay("alice", 1, "bob", USD, 20), pay("bob", 0, "alice", SGD, 5)])
    assert store.block(1) == first and store.block(2) == second
    assert store.block(0) is None and store.block(3) is None
    assert store.block_bytes(2) == second.encode() and store.block_bytes(3) is None
    assert store.certificate(2) == certificate(second)
    assert store.certificate_bytes(2) == certificate(second).encode()
    assert second.last_cert == store.certificate(1)
    assert [b.height for b, _ in store.blocks(1, 99)] == [1, 2]
    for height, block in ((1, first), (2, second)):
        for position, t in enumerate(block.txs):
            assert store.tx_location(t.tx_id) == (height, position)
            assert store.tx(t.tx_id) == t
    assert store.tx(bytes(32)) is None
    assert store.head.height == 2 and store.head.hash == second.hash


def test_committed_evidence_is_listed_by_height_without_reading_blocks(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db", GENESIS) as store:
        commit(store, [], evidence=(b"first", b"second"))
        commit(store, [])
        commit(store, [], evidence=(b"third",))
        assert store.evidence() == [(1, b"first"), (1, b"second"), (3, b"third")]
        assert store.evidence(2) == [(3, b"third")] and store.evidence(1, 2)[-1] == (1, b"second")
        assert store.evidence(4) == [] and store.evidence(3, 2) == []
        assert store.block(1).evidence == (b"first", b"second")  # type: ignore[union-attr]
    with Store.open(tmp_path / "db", GENESIS) as reopened:
        assert len(reopened.evidence()) == 3


@pytest.mark.parametrize("checkpointed", [True, False], ids=["checkpoint", "replay"])
def test_a_reopened_store_reads_every_kind_of_change(tmp_path: Path, checkpointed: bool) -> None:
    """Whether the state entries were written (a checkpoint) or the block is re-executed
    on opening (a crash before one), the reopened store reads the same state."""
    with Store.open(tmp_path / "db", GENESIS) as written:
        commit(
            written,
            [
                sign_tx(key("jpm-issuer"), TxKind.REGISTER, CHAIN_ID, 0, to=pub("dave")),
                sign_tx(key("jpm-issuer"), TxKind.MINT, CHAIN_ID, 1, to=pub("dave"), token=USD,
                        amount=500),
                sign_tx(key("alice"), TxKind.BURN, CHAIN_ID, 0, token=USD, amount=1_000),
                pay("bob", 0, "dave", USD, 1_000),  # bob's whole USD balance
            ],
        )  # fmt: skip
        if checkpointed:
            written.checkpoint()
        expected = view(written.state)
    with behind_the_store(tmp_path / "db") as db:
        on_disk = db.get(b"B" + pub("dave") + USD.encode())
    assert (on_disk is not None) == checkpointed  # a new balance is written at checkpoints
    store = Store.open(tmp_path / "db", GENESIS)
    assert view(store.state) == expected
    assert store.bank_of(pub("dave")) == "JPM"
    assert store.balance(pub("dave"), USD) == 1_500
    assert store.balance(pub("alice"), USD) == 99_000
    assert store.balance(pub("bob"), USD) == 0
    assert store.balances(pub("bob")) == {SGD: 50_000}  # a zero balance leaves no entry
    assert store.supply(USD) == 100_500
    assert (store.nonce(pub("jpm-issuer")), store.nonce(pub("bob"))) == (2, 1)
    store.close()


def test_state_entries_are_written_every_checkpoint_blocks(tmp_path: Path) -> None:
    """Blocks 1-3 go to disk with the third one's state; blocks 4-5 are re-executed by
    the next open, which carries on from the head and checkpoints again at block 6."""
    path = tmp_path / "db"

    def balance_on_disk(name: str) -> int | None:
        with behind_the_store(path) as db:
            data = db.get(b"B" + pub(name) + USD.encode())
        return None if data is None else msgpack.unpackb(data)

    with Store.open(path, GENESIS, checkpoint_blocks=3) as store:
        for nonce in range(5):
            commit(store, [pay("alice", nonce, "carol", USD, 10)])
        assert store.balance(pub("carol"), USD) == 50
        head, expected = store.head, view(store.state)
    assert balance_on_disk("carol") == 30
    with Store.open(path, GENESIS, checkpoint_blocks=3) as store:
        assert (store.head, view(store.state)) == (head, expected)
        commit(store, [pay("alice", 5, "carol", USD, 10)])
    assert balance_on_disk("carol") == 60


def test_a_block_that_no_longer_replays_is_detected_on_open(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db", GENESIS) as store:
        commit(store, [pay("alice", 0, "carol", USD, 10)])
        commit(store, [pay("carol", 0, "bob", USD, 10)])
    with behind_the_store(tmp_path / "db") as db:
        db.delete(b"b" + (1).to_bytes(8, "big"))  # block 2 is the head: block 1 is replayed
    refused_on_open(tmp_path / "db", "block 1 is missing")


def test_a_block_that_no_longer_extends_the_chain_is_named_on_open(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db", GENESIS) as store:
        commit(store, [pay("alice", 0, "carol", USD, 10)])
        commit(store, [pay("carol", 0, "bob", USD, 10)])
        commit(store, [])
        second = store.block(2)
    assert second is not None
    with behind_the_store(tmp_path / "db") as db:
        db.put(b"b" + (1).to_bytes(8, "big"), second.encode())  # block 1 replaced
    refused_on_open(tmp_path / "db", "block 1 does not re-execute")


def test_a_checkpoint_marker_edited_to_match_edited_entries_is_detected(tmp_path: Path) -> None:
    """The entries' root is checked against the marker, and the marker against the head."""
    with Store.open(tmp_path / "db", GENESIS) as store:
        commit(store, [pay("alice", 0, "carol", USD, 10)])
        store.checkpoint()
        head, state = store.head, store.state
    state.balances[(pub("carol"), USD)] = 1_000
    edited_root = state.computed_root_acc().to_bytes(32, "big")
    with behind_the_store(tmp_path / "db") as db:
        db.put(b"B" + pub("carol") + USD.encode(), msgpack.packb(1_000))
        db.put(b"\x00state", msgpack.packb([head.height, head.hash, head.time_ms, edited_root]))
    refused_on_open(tmp_path / "db", "checkpoint is off the chain")


def test_a_store_of_schema_5_opens_with_its_head_as_its_checkpoint(tmp_path: Path) -> None:
    """Schema 5 wrote the state entries with every block; opening one upgrades it."""
    with Store.open(tmp_path / "db", GENESIS) as store:
        commit(store, [pay("alice", 0, "carol", USD, 10)])
        store.checkpoint()
        head, expected = store.head, view(store.state)
    with behind_the_store(tmp_path / "db") as db:
        db.delete(b"\x00state")
        db.put(b"\x00meta", msgpack.packb([5, GENESIS.chain_id, GENESIS.hash]))
    with Store.open(tmp_path / "db", GENESIS) as store:
        assert (store.head, view(store.state)) == (head, expected)
        commit(store, [pay("alice", 1, "carol", USD, 10)])
    with behind_the_store(tmp_path / "db") as db:
        assert msgpack.unpackb(db.get(b"\x00meta"))[0] == 6
    with Store.open(tmp_path / "db", GENESIS) as store:
        assert store.balance(pub("carol"), USD) == 20


def test_checkpoint_blocks_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="checkpoint_blocks"):
        Store.open(tmp_path / "db", GENESIS, checkpoint_blocks=0)


def test_reopening_restores_the_same_state_and_head(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db", GENESIS) as store:
        commit(store, [pay("alice", 0, "carol", USD, 10)])
        commit(store, [pay("carol", 0, "bob", USD, 10)])  # carol's balance back to zero
        head, state = store.head, store.state
    with Store.open(tmp_path / "db", GENESIS) as reopened:
        assert reopened.head == head
        assert reopened.state.state_root == state.state_root == head.state_root
        assert view(reopened.state) == view(state)
        assert (reopened.state.height, reopened.state.last_hash) == (2, head.hash)
        assert reopened.state.last_time_ms == state.last_time_ms
        # The reopened state carries on where it left off.
        commit(reopened, [pay("alice", 1, "bob", USD, 1)])
        assert reopened.balance(pub("bob"), USD) == 1_011


def test_a_store_refuses_another_chain(tmp_path: Path) -> None:
    Store.open(tmp_path / "db", GENESIS).close()
    with pytest.raises(StoreError, match="belongs to chain 'depnet-test', not 'depnet-other'"):
        Store.open(tmp_path / "db", make_genesis("depnet-other"))


def test_a_store_refuses_a_different_genesis_of_the_same_chain(tmp_path: Path) -> None:
    Store.open(tmp_path / "db", GENESIS).close()
    other = make_genesis()
    other = type(other)(other.chain_id, other.genesis_time_ms + 1, other.banks, other.accounts)
    with pytest.raises(StoreError, match="different genesis"):
        Store.open(tmp_path / "db", other)


def test_a_store_open_elsewhere_is_refused(store: Store) -> None:
    with pytest.raises(StoreError, match="cannot open store"):
        Store.open(store.path, GENESIS)


def test_commit_refuses_changes_executed_on_another_state(store: Store) -> None:
    built = build_next(State(GENESIS), [])
    with pytest.raises(InvalidBlock, match="not executed on this state"):
        store.commit_block(built.block, certificate(built.block), built.changes)
    assert store.head.height == 0 and store.block(1) is None


def test_commit_refuses_a_certificate_for_another_block(store: Store) -> None:
    built = build_next(store, [])
    wrong = CommitCertificate(1, 0, bytes(32), ((0, bytes(64)),))
    with pytest.raises(InvalidBlock, match="certificate"):
        store.commit_block(built.block, wrong, built.changes)
    assert store.head.height == 0 and store.certificate(1) is None


def test_commit_refuses_a_block_twice(store: Store) -> None:
    built = build_next(store, [pay("alice", 0, "carol", USD, 10)])
    store.commit_block(built.block, certificate(built.block), built.changes)
    with pytest.raises(InvalidBlock, match="not executed on this state at its current height"):
        store.commit_block(built.block, certificate(built.block), built.changes)
    assert store.head.height == 1 and store.balance(pub("carol"), USD) == 10


def test_commit_refuses_a_rival_block_of_a_height_already_committed(store: Store) -> None:
    first = build_next(store, [pay("alice", 0, "carol", USD, 10)])
    rival = build_next(store, [pay("alice", 0, "carol", USD, 20)])
    store.commit_block(first.block, certificate(first.block), first.changes)
    with pytest.raises(InvalidBlock, match="not executed on this state at its current height"):
        store.commit_block(rival.block, certificate(rival.block), rival.changes)
    assert store.head.hash == first.block.hash and store.balance(pub("carol"), USD) == 10


def test_commit_refuses_changes_that_are_not_the_blocks_execution(store: Store) -> None:
    built = build_next(store, [pay("alice", 0, "carol", USD, 10)])
    other = build_next(store, [pay("alice", 0, "carol", USD, 20)])
    with pytest.raises(InvalidBlock, match="changes are not this block's"):
        store.commit_block(built.block, certificate(built.block), other.changes)
    apply_tx(built.changes, pay("alice", 1, "carol", USD, 10))  # a write the block lacks
    with pytest.raises(InvalidBlock, match="changes are not this block's"):
        store.commit_block(built.block, certificate(built.block), built.changes)
    with pytest.raises(InvalidBlock, match="changes are not this block's"):
        store.commit_block(built.block, certificate(built.block), Changes(store.state))
    assert store.head.height == 0 and store.balance(pub("carol"), USD) == 0


def test_an_entry_edited_behind_the_store_is_detected_on_open(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db", GENESIS) as store:
        commit(store, [pay("alice", 0, "carol", USD, 10)])
        store.checkpoint()
    with behind_the_store(tmp_path / "db") as db:
        db.put(b"B" + pub("carol") + USD.encode(), b"\xcd\x03\xe8")  # 1000 instead of 10
    refused_on_open(tmp_path / "db", "corrupt")


@pytest.mark.parametrize(
    ("key", "garbage"),
    [
        (b"\x00head", b"\xc1"),  # never valid msgpack
        (b"\x00head", b"\x93\x01\x02\x03"),  # three fields where four belong
        (b"\x00head", b"\x94\xa1x\xc4\x00\x00\xc4\x00"),  # a height that is text
        (b"\x00meta", b"\xc1"),
        (b"\x00meta", b"\x01"),  # not a list
    ],
)
def test_a_garbled_head_or_meta_is_a_store_error(
    tmp_path: Path, key: bytes, garbage: bytes
) -> None:
    with Store.open(tmp_path / "db", GENESIS) as store:
        commit(store, [pay("alice", 0, "carol", USD, 10)])
    with behind_the_store(tmp_path / "db") as db:
        db.put(key, garbage)
    refused_on_open(tmp_path / "db", "is corrupt")


def test_a_tx_index_entry_pointing_at_another_tx_is_a_store_error(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db", GENESIS) as store:
        first, second = pay("alice", 0, "carol", USD, 10), pay("alice", 1, "bob", USD, 5)
        commit(store, [first, second])
        where_second = store.tx_location(second.tx_id)
    with behind_the_store(tmp_path / "db") as db:
        db.put(b"t" + first.tx_id, db.get(b"t" + second.tx_id))
    with Store.open(tmp_path / "db", GENESIS) as store:
        assert store.tx_location(first.tx_id) == where_second
        with pytest.raises(StoreError, match="points at another tx"):
            store.tx(first.tx_id)
        assert store.tx(second.tx_id) == second


@pytest.mark.parametrize(
    ("key", "what"),
    [
        (b"b" + (2).to_bytes(8, "big"), "block"),
        (b"b" + (5).to_bytes(8, "big"), "block"),  # not only right above the head
        (b"c" + (3).to_bytes(8, "big"), "certificate"),
        (b"E" + (4).to_bytes(8, "big") + (0).to_bytes(2, "big"), "evidence"),
    ],
    ids=["block-right-above", "block-further-up", "certificate", "evidence"],
)
def test_anything_stored_beyond_the_head_is_detected_on_open(
    tmp_path: Path, key: bytes, what: str
) -> None:
    """A commit of that height would overwrite it only in part (its index entries, its
    evidence), so it is refused rather than left for later."""
    with Store.open(tmp_path / "db", GENESIS) as store:
        commit(store, [pay("alice", 0, "carol", USD, 10)])
    with behind_the_store(tmp_path / "db") as db:
        db.put(key, b"\x90")
    refused_on_open(tmp_path / "db", f"a {what} lies beyond the head")


@pytest.mark.parametrize("edit", ["delete", "replace"])
def test_a_head_without_its_certificate_is_detected_on_open(tmp_path: Path, edit: str) -> None:
    """Without it the node could neither serve catch-up nor propose the next block."""
    with Store.open(tmp_path / "db", GENESIS) as store:
        commit(store, [pay("alice", 0, "carol", USD, 10)])
        commit(store, [pay("alice", 1, "carol", USD, 10)])
        first_cert = store.certificate_bytes(1)
    with behind_the_store(tmp_path / "db") as db:
        if edit == "delete":
            db.delete(b"c" + (2).to_bytes(8, "big"))
        else:
            db.put(b"c" + (2).to_bytes(8, "big"), first_cert)
    refused_on_open(tmp_path / "db", "certificate of head block 2 is missing or not for")


def test_a_checkpoint_marker_above_the_head_is_named_on_open(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db", GENESIS) as store:
        commit(store, [pay("alice", 0, "carol", USD, 10)])
        store.checkpoint()
        head = store.head
    with behind_the_store(tmp_path / "db") as db:
        marker = [head.height + 3, head.hash, head.time_ms, head.state_root]
        db.put(b"\x00state", msgpack.packb(marker))
    refused_on_open(tmp_path / "db", r"checkpoint \(height 4\) lies beyond its head \(height 1\)")


def test_a_schema_5_store_refused_on_open_is_left_as_it_was(tmp_path: Path) -> None:
    """The upgrade is written only after every check passed."""
    with Store.open(tmp_path / "db", GENESIS) as store:
        commit(store, [pay("alice", 0, "carol", USD, 10)])
        store.checkpoint()
    with behind_the_store(tmp_path / "db") as db:
        db.delete(b"\x00state")
        db.put(b"\x00meta", msgpack.packb([5, GENESIS.chain_id, GENESIS.hash]))
        db.delete(b"c" + (1).to_bytes(8, "big"))
    refused_on_open(tmp_path / "db", "certificate of head block 1")
    with behind_the_store(tmp_path / "db") as db:
        assert msgpack.unpackb(db.get(b"\x00meta"))[0] == 5
        assert db.get(b"\x00state") is None


# --- the per-account index ------------------------------------------------------------------


def _expected_index(store: Store, account: bytes) -> list[tuple[int, int]]:
    """What the index should hold for ``account``, from the blocks, newest first."""
    found = [
        (block.height, position)
        for block, _ in store.blocks(1, store.head.height)
        for position, t in enumerate(block.txs)
        if account in (t.sender, t.to)
    ]
    return found[::-1]


def test_account_index_lists_sent_and_received_txs_newest_first(store: Store) -> None:
    first = commit(store, [pay("alice", 0, "carol", USD, 10), pay("bob", 0, "alice", SGD, 5)])
    commit(store, [])  # an empty block indexes nothing
    third = commit(
        store,
        [
            pay("carol", 0, "carol", USD, 1),  # to oneself: indexed once
            sign_tx(key("alice"), TxKind.BURN, CHAIN_ID, 1, token=USD, amount=3),  # no `to`
            sign_tx(key("jpm-issuer"), TxKind.REGISTER, CHAIN_ID, 0, to=pub("dave")),
        ],
    )
    assert store.account_txs(pub("alice")) == [(3, 1), (1, 1), (1, 0)]
    assert store.account_txs(pub("carol")) == [(3, 0), (1, 0)]
    assert store.account_txs(pub("dave")) == [(3, 2)]  # registered here
    assert store.account_txs(pub("erin")) == []
    for name in ("alice", "bob", "carol", "dave", "jpm-issuer"):
        assert store.account_txs(pub(name), limit=99) == _expected_index(store, pub(name))
    # limit and before_height cut the same list
    assert store.account_txs(pub("alice"), limit=2) == store.account_txs(pub("alice"))[:2]
    assert store.account_txs(pub("alice"), before_height=3) == store.account_txs(pub("alice"))[1:]
    assert store.account_txs(pub("alice"), before_height=2, limit=1) == [(1, 1)]
    assert store.account_txs(pub("alice"), before_height=1) == []
    assert store.account_txs(pub("alice"), before_height=2**63) == store.account_txs(pub("alice"))
    # the located txs read back with their block's time
    located = store.txs_at(store.account_txs(pub("alice")))
    assert [t.tx_id for t, _ in located] == [t.tx_id for t in (third.txs[1], *first.txs[::-1])]
    assert [time_ms for _, time_ms in located] == [GENESIS_TIME_MS + 3, GENESIS_TIME_MS + 1,
                                                   GENESIS_TIME_MS + 1]  # fmt: skip
    with pytest.raises(StoreError, match="no block at height 9"):
        store.txs_at([(9, 0)])
    with pytest.raises(ValueError, match="32 bytes"):
        store.account_txs(b"\x01")


def test_account_index_does_not_leak_into_a_neighbouring_account(store: Store) -> None:
    """Keys of one account are a prefix range: the accounts sorting just before and after
    carol's key see none of her entries (the reverse scan starts at the prefix's end)."""
    commit(store, [pay("alice", 0, "carol", USD, 10)])
    carol = int.from_bytes(pub("carol"), "big")
    for neighbour in (carol - 1, carol + 1):
        assert store.account_txs(neighbour.to_bytes(32, "big")) == []


def test_account_pages_never_split_a_block_and_cover_the_history(store: Store) -> None:
    blocks = [
        [pay("alice", 0, "bob", USD, 1)],
        [pay("alice", n, "bob", USD, 1) for n in range(1, 4)],  # 3 of alice's txs in block 2
        [pay("bob", 0, "alice", SGD, 1), pay("bob", 1, "carol", SGD, 1)],
        [pay("alice", 4, "carol", USD, 1)],
    ]
    for txs in blocks:
        commit(store, txs)
    history = store.account_txs(pub("alice"), limit=99)
    assert history == [(4, 0), (3, 0), (2, 2), (2, 1), (2, 0), (1, 0)]

    def pages(limit: int) -> list[list[tuple[int, int]]]:
        found, before = [], None
        while True:
            page, before = store.account_page(pub("alice"), before_height=before, limit=limit)
            found.append(page)
            if before is None:
                return found
            assert page and page[-1][0] == before  # the cursor is the page's oldest height

    assert pages(99) == [[(4, 0), (3, 0), (2, 2), (2, 1), (2, 0), (1, 0)]]
    assert pages(6) == [[(4, 0), (3, 0), (2, 2), (2, 1), (2, 0), (1, 0)]]
    assert pages(3) == [[(4, 0), (3, 0)], [(2, 2), (2, 1), (2, 0)], [(1, 0)]]
    assert pages(2) == [[(4, 0), (3, 0)], [(2, 2), (2, 1), (2, 0)], [(1, 0)]]  # block 2 whole
    assert pages(1) == [[(4, 0)], [(3, 0)], [(2, 2), (2, 1), (2, 0)], [(1, 0)]]
    for limit in range(1, 8):
        assert [e for page in pages(limit) for e in page] == history
    assert store.account_page(pub("erin")) == ([], None)
    with pytest.raises(ValueError, match="limit"):
        store.account_page(pub("alice"), limit=0)


@pytest.mark.parametrize("garbage", [b"\xc1", b"\x93\x01\x02\x03", b"\xdd\xff\xff\xff\xff"])
def test_a_garbled_block_reads_as_a_store_error(tmp_path: Path, garbage: bytes) -> None:
    with Store.open(tmp_path / "db", GENESIS) as store:
        block = commit(store, [pay("alice", 0, "carol", USD, 10)])
        store._db.put(b"b" + (1).to_bytes(8, "big"), garbage)
        store._db.put(b"c" + (1).to_bytes(8, "big"), garbage)
        for read in (
            lambda: store.block(1),
            lambda: store.certificate(1),
            lambda: store.tx(block.txs[0].tx_id),
            lambda: store.txs_at([(1, 0)]),
        ):
            with pytest.raises(StoreError, match="is corrupt"):
                read()
