"""Structure-aware fuzzing of everything a peer can send a validator node.

Valid messages of every kind a peer sends are built with the test network's real keys
(signed proposals and votes, tx batches of signed txs, sync requests, sync answers of
decided blocks with real certificates), then mutated: a field anywhere in the message,
or in a message nested in it as bytes (a proposal's block, a block's certificate, a
tx), is swapped for a huge, negative, float, nested or wrongly typed value, or dropped,
duplicated or swapped with another; the bytes are truncated, extended or spliced with a
declared-huge header; a vote or proposal is altered within its types and signed again
with its validator's key, so it passes the signature check and reaches the engine.

Properties, checked on every input:
- ``node.wire``'s decoders return a well-typed value or raise BadMessage, nothing else;
- a real Node on trio's MockClock, fed the mutated frames through its network loop and
  mutated sync answers through its catch-up, keeps running: nothing raises out of its
  loops, every fault it logs for a peer is a typed one, and what it retains (decoded
  frames, mempool, engine's blocks and evidence) stays within its stated bounds.

``DEPNET_FUZZ=long`` (``make fuzz``) runs many more examples than CI does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import shutil
import tempfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey
from trio.testing import MockClock, wait_all_tasks_blocked

from chain.block import Block, CommitCertificate
from chain.codec import MAX_TX_BYTES
from chain.genesis import Genesis
from chain.state import State, build_block
from chain.tx import Tx, TxKind, sign_tx
from consensus.engine import Retained
from consensus.messages import (
    BadMessage,
    Message,
    Proposal,
    Vote,
    VoteKind,
    encode_message,
    proposal_sign_bytes,
    signer_of,
    vote_sign_bytes,
)
from consensus.validators import InvalidCertificate, ValidatorSet, certify, verify_certificate
from node.config import NodeHome, load_template
from node.layout import create_network
from node.p2p import Frame, Kind, RequestFailed
from node.runner import DECODED_CACHE_SIZE, Node
from node.wire import (
    decode_consensus,
    decode_sync_answer,
    decode_sync_request,
    decode_tx_batch,
    encode_sync_answer,
    encode_sync_request,
    encode_tx_batch,
)

GENESIS_TIME_MS = 1_700_000_000_000
PROFILES = {
    "ci": settings(max_examples=500, deadline=None, derandomize=True),
    "long": settings(max_examples=20_000, deadline=None),
}
PROFILE = PROFILES[os.environ.get("DEPNET_FUZZ", "ci")]
NODE_PROFILE = settings(
    PROFILE,
    max_examples=max(PROFILE.max_examples // 5, 1),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- the world: a network of 4 banks and valid messages of every kind ------------------


class World:
    """A test network on disk (its node 0 is the node under test) and valid messages of
    every kind, signed with its validators' and wallets' real keys."""

    def __init__(self, path: Path) -> None:
        self.network = create_network(path, load_template(), genesis_time_ms=GENESIS_TIME_MS)
        self.genesis: Genesis = self.network.genesis()
        self.chain_id = self.genesis.chain_id
        self.validators = ValidatorSet(self.genesis.validators)
        entries = {bytes.fromhex(e.validator): e for e in self.network.nodes()}
        self.homes = [self.network.node_home(entries[p].bank) for p in self.validators.pubkeys]
        self.keys = [SigningKey(home.load_key()) for home in self.homes]
        self.txs = self._mints()
        self.chain = self._decided_chain(self.txs)
        self.proposals = [self._proposal(round_) for round_ in range(4)]
        self.votes = [
            self._vote(who, kind, height, round_, block_hash)
            for who in (1, 2, 3)
            for kind in VoteKind
            for height, round_ in ((1, 0), (1, 1), (2, 0), (4, 0))
            for block_hash in (None, self.chain[0][0].hash)
        ]

    def _mints(self) -> list[Tx]:
        txs = []
        for bank in self.genesis.banks:
            issuer = self.network.wallet(bank.name).signing_key
            holder = next(a.account for a in self.genesis.accounts if a.bank == bank.name)
            for nonce in range(2):
                txs.append(
                    sign_tx(
                        issuer,
                        TxKind.MINT,
                        self.chain_id,
                        nonce,
                        to=holder,
                        token=bank.tokens[0].symbol,
                        amount=5 + nonce,
                    )
                )
        return txs

    def _block(self, state: State, txs: list[Tx], round_: int, last_cert) -> Block:
        height = state.height + 1
        built = build_block(
            state,
            txs,
            round=round_,
            proposer=self.validators.proposer(height, round_),
            time_ms=GENESIS_TIME_MS + 1_000 * height + round_,
            last_cert=last_cert,
            max_txs=100,
        )
        assert not built.rejected
        state.commit(built.changes, built.block.header)
        return built.block

    def _decided_chain(self, txs: list[Tx]) -> list[tuple[Block, CommitCertificate]]:
        state, cert, chain = State(self.genesis), None, []
        for height_txs in (txs[:4], txs[4:], []):
            block = self._block(state, height_txs, 0, cert)
            cert = certify(block, self.keys[:3], self.chain_id)
            verify_certificate(cert, self.validators, self.chain_id)
            chain.append((block, cert))
        return chain

    def _proposal(self, round_: int) -> Proposal:
        block = (
            self.chain[0][0] if round_ == 0 else self._block(State(self.genesis), [], round_, None)
        )
        proposer = self.validators.proposer(1, round_)
        return self.sign(Proposal(1, round_, block, -1, proposer, b""))

    def _vote(self, who: int, kind: VoteKind, height: int, round_: int, h: bytes | None) -> Vote:
        return self.sign(Vote(kind, height, round_, h, self.validators.pubkeys[who], b""))

    def sign(self, msg: Message) -> Message:
        """``msg`` signed by the key of the validator it names as its signer."""
        key = self.keys[self.validators.index(signer_of(msg))]
        if isinstance(msg, Proposal):
            body = proposal_sign_bytes(
                self.chain_id, msg.height, msg.round, msg.block.hash, msg.pol_round
            )
        else:
            body = vote_sign_bytes(self.chain_id, msg.kind, msg.height, msg.round, msg.block_hash)
        return dataclasses.replace(msg, signature=key.sign(body).signature)

    def seeds(self) -> dict[Kind, list[bytes]]:
        """Valid payloads of each frame kind a peer sends (SYNC_RESPONSE: answers)."""
        entries = [(b.encode(), c.encode()) for b, c in self.chain]
        return {
            Kind.CONSENSUS: [encode_message(m) for m in [*self.proposals, *self.votes]],
            Kind.TXS: [encode_tx_batch([t.raw for t in self.txs[:n]]) for n in (1, 3, 8)],
            Kind.SYNC_REQUEST: [encode_sync_request(h, c) for h, c in ((1, 64), (2, 1), (9, 3))],
            Kind.SYNC_RESPONSE: [encode_sync_answer(entries[:n]) for n in (1, 2, 3)],
        }


_WORLD_DIR = tempfile.TemporaryDirectory(prefix="depnet-fuzz-")  # removed at exit
WORLD = World(Path(_WORLD_DIR.name) / "net")
SEEDS = WORLD.seeds()


# --- mutations ------------------------------------------------------------------------------

EDGE_VALUES = [
    0, -1, 1, 2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64 - 1, -(2**63), math.inf, -math.inf,
    math.nan, 1e300, -0.0, True, False, None, "", "x" * 300, b"", bytes(32), bytes(64),
    bytes(33), [], [[[[[]]]]], {}, {1: 2},
]  # fmt: skip

hostile_values = st.one_of(
    st.sampled_from(EDGE_VALUES),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    st.binary(max_size=70),
    st.text(max_size=8),
    st.recursive(st.none() | st.integers(-1, 3), lambda c: st.lists(c, max_size=3), max_leaves=8),
    st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8)),
)

HUGE_HEADERS = [
    b"\xdd\xff\xff\xff\xff",
    b"\xdc\xff\xff",
    b"\xc6\xff\xff\xff\xff",
    b"\xdb\xff\xff\xff\xff",
]


def _is_encoded_array(value: object) -> bool:
    """A bin that holds a msgpack array: a block, a certificate, or a tx body."""
    return (
        type(value) is bytes
        and len(value) > 1
        and (0x90 <= value[0] <= 0x9F or value[0] in (0xDC, 0xDD))
    )


def _mutate_tree(draw: st.DrawFn, obj: object, depth: int = 0) -> object:
    """``obj`` with one node of its tree changed, descending into nested encodings."""
    if type(obj) is list and obj and depth < 8 and draw(st.booleans()):
        i = draw(st.integers(0, len(obj) - 1))
        return [*obj[:i], _mutate_tree(draw, obj[i], depth + 1), *obj[i + 1 :]]
    if _is_encoded_array(obj) and depth < 8 and draw(st.booleans()):
        try:
            inner = msgpack.unpackb(obj, raw=False, strict_map_key=False)
        except Exception:  # a tx's body and signature: not one msgpack value
            inner = None
        if inner is not None:
            return msgpack.packb(_mutate_tree(draw, inner, depth + 1), use_bin_type=True)
    if type(obj) is list and obj:
        op = draw(st.sampled_from(["drop", "duplicate", "swap", "append", "replace"]))
        i, j = draw(st.integers(0, len(obj) - 1)), draw(st.integers(0, len(obj) - 1))
        if op == "drop":
            return obj[:i] + obj[i + 1 :]
        if op == "duplicate":
            return [*obj[: i + 1], obj[i], *obj[i + 1 :]]
        if op == "swap":
            swapped = list(obj)
            swapped[i], swapped[j] = swapped[j], swapped[i]
            return swapped
        if op == "append":
            return [*obj, draw(hostile_values)]
    return draw(hostile_values)


def _mutate_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    op = draw(st.sampled_from(["tree", "tree", "truncate", "extend", "splice", "flip"]))
    at = draw(st.integers(0, len(data)))
    if op == "tree":
        try:
            obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
        except Exception:
            return data
        return msgpack.packb(_mutate_tree(draw, obj), use_bin_type=True)
    if op == "truncate":
        return data[:at]
    if op == "extend":
        return data + draw(st.binary(max_size=40))
    if op == "splice":
        cut = draw(st.integers(0, 16))
        junk = draw(st.sampled_from(HUGE_HEADERS) | st.binary(max_size=16))
        return data[:at] + junk + data[at + cut :]
    flip = bytearray(data)
    if flip:
        flip[at % len(flip)] ^= draw(st.integers(1, 255))
    return bytes(flip)


@st.composite
def mutated(draw: st.DrawFn, kind: Kind) -> bytes:
    data = draw(st.sampled_from(SEEDS[kind]))
    for _ in range(draw(st.integers(0, 3))):
        data = _mutate_bytes(draw, data)
    return data


@st.composite
def resigned(draw: st.DrawFn) -> bytes:
    """A vote or proposal changed within its field types and signed again by the validator
    it names: it passes the signature check, so the engine itself has to cope with it."""
    msg = draw(st.sampled_from([*WORLD.proposals, *WORLD.votes]))
    heights = st.sampled_from([1, 2, 3, 50, 2**31, 2**63 - 1]) | st.integers(1, 2**63 - 1)
    rounds = st.sampled_from([0, 1, 4, 5, 1_000, 2**31 - 1]) | st.integers(0, 2**31 - 1)
    changes: dict[str, object] = {}
    if draw(st.booleans()):
        changes["height"] = draw(heights)
    if draw(st.booleans()):
        changes["round"] = draw(rounds)
    if isinstance(msg, Vote):
        if draw(st.booleans()):
            changes["block_hash"] = draw(st.none() | st.binary(min_size=32, max_size=32))
        if draw(st.booleans()):
            changes["validator"] = draw(st.sampled_from(WORLD.validators.pubkeys))
    else:
        if draw(st.booleans()):
            changes["proposer"] = draw(st.sampled_from(WORLD.validators.pubkeys))
        if draw(st.booleans()):
            changes["block"] = draw(st.sampled_from([b for b, _ in WORLD.chain]))
    msg = dataclasses.replace(msg, **changes)
    if isinstance(msg, Proposal):
        msg = dataclasses.replace(msg, pol_round=draw(st.integers(-1, max(msg.round - 1, -1))))
    return encode_message(WORLD.sign(msg))


def payloads(kind: Kind) -> st.SearchStrategy[bytes]:
    if kind is Kind.CONSENSUS:
        return mutated(kind) | resigned()
    return mutated(kind)


# --- the decoders --------------------------------------------------------------------------


def _decode_answer(payload: bytes) -> None:
    for block, cert in decode_sync_answer(payload):
        assert isinstance(block, Block) and isinstance(cert, CommitCertificate)
        with contextlib.suppress(InvalidCertificate):
            verify_certificate(cert, WORLD.validators, WORLD.chain_id)


def _decode_batch(payload: bytes) -> None:
    raws = decode_tx_batch(payload)
    assert all(type(raw) is bytes and len(raw) <= MAX_TX_BYTES for raw in raws)


def _decode_request(payload: bytes) -> None:
    start, count = decode_sync_request(payload)
    assert type(start) is int and type(count) is int and start >= 1 and count >= 1


DECODERS: dict[Kind, Callable[[bytes], object]] = {
    Kind.CONSENSUS: decode_consensus,
    Kind.TXS: _decode_batch,
    Kind.SYNC_REQUEST: _decode_request,
    Kind.SYNC_RESPONSE: _decode_answer,
}
INPUTS = {kind: 0 for kind in DECODERS}  # inputs run, per kind (shown with -s)


@pytest.mark.parametrize("kind", DECODERS, ids=lambda k: k.name.lower())
def test_every_decoder_of_peer_bytes_returns_a_message_or_raises_bad_message(kind: Kind) -> None:
    @PROFILE
    @given(payloads(kind))
    def check(payload: bytes) -> None:
        INPUTS[kind] += 1
        with contextlib.suppress(BadMessage):
            DECODERS[kind](payload)

    check()
    print(f"\n{kind.name}: {INPUTS[kind]} inputs decoded")


def test_the_valid_seeds_decode() -> None:
    """The fuzzer mutates messages a node accepts: if these failed, it would test little."""
    for kind, seeds in SEEDS.items():
        for seed in seeds:
            DECODERS[kind](seed)


HUGE = 4 * 1024 * 1024
AMPLIFIERS = {
    "array of empty arrays": b"\xdd" + HUGE.to_bytes(4, "big") + b"\x90" * HUGE,
    "element of empty arrays": b"\x91\xdd" + HUGE.to_bytes(4, "big") + b"\x90" * HUGE,
    "nested arrays": b"\x91" * HUGE + b"\x90",
}


@pytest.mark.parametrize("kind", [Kind.TXS, Kind.SYNC_REQUEST], ids=["txs", "sync_request"])
@pytest.mark.parametrize("frame", AMPLIFIERS.values(), ids=AMPLIFIERS.keys())
def test_a_4_mb_frame_of_nested_arrays_allocates_no_more_than_its_size(
    kind: Kind, frame: bytes
) -> None:
    """(Sync answers: tests/test_blocksync.py; consensus frames: consensus/messages.py's.)"""
    tracemalloc.start()
    try:
        with pytest.raises(BadMessage):
            DECODERS[kind](frame)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * len(frame)


# --- a node -------------------------------------------------------------------------------


class FuzzNet:
    """The node's network: the other three validators are the fuzzer. Catch-up requests
    get the fuzzer's answers in turn, then RequestFailed."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = list(answers)
        self._send, self.inbound = trio.open_memory_channel[Frame](math.inf)
        self.replies: list[bytes] = []

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    def connected_peers(self) -> set[bytes]:
        return set(WORLD.validators.pubkeys[1:])

    def dropped_frames(self) -> int:
        return 0

    def broadcast(self, kind: Kind, payload: bytes) -> None:
        pass

    async def request(self, pubkey: bytes, kind: Kind, payload: bytes, timeout: float) -> bytes:
        await trio.lowlevel.checkpoint()
        if not self.answers:
            raise RequestFailed("no answer")
        return self.answers.pop(0)

    def respond(self, request: Frame, payload: bytes) -> None:
        self.replies.append(payload)

    def deliver(self, sender: int, kind: Kind, payload: bytes) -> None:
        reply_to = None
        if kind is Kind.SYNC_REQUEST:
            reply_to, _ = trio.open_memory_channel[bytes](1)
        self._send.send_nowait(Frame(WORLD.validators.pubkeys[sender], kind, payload, reply_to))


class PeerFaults(logging.Handler):
    """The errors a node logs for its peers' frames and answers."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[tuple[str, str]] = []  # (frame kind or "sync", error repr)

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "fields", {})
        if record.getMessage() in ("bad message from peer", "sync from peer failed"):
            self.errors.append((fields.get("kind", "sync"), fields["error"]))


