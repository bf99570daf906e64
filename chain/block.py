"""Blocks, headers and commit certificates, with their canonical bytes and hashes.

A block carries the certificate that committed its parent (``last_cert``), as Tendermint
blocks carry ``LastCommit``: different validators may hold different 2f+1 subsets of the
precommits for a height, so the header commits to the hash of the one certificate the
proposer chose, and the block ships it so every validator can check it.

Certificates are plain data here; checking their signatures needs the validator set and
the vote format, which live in ``consensus/`` (``consensus.validators.verify_certificate``).
So is a block's evidence (proofs that a validator signed two conflicting consensus
messages): to the chain each proof is opaque bytes that the header commits to, at most
``MAX_BLOCK_EVIDENCE`` of them, each once; ``consensus.evidence`` reads and checks them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import msgpack

from chain.codec import (
    BLOCK,
    BLOCK_TXS,
    CERTIFICATE,
    EVIDENCE_IN_BLOCK,
    HASH_SIZE,
    HEADER,
    KEY_SIZE,
    MAX_BLOCK_EVIDENCE,
    MAX_CHAIN_ID_CHARS,
    MAX_VALIDATORS,
    SIGNATURE_SIZE,
    Limits,
    split_array,
    unpack,
    unpack_bins,
)
from chain.errors import DecodeError, InvalidBlock, TxRejected, ensure
from chain.tx import Tx, decode_tx

EMPTY_HASH = bytes(HASH_SIZE)
MAX_HEIGHT = 2**63 - 1  # heights, rounds and times are signed 64-bit wherever they go


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
        """A certificate from its decoded fields, every type and range checked before
        anything is built from them. Raises InvalidBlock only."""
        ensure(
            type(fields) is list and len(fields) == 4,
            InvalidBlock,
            "a certificate is an array of 4 fields",
        )
        height, round_, block_hash, pairs = fields  # type: ignore[misc]
        ensure(
            _is_int(height, 1) and _is_int(round_, 0),
            InvalidBlock,
            "certificate height/round out of range",
        )
        ensure(_is_hash(block_hash), InvalidBlock, "certificate block hash must be 32 bytes")
        ensure(
            type(pairs) is list and len(pairs) <= MAX_VALIDATORS,
            InvalidBlock,
            "certificate signatures must be an array of at most {}",
            MAX_VALIDATORS,
        )
        for pair in pairs:
            ensure(
                type(pair) is list and len(pair) == 2 and _is_int(pair[0], 0, MAX_VALIDATORS - 1),
                InvalidBlock,
                "certificate signature must be [validator index, signature]",
            )
            signature = pair[1]
            ensure(
                type(signature) is bytes and len(signature) == SIGNATURE_SIZE,
                InvalidBlock,
                "certificate signature must be 64 bytes",
            )
        signatures = tuple((index, signature) for index, signature in pairs)
        indexes = [i for i, _ in signatures]
        ensure(
            indexes == sorted(set(indexes)),
            InvalidBlock,
            "certificate signatures must be in strictly increasing index order",
        )
        return cls(height, round_, block_hash, signatures)

    @classmethod
    def decode(cls, data: bytes) -> CommitCertificate:
        return cls.from_list(_unpack(data, CERTIFICATE, "certificate"))


@dataclass(frozen=True, slots=True)
class Header:
    """Block header. ``time_ms`` is the proposer's clock, in ms since the Unix epoch."""

    chain_id: str
    height: int
    round: int
    prev_hash: bytes
    proposer: bytes
    time_ms: int
    tx_root: bytes
    state_root: bytes
    last_cert_hash: bytes
    evidence_hash: bytes = EMPTY_HASH

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
            self.evidence_hash,
        ]

    @property
    def hash(self) -> bytes:
        return hashlib.sha256(msgpack.packb(self.to_list(), use_bin_type=True)).digest()

    @classmethod
    def from_list(cls, fields: object) -> Header:
        """A header from its decoded fields, every type and range checked before anything
        is built from them. Raises InvalidBlock only."""
        ensure(
            type(fields) is list and len(fields) == 10,
            InvalidBlock,
            "header must be an array of 10 fields",
        )
        chain_id, height, round_, prev_hash, proposer, time_ms, *hashes = fields  # type: ignore[misc]
        ensure(
            _is_int(height, 1) and _is_int(round_, 0) and _is_int(time_ms, 0),
            InvalidBlock,
            "header height/round/time out of range",
        )
        ensure(
            type(chain_id) is str and 0 < len(chain_id) <= MAX_CHAIN_ID_CHARS,
            InvalidBlock,
            "header chain id must be text of 1-{} characters",
            MAX_CHAIN_ID_CHARS,
        )
        ensure(
            _is_hash(prev_hash) and all(map(_is_hash, hashes)),
            InvalidBlock,
            "header hashes must be 32 bytes",
        )
        ensure(
            type(proposer) is bytes and len(proposer) == KEY_SIZE,
            InvalidBlock,
            "header proposer must be a 32-byte key",
        )
        return cls(*fields)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Block:
    header: Header
    txs: tuple[Tx, ...]
    last_cert: CommitCertificate | None
    evidence: tuple[bytes, ...] = ()  # encoded proofs (``consensus.evidence``)
    hash: bytes = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hash", self.header.hash)

    @property
    def height(self) -> int:
        return self.header.height

    def encode(self) -> bytes:
        cert = None if self.last_cert is None else self.last_cert.to_list()
        return msgpack.packb(
            [self.header.to_list(), [tx.raw for tx in self.txs], cert, list(self.evidence)],
            use_bin_type=True,
        )

    @classmethod
    def decode(cls, data: bytes, known: Mapping[bytes, Tx] | None = None) -> Block:
        """Parse a block; structure only (signatures and rules are checked by execution).

        Any bytes at all give a Block or InvalidBlock: the parts are split without being
        decoded, then each is decoded under its own limits (see ``chain.codec.BLOCK``).

        ``known`` maps tx ids to txs already decoded from the same bytes (a node's
        mempool): a tx id is the sha256 of the tx's bytes, so a block's tx found there is
        taken as it is instead of being decoded again, which was every validator's second
        decoding of each tx it had been gossiped.
        """
        parts = _split(data, BLOCK, "block")
        ensure(len(parts) == 4, InvalidBlock, "block must be an array of 4 fields")
        header_bytes, txs_bytes, cert_bytes, evidence_bytes = parts
        header = Header.from_list(_unpack(header_bytes, HEADER, "header"))
        try:
            raws = _bins(txs_bytes, BLOCK_TXS, "txs")
            if known:
                txs = tuple(_known_or_decoded(raw, known) for raw in raws)
            else:
                txs = tuple(map(decode_tx, raws))
        except TxRejected as exc:
            raise InvalidBlock(f"block holds a malformed tx: {exc}") from None
        cert_fields = _unpack(cert_bytes, CERTIFICATE, "certificate")
        cert = None if cert_fields is None else CommitCertificate.from_list(cert_fields)
        evidence_parts = _split(evidence_bytes, BLOCK, "evidence")
        ensure(
            len(evidence_parts) <= MAX_BLOCK_EVIDENCE,
            InvalidBlock,
            "a block carries at most {} evidence",
            MAX_BLOCK_EVIDENCE,
        )
        evidence = tuple(_unpack(raw, EVIDENCE_IN_BLOCK, "evidence") for raw in evidence_parts)
        ensure(all(type(e) is bytes for e in evidence), InvalidBlock, "evidence must be bytes")
        block = cls(header, txs, cert, evidence)  # type: ignore[arg-type]
        check_structure(block)
        return block


