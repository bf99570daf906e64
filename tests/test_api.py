"""The HTTP API against a fake node: every route's answer, and every bad request refused
with the error body before anything reaches the node."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import asdict
from functools import partial
from hashlib import sha256
from typing import TypeVar

import httpx
import pytest
import trio
from pydantic import TypeAdapter

from chain.block import Block, CommitCertificate
from chain.errors import Reason, TxRejected
from chain.escrow import Contract, Offer, Settlement
from chain.state import State
from chain.tx import Milestone, Ref, TxKind, decode_tx, sign_tx
from node.api import (
    DEFAULT_HISTORY_PAGE,
    MAX_BATCH,
    MAX_BODY_BYTES,
    MAX_HISTORY_PAGE,
    AccountTxsOut,
    BlockOut,
    ErrorOut,
    SubmitOut,
    TxOut,
    TxStatusOut,
    as_json,
    create_app,
    serve_api,
)
from node.mempool import MempoolFull, TxStatus
from node.metrics import Metrics
from node.service import (
    AccountInfo,
    AccountTx,
    AccountTxs,
    CommittedBlock,
    CommittedEvidence,
    ContractInfo,
    Head,
    NodeStatus,
    OfferInfo,
    SubmitResult,
)
from tests.ledger_helpers import CHAIN_ID, USD, build_next, key, make_genesis

CHAIN = CHAIN_ID
ALICE = key("alice")
BOB = key("bob")
VALIDATOR = bytes(range(32))
EVIDENCE = CommittedEvidence(VALIDATOR, "JPM", 3, 1, "prevote", 4, b"\x01\x02")


def _block() -> Block:
    """Block 1 of the ledger tests' genesis: a transfer alice -> bob and a mint to bob."""
    txs = [
        sign_tx(ALICE, TxKind.TRANSFER, CHAIN, 0, to=bytes(BOB.verify_key), token=USD,
                amount=25, memo="INV-1"),
        sign_tx(key("jpm-issuer"), TxKind.MINT, CHAIN, 0, to=bytes(BOB.verify_key), token=USD,
                amount=7),
    ]  # fmt: skip
    built = build_next(State(make_genesis()), txs)
    assert not built.rejected
    return built.block


BLOCK = _block()
ALICE_PUB, BOB_PUB = bytes(ALICE.verify_key), bytes(BOB.verify_key)
CONTRACT = ContractInfo.of(
    b"\xc0" * 32,
    Contract(
        ALICE_PUB, BOB_PUB, ALICE_PUB, "USD.JPM", 9_000, b"\x7e" * 32,
        (Milestone("shipment", 30), Milestone("delivery", 70, 5_000)),
        (Settlement.RELEASED, Settlement.LOCKED),
    ),
)  # fmt: skip
OFFER = OfferInfo.of(b"\x0f" * 32, Offer(BOB_PUB, b"", "USD.JPM", 5, "HKD.HSBC", 39, 9_000))
CERT = CommitCertificate(1, 1, BLOCK.hash, ((0, b"\x09" * 64),))
GOOD_TX = BLOCK.txs[0]
T = TypeVar("T")


def parse(shape: type[T], response: httpx.Response) -> T:
    """The body read back into the shape the route documents (fails if it does not fit)."""
    return TypeAdapter(shape).validate_python(response.json())


def fixed_metrics(**values: float) -> Metrics:
    """Metrics whose gauges read the given values (0 for those left out)."""
    names = ("height", "round", "peers", "mempool_size", "evidence", "dropped_frames")
    return Metrics(**{name: partial(values.get, name, 0) for name in names})


