"""The node's LevelDB store: blocks, certificates, tx and evidence indexes, state and head.

One database per node (plyvel). A ``Store`` owns the committed in-memory ``State`` too,
and ``commit_block`` is the only way either changes: it writes the block, its
certificate, the tx and evidence indexes and the head in ONE ``WriteBatch`` with
``sync=True``, then folds the block's ``Changes`` into the ``State``. LevelDB applies a
batch whole or not at all, even across a crash, so after a restart the head and the
blocks always belong together.

The state entries (balances, nonces, registrations, supplies, contracts, offers,
compliance holds) follow from the blocks, so they are written at checkpoints: every
``checkpoint_blocks`` blocks, the entries changed since the last checkpoint go into that
block's batch, each key once with its newest value, with a ``\\x00state`` marker naming
the block they belong to. Written with every block they were half of a transfer's six
keys, and accounts that pay often had the same entries rewritten block after block.
Reopening restores the entries, recomputes the state root from every one of them and
checks it against the marker, then re-executes the blocks after the marker up to the
head, each against its header's state root: the state a restart finds is the head's,
whatever instant a crash struck. A crash cannot leave a head without its block and
certificate, or anything stored above the head, so opening refuses a store showing either:
something else edited or damaged it.

Keys (heights are 8-byte big-endian, so keys sort by height):

    \\x00meta            [schema, chain id, genesis hash]
    \\x00head            [height, block hash, time_ms, state root]
    \\x00state           the same fields for the block the state entries below belong to
                        (the last checkpoint, at or below the head)
    b + height          block bytes (Block.encode)
    c + height          this node's commit certificate for the block at that height
    t + tx id           height (8 bytes) + position in the block (4 bytes)
    h + account + height + position
                        empty: one entry per tx for each account it names or pays: its
                        sender, its recipient, and for a tx on a contract or an offer,
                        the contract's buyer and supplier or the offer's maker; an
                        account's entries sort by height and position, so its history
                        reads newest first with one reverse range scan. The key is the
                        whole entry: its location finds the tx in its block (``txs_at``)
    B + account + token balance (absent when zero, as in State)
    N + account         nonce (the next one expected)
    A + account         name of the bank that registered the account
    S + token           outstanding supply: minted (opening balances included) minus
                        burned (absent when zero)
    K + contract id     a contract (Contract.to_list), open or settled
    O + offer id        a swap offer (Offer.to_list), open or settled
    F + account         present while the account is frozen (a compliance hold)
    E + height + position
                        an evidence proof the block at that height committed (its bytes,
                        position 2 bytes), so evidence lists without reading blocks
"""

from __future__ import annotations

import functools
import itertools
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

import msgpack
import plyvel

from chain.block import EMPTY_HASH, Block, CommitCertificate, Header
from chain.errors import InvalidBlock, StoreError, TxRejected, ensure
from chain.escrow import Contract, Offer
from chain.genesis import Genesis
from chain.state import TABLES, Changes, State, execute_block
from chain.tx import KEY_SIZE, REF_KINDS, Tx, TxKind, decode_tx

P = ParamSpec("P")
R = TypeVar("R")

# 2: a supply entry is the outstanding amount; 3: contracts, offers, holds; 4: blocks
# carry evidence, indexed by height; 5: account history entries are keys only (no tx id);
# 6: state entries written at checkpoints (\x00state)
SCHEMA_VERSION = 6
_SCHEMA_BEFORE_CHECKPOINTS = 5  # opened as is, once its head is named its checkpoint
# Blocks between checkpoints of the state entries: what a restart may re-execute (up to
# 200,000 txs at 2,000 a block, seconds of work: their signatures are not checked again,
# they were before the blocks were committed).
CHECKPOINT_BLOCKS = 100

_META = b"\x00meta"
_HEAD = b"\x00head"
_STATE = b"\x00state"
_BLOCK = b"b"
_CERT = b"c"
_TX = b"t"
_ACCOUNT_TX = b"h"
_BALANCE = b"B"
_NONCE = b"N"
_ACCOUNT = b"A"
_SUPPLY = b"S"
_CONTRACT = b"K"
_OFFER = b"O"
_FROZEN = b"F"
_EVIDENCE = b"E"

