"""POST /txs in msgpack: a list of raw signed txs in, the JSON answer's shape out (in JSON,
or in msgpack when the Accept header asks), bounded decoding, and the node's 429."""

from __future__ import annotations

import httpx
import msgpack
import pytest

from chain.block import Block, CommitCertificate
from chain.codec import MAX_TX_BYTES
from chain.errors import Reason
from node.api import MAX_BATCH, MSGPACK, SUBMIT_BATCH, SubmitOut
from node.mempool import MempoolFull
from node.service import SubmitResult
from tests.test_api import BLOCK, CERT, GOOD_TX, FakeNode, assert_error, client, fake, parse

__all__ = ["client", "fake"]  # the fixtures, used by name

PACKED = {"Content-Type": MSGPACK}


def packed(items: object) -> bytes:
    return msgpack.packb(items, use_bin_type=True)


async def test_msgpack_batch_gets_the_json_answer(
    client: httpx.AsyncClient, fake: FakeNode
) -> None:
    raws = [GOOD_TX.raw, b"\x00garbage"]
    response = await client.post("/txs", content=packed(raws), headers=PACKED)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = parse(SubmitOut, response)
    assert (body.accepted, body.rejected) == (1, 1)
    assert body.results[1].code == Reason.MALFORMED.value
    assert fake.submitted == [raws]


async def test_msgpack_answer_when_accept_asks_has_the_same_shape(
    client: httpx.AsyncClient, fake: FakeNode
) -> None:
    headers = {**PACKED, "Accept": MSGPACK}
    response = await client.post("/txs", content=packed([GOOD_TX.raw] * 3), headers=headers)
    assert response.status_code == 200 and response.headers["content-type"] == MSGPACK
    as_json = await client.post("/txs", json={"txs": [GOOD_TX.raw.hex()] * 3})
    assert msgpack.unpackb(response.content) == as_json.json()


async def test_a_full_batch_of_the_largest_txs_fits(
    client: httpx.AsyncClient, fake: FakeNode
) -> None:
    big = [bytes(MAX_TX_BYTES)] * MAX_BATCH
    body = packed(big)
    assert len(body) <= SUBMIT_BATCH.max_bytes
    response = await client.post("/txs", content=body, headers=PACKED)
    assert response.status_code == 200 and len(fake.submitted[0]) == MAX_BATCH


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"", 400, "malformed_msgpack"),
        (b"\xc1garbage", 400, "malformed_msgpack"),
        (packed({"txs": []}), 400, "malformed_msgpack"),  # a map, not an array
        (packed([GOOD_TX.raw])[:-5], 400, "malformed_msgpack"),  # truncated
        (packed([GOOD_TX.raw]) + b"\x00", 400, "malformed_msgpack"),  # bytes after it
        (packed([]), 400, "empty_batch"),
        (packed([GOOD_TX.raw.hex()]), 400, "malformed_msgpack"),  # a str, not a bin
        (packed([[1, 2]]), 400, "invalid_request"),
        (packed([bytes(MAX_TX_BYTES + 1)]), 400, "malformed_msgpack"),  # a bin over a tx
        (b"\xdd\xff\xff\xff\xff", 413, "batch_too_large"),  # declares 4 G elements
        (packed([GOOD_TX.raw] * (MAX_BATCH + 1)), 413, "batch_too_large"),
        (b"\x91" + b"\x00" * (SUBMIT_BATCH.max_bytes + 1), 413, "body_too_large"),
    ],
    ids=[
        "empty", "garbage", "map", "truncated", "trailing", "no-txs", "str", "nested",
        "oversized-tx", "huge-header", "too-many", "too-big",
    ],
)  # fmt: skip
async def test_bad_msgpack_bodies_are_refused_with_a_code(
    client: httpx.AsyncClient, fake: FakeNode, body: bytes, status: int, code: str
) -> None:
    response = await client.post("/txs", content=body, headers=PACKED)
    assert_error(response, status, code)
    assert fake.submitted == []


async def test_full_node_answers_429_with_retry_after(
    client: httpx.AsyncClient, fake: FakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def full(raws: list[bytes]) -> None:
        raise MempoolFull("mempool holds its maximum of 5 txs; retry later")

    monkeypatch.setattr(fake, "submit", full)
    for request in (
        {"content": packed([GOOD_TX.raw]), "headers": PACKED},
        {"json": {"txs": [GOOD_TX.raw.hex()]}},
    ):
        response = await client.post("/txs", **request)
        assert_error(response, 429, Reason.MEMPOOL_FULL.value)
        assert response.headers["retry-after"] == "1"
        assert response.headers["retry-after-ms"] == str(fake.room_again_ms)


async def test_a_batch_partly_refused_for_room_says_when_to_come_back(
    client: httpx.AsyncClient, fake: FakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool filled during the batch: the answer is 200 with the rest refused, and tells
    the client when there will be room; an answer that refused nothing for room does not."""

    async def filled(raws: list[bytes]) -> list[SubmitResult]:
        full = MempoolFull("mempool holds its maximum of 1 txs; retry later")
        return [SubmitResult.admitted(GOOD_TX.tx_id)] + [
            SubmitResult.rejected(raw, full) for raw in raws[1:]
        ]

    monkeypatch.setattr(fake, "submit", filled)
    response = await client.post("/txs", content=packed([GOOD_TX.raw] * 2), headers=PACKED)
    assert response.status_code == 200 and response.headers["retry-after-ms"] == "250"
    assert response.json()["rejected"] == 1
    monkeypatch.undo()
    response = await client.post("/txs", content=packed([GOOD_TX.raw]), headers=PACKED)
    assert response.status_code == 200 and "retry-after-ms" not in response.headers


async def test_a_block_in_msgpack_is_its_stored_bytes(client: httpx.AsyncClient) -> None:
    response = await client.get("/blocks/1", headers={"Accept": MSGPACK})
    assert response.status_code == 200 and response.headers["content-type"] == MSGPACK
    body = msgpack.unpackb(response.content)
    assert body["height"] == 1
    assert Block.decode(body["block"]) == BLOCK
    assert CommitCertificate.decode(body["cert"]) == CERT
    as_json = (await client.get("/blocks/1")).json()
    assert as_json["hash"] == BLOCK.hash.hex()


async def test_a_missing_block_in_msgpack_is_a_404(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/blocks/2", headers={"Accept": MSGPACK}), 404, "block_not_found")