TYPED_FAULTS = ("BadMessage(", "InvalidCertificate(", "RequestFailed(")

frames = st.tuples(
    st.integers(1, 3), st.sampled_from([Kind.CONSENSUS, Kind.TXS, Kind.SYNC_REQUEST])
).flatmap(lambda t: st.tuples(st.just(t[0]), st.just(t[1]), payloads(t[1])))


def _fresh_home() -> NodeHome:
    """Node 0's home with no blocks and no signing record: a node that never ran."""
    home = WORLD.homes[0]
    shutil.rmtree(home.data_dir, ignore_errors=True)
    home.signer_file.unlink(missing_ok=True)
    return home


async def _drive(node: Node, net: FuzzNet, inputs: list, clock: MockClock) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run_reactor)
        for sender, kind, payload in inputs:
            net.deliver(sender, kind, payload)
        for _ in range(6):  # resend ticks and timeouts: the node may ask for catch-up
            await wait_all_tasks_blocked()
            clock.jump(1.0)
        await wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()


def test_a_node_fed_mutated_frames_keeps_running_within_its_bounds() -> None:
    fed = {"examples": 0, "frames": 0, "answers": 0}

    @NODE_PROFILE
    @given(
        inputs=st.lists(frames, min_size=4, max_size=40),
        answers=st.lists(payloads(Kind.SYNC_RESPONSE), max_size=4),
    )
    def check(inputs: list, answers: list[bytes]) -> None:
        fed["examples"] += 1
        fed["frames"] += len(inputs)
        fed["answers"] += len(answers)
        _run_node(inputs, answers)

    check()
    print(f"\nnode: {fed} fed")


def _run_node(inputs: list, answers: list[bytes]) -> None:
    """Feed a fresh node ``inputs`` (sender, kind, payload) and answer its catch-up with
    ``answers``; check what it logged and what it holds."""
    home = _fresh_home()
    net = FuzzNet(answers)
    clock = MockClock()
    node = Node(
        home,
        home.load_config(),
        wall_clock=lambda: GENESIS_TIME_MS + 1_000 + int(trio.current_time() * 1000),
        net=net,
    )
    faults = PeerFaults()
    logger = logging.getLogger("depnet.node")
    logger.addHandler(faults)
    try:
        trio.run(_drive, node, net, inputs, clock, clock=clock)
    finally:
        logger.removeHandler(faults)
        node.store.close()
    untyped = [(k, e) for k, e in faults.errors if not e.startswith(TYPED_FAULTS)]
    assert not untyped
    assert len(node.decoded) <= DECODED_CACHE_SIZE
    assert len(node.mempool) <= node.config.mempool_max_txs
    held, bound = node.engine.retained(), Retained.bound(WORLD.validators, node.engine.round)
    assert all(getattr(held, f.name) <= getattr(bound, f.name) for f in dataclasses.fields(held))