class FakeNode:
    """A NodeService that records every call that could change a real node."""

    def __init__(self) -> None:
        self.metrics = fixed_metrics(height=1, round=2, peers=3, mempool_size=17, evidence=1)
        self.room_again_ms = 250
        self.submitted: list[list[bytes]] = []
        self.accounts = {
            bytes(ALICE.verify_key): AccountInfo(
                bytes(ALICE.verify_key), "JPM", 1, 3, {"USD.JPM": 475}
            )
        }
        self.statuses = {
            GOOD_TX.tx_id: TxStatus.committed(1, 0),
            b"\x01" * 32: TxStatus("pending"),
            b"\x02" * 32: TxStatus("rejected", code="bad_nonce", message="nonce 4 was used"),
        }
        self.fail_status = False
        self.history_reads: list[tuple[bytes, int | None, int]] = []
        self.list_reads: list[tuple] = []
        self.head_waits: list[tuple[int, float]] = []

    @property
    def registry(self):  # type: ignore[no-untyped-def]
        return self.metrics.registry

    async def submit(self, raws: list[bytes]) -> list[SubmitResult]:
        self.submitted.append(raws)
        results = []
        for raw in raws:
            try:
                tx = decode_tx(raw)
            except TxRejected as exc:
                results.append(SubmitResult.rejected(raw, exc))
                continue
            if tx.memo == "full":
                results.append(SubmitResult.rejected(raw, MempoolFull("mempool is full")))
            else:
                results.append(SubmitResult.admitted(tx.tx_id))
        return results

    def tx_status(self, tx_id: bytes) -> TxStatus:
        return self.statuses.get(tx_id, TxStatus("unknown"))

    def account(self, account: bytes) -> AccountInfo | None:
        return self.accounts.get(account)

    def account_txs(
        self, account: bytes, before_height: int | None, limit: int
    ) -> AccountTxs | None:
        self.history_reads.append((account, before_height, limit))
        if account not in self.accounts:
            return None
        t = BLOCK.header.time_ms
        mine = [AccountTx(1, n, t, tx) for n, tx in enumerate(BLOCK.txs) if tx.sender == account]
        return AccountTxs(mine[::-1], 1 if before_height is None else None)

    def block(self, height: int) -> CommittedBlock | None:
        return CommittedBlock(BLOCK, CERT) if height == 1 else None

    def block_bytes(self, height: int) -> tuple[bytes, bytes | None] | None:
        return (BLOCK.encode(), CERT.encode()) if height == 1 else None

    def contract(self, contract_id: bytes) -> ContractInfo | None:
        return CONTRACT if contract_id == CONTRACT.id else None

    def contracts(self, party: bytes | None, open_only: bool, limit: int) -> list[ContractInfo]:
        self.list_reads.append(("contracts", party, open_only, limit))
        return [CONTRACT]

    def offer(self, offer_id: bytes) -> OfferInfo | None:
        return OFFER if offer_id == OFFER.id else None

    def offers(self, party: bytes | None, open_only: bool, limit: int) -> list[OfferInfo]:
        self.list_reads.append(("offers", party, open_only, limit))
        return [OFFER]

    def evidence(self, height: int | None, limit: int) -> list[CommittedEvidence]:
        self.list_reads.append(("evidence", height, limit))
        return [EVIDENCE] if height in (None, EVIDENCE.committed_at) else []

    def head(self) -> Head:
        return Head(CHAIN, 1, BLOCK.hash, BLOCK.header.state_root, BLOCK.header.time_ms)

    async def next_head(self, after: int, timeout: float) -> Head:
        self.head_waits.append((after, timeout))
        return self.head()

    def status(self) -> NodeStatus:
        if self.fail_status:
            raise RuntimeError("engine exploded")
        return NodeStatus(
            "JPM", CHAIN, 1, 2, "prevote", 3, 17, 0, BLOCK.hash, BLOCK.header.state_root,
            ["ab" * 32], 1.5, {"quorum": 3}, False, 1,
        )  # fmt: skip

    def snapshot(self) -> tuple:
        return (copy.deepcopy(self.submitted), dict(self.accounts), dict(self.statuses))


@pytest.fixture
def fake() -> FakeNode:
    return FakeNode()


@pytest.fixture
async def client(fake: FakeNode) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(fake), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
        yield client


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = parse(ErrorOut, response)
    assert body.error.code == code
    assert body.error.message and "Traceback" not in body.error.message


# --- happy paths ------------------------------------------------------------------------


