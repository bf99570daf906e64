"""Decoding bytes from outside the node (peers, clients) within stated bounds.

msgpack's defaults trust their input: a declared array length is allocated before any
element arrives (an array32 header of 5 bytes asks for 32 GiB of slots), and every byte
of nested empty arrays becomes a Python list of ~60 bytes. So every unpack of outside
bytes goes through ``unpack`` with ``Limits`` sized to the largest legal message of its
kind: in bytes, in elements per array, in bytes per string and per bin; no message of
ours holds a map or an extension type, so none is allowed. Under such limits decoding
allocates at most one object per input byte.

A message that legally holds many elements of several kinds (a consensus message, a
sync answer) is not unpacked whole: ``split_array`` walks its elements with msgpack's
``skip``, which builds no objects, and each element is then unpacked under the limits of
one element. Memory is then bounded by the largest single element, and CPU by the byte
count, whatever the bytes contain. A list of many bins (a block's txs, a tx batch) is
unpacked whole by ``unpack_bins`` in one C call, with a hook that refuses any array
holding anything but bins as soon as that array is built, which bounds it alike.

The wire's sizes, which the limits derive from, live here too; ``chain.tx`` and
``chain.block`` import them.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import msgpack

from chain.errors import DecodeError

KEY_SIZE = 32  # an Ed25519 public key
SIGNATURE_SIZE = 64  # an Ed25519 signature
HASH_SIZE = 32  # sha256
MAX_TX_BYTES = 1024  # a tx on the wire: body + signature
MAX_CHAIN_ID_CHARS = 64
MAX_BLOCK_TXS = 10_000  # a node's configured block_max_txs (default 2,000) must stay below
MAX_VALIDATORS = 1_000  # banks in a genesis; bounds a certificate's signatures
MAX_MILESTONES = 12  # in one contract; the longest array a tx holds
MAX_BLOCK_EVIDENCE = 32  # equivocation proofs one block may carry

_UINT64 = 9  # the widest msgpack integer: a marker byte and 8 bytes
_UINT16 = 3  # an integer below 65,536 (a validator index)
_ARRAY32 = 5  # the widest array header
_LEN16 = 3  # header of a str or bin of 256..65,535 bytes
_MAX_CHAIN_ID_BYTES = 4 * MAX_CHAIN_ID_CHARS  # UTF-8 takes up to 4 bytes a character


@dataclass(frozen=True, slots=True)
class Limits:
    """The most one message may hold; ``max_array`` bounds each array's length."""

    max_bytes: int
    max_array: int
    max_bin: int
    max_str: int


_BYTES_LIKE = bytes | bytearray | memoryview


def unpack(data: object, limits: Limits) -> object:
    """Decode one msgpack value from ``data`` within ``limits``. Raises DecodeError only."""
    if not isinstance(data, _BYTES_LIKE) or len(data) > limits.max_bytes:
        raise DecodeError(f"a message is bytes of at most {limits.max_bytes}")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_array_len=limits.max_array,
            max_map_len=0,
            max_bin_len=limits.max_bin,
            max_str_len=limits.max_str,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise DecodeError(f"undecodable bytes ({type(exc).__name__}: {exc})"[:200]) from None


def unpack_bins(data: object, limits: Limits) -> list[bytes]:
    """The bins of the msgpack array ``data`` (a block's txs, a tx batch), within
    ``limits``: ``max_array`` bins of at most ``max_bin`` bytes each. Raises DecodeError
    only.

    One C call for the whole array, where splitting it and unpacking each element cost
    ~0.7 µs a tx. msgpack calls the hook on each array once it is built, innermost first,
    and the hook refuses one holding anything but bins, so garbage of nested arrays never
    has more than about ``max_array`` of them alive: memory stays within ``data``'s bytes
    plus one small object per element of one array.
    """
    if not isinstance(data, _BYTES_LIKE) or len(data) > limits.max_bytes:
        raise DecodeError(f"a message is bytes of at most {limits.max_bytes}")
    try:
        bins = msgpack.unpackb(
            data,
            raw=False,
            max_array_len=limits.max_array,
            max_map_len=0,
            max_bin_len=limits.max_bin,
            max_str_len=0,
            max_ext_len=0,
            list_hook=_only_bins,
        )
    except _NotBins:
        raise DecodeError("an array holds something other than bins") from None
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise DecodeError(f"undecodable bytes ({type(exc).__name__}: {exc})"[:200]) from None
    if type(bins) is not list:
        raise DecodeError("not an array of bins")
    return bins


class _NotBins(Exception):
    pass


def _only_bins(items: list) -> list:
    for item in items:
        if type(item) is not bytes:
            raise _NotBins
    return items


