"""The fault layer in one process: every fault acts on the frames that pass it, draws its
randomness from the seed, is logged, and is set only through the token-guarded admin API.
A node's catch-up state refuses submissions while it is behind."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio
from trio.testing import MockClock

from consensus.messages import Proposal, VoteKind, decode_message
from consensus.validators import verify_message
from node.api import ErrorOut, create_app
from node.config import NodeHome, load_template
from node.faults import FaultLayer, parse_fault
from node.layout import create_network
from node.p2p import Frame, Kind, RequestFailed
from node.service import CatchUp, FaultsInForce, FaultSpecError, Syncing
from tests.consensus_helpers import CHAIN_ID, KEYS, PUB, W, block, propose, vote
from tests.test_api import FakeNode, parse
from tests.test_node_reactor import GENESIS_TIME_MS, build_nodes, virtual_wall_clock, wait_until

BANKS = [b.name for b in W.genesis.banks]  # BANK0..BANK3, validators PUB[0..3]
TOKEN = "s3cret-admin-token"
WALL_MS = 1_800_000_000_000


class RecordingNet:
    """The inner network: records what the layer hands it; ``feed`` makes frames arrive."""

    def __init__(self, me: int) -> None:
        self.peers = [k for k in PUB if k != PUB[me]]
        self.sent: list[tuple[bytes, Kind, bytes]] = []
        self._arrive, self.inbound = trio.open_memory_channel[Frame](math.inf)
        self.requests: list[bytes] = []

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    def connected_peers(self) -> set[bytes]:
        return set(self.peers)

    def dropped_frames(self) -> int:
        return 0

    def send(self, pubkey: bytes, kind: Kind, payload: bytes) -> None:
        self.sent.append((pubkey, kind, payload))

    def broadcast(self, kind: Kind, payload: bytes) -> None:
        for peer in self.peers:
            self.send(peer, kind, payload)

    async def request(self, pubkey: bytes, kind: Kind, payload: bytes, timeout: float) -> bytes:
        self.requests.append(pubkey)
        return b"answer"

    def respond(self, request: Frame, payload: bytes) -> None:
        assert request.reply_to is not None
        request.reply_to.send_nowait(payload)

    def feed(self, sender: bytes, kind: Kind = Kind.TXS, payload: bytes = b"x") -> None:
        self._arrive.send_nowait(Frame(sender, kind, payload))

    def to(self, peer: int) -> list[bytes]:
        return [payload for pubkey, _, payload in self.sent if pubkey == PUB[peer]]


def layer(me: int = 0, seed: int = 0) -> tuple[FaultLayer, RecordingNet]:
    net = RecordingNet(me)
    return FaultLayer(net, W.genesis, KEYS[me], wall_clock=lambda: WALL_MS, seed=seed), net


def drops(seed: int, frames: int = 400) -> list[int]:
    """Which of ``frames`` broadcasts under a 30 % drop rule reach BANK1."""
    faults, net = layer(seed=seed)
    faults.set({"fault": "drop", "rate": 0.3})
    for n in range(frames):
        faults.broadcast(Kind.TXS, n.to_bytes(2, "big"))
    return [int.from_bytes(p, "big") for p in net.to(1)]


# --- link faults ------------------------------------------------------------------------


def test_drop_rate_is_drawn_from_the_seed() -> None:
    first, again, other = drops(seed=7), drops(seed=7), drops(seed=8)
    assert first == again  # reproducible from the seed
    assert first != other
    assert 200 < len(first) < 360  # ~70 % of 400 arrive


def test_drop_filters_by_receiver_sender_and_kind() -> None:
    faults, net = layer(me=0)
    faults.set({"fault": "drop", "rate": 1.0, "to": "bank2", "kind": "consensus"})
    faults.broadcast(Kind.CONSENSUS, b"vote")
    faults.broadcast(Kind.TXS, b"txs")
    assert net.to(2) == [b"txs"]
    assert net.to(1) == net.to(3) == [b"vote", b"txs"]
    # A rule for frames from another bank leaves this node's frames alone.
    faults.clear()
    faults.set({"fault": "drop", "rate": 1.0, "from": "BANK3"})
    faults.broadcast(Kind.TXS, b"more")
    assert net.to(2) == [b"txs", b"more"]
    counters = faults.in_force().frames["BANK2"]
    assert counters["dropped_out"] == {"consensus": 1}
    assert counters["sent"] == {"txs": 2}


def test_duplicate_sends_matching_frames_twice() -> None:
    faults, net = layer()
    faults.set({"fault": "duplicate", "rate": 1.0, "to": "BANK1"})
    faults.broadcast(Kind.TXS, b"t")
    assert net.to(1) == [b"t", b"t"]
    assert net.to(2) == [b"t"]
    assert faults.in_force().frames["BANK1"]["duplicated"] == {"txs": 1}


async def test_delay_holds_frames_back_on_the_node_clock(autojump_clock: MockClock) -> None:
    faults, net = layer()
    faults.set({"fault": "delay", "ms": 200, "jitter": 100, "to": "BANK1"})
    async with trio.open_nursery() as nursery:
        await nursery.start(faults.run)
        start = trio.current_time()
        faults.broadcast(Kind.CONSENSUS, b"late")
        assert net.to(1) == [] and net.to(2) == [b"late"]
        await trio.sleep(0.099)  # the earliest a 200 +- 100 ms delay can end
        assert net.to(1) == []
        await trio.sleep(0.202)
        assert net.to(1) == [b"late"]
        assert trio.current_time() - start < 0.302
        nursery.cancel_scope.cancel()


async def test_partition_cuts_both_directions_and_heal_restores() -> None:
    faults, net = layer(me=0)
    faults.set({"fault": "partition", "groups": [["bank0", "bank1"], ["BANK2", "BANK3"]]})
    state = faults.in_force()
    assert state.cut_to == state.cut_from == ["BANK2", "BANK3"]
    faults.broadcast(Kind.CONSENSUS, b"p")
    assert net.to(1) == [b"p"] and net.to(2) == net.to(3) == []
    assert faults.connected_peers() == {PUB[1]}
    net.feed(PUB[2])
    net.feed(PUB[1], payload=b"from 1")
    frame = await faults.inbound.__anext__()
    assert frame.sender == PUB[1]  # BANK2's frame was discarded
    with pytest.raises(RequestFailed):
        await faults.request(PUB[3], Kind.SYNC_REQUEST, b"q", 1.0)
    frames = faults.in_force().frames
    assert frames["BANK2"]["dropped_in"] == {"txs": 1}
    assert frames["BANK2"].get("received", {}) == {}
    assert frames["BANK1"]["received"] == {"txs": 1}

    faults.set({"fault": "heal"})
    assert faults.in_force().cut_to == []
    faults.broadcast(Kind.CONSENSUS, b"h")
    assert net.to(2) == [b"h"]


async def test_oneway_cut_loses_frames_one_way_only() -> None:
    sender, sender_net = layer(me=0)
    receiver, receiver_net = layer(me=2)
    for faults in (sender, receiver):
        faults.set({"fault": "oneway", "from": "BANK0", "to": "BANK2"})
    sender.broadcast(Kind.CONSENSUS, b"x")
    assert sender_net.to(2) == [] and sender_net.to(1) == [b"x"]
    receiver.broadcast(Kind.CONSENSUS, b"back")
    assert receiver_net.to(0) == [b"back"]  # BANK2's frames to BANK0 arrive
    receiver_net.feed(PUB[0])
    receiver_net.feed(PUB[1], payload=b"ok")
    assert (await receiver.inbound.__anext__()).sender == PUB[1]
    assert sender.in_force().cut_to == ["BANK2"] and sender.in_force().cut_from == []


async def test_a_lost_sync_answer_closes_the_askers_channel() -> None:
    faults, _ = layer(me=0)
    faults.set({"fault": "drop", "rate": 1.0, "kind": "sync"})
    reply_send, reply_recv = trio.open_memory_channel[bytes](1)
    faults.respond(Frame(PUB[1], Kind.SYNC_REQUEST, b"q", reply_send), b"blocks")
    with pytest.raises(trio.EndOfChannel):
        await reply_recv.receive()


def test_skew_moves_the_wall_clock_and_clear_ends_every_fault(
    caplog: pytest.LogCaptureFixture,
) -> None:
    faults, _ = layer()
    caplog.set_level(logging.INFO, "depnet.faults")
    faults.set({"fault": "skew", "ms": -1500, "seed": 3})
    assert faults.wall_clock() == WALL_MS - 1500
    faults.set({"fault": "drop", "rate": 0.5})
    state = faults.clear()
    assert faults.wall_clock() == WALL_MS
    assert state.faults == [] and state.seed == 3
    records = [(r.getMessage(), getattr(r, "fields", {})) for r in caplog.records]
    assert records[0] == (
        "fault set",
        {"fault": {"fault": "skew", "ms": -1500}, "seed": 3, "at_ms": WALL_MS},
    )
    assert [m for m, _ in records] == ["fault set", "fault set", "faults cleared"]


# --- byzantine behaviours ---------------------------------------------------------------


def test_equivocating_proposer_sends_two_signed_proposals_for_one_slot() -> None:
    proposal = propose(block(1), round=0)  # validator 1 proposes height 1, round 0
    seen: set[bytes] = set()
    for seed in range(5):
        faults, net = layer(me=1, seed=seed)
        faults.set({"fault": "byzantine", "mode": "equivocate"})
        faults.broadcast_consensus(proposal)
        for _, _, payload in net.sent:
            msg = decode_message(payload)
            verify_message(msg, W.validators, CHAIN_ID)  # re-signed with its own key
            assert isinstance(msg, Proposal)
            assert (msg.height, msg.round) == (1, 0)
            seen.add(msg.block.hash)
    assert len(seen) == 2


def test_double_voter_signs_conflicting_votes() -> None:
    faults, net = layer(me=2)
    faults.set({"fault": "byzantine", "mode": "double-vote"})
    faults.broadcast_consensus(vote(2, VoteKind.PREVOTE, 0, b"\x01" * 32))
    votes = [decode_message(payload) for payload in net.to(0)]
    for msg in votes:
        verify_message(msg, W.validators, CHAIN_ID)
    assert len({v.block_hash for v in votes}) > 1
    assert {(v.height, v.round, v.kind) for v in votes} == {(1, 0, VoteKind.PREVOTE)}


def test_invalid_block_proposer_sends_a_block_with_a_wrong_state_root() -> None:
    proposal = propose(block(1), round=0)
    faults, net = layer(me=1)
    faults.set({"fault": "byzantine", "mode": "invalid-block"})
    faults.broadcast_consensus(proposal)
    sent = {decode_message(payload) for payload in net.to(0)}
    (bad,) = sent
    assert isinstance(bad, Proposal)
    assert bad.block.header.state_root != proposal.block.header.state_root


async def test_silent_validator_sends_nothing_and_serves_no_blocks() -> None:
    faults, net = layer(me=1)
    faults.set({"fault": "byzantine", "mode": "silent"})
    faults.broadcast_consensus(vote(1, VoteKind.PREVOTE, 0, None))
    assert net.sent == []
    net.feed(PUB[0], Kind.SYNC_REQUEST)
    net.feed(PUB[0], Kind.CONSENSUS)
    assert (await faults.inbound.__anext__()).kind is Kind.CONSENSUS
    faults.set({"fault": "byzantine", "mode": "off"})
    faults.broadcast_consensus(vote(1, VoteKind.PREVOTE, 0, None))
    assert len(net.sent) == 3


@pytest.mark.parametrize(
    ("spec", "code"),
    [
        ([], "invalid_fault"),
        ({"fault": "melt"}, "unknown_fault"),
        ({"fault": "drop"}, "invalid_fault"),
        ({"fault": "drop", "rate": 1.5}, "invalid_fault"),
        ({"fault": "drop", "rate": True}, "invalid_fault"),
        ({"fault": "drop", "rate": 0.1, "to": "NOPE"}, "unknown_bank"),
        ({"fault": "drop", "rate": 0.1, "kind": "votes"}, "invalid_fault"),
        ({"fault": "drop", "rate": 0.1, "speed": 3}, "invalid_fault"),
        ({"fault": "delay", "ms": 100, "jitter": 200}, "invalid_fault"),
        ({"fault": "partition", "groups": [["BANK0"]]}, "invalid_fault"),
        ({"fault": "partition", "groups": [["BANK0"], ["BANK0", "BANK1"]]}, "invalid_fault"),
        ({"fault": "oneway", "from": "BANK0", "to": "BANK0"}, "invalid_fault"),
        ({"fault": "skew", "ms": "fast"}, "invalid_fault"),
        ({"fault": "byzantine", "mode": "evil"}, "invalid_fault"),
        ({"fault": "heal", "seed": "x"}, "invalid_fault"),
    ],
)
def test_a_bad_spec_is_refused_with_a_code_and_changes_nothing(spec: object, code: str) -> None:
    faults, _ = layer()
    faults.set({"fault": "skew", "ms": 5})
    before = faults.in_force()
    with pytest.raises(FaultSpecError) as caught:
        faults.set(spec)
    assert caught.value.code == code and caught.value.message
    assert faults.in_force() == before


def test_parse_names_banks_as_genesis_spells_them() -> None:
    fault, seed = parse_fault({"fault": "oneway", "from": "bank0", "to": "Bank3", "seed": 9}, BANKS)
    assert fault.to_json() == {"fault": "oneway", "from": "BANK0", "to": "BANK3"}
    assert seed == 9


# --- the admin API ----------------------------------------------------------------------


@pytest.fixture
async def admin() -> AsyncIterator[tuple[httpx.AsyncClient, FaultLayer]]:
    faults, _ = layer()
    app = create_app(FakeNode(), faults, TOKEN)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
        yield client, faults


AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}], ids=str
)
async def test_admin_routes_refuse_a_missing_or_wrong_token_and_change_nothing(
    admin: tuple[httpx.AsyncClient, FaultLayer], headers: dict[str, str]
) -> None:
    client, faults = admin
    before = faults.in_force()
    for method in ("GET", "POST", "DELETE"):
        body = {"fault": "skew", "ms": 100} if method == "POST" else None
        response = await client.request(method, "/admin/faults", json=body, headers=headers)
        assert response.status_code == 401, response.text
        assert parse(ErrorOut, response).error.code == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"
    assert faults.in_force() == before and faults.skew_ms == 0


async def test_admin_routes_set_list_and_clear_faults(
    admin: tuple[httpx.AsyncClient, FaultLayer],
) -> None:
    client, faults = admin
    spec = {"fault": "drop", "rate": 0.3, "to": "BANK1", "kind": "consensus"}
    response = await client.post("/admin/faults", json=spec, headers=AUTH)
    assert response.status_code == 200, response.text
    assert parse(FaultsInForce, response).faults == [spec]
    response = await client.get("/admin/faults", headers=AUTH)
    assert response.json()["faults"] == [spec] and response.json()["bank"] == "BANK0"
    response = await client.delete("/admin/faults", headers=AUTH)
    assert response.json()["faults"] == [] and not faults.rules


async def test_admin_route_refuses_a_bad_spec_with_400_and_changes_nothing(
    admin: tuple[httpx.AsyncClient, FaultLayer],
) -> None:
    client, faults = admin
    for body, code in (
        (b"{not json", "malformed_json"),
        (json.dumps({"fault": "drop", "rate": 2}).encode(), "invalid_fault"),
        (json.dumps({"fault": "partition", "groups": [["X"], ["Y"]]}).encode(), "unknown_bank"),
    ):
        response = await client.post("/admin/faults", content=body, headers=AUTH)
        assert response.status_code == 400, response.text
        assert parse(ErrorOut, response).error.code == code
    assert faults.in_force().faults == []


async def test_openapi_documents_the_admin_routes(
    admin: tuple[httpx.AsyncClient, FaultLayer],
) -> None:
    client, _ = admin
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert set(paths["/admin/faults"]) == {"get", "post", "delete"}
    assert "401" in paths["/admin/faults"]["post"]["responses"]
    assert "503" in paths["/txs"]["post"]["responses"]


def test_admin_token_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    home = NodeHome(tmp_path)
    token = home.admin_token()
    assert len(token) == 64
    assert home.admin_token_file.stat().st_mode & 0o777 == 0o600
    assert home.admin_token() == token


# --- catching up --------------------------------------------------------------------------


def test_catch_up_trusts_a_height_only_when_f_plus_one_validators_claim_it() -> None:
    catch_up = CatchUp.of(4)  # f = 1
    catch_up.observe(PUB[3], 2**40)  # one byzantine validator claims a far height
    assert not catch_up.behind(5)
    catch_up.observe(PUB[1], 11)  # votes for 11: it committed 10
    assert catch_up.network_height(5) == 10 and catch_up.behind(5)
    assert not catch_up.behind(9)  # one block behind is a commit in flight
    catch_up.observe(PUB[1], 3)  # an old resend does not lower what is known
    assert catch_up.network_height(0) == 10


class SyncingNode(FakeNode):
    async def submit(self, raws: list[bytes]) -> list:
        self.submitted.append(raws)
        raise Syncing(4, 90)


async def test_a_syncing_node_answers_submissions_with_503_and_retry_after() -> None:
    node = SyncingNode()
    transport = httpx.ASGITransport(app=create_app(node), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
        response = await client.post("/txs", json={"txs": ["00"]})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    error = parse(ErrorOut, response).error
    assert error.code == "syncing" and "height 4 of 90" in error.message


# --- skew on running nodes (in memory, virtual time) ---------------------------------------


async def test_skew_moves_the_block_times_a_node_proposes(
    tmp_path: Path, autojump_clock: MockClock
) -> None:
    network = create_network(tmp_path / "net", load_template(), genesis_time_ms=GENESIS_TIME_MS)
    nodes = build_nodes(network)
    skewed = nodes[0]
    try:
        async with trio.open_nursery() as nursery:
            for node in nodes:
                await nursery.start(node.run_reactor)
            await wait_until(lambda: skewed.store.state.height >= 2, "2 heights")
            skewed.faults.set({"fault": "skew", "ms": 5_000})
            set_at = virtual_wall_clock()
            first = skewed.store.state.height + 1

            def proposed_by_skewed() -> list[int]:
                blocks = (
                    skewed.store.block(h) for h in range(first, skewed.store.state.height + 1)
                )
                return [b.header.time_ms for b in blocks if b.header.proposer == skewed.pubkey]

            await wait_until(lambda: bool(proposed_by_skewed()), "a block by the skewed node")
            assert proposed_by_skewed()[0] >= set_at + 5_000
            nursery.cancel_scope.cancel()
    finally:
        for node in nodes:
            node.store.close()