async def test_submit_batch_reports_each_tx(client: httpx.AsyncClient, fake: FakeNode) -> None:
    full = sign_tx(ALICE, TxKind.TRANSFER, CHAIN, 1, to=bytes(BOB.verify_key),
                   token="USD.JPM", amount=1, memo="full")  # fmt: skip
    raws = [GOOD_TX.raw, b"\x00garbage", full.raw]
    response = await client.post("/txs", json={"txs": [raw.hex() for raw in raws]})
    assert response.status_code == 200
    body = parse(SubmitOut, response)
    assert (body.accepted, body.rejected) == (1, 2)
    assert [(r.tx_id, r.accepted, r.code) for r in body.results] == [
        (GOOD_TX.tx_id, True, None),
        (sha256(b"\x00garbage").digest(), False, Reason.MALFORMED.value),
        (full.tx_id, False, Reason.MEMPOOL_FULL.value),
    ]
    assert response.json()["results"][0]["tx_id"] == GOOD_TX.tx_id.hex()
    assert body.results[1].message and body.results[2].message == "mempool is full"
    assert fake.submitted == [raws]


async def test_submit_takes_a_full_batch(client: httpx.AsyncClient, fake: FakeNode) -> None:
    response = await client.post("/txs", json={"txs": [GOOD_TX.raw.hex()] * MAX_BATCH})
    assert response.status_code == 200 and response.json()["accepted"] == MAX_BATCH
    assert len(fake.submitted[0]) == MAX_BATCH


@pytest.mark.parametrize(
    ("tx_id", "expected"),
    [
        (GOOD_TX.tx_id, {"status": "committed", "height": 1, "position": 0, "code": None}),
        (b"\x01" * 32, {"status": "pending", "height": None, "code": None}),
        (b"\x02" * 32, {"status": "rejected", "code": "bad_nonce", "message": "nonce 4 was used"}),
    ],
)
async def test_tx_status(client: httpx.AsyncClient, tx_id: bytes, expected: dict) -> None:
    response = await client.get(f"/txs/{tx_id.hex().upper()}")  # hex in any case
    assert response.status_code == 200
    body = asdict(parse(TxStatusOut, response))
    assert body["tx_id"] == tx_id and response.json()["tx_id"] == tx_id.hex()
    assert {key: body[key] for key in expected} == expected


async def test_unknown_tx_is_404(client: httpx.AsyncClient) -> None:
    assert_error(await client.get(f"/txs/{'ab' * 32}"), 404, "tx_not_found")


async def test_account(client: httpx.AsyncClient, fake: FakeNode) -> None:
    alice = bytes(ALICE.verify_key).hex()
    response = await client.get(f"/accounts/{alice}")
    assert response.status_code == 200
    assert parse(AccountInfo, response) == fake.accounts[bytes(ALICE.verify_key)]
    assert response.json() == {
        "account": alice,
        "bank": "JPM",
        "nonce": 1,
        "next_nonce": 3,
        "balances": {"USD.JPM": 475},
        "locked": {},
        "frozen": False,
    }
    assert_error(await client.get(f"/accounts/{'cd' * 32}"), 404, "account_not_found")


async def test_account_txs_page(client: httpx.AsyncClient, fake: FakeNode) -> None:
    alice = bytes(ALICE.verify_key)
    response = await client.get(f"/accounts/{alice.hex().upper()}/txs")
    assert response.status_code == 200
    body = parse(AccountTxsOut, response)
    assert body.account == alice and body.next_before == 1
    assert len(body.txs) == 1
    first = response.json()["txs"][0]
    assert first == {
        "tx_id": GOOD_TX.tx_id.hex(),
        "kind": "transfer",
        "chain_id": CHAIN,
        "sender": alice.hex(),
        "nonce": 0,
        "to": bytes(BOB.verify_key).hex(),
        "token": "USD.JPM",
        "amount": 25,
        "memo": "INV-1",
        "signature": GOOD_TX.signature.hex(),
        "args": None,
        "height": 1,
        "position": 0,
        "time_ms": BLOCK.header.time_ms,
    }
    # the tx fields are those of the block route
    block_tx = (await client.get("/blocks/1")).json()["txs"][0]
    assert {k: v for k, v in first.items() if k in block_tx} == block_tx
    last = await client.get(f"/accounts/{alice.hex()}/txs?limit={MAX_HISTORY_PAGE}&before=7")
    assert last.status_code == 200 and last.json()["next_before"] is None
    assert fake.history_reads == [
        (alice, None, DEFAULT_HISTORY_PAGE),
        (alice, 7, MAX_HISTORY_PAGE),
    ]