def _known_or_decoded(raw: bytes, known: Mapping[bytes, Tx]) -> Tx:
    tx = known.get(hashlib.sha256(raw).digest()) if type(raw) is bytes else None
    return decode_tx(raw) if tx is None else tx  # decode_tx refuses a part that is not bytes


def tx_root(txs: Sequence[Tx]) -> bytes:
    """Commitment to the ordered tx list; empty blocks have the all-zero root."""
    if not txs:
        return EMPTY_HASH
    return hashlib.sha256(b"".join(tx.tx_id for tx in txs)).digest()


def cert_hash(cert: CommitCertificate | None) -> bytes:
    return EMPTY_HASH if cert is None else cert.hash


def evidence_hash(evidence: Sequence[bytes]) -> bytes:
    """Commitment to the ordered evidence list; a block without evidence has the all-zero
    hash. Each proof is hashed first, so no two lists of proofs share a commitment."""
    if not evidence:
        return EMPTY_HASH
    return hashlib.sha256(b"".join(hashlib.sha256(e).digest() for e in evidence)).digest()


def check_structure(block: Block) -> None:
    """Rules a block must follow on its own, before anyone executes it."""
    header, cert = block.header, block.last_cert
    ensure(
        header.tx_root == tx_root(block.txs),
        InvalidBlock,
        "tx root does not match the block's transactions",
    )
    ensure(
        header.evidence_hash == evidence_hash(block.evidence),
        InvalidBlock,
        "evidence hash does not match the block's evidence",
    )
    ensure(
        len(block.evidence) <= MAX_BLOCK_EVIDENCE,
        InvalidBlock,
        "a block carries at most {} evidence",
        MAX_BLOCK_EVIDENCE,
    )
    ensure(
        len(set(block.evidence)) == len(block.evidence),
        InvalidBlock,
        "block holds the same evidence twice",
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


def _is_int(value: object, low: int, high: int = MAX_HEIGHT) -> bool:
    """An integer (not a bool, not a float) in [low, high]."""
    return type(value) is int and low <= value <= high


def _is_hash(value: object) -> bool:
    return type(value) is bytes and len(value) == HASH_SIZE


def _unpack(data: object, limits: Limits, what: str) -> object:
    try:
        return unpack(data, limits)
    except DecodeError as exc:
        raise InvalidBlock(f"{what}: {exc}") from None


def _bins(data: object, limits: Limits, what: str) -> list[bytes]:
    try:
        return unpack_bins(data, limits)
    except DecodeError as exc:
        raise InvalidBlock(f"{what}: {exc}") from None


def _split(data: object, limits: Limits, what: str) -> list[memoryview]:
    try:
        return split_array(data, limits)
    except DecodeError as exc:
        raise InvalidBlock(f"{what}: {exc}") from None
