"""Blocks, headers and commit certificates, with their canonical bytes and hashes.

A block carries the certificate that committed its parent (``last_cert``), as Tendermint
blocks carry ``LastCommit``: different validators may hold different 2f+1 subsets of the
precommits for a height, so the header commits to the hash of the one certificate the
proposer chose, and the block ships it so every validator can check it.

Certificates are plain data here; checking their signatures needs the validator set and
the vote format, which live in ``consensus/`` (``consensus.validators.verify_certificate``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgpack

from chain.errors import InvalidBlock, TxRejected, ensure
from chain.tx import KEY_SIZE, SIGNATURE_SIZE, Tx, decode_tx

HASH_SIZE = 32
EMPTY_HASH = bytes(HASH_SIZE)
MAX_BLOCK_TXS = 10_000


@dataclass(frozen=True, slots=True)
class CommitCertificate:
    """>= 2f+1 precommit signatures for ``block_hash`` at (height, round).

    ``signatures`` holds (validator index in the genesis set, signature) pairs in index order.
    """

    height: int
    round: int
    block_hash: bytes
    signatures: tuple[tuple[int, bytes], ...]

    def to_list(self) -> list:
        return [self.height, self.round, self.block_hash, [list(s) for s in self.signatures]]

    def encode(self) -> bytes:
        return msgpack.packb(self.to_list(), use_bin_type=True)

    @property
    def hash(self) -> bytes:
        return hashlib.sha256(self.encode()).digest()

    @classmethod
    def from_list(cls, fields: object) -> CommitCertificate:
        try:
            height, round_, block_hash, sigs = fields  # type: ignore[misc]
            signatures = tuple((int(i), bytes(s)) for i, s in sigs)
        except (TypeError, ValueError):
            raise InvalidBlock("malformed commit certificate") from None
        if not (type(height) is int and type(round_) is int and height >= 1 and round_ >= 0):
            raise InvalidBlock("certificate height/round out of range")
        if not (isinstance(block_hash, bytes) and len(block_hash) == HASH_SIZE):
            raise InvalidBlock("certificate block hash must be 32 bytes")
        if any(len(s) != SIGNATURE_SIZE for _, s in signatures):
            raise InvalidBlock("certificate signature must be 64 bytes")
        indexes = [i for i, _ in signatures]
        if indexes != sorted(set(indexes)):
            raise InvalidBlock("certificate signatures must be in strictly increasing index order")
        return cls(height, round_, block_hash, signatures)

    @classmethod
    def decode(cls, data: bytes) -> CommitCertificate:
        return cls.from_list(_unpack(data))


@dataclass(frozen=True, slots=True)
class Header:
    """Block header (DESIGN.md, "Blocks and storage"). ``time_ms`` is the proposer's clock."""

    chain_id: str
    height: int
    round: int
    prev_hash: bytes
    proposer: bytes
    time_ms: int
    tx_root: bytes
    state_root: bytes
    last_cert_hash: bytes

    def to_list(self) -> list:
        return [
            self.chain_id,
            self.height,
            self.round,
            self.prev_hash,
            self.proposer,
            self.time_ms,
            self.tx_root,
            self.state_root,
            self.last_cert_hash,
        ]

    @property
    def hash(self) -> bytes:
        return hashlib.sha256(msgpack.packb(self.to_list(), use_bin_type=True)).digest()

    @classmethod
    def from_list(cls, fields: object) -> Header:
        if not (isinstance(fields, list) and len(fields) == 9):
            raise InvalidBlock("header must be an array of 9 fields")
        header = cls(*fields)
        ints = (header.height, header.round, header.time_ms)
        if not all(type(v) is int and v >= 0 for v in ints) or header.height < 1:
            raise InvalidBlock("header height/round/time out of range")
        if not isinstance(header.chain_id, str):
            raise InvalidBlock("header chain id must be text")
        hashes = (
            header.prev_hash,
            header.tx_root,
            header.state_root,
            header.last_cert_hash,
        )
        if not all(isinstance(h, bytes) and len(h) == HASH_SIZE for h in hashes):
            raise InvalidBlock("header hashes must be 32 bytes")
        if not (isinstance(header.proposer, bytes) and len(header.proposer) == KEY_SIZE):
            raise InvalidBlock("header proposer must be a 32-byte key")
        return header


@dataclass(frozen=True, slots=True)
class Block:
    header: Header
    txs: tuple[Tx, ...]
    last_cert: CommitCertificate | None
    hash: bytes = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hash", self.header.hash)

    @property
    def height(self) -> int:
        return self.header.height

    def encode(self) -> bytes:
        cert = None if self.last_cert is None else self.last_cert.to_list()
        return msgpack.packb(
            [self.header.to_list(), [tx.raw for tx in self.txs], cert], use_bin_type=True
        )

    @classmethod
    def decode(cls, data: bytes) -> Block:
        """Parse a block; structure only (signatures and rules are checked by execution)."""
        fields = _unpack(data)
        if not (isinstance(fields, list) and len(fields) == 3):
            raise InvalidBlock("block must be an array of 3 fields")
        header_fields, raw_txs, cert_fields = fields
        header = Header.from_list(header_fields)
        if not isinstance(raw_txs, list) or len(raw_txs) > MAX_BLOCK_TXS:
            raise InvalidBlock("block txs must be an array of at most 10,000")
        try:
            txs = tuple(decode_tx(raw) for raw in raw_txs)
        except TxRejected as exc:
            raise InvalidBlock(f"block holds a malformed tx: {exc}") from None
        cert = None if cert_fields is None else CommitCertificate.from_list(cert_fields)
        block = cls(header, txs, cert)
        check_structure(block)
        return block


def tx_root(txs: Sequence[Tx]) -> bytes:
    """Commitment to the ordered tx list; empty blocks have the all-zero root."""
    if not txs:
        return EMPTY_HASH
    return hashlib.sha256(b"".join(tx.tx_id for tx in txs)).digest()


def cert_hash(cert: CommitCertificate | None) -> bytes:
    return EMPTY_HASH if cert is None else cert.hash


def check_structure(block: Block) -> None:
    """Rules a block must follow on its own, before anyone executes it."""
    header, cert = block.header, block.last_cert
    ensure(
        header.tx_root == tx_root(block.txs),
        InvalidBlock,
        "tx root does not match the block's transactions",
    )
    ensure(
        header.last_cert_hash == cert_hash(cert),
        InvalidBlock,
        "last certificate hash does not match the certificate carried",
    )
    ensure(
        (header.height == 1) == (cert is None),
        InvalidBlock,
        "exactly the blocks after the first carry their parent's certificate",
    )
    ensure(
        cert is None or (cert.height == header.height - 1 and cert.block_hash == header.prev_hash),
        InvalidBlock,
        "carried certificate is not for the parent block",
    )
    ensure(
        header.height != 1 or header.prev_hash == EMPTY_HASH,
        InvalidBlock,
        "the first block's parent hash must be zero",
    )
    ensure(
        len({tx.tx_id for tx in block.txs}) == len(block.txs),
        InvalidBlock,
        "block holds the same tx twice",
    )


def _unpack(data: bytes) -> object:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise InvalidBlock(f"undecodable bytes ({type(exc).__name__})") from None