async def test_account_txs_of_an_unregistered_account_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/accounts/{'cd' * 32}/txs?limit=1")
    assert_error(response, 404, "account_not_found")
    assert "cd" * 32 in response.json()["error"]["message"]


async def test_block(client: httpx.AsyncClient) -> None:
    response = await client.get("/blocks/1")
    assert response.status_code == 200
    body = parse(BlockOut, response)
    assert body.hash == BLOCK.hash and body.height == 1
    assert response.json()["hash"] == BLOCK.hash.hex()
    assert body.header.state_root == BLOCK.header.state_root
    assert [tx.tx_id for tx in body.txs] == [tx.tx_id for tx in BLOCK.txs]
    first = body.txs[0]
    assert (first.kind, first.amount, first.memo, first.nonce) == ("transfer", 25, "INV-1", 0)
    assert body.txs[1].kind == "mint"
    assert body.last_cert is None
    assert body.cert is not None and body.cert.signatures == [(0, b"\x09" * 64)]
    assert response.json()["cert"]["signatures"] == [[0, "09" * 64]]
    assert_error(await client.get("/blocks/2"), 404, "block_not_found")


async def test_head_after_a_height_waits_for_the_next_one(
    client: httpx.AsyncClient, fake: FakeNode
) -> None:
    plain = (await client.get("/head")).json()
    assert (await client.get("/head?after=0")).json() == plain
    assert (await client.get("/head?after=7&wait_ms=2000")).json() == plain
    assert fake.head_waits == [(0, 1.0), (7, 2.0)]  # a plain GET /head never waits


async def test_head_and_status(client: httpx.AsyncClient) -> None:
    response = await client.get("/head")
    assert parse(Head, response) == Head(
        CHAIN, 1, BLOCK.hash, BLOCK.header.state_root, BLOCK.header.time_ms
    )
    assert response.json() == {
        "chain_id": CHAIN,
        "height": 1,
        "hash": BLOCK.hash.hex(),
        "state_root": BLOCK.header.state_root.hex(),
        "time_ms": BLOCK.header.time_ms,
    }
    response = await client.get("/status")
    assert response.status_code == 200
    assert parse(NodeStatus, response).consensus == {"quorum": 3}
    assert response.json() == {
        "bank": "JPM",
        "chain_id": CHAIN,
        "height": 1,
        "round": 2,
        "step": "prevote",
        "peers": 3,
        "mempool_size": 17,
        "evidence": 0,
        "head_hash": BLOCK.hash.hex(),
        "state_root": BLOCK.header.state_root.hex(),
        "peer_ids": ["ab" * 32],
        "seconds_since_commit": 1.5,
        "consensus": {"quorum": 3},
        "syncing": False,
        "network_height": 1,
    }


async def test_metrics_render_the_node_registry(client: httpx.AsyncClient, fake: FakeNode) -> None:
    fake.metrics.on_submit([GOOD_TX.tx_id], now=10.0)
    fake.metrics.on_commit(BLOCK, now=10.25)
    fake.metrics.on_reject("bad_nonce")
    fake.metrics.on_reject("bad_nonce")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for line in (
        "depnet_height 1.0",
        "depnet_round 2.0",
        "depnet_committed_txs_total 2.0",
        "depnet_submitted_txs_total 1.0",
        'depnet_rejected_txs_total{code="bad_nonce"} 2.0',
        "depnet_mempool_size 17.0",
        "depnet_peers 3.0",
        "depnet_evidence 1.0",
        'depnet_commit_latency_seconds_bucket{le="0.3"} 1.0',
        'depnet_commit_latency_seconds_bucket{le="0.2"} 0.0',
        "depnet_block_interval_seconds_count 0.0",  # no parent seen yet
    ):
        assert line in text, line


def test_block_interval_comes_from_header_times() -> None:
    metrics = fixed_metrics()
    metrics.on_commit(BLOCK, now=0.0)
    second = Block(
        BLOCK.header.__class__(
            **{**_header_fields(), "height": 2, "time_ms": BLOCK.header.time_ms + 1_500}
        ),
        (),
        CERT,
    )
    metrics.on_commit(second, now=0.0)
    assert metrics.registry.get_sample_value("depnet_block_interval_seconds_sum") == 1.5
    assert metrics.registry.get_sample_value("depnet_committed_txs_total") == 2