_height_key = struct.Struct(">Q").pack
_location = struct.Struct(">QI")
_evidence_key = struct.Struct(">QH").pack
_LOCATION_SIZE = _location.size
_pack = msgpack.Packer(use_bin_type=True).pack
# What decoding corrupt entries can raise; ``_reads_disk`` turns each into a StoreError.
_CORRUPT = (
    msgpack.UnpackException,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    InvalidBlock,
    TxRejected,
    struct.error,
)


def _reads_disk(method: Callable[Concatenate[Store, P], R]) -> Callable[Concatenate[Store, P], R]:
    """The store trusts what it wrote and decodes it without the limits applied to peer
    bytes, but entries damaged on disk still fail as one error: StoreError."""

    @functools.wraps(method)
    def reading(store: Store, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(store, *args, **kwargs)
        except _CORRUPT as exc:
            raise StoreError(f"store {store.path} is corrupt ({type(exc).__name__})") from exc

    return reading


def _unpack(data: bytes) -> object:
    return msgpack.unpackb(data, raw=False)


@dataclass(frozen=True, slots=True)
class Head:
    """The last committed block (height 0 and the zero hash before the first block)."""

    height: int
    hash: bytes
    time_ms: int
    state_root: bytes


WRITE_BUFFER_BYTES = 4 * 1024 * 1024  # LevelDB's default


class _Unwritten:
    """The state entries committed since the last checkpoint: per table, the newest value
    of each key (a zero amount or a lifted hold included: writing it deletes the entry)."""

    balances: dict
    nonces: dict
    accounts: dict
    supply: dict
    contracts: dict
    offers: dict
    frozen: dict

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.blocks = 0
        for name in TABLES:
            setattr(self, name, {})

    def add(self, changes: Changes) -> None:
        self.blocks += 1
        for name in TABLES:
            getattr(self, name).update(getattr(changes, name))


class _EveryTx:
    """The ``verified`` of a replay: a stored block's signatures were checked before it
    was committed, and the store trusts what it wrote."""

    def __contains__(self, tx_id: object) -> bool:
        return True


class Store:
    """A node's database and the committed state it holds. Open with ``Store.open``."""

    def __init__(self, db: plyvel.DB, path: Path, genesis: Genesis, checkpoint_blocks: int) -> None:
        self._db = db
        self.path = path
        self.genesis = genesis
        self.checkpoint_blocks = checkpoint_blocks
        self._unwritten = _Unwritten()
        self.state, self._head = self._load()

    @classmethod
    def open(
        cls,
        path: Path | str,
        genesis: Genesis,
        *,
        write_buffer_bytes: int = WRITE_BUFFER_BYTES,
        checkpoint_blocks: int = CHECKPOINT_BLOCKS,
    ) -> Store:
        """Open (or create, holding the genesis state) the store in directory ``path``.

        ``write_buffer_bytes`` is LevelDB's memtable: how much is written before a flush to
        a level-0 file, and so how often the compactions that follow run. Validators
        on one machine commit the same bytes at the same pace, so with one size they all
        flushed and compacted at the same instant and each such moment stalled every node
        at once for 0.3-1 s (measured on 4 nodes sharing 2 cores); giving each a different
        size spreads the work out.

        ``checkpoint_blocks``: how many blocks the state entries may lag behind the head
        (see the module docstring).

        Raises StoreError if the store belongs to another genesis, is locked by another
        process, or its entries do not add up to its head.
        """
        if checkpoint_blocks < 1:
            raise ValueError("checkpoint_blocks must be at least 1")
        path = Path(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
            # No compression: what a block writes is mostly keys, hashes and signatures,
            # which snappy cannot shrink, and compressing them again at every compaction
            # cost the 4-node closed loop about a tenth of its throughput.
            db = plyvel.DB(
                str(path),
                create_if_missing=True,
                write_buffer_size=write_buffer_bytes,
                compression=None,
            )
        except (OSError, plyvel.Error) as exc:  # plyvel.IOError when another process holds it
            arg = exc.args[0] if exc.args else None
            detail = arg.decode(errors="replace") if isinstance(arg, bytes) else str(exc)
            raise StoreError(f"cannot open store {path}: {detail}") from None
        try:
            return cls(db, path, genesis, checkpoint_blocks)
        except BaseException:
            db.close()
            raise

    def close(self) -> None:
        """Close the database as it is: state entries not checkpointed yet are rebuilt
        from the blocks by the next open (``checkpoint`` first spares it that)."""
        self._db.close()

    def checkpoint(self) -> None:
        """Write the state entries committed since the last checkpoint now."""
        if self._unwritten.blocks:
            with self._db.write_batch(sync=True, transaction=True) as batch:
                self._write_checkpoint(batch, self._head)
            self._unwritten.clear()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def head(self) -> Head:
        return self._head

    # -- writing -------------------------------------------------------------------------

    def commit_block(self, block: Block, cert: CommitCertificate, changes: Changes) -> None:
        """Persist an executed block and its certificate, then make it the committed state.

        Whether the block is valid was decided by ``execute_block`` (or ``build_block``),
        which bound ``changes`` to it; the store does not decide it again. It checks only
        what writing needs: the changes are that block's execution on this store's state
        as it is now (so the head, the block and the state entries belong together), and
        the certificate is for this block (so a restart serves the right proof with it).
        Everything is written in one synced batch; if the write fails, neither the disk
        nor ``self.state`` changed.
        """
        header = block.header
        state = self.state
        state.check_changes(changes, block.hash)
        ensure(
            cert.height == header.height and cert.block_hash == block.hash,
            InvalidBlock,
            "certificate is not for this block",
        )
        height = header.height
        head = Head(height, block.hash, header.time_ms, header.state_root)
        unwritten = self._unwritten
        checkpoint = unwritten.blocks + 1 >= self.checkpoint_blocks
        with self._db.write_batch(sync=True, transaction=True) as batch:
            put = batch.put
            put(_BLOCK + _height_key(height), block.encode())
            put(_CERT + _height_key(height), cert.encode())
            location = _location.pack
            for position, tx in enumerate(block.txs):
                where = location(height, position)
                put(_TX + tx.tx_id, where)
                sender, to = tx.sender, tx.to
                # Keys only: a tx id in each of a block's thousands of history entries
                # was an eighth of what a block of transfers wrote.
                put(_ACCOUNT_TX + sender + where, b"")
                if to and to != sender:
                    put(_ACCOUNT_TX + to + where, b"")
                if tx.kind in REF_KINDS:
                    for party in _parties(tx, changes) - {sender}:
                        put(_ACCOUNT_TX + party + where, b"")
            for position, proof in enumerate(block.evidence):
                put(_EVIDENCE + _evidence_key(header.height, position), proof)
            if checkpoint:
                self._write_checkpoint(batch, head, changes)
            put(_HEAD, _encode_head(head))
        state.commit(changes, header)
        self._head = head
        if checkpoint:
            unwritten.clear()
        else:
            unwritten.add(changes)

    def _write_checkpoint(
        self, batch: plyvel.WriteBatch, at: Head, changes: Changes | None = None
    ) -> None:
        """Queue the unwritten entries, then ``changes`` (the block ``at``'s own, when it is
        being committed in this batch: in a batch the last write of a key wins), and the
        marker naming ``at`` as the block the entries belong to."""
        _write_entries(batch, self._unwritten)
        if changes is not None:
            _write_entries(batch, changes)
        batch.put(_STATE, _encode_head(at))

    # -- reading (from disk: what a restart would see) --------------------------------------

    @_reads_disk
    def block(self, height: int) -> Block | None:
        data = self.block_bytes(height)
        return None if data is None else Block.decode(data)

    @_reads_disk
    def certificate(self, height: int) -> CommitCertificate | None:
        data = self.certificate_bytes(height)
        return None if data is None else CommitCertificate.decode(data)

    def block_bytes(self, height: int) -> bytes | None:
        """The block at ``height`` as stored: its canonical encoding (``Block.encode``)."""
        return self._db.get(_BLOCK + _height_key(height)) if height >= 1 else None

    def certificate_bytes(self, height: int) -> bytes | None:
        """This node's certificate for the block at ``height``, as stored."""
        return self._db.get(_CERT + _height_key(height)) if height >= 1 else None

    def blocks(self, first: int, last: int) -> Iterator[tuple[Block, CommitCertificate]]:
        """Blocks first..last (inclusive, clipped to the head) with their certificates,
        in height order: what catch-up serves and what a replay reads."""
        for height in range(max(first, 1), min(last, self._head.height) + 1):
            block, cert = self.block(height), self.certificate(height)
            if block is None or cert is None:
                raise StoreError(f"block or certificate {height} missing below the head")
            yield block, cert

    def tx_location(self, tx_id: bytes) -> tuple[int, int] | None:
        """(height, position in block) of a committed transaction."""
        data = self._db.get(_TX + tx_id)
        return None if data is None else _location.unpack(data)  # type: ignore[return-value]

    @_reads_disk
    def tx(self, tx_id: bytes) -> Tx | None:
        """A committed transaction, decoding only its own bytes from its block."""
        location = self.tx_location(tx_id)
        if location is None:
            return None
        height, position = location
        data = self._db.get(_BLOCK + _height_key(height))
        if data is None:
            raise StoreError(f"tx index points at missing block {height}")
        raw_txs = _unpack(data)[1]  # type: ignore[index]
        tx = decode_tx(raw_txs[position])
        if tx.tx_id != tx_id:
            raise StoreError(
                f"store {self.path} is corrupt: the index of tx {tx_id.hex()[:16]}… "
                f"points at another tx (block {height}, position {position})"
            )
        return tx

    def account_txs(
        self, account: bytes, *, before_height: int | None = None, limit: int = 50
    ) -> list[tuple[int, int]]:
        """The (height, position) of the newest ``limit`` committed txs that ``account``
        sent or received, below ``before_height`` if given, newest first; ``txs_at``
        reads the txs."""
        return list(itertools.islice(self._account_entries(account, before_height), max(limit, 0)))

    def account_page(
        self, account: bytes, *, before_height: int | None = None, limit: int = 50
    ) -> tuple[list[tuple[int, int]], int | None]:
        """One page of :meth:`account_txs` and the ``before_height`` of the next page (None
        when nothing older is left).

        A page never splits a block, so a height is a complete cursor: it holds at most
        ``limit`` txs, ending early at a block boundary; only when one block alone holds
        more than ``limit`` of the account's txs is the page that whole block (at most
        MAX_BLOCK_TXS), so paging always moves on.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        page: list[tuple[int, int]] = []
        whole_block: int | None = None  # the height being read whole, in the rare case
        for entry in self._account_entries(account, before_height):
            height = entry[0]
            if whole_block is not None:
                if height != whole_block:
                    return page, whole_block
            elif len(page) == limit:
                if height != page[-1][0]:
                    return page, page[-1][0]
                complete = [e for e in page if e[0] != height]  # drop the split block
                if complete:
                    return complete, complete[-1][0]
                whole_block = height
            page.append(entry)
        return page, None

    @_reads_disk
    def txs_at(self, locations: Iterable[tuple[int, int]]) -> list[tuple[Tx, int]]:
        """The committed txs at (height, position) locations, each with its block's time,
        in the order given; each block is read and unpacked once."""
        blocks: dict[int, tuple[int, list[bytes]]] = {}
        found = []
        for height, position in locations:
            block = blocks.get(height)
            if block is None:
                data = self._db.get(_BLOCK + _height_key(height)) if height >= 1 else None
                if data is None:
                    raise StoreError(f"no block at height {height}")
                header_fields, raw_txs, *_ = _unpack(data)  # type: ignore[misc]
                block = blocks[height] = (Header.from_list(header_fields).time_ms, raw_txs)
            time_ms, raw_txs = block
            if not 0 <= position < len(raw_txs):
                raise StoreError(f"block {height} holds no tx at position {position}")
            found.append((decode_tx(raw_txs[position]), time_ms))
        return found

    def _account_entries(
        self, account: bytes, before_height: int | None
    ) -> Iterator[tuple[int, int]]:
        """The locations in the account's index below ``before_height``, newest first, read
        lazily from one reverse iterator (which reads a consistent snapshot)."""
        if len(account) != KEY_SIZE:
            raise ValueError(f"an account is {KEY_SIZE} bytes")
        prefix = _ACCOUNT_TX + account
        if before_height is None:
            keys = self._db.iterator(prefix=prefix, reverse=True, include_value=False)
        elif before_height <= 1:
            return
        else:
            stop = prefix + _height_key(min(before_height, 2**64 - 1))
            keys = self._db.iterator(start=prefix, stop=stop, reverse=True, include_value=False)
        with keys:
            for key in keys:
                yield _location.unpack(key[-_LOCATION_SIZE:])  # type: ignore[misc]

    def evidence(self, first: int = 1, last: int | None = None) -> list[tuple[int, bytes]]:
        """(height committed at, proof bytes) of the evidence blocks first..last committed
        (inclusive; ``last`` defaults to the head), in height and block order."""
        start = _EVIDENCE + _height_key(max(first, 0))
        if last is None:
            stop = bytes([_EVIDENCE[0] + 1])  # the first key past every evidence entry
        else:
            stop = _EVIDENCE + _height_key(max(last + 1, 0))
        if start >= stop:
            return []
        with self._db.iterator(start=start, stop=stop) as entries:
            return [(_height_key_of(key), proof) for key, proof in entries]

    # -- the committed state: the head's, as a restart rebuilds it -------------------------

    def balance(self, account: bytes, token: str) -> int:
        return self.state.balances.get((account, token), 0)

    def balances(self, account: bytes) -> dict[str, int]:
        """Every non-zero balance of an account, by token."""
        balances = self.state.balances.items()
        return {token: v for (held_by, token), v in balances if held_by == account}

    def nonce(self, account: bytes) -> int:
        return self.state.nonces.get(account, 0)

    def bank_of(self, account: bytes) -> str | None:
        """The bank that registered ``account``, or None if it is not registered."""
        return self.state.accounts.get(account)

    def supply(self, token: str) -> int:
        """The outstanding supply of a token: minted (opening balances included) minus burned."""
        return self.state.supply.get(token, 0)

    def contract(self, contract_id: bytes) -> Contract | None:
        return self.state.contracts.get(contract_id)

    def contracts(self) -> list[tuple[bytes, Contract]]:
        """Every contract, open or settled, with its id, in id order."""
        return sorted(self.state.contracts.items())

    def offer(self, offer_id: bytes) -> Offer | None:
        return self.state.offers.get(offer_id)

    def offers(self) -> list[tuple[bytes, Offer]]:
        """Every offer, open or settled, with its id, in id order."""
        return sorted(self.state.offers.items())

    def is_frozen(self, account: bytes) -> bool:
        return self.state.frozen.get(account, False)

    def size_bytes(self) -> int:
        """Bytes the database takes on disk."""
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())

    # -- opening -----------------------------------------------------------------------------

    def _load(self) -> tuple[State, Head]:
        meta = self._db.get(_META)
        if meta is None:
            return self._create()
        return self._load_existing(meta)

    @_reads_disk
    def _load_existing(self, meta: bytes) -> tuple[State, Head]:
        db, genesis = self._db, self.genesis
        schema, chain_id, genesis_hash = _unpack(meta)  # type: ignore[misc]
        if schema not in (_SCHEMA_BEFORE_CHECKPOINTS, SCHEMA_VERSION):
            raise StoreError(f"store {self.path} has schema {schema}, expected {SCHEMA_VERSION}")
        if chain_id != genesis.chain_id:
            raise StoreError(
                f"store {self.path} belongs to chain {chain_id!r}, not {genesis.chain_id!r}"
            )
        if genesis_hash != genesis.hash:
            raise StoreError(
                f"store {self.path} was created from a different genesis of chain {chain_id!r}"
            )
        head = _decode_head(db.get(_HEAD), self.path)
        upgrading = schema == _SCHEMA_BEFORE_CHECKPOINTS
        # Schema 5 wrote its entries with every block: they belong to its head. The upgrade
        # is written only once every check below has passed, so a store refused here is
        # left as it was found.
        at = head if upgrading else _decode_head(db.get(_STATE), self.path, "state checkpoint")
        if at.height > head.height:
            raise StoreError(
                f"store {self.path} is corrupt: its state checkpoint (height {at.height}) "
                f"lies beyond its head (height {head.height})"
            )
        state = State.restore(
            genesis,
            balances={
                (k[1 : 1 + KEY_SIZE], k[1 + KEY_SIZE :].decode()): _unpack(v)
                for k, v in db.iterator(prefix=_BALANCE)
            },
            nonces={k[1:]: _unpack(v) for k, v in db.iterator(prefix=_NONCE)},
            accounts={k[1:]: v.decode() for k, v in db.iterator(prefix=_ACCOUNT)},
            supply={k[1:].decode(): _unpack(v) for k, v in db.iterator(prefix=_SUPPLY)},
            contracts={
                k[1:]: Contract.from_list(_unpack(v))  # type: ignore[arg-type]
                for k, v in db.iterator(prefix=_CONTRACT)
            },
            offers={
                k[1:]: Offer.from_list(_unpack(v))  # type: ignore[arg-type]
                for k, v in db.iterator(prefix=_OFFER)
            },
            frozen={k[1:]: True for k in db.iterator(prefix=_FROZEN, include_value=False)},
            height=at.height,
            last_hash=at.hash,
            last_time_ms=at.time_ms,
        )
        if state.state_root != at.state_root:
            raise StoreError(
                f"store {self.path} is corrupt: state does not match the root of its "
                f"checkpoint at height {at.height}"
            )
        self._check_head(head)
        self._check_nothing_beyond(head)
        self._replay(state, head)
        if upgrading:
            with db.write_batch(sync=True, transaction=True) as batch:
                batch.put(_STATE, _encode_head(head))
                batch.put(_META, _pack([SCHEMA_VERSION, chain_id, genesis_hash]))
        return state, head

    def _check_head(self, head: Head) -> None:
        """The head names its block as stored, and the certificate of that block is there:
        without it the node could neither serve catch-up nor propose the next block."""
        if not head.height:
            return
        block = self.block(head.height)
        if (
            block is None
            or block.hash != head.hash
            or block.header.state_root != head.state_root
            or block.header.time_ms != head.time_ms
        ):
            raise StoreError(
                f"store {self.path} is corrupt: head block {head.height} does not match"
            )
        cert = self.certificate(head.height)
        if cert is None or (cert.height, cert.block_hash) != (head.height, head.hash):
            raise StoreError(
                f"store {self.path} is corrupt: the certificate of head block {head.height} "
                "is missing or not for that block"
            )

    def _check_nothing_beyond(self, head: Head) -> None:
        """No block, certificate or evidence is stored above the head: every commit writes
        them with the head in one batch, so one there was put by something else, and the
        next commit of that height would leave parts of it behind."""
        for prefix, what in ((_BLOCK, "block"), (_CERT, "certificate"), (_EVIDENCE, "evidence")):
            last = next(self._db.iterator(prefix=prefix, reverse=True, include_value=False), None)
            if last is not None and _height_key_of(last) > head.height:
                raise StoreError(
                    f"store {self.path} is corrupt: a {what} lies beyond the head "
                    f"(height {_height_key_of(last)}, head {head.height})"
                )

    def _replay(self, state: State, head: Head) -> None:
        """Re-execute the blocks after the state checkpoint up to the head, each against
        its header's state root, and remember their changes as not written yet."""
        for height in range(state.height + 1, head.height + 1):
            block = self.block(height)
            if block is None:
                raise StoreError(f"store {self.path} is corrupt: block {height} is missing")
            try:
                changes = execute_block(state, block, _EveryTx())
            except InvalidBlock as exc:
                raise StoreError(
                    f"store {self.path} is corrupt: block {height} does not re-execute ({exc})"
                ) from None
            state.commit(changes, block.header)
            self._unwritten.add(changes)
        reached = (state.last_hash, state.state_root, state.last_time_ms)
        if reached != (head.hash, head.state_root, head.time_ms):
            raise StoreError(f"store {self.path} is corrupt: its checkpoint is off the chain")

    def _create(self) -> tuple[State, Head]:
        """Write the genesis state and an empty head in one synced batch, so a crash
        while creating leaves an empty database that the next open creates again."""
        genesis = self.genesis
        state = State(genesis)
        head = Head(0, EMPTY_HASH, genesis.genesis_time_ms, state.state_root)
        with self._db.write_batch(sync=True, transaction=True) as batch:
            _write_entries(batch, state)
            batch.put(_HEAD, _encode_head(head))
            batch.put(_STATE, _encode_head(head))
            batch.put(_META, _pack([SCHEMA_VERSION, genesis.chain_id, genesis.hash]))
        return state, head


def _write_entries(batch: plyvel.WriteBatch, entries: State | Changes | _Unwritten) -> None:
    """Queue state entries (a block's changes, those unwritten since the last checkpoint,
    or the genesis state) into a batch."""
    put, delete = batch.put, batch.delete
    # Generated one at a time: a block's thousands of (key, amount) pairs never live at
    # once, which would make the garbage collector walk them.
    amounts = itertools.chain(
        ((_BALANCE + a + token.encode(), v) for (a, token), v in entries.balances.items()),
        ((_SUPPLY + token.encode(), v) for token, v in entries.supply.items()),
    )
    for key, amount in amounts:
        if amount:
            put(key, _pack(amount))
        else:
            delete(key)  # State drops zero amounts; the store must not resurrect them
    for account, nonce in entries.nonces.items():
        put(_NONCE + account, _pack(nonce))
    for account, bank in entries.accounts.items():
        put(_ACCOUNT + account, bank.encode())
    for contract_id, contract in entries.contracts.items():
        put(_CONTRACT + contract_id, _pack(contract.to_list()))
    for offer_id, offer in entries.offers.items():
        put(_OFFER + offer_id, _pack(offer.to_list()))
    for account, frozen in entries.frozen.items():
        if frozen:
            put(_FROZEN + account, b"")
        else:
            delete(_FROZEN + account)  # a hold lifted: State drops the entry too


def _parties(tx: Tx, changes: Changes) -> set[bytes]:
    """Who a tx on a contract or an offer pays or acts for: the contract's buyer and
    supplier, or the offer's maker. Read from the block's own changes, which hold every
    record its txs settled."""
    ref = tx.ref
    if tx.kind in (TxKind.SWAP_ACCEPT, TxKind.SWAP_CANCEL):
        return {changes.offers[ref.id].maker}
    contract = changes.contracts[ref.id]
    return {contract.buyer, contract.supplier}


def _height_key_of(key: bytes) -> int:
    return struct.unpack_from(">Q", key, 1)[0]


def _encode_head(head: Head) -> bytes:
    return _pack([head.height, head.hash, head.time_ms, head.state_root])


def _decode_head(data: bytes | None, path: Path, what: str = "head") -> Head:
    if data is None:
        raise StoreError(f"store {path} has a genesis but no {what}")
    height, block_hash, time_ms, state_root = _unpack(data)  # type: ignore[misc]
    return Head(height, block_hash, time_ms, state_root)