def split_array(data: object, limits: Limits) -> list[memoryview]:
    """The encoded elements of the msgpack array ``data``, each still undecoded (views
    into ``data``: splitting copies nothing).

    ``limits.max_bytes`` bounds ``data``, ``limits.max_array`` the element count. Raises
    DecodeError if ``data`` is not exactly one well-formed array.
    """
    if not isinstance(data, _BYTES_LIKE) or len(data) > limits.max_bytes:
        raise DecodeError(f"a message is bytes of at most {limits.max_bytes}")
    unpacker = msgpack.Unpacker(max_buffer_size=max(len(data), 1))
    try:
        unpacker.feed(data)
        count = unpacker.read_array_header()
        if count > limits.max_array:
            raise DecodeError(f"an array of {count} elements, at most {limits.max_array}")
        bounds = [unpacker.tell()]
        for _ in range(count):
            unpacker.skip()
            bounds.append(unpacker.tell())
    except DecodeError:
        raise
    except Exception as exc:  # OutOfData, StackError, ValueError on a non-array...
        raise DecodeError(f"undecodable bytes ({type(exc).__name__})") from None
    if bounds[-1] != len(data):
        raise DecodeError("bytes left over after the array")
    view = memoryview(data)
    return [view[start:end] for start, end in pairwise(bounds)]


TX_BODY = Limits(
    max_bytes=MAX_TX_BYTES - SIGNATURE_SIZE,
    # [kind, chain_id, sender, nonce, to, token, amount, memo, args?]; the longest array
    # is a contract's milestones (each [name, amount, due]).
    max_array=max(9, MAX_MILESTONES),
    max_bin=KEY_SIZE,
    # Not the memo's own limit: a memo over it is decoded, then refused as MEMO_TOO_LONG.
    max_str=MAX_TX_BYTES,
)
"""A tx body, the bytes before the signature (``chain.tx.decode_tx``)."""

TX_IN_BLOCK = Limits(max_bytes=_LEN16 + MAX_TX_BYTES, max_array=0, max_bin=MAX_TX_BYTES, max_str=0)
"""One element of a block's tx list: the wire bytes of one tx, as a msgpack bin."""

BLOCK_TXS = Limits(
    max_bytes=_ARRAY32 + MAX_BLOCK_TXS * TX_IN_BLOCK.max_bytes,
    max_array=MAX_BLOCK_TXS,
    max_bin=MAX_TX_BYTES,
    max_str=0,
)
"""A block's tx list, unpacked whole (``unpack_bins``)."""

HEADER = Limits(
    # [chain_id, height, round, prev_hash, proposer, time_ms, tx_root, state_root,
    #  cert hash, evidence hash]
    max_bytes=1 + _LEN16 + _MAX_CHAIN_ID_BYTES + 3 * _UINT64 + 6 * (2 + HASH_SIZE),
    max_array=10,
    max_bin=HASH_SIZE,
    max_str=_MAX_CHAIN_ID_BYTES,
)
"""A block header (``chain.block.Header``)."""

CERTIFICATE = Limits(
    # [height, round, block_hash, [[index, signature], ...]], one pair per validator
    max_bytes=1
    + 2 * _UINT64
    + (2 + HASH_SIZE)
    + _ARRAY32
    + MAX_VALIDATORS * (1 + _UINT16 + 2 + SIGNATURE_SIZE),
    max_array=MAX_VALIDATORS,
    max_bin=SIGNATURE_SIZE,
    max_str=0,
)
"""A commit certificate (``chain.block.CommitCertificate``): about 70 KB at most."""

_SIGNED_MESSAGE = (
    # [type, height, round, header or vote kind and hash, pol round, signer, signature]
    1 + 1 + 3 * _UINT64 + HEADER.max_bytes + (2 + KEY_SIZE) + (2 + SIGNATURE_SIZE)
)
EVIDENCE = Limits(
    max_bytes=1 + 2 * _SIGNED_MESSAGE,
    max_array=HEADER.max_array,
    max_bin=SIGNATURE_SIZE,
    max_str=_MAX_CHAIN_ID_BYTES,
)
"""One equivocation proof, [message, message]: two signed consensus messages of one
validator for one slot, a proposal carrying its block's header only (``consensus.evidence``
reads it; to the chain it is opaque bytes): about 1.3 KB at most."""

EVIDENCE_IN_BLOCK = Limits(
    max_bytes=_LEN16 + EVIDENCE.max_bytes, max_array=0, max_bin=EVIDENCE.max_bytes, max_str=0
)
"""One element of a block's evidence list: the bytes of one proof, as a msgpack bin."""

BLOCK = Limits(
    max_bytes=1
    + HEADER.max_bytes
    + _ARRAY32
    + MAX_BLOCK_TXS * TX_IN_BLOCK.max_bytes
    + CERTIFICATE.max_bytes
    + _ARRAY32
    + MAX_BLOCK_EVIDENCE * EVIDENCE_IN_BLOCK.max_bytes,
    max_array=MAX_BLOCK_TXS,
    max_bin=max(MAX_TX_BYTES, EVIDENCE.max_bytes),
    max_str=_MAX_CHAIN_ID_BYTES,
)
"""A whole block, [header, [tx, ...], certificate or nil, [evidence, ...]]: its header,
MAX_BLOCK_TXS txs of MAX_TX_BYTES each, a certificate of MAX_VALIDATORS signatures and
MAX_BLOCK_EVIDENCE proofs: about 10.3 MB (9.9 MiB) at most, under the 16 MiB p2p frame.
``chain.block.Block.decode`` splits it and decodes each part under the limits above, so
garbage of this size costs CPU in proportion to its bytes and no more memory than one part."""