def test_gauges_read_their_sources_when_rendered() -> None:
    height = [4]
    metrics = Metrics(
        height=lambda: height[0],
        round=lambda: 1,
        peers=lambda: 2,
        mempool_size=lambda: 3,
        evidence=lambda: 4,
        dropped_frames=lambda: 5,
    )
    assert metrics.registry.get_sample_value("depnet_height") == 4
    height[0] = 9
    assert metrics.registry.get_sample_value("depnet_height") == 9
    assert metrics.registry.get_sample_value("depnet_dropped_frames") == 5


def _header_fields() -> dict:
    h = BLOCK.header
    return {name: getattr(h, name) for name in h.__slots__}


async def test_openapi_documents_every_route(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert {"/txs", "/txs/{tx_id}", "/accounts/{account}", "/accounts/{account}/txs",
            "/blocks/{height}", "/head", "/status", "/metrics", "/contracts",
            "/contracts/{contract_id}", "/offers", "/offers/{offer_id}",
            } <= doc["paths"].keys()  # fmt: skip
    submit = doc["paths"]["/txs"]["post"]
    schema = submit["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["txs"]["maxItems"] == MAX_BATCH
    assert "422" not in json.dumps(doc["paths"])
    assert "400" in doc["paths"]["/txs/{tx_id}"]["get"]["responses"]


async def test_committed_evidence_is_listed_whole_or_per_block(
    client: httpx.AsyncClient, fake: FakeNode
) -> None:
    listed = (await client.get("/evidence")).json()["evidence"]
    assert listed == [
        {"validator": VALIDATOR.hex(), "bank": "JPM", "height": 3, "round": 1,
         "kind": "prevote", "committed_at": 4, "proof": "0102"}
    ]  # fmt: skip
    assert (await client.get("/evidence?height=5&limit=3")).json() == {"evidence": []}
    assert fake.list_reads == [("evidence", None, 500), ("evidence", 5, 3)]
    for bad in ("/evidence?height=0", "/evidence?height=x", "/evidence?limit=501"):
        assert_error(await client.get(bad), 400, "invalid_request")


async def test_contracts_and_offers(client: httpx.AsyncClient, fake: FakeNode) -> None:
    response = await client.get(f"/contracts/{CONTRACT.id.hex()}")
    assert response.status_code == 200 and parse(ContractInfo, response) == CONTRACT
    body = response.json()
    assert (body["status"], body["total"], body["locked"], body["released"]) == (
        "open",
        100,
        70,
        30,
    )
    assert body["milestones"][1] == {
        "name": "delivery", "amount": 70, "due_ms": 5_000, "state": "locked"
    }  # fmt: skip
    assert_error(await client.get(f"/contracts/{'ab' * 32}"), 404, "contract_not_found")
    listed = await client.get(f"/contracts?party={ALICE_PUB.hex()}&open=true&limit=7")
    assert listed.json()["contracts"][0]["id"] == CONTRACT.id.hex()
    offer = await client.get(f"/offers/{OFFER.id.hex()}")
    assert parse(OfferInfo, offer) == OFFER and offer.json()["counterparty"] == ""
    assert_error(await client.get(f"/offers/{'ab' * 32}"), 404, "offer_not_found")
    assert (await client.get("/offers")).json()["offers"][0]["ask_token"] == "HKD.HSBC"
    assert fake.list_reads == [("contracts", ALICE_PUB, True, 7), ("offers", None, False, 100)]
    for bad in ("/contracts?party=zz", "/offers?limit=0", f"/offers?limit={10**6}"):
        assert_error(await client.get(bad), 400, "invalid_request")


def test_a_tx_shows_its_args() -> None:
    release = sign_tx(BOB, TxKind.CONTRACT_RELEASE, CHAIN, 0, args=Ref(CONTRACT.id, "delivery"))
    shown = as_json(TxOut.of(release))
    assert shown["kind"] == "contract_release"
    assert shown["args"] == {"id": CONTRACT.id.hex(), "milestone": "delivery"}
    assert as_json(TxOut.of(GOOD_TX))["args"] is None


# --- bad requests -----------------------------------------------------------------------

_BAD_BODIES = {
    (400, "malformed_json"): [
        b"",
        b"not json",
        b'{"txs": [',
        b"\xff\xfe\x00garbage",
        b"[" * 100_000,
        b'{"txs": [' + b"9" * 5_000 + b"]}",
    ],
    (400, "invalid_request"): [
        b"[]",
        b"null",
        b'"txs"',
        b'{"tx": ["00"]}',
        b'{"txs": "00"}',
        b'{"txs": {"0": "00"}}',
        b'{"txs": [1]}',
        b'{"txs": [null]}',
        b'{"txs": [["00"]]}',
    ],
    (400, "empty_batch"): [b'{"txs": []}'],
    (400, "bad_hex"): [
        b'{"txs": ["zz"]}',
        b'{"txs": ["abc"]}',
        json.dumps({"txs": [GOOD_TX.raw.hex(), "0x00"]}).encode(),
    ],
    (413, "batch_too_large"): [json.dumps({"txs": ["00"] * (MAX_BATCH + 1)}).encode()],
    (413, "body_too_large"): [b'{"txs": ["' + b"0" * MAX_BODY_BYTES + b'"]}'],
}
BAD_SUBMITS = [
    (body, status, code) for (status, code), bodies in _BAD_BODIES.items() for body in bodies
]


@pytest.mark.parametrize(("body", "status", "code"), BAD_SUBMITS)
async def test_bad_submissions_never_reach_the_node(
    client: httpx.AsyncClient, fake: FakeNode, body: bytes, status: int, code: str
) -> None:
    before = fake.snapshot()
    response = await client.post("/txs", content=body, headers={"content-type": "application/json"})
    assert_error(response, status, code)
    assert fake.snapshot() == before


async def test_body_too_large_without_content_length(
    client: httpx.AsyncClient, fake: FakeNode
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"txs": ["'
        for _ in range(MAX_BODY_BYTES // 65_536 + 2):
            yield b"0" * 65_536
        yield b'"]}'

    assert_error(await client.post("/txs", content=chunks()), 413, "body_too_large")
    assert fake.submitted == []


BAD_GETS = [
    ("/txs/xyz", 400, "invalid_request"),
    ("/txs/" + "00" * 31, 400, "invalid_request"),
    ("/txs/" + "00" * 33, 400, "invalid_request"),
    ("/txs/" + "g" * 64, 400, "invalid_request"),
    ("/txs/%00%ff", 400, "invalid_request"),
    ("/accounts/zz", 400, "invalid_request"),
    ("/accounts/" + "0" * 63, 400, "invalid_request"),
    ("/accounts/" + "ab" * 32 + "%20", 400, "invalid_request"),
    ("/accounts/zz/txs", 400, "invalid_request"),
    *(
        (f"/accounts/{'ab' * 32}/txs?{query}", 400, "invalid_request")
        for query in (
            "limit=0",
            f"limit={MAX_HISTORY_PAGE + 1}",
            "limit=-1",
            "limit=abc",
            "limit=1.5",
            "limit=",
            "limit=" + "9" * 5_000,
            "before=0",
            "before=-3",
            "before=abc",
            f"before={2**63}",
            "before=1e3",
            "limit=10&before=x",
        )
    ),
    ("/blocks/abc", 400, "invalid_request"),
    ("/blocks/0", 400, "invalid_request"),
    ("/blocks/-1", 400, "invalid_request"),
    ("/blocks/1.5", 400, "invalid_request"),
    ("/blocks/" + "9" * 30, 400, "invalid_request"),
    ("/blocks/" + "9" * 5_000, 400, "invalid_request"),
    ("/nope", 404, "not_found"),
    ("/txs", 405, "method_not_allowed"),
    ("/blocks", 404, "not_found"),
    ("/accounts/", 404, "not_found"),
    ("/head/extra", 404, "not_found"),
    ("/head?after=-1", 400, "invalid_request"),
    ("/head?after=x", 400, "invalid_request"),
    ("/head?after=1&wait_ms=2001", 400, "invalid_request"),
    ("/head?after=1&wait_ms=-1", 400, "invalid_request"),
    ("/" + "x" * 10_000, 404, "not_found"),
]


@pytest.mark.parametrize(("path", "status", "code"), BAD_GETS)
async def test_bad_paths_are_refused(
    client: httpx.AsyncClient, fake: FakeNode, path: str, status: int, code: str
) -> None:
    before = fake.snapshot()
    response = await client.get(path)
    assert_error(response, status, code)
    assert len(response.json()["error"]["message"]) < 500
    assert fake.snapshot() == before
    assert fake.history_reads == []  # bad parameters never reach the node


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/txs"),
        ("DELETE", "/txs"),
        ("PATCH", "/txs"),
        ("POST", "/txs/" + "ab" * 32),
        ("DELETE", "/txs/" + "ab" * 32),
        ("POST", "/accounts/" + "ab" * 32),
        ("POST", "/accounts/" + "ab" * 32 + "/txs"),
        ("PUT", "/blocks/1"),
        ("POST", "/head"),
        ("POST", "/status"),
        ("DELETE", "/metrics"),
        ("POST", "/openapi.json"),
    ],
)
async def test_wrong_methods_with_garbage_bodies_are_405(
    client: httpx.AsyncClient, fake: FakeNode, method: str, path: str
) -> None:
    before = fake.snapshot()
    response = await client.request(method, path, content=b"{garbage")
    assert_error(response, 405, "method_not_allowed")
    assert "allow" in response.headers
    assert fake.snapshot() == before


@pytest.mark.parametrize(
    "path", ["/txs/" + GOOD_TX.tx_id.hex(), "/accounts/" + "ab" * 32,
             "/accounts/" + "ab" * 32 + "/txs", "/blocks/1", "/head", "/status", "/metrics",
             "/openapi.json"],
)  # fmt: skip
async def test_garbage_body_on_a_read_route_is_ignored(
    client: httpx.AsyncClient, fake: FakeNode, path: str
) -> None:
    """GET routes take no body: garbage sent along changes nothing and is not parsed."""
    before = fake.snapshot()
    plain = await client.get(path)
    garbage = await client.request("GET", path, content=b"\xff{not json")
    assert garbage.status_code == plain.status_code
    assert fake.snapshot() == before


async def test_node_failure_is_a_500_with_the_error_body(
    client: httpx.AsyncClient, fake: FakeNode
) -> None:
    fake.fail_status = True
    response = await client.get("/status")
    assert_error(response, 500, "internal_error")
    assert "exploded" not in response.text


async def test_serve_api_listens_on_loopback_and_stops_on_trigger(fake: FakeNode) -> None:
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(serve_api, create_app(fake), "127.0.0.1", 0, stop.wait)
        assert len(urls) == 1 and urls[0].startswith("http://127.0.0.1:")
        async with httpx.AsyncClient(base_url=urls[0]) as http:
            assert (await http.get("/head")).json()["height"] == 1
            assert_error(await http.post("/txs", content=b"nope"), 400, "malformed_json")
        stop.set()  # serve_api returns, so the nursery can close


async def test_a_client_that_abandons_its_body_costs_one_debug_line(
    fake: FakeNode, caplog: pytest.LogCaptureFixture
) -> None:
    """Content-Length 100, 6 bytes sent, connection closed: no traceback in the log."""
    caplog.set_level(logging.DEBUG, logger="depnet.api")
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        (url,) = await nursery.start(serve_api, create_app(fake), "127.0.0.1", 0, stop.wait)
        with trio.socket.socket() as sock:
            await sock.connect(("127.0.0.1", int(url.rsplit(":", 1)[1])))
            await sock.send(
                b"POST /txs HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n"
                b'Content-Length: 100\r\n\r\n{"txs"'
            )
        with trio.fail_after(10):
            while not any("mid-body" in r.getMessage() for r in caplog.records):
                await trio.sleep(0.01)
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/head")).status_code == 200
        stop.set()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    mid_body = [r for r in caplog.records if "mid-body" in r.getMessage()]
    assert len(mid_body) == 1 and mid_body[0].levelno == logging.DEBUG
    assert "6 of 100 bytes" in mid_body[0].getMessage() and mid_body[0].exc_info is None
    assert fake.submitted == []
