"""The node's HTTP JSON API (FastAPI on hypercorn, in the node's trio process) and /metrics.

The API is an edge: it parses and checks requests, hands bytes to the node through the
small :class:`NodeService` protocol (which the runner implements), and renders results as
JSON. It never decodes transactions or touches state itself, so a bad request cannot reach
the node: every malformed body, path or method is answered with a 4xx and the body
``{"error": {"code": "<machine code>", "message": "<one sentence>"}}`` before the node is
called.

Measured on this stack (notes/trio-libp2p-asgi.md): each request costs ~0.5 ms of server
CPU whatever its size, so transactions are submitted in batches; ``async def`` endpoints
avoid a worker thread per request; and the hot POST /txs parses its JSON itself instead of
through a pydantic body model (~20 % cheaper). The pydantic models below only document the
JSON shapes in the OpenAPI document (the tests check responses against them).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Annotated, Any, Literal, Protocol

import trio
from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from hypercorn.config import Config
from hypercorn.trio import serve
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydanticField
from starlette.exceptions import HTTPException as StarletteHTTPException

from chain.block import Block, CommitCertificate, Header
from chain.errors import TxRejected
from chain.tx import MAX_TX_BYTES, Tx
from consensus.messages import MAX_HEIGHT
from node.mempool import MempoolError, TxStatus

MAX_BATCH = 1_000
# 1,000 txs of the largest size in hex, with quotes and commas, plus room for the envelope.
MAX_BODY_BYTES = MAX_BATCH * (2 * MAX_TX_BYTES + 4) + 1_024
MAX_HISTORY_PAGE = 500
DEFAULT_HISTORY_PAGE = 50
HEX32 = "^[0-9a-fA-F]{64}$"

log = logging.getLogger("depnet.api")


# --- What the runner gives the API ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """Outcome of one submitted tx, in the order submitted. ``ok`` means the tx is now in
    this node's mempool; otherwise ``code`` says why not (``duplicate`` when it already
    was, so a client that resubmits after a timeout can tell that apart)."""

    tx_id: bytes  # sha256 of the submitted bytes, even when they do not decode
    ok: bool
    code: str | None = None  # a chain.errors.Reason value or a MempoolError code
    message: str | None = None

    @classmethod
    def accepted(cls, tx_id: bytes) -> SubmitResult:
        return cls(tx_id, True)

    @classmethod
    def rejected(cls, raw: bytes, exc: TxRejected | MempoolError) -> SubmitResult:
        if isinstance(exc, TxRejected):
            return cls(sha256(raw).digest(), False, exc.reason.value, exc.detail or str(exc))
        return cls(sha256(raw).digest(), False, exc.code, str(exc))


@dataclass(frozen=True, slots=True)
class AccountInfo:
    account: bytes
    bank: str
    nonce: int  # committed: the number of txs this account has had applied
    next_nonce: int  # counting its txs in the mempool: the nonce its next tx should carry
    balances: Mapping[str, int]  # token symbol -> amount in minor units; zero balances left out


@dataclass(frozen=True, slots=True)
class AccountTx:
    """A committed tx that an account sent or received, where and when it was committed."""

    height: int
    position: int  # in its block
    time_ms: int  # its block's time
    tx: Tx


@dataclass(frozen=True, slots=True)
class AccountTxs:
    """One page of an account's history, newest first. ``next_before`` is the
    ``before_height`` that reads the next (older) page, None when this one is the last.
    A page never splits a block, so it may end before ``limit``, or (when one block alone
    holds more than ``limit`` of the account's txs) be that whole block."""

    txs: Sequence[AccountTx]
    next_before: int | None


@dataclass(frozen=True, slots=True)
class CommittedBlock:
    """A committed block and the certificate that committed it, when the node has it."""

    block: Block
    cert: CommitCertificate | None


@dataclass(frozen=True, slots=True)
class Head:
    """The committed tip. Before the first block: height 0, a zero hash, the genesis root."""

    chain_id: str
    height: int
    block_hash: bytes
    state_root: bytes
    time_ms: int


@dataclass(frozen=True, slots=True)
class NodeStatus:
    bank: str
    chain_id: str
    height: int
    round: int
    step: str
    peers: int
    mempool_size: int
    evidence: int
    extra: Mapping[str, Any] = field(default_factory=dict)  # JSON-ready; shown alongside


class NodeService(Protocol):
    """What the API needs from the node. Only ``submit`` may change anything."""

    @property
    def registry(self) -> CollectorRegistry:
        """Rendered at /metrics (node.metrics.Metrics.registry)."""
        ...

    async def submit(self, raws: list[bytes]) -> list[SubmitResult]:
        """Decode and admit each tx; one result per input, in order."""
        ...

    def tx_status(self, tx_id: bytes) -> TxStatus: ...

    def account(self, account: bytes) -> AccountInfo | None: ...

    def account_txs(
        self, account: bytes, before_height: int | None, limit: int
    ) -> AccountTxs | None:
        """A page of the account's committed txs below ``before_height`` (all if None),
        newest first; None if the account is not registered."""
        ...

    def block(self, height: int) -> CommittedBlock | None: ...

    def head(self) -> Head: ...

    def status(self) -> NodeStatus: ...


# --- JSON shapes, for the OpenAPI document ---------------------------------------------


class ErrorDetail(BaseModel):
    code: str = PydanticField(examples=["malformed_json"])
    message: str


class ErrorOut(BaseModel):
    error: ErrorDetail


class SubmitIn(BaseModel):
    txs: list[str] = PydanticField(
        min_length=1,
        max_length=MAX_BATCH,
        description="Signed transactions, each its wire bytes in hex.",
    )


class SubmitResultOut(BaseModel):
    tx_id: str
    accepted: bool
    code: str | None
    message: str | None


class SubmitOut(BaseModel):
    accepted: int
    rejected: int
    results: list[SubmitResultOut]


class TxStatusOut(BaseModel):
    tx_id: str
    status: Literal["pending", "queued", "committed", "rejected"]
    height: int | None
    position: int | None
    code: str | None
    message: str | None


class AccountOut(BaseModel):
    account: str
    bank: str
    nonce: int
    next_nonce: int
    balances: dict[str, int]


class TxOut(BaseModel):
    tx_id: str
    kind: Literal["register", "mint", "burn", "transfer"]
    chain_id: str
    sender: str
    nonce: int
    to: str
    token: str
    amount: int
    memo: str
    signature: str


class AccountTxOut(TxOut):
    height: int
    position: int
    time_ms: int = PydanticField(description="The time of the tx's block.")


class AccountTxsOut(BaseModel):
    account: str
    txs: list[AccountTxOut] = PydanticField(description="Newest first.")
    next_before: int | None = PydanticField(
        description="Pass as `before` to read the next (older) page; null on the last page. "
        "A page never splits a block: it may hold fewer than `limit` txs, or more when one "
        "block alone holds more of the account's txs."
    )


class HeaderOut(BaseModel):
    chain_id: str
    height: int
    round: int
    prev_hash: str
    proposer: str
    time_ms: int
    tx_root: str
    state_root: str
    last_cert_hash: str


class CertOut(BaseModel):
    height: int
    round: int
    block_hash: str
    signatures: list[tuple[int, str]] = PydanticField(
        description="(validator index in genesis order, signature hex) pairs"
    )


class BlockOut(BaseModel):
    height: int
    hash: str
    header: HeaderOut
    txs: list[TxOut]
    last_cert: CertOut | None = PydanticField(description="The parent's commit certificate.")
    cert: CertOut | None = PydanticField(description="This block's commit certificate.")


class HeadOut(BaseModel):
    chain_id: str
    height: int
    hash: str
    state_root: str
    time_ms: int


class StatusOut(BaseModel):
    model_config = ConfigDict(extra="allow")  # the runner may add fields

    bank: str
    chain_id: str
    height: int
    round: int
    step: str
    peers: int
    mempool_size: int
    evidence: int


# --- Errors -----------------------------------------------------------------------------


class ApiError(Exception):
    """A request the API refuses; rendered as the error body with ``status``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


async def _api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _error(exc.status, exc.code, exc.message)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors: unknown routes (404) and methods (405) above all."""
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    code = _HTTP_CODES.get(status, f"http_{status}")
    path = request.url.path[:200]  # echo a garbage path, not megabytes of it
    if status == 404:
        message = f"no route {request.method} {path}"
    elif status == 405:
        message = f"{request.method} is not allowed on {path}"
    else:
        message = str(exc.detail)
    return _error(status, code, message, exc.headers)


async def _validation_error(_: Request, exc: Exception) -> Response:
    """FastAPI's parameter checks (path patterns, height range) as one of our 400s."""
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    where = " ".join(str(part) for part in first.get("loc", ()))
    return _error(400, "invalid_request", f"{where}: {first.get('msg', 'invalid value')}")


async def _internal_error(_: Request, __: Exception) -> Response:
    """Anything else. Starlette re-raises the exception after this answer, so hypercorn
    logs its traceback to ``depnet.api``; the client gets no trace."""
    return _error(500, "internal_error", "the node failed to answer; see its log")


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "Malformed request"},
}


def _not_found(what: str) -> dict[int | str, dict[str, Any]]:
    return {**_ERRORS, 404: {"model": ErrorOut, "description": f"No such {what}"}}


# --- The app ----------------------------------------------------------------------------


def create_app(node: NodeService) -> FastAPI:
    """The API of one node. Handlers call ``node`` only after the request passed every check."""
    app = FastAPI(
        title="depnet node API",
        version="1",
        description="Submit signed deposit-token transactions and read the chain of one node.",
    )
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _internal_error)

    @app.post(
        "/txs",
        response_model=SubmitOut,
        responses={**_ERRORS, 413: {"model": ErrorOut, "description": "Body or batch too big"}},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": SubmitIn.model_json_schema()}},
            }
        },
        summary="Submit a batch of signed transactions",
    )
    async def submit_txs(request: Request) -> Response:
        """Each tx is accepted into the mempool or rejected with a code, independently."""
        raws = _parse_submit(await _read_json(request))
        results = await node.submit(raws)
        if len(results) != len(raws):
            raise RuntimeError(f"node answered {len(results)} results for {len(raws)} txs")
        accepted = sum(1 for r in results if r.ok)
        return JSONResponse(
            {
                "accepted": accepted,
                "rejected": len(results) - accepted,
                "results": [
                    {
                        "tx_id": r.tx_id.hex(),
                        "accepted": r.ok,
                        "code": r.code,
                        "message": r.message,
                    }
                    for r in results
                ],
            }
        )

    @app.get(
        "/txs/{tx_id}",
        response_model=TxStatusOut,
        responses=_not_found("transaction"),
        summary="Status of a transaction",
    )
    async def tx_status(
        tx_id: Annotated[str, Path(pattern=HEX32, description="tx id (sha256 of its bytes)")],
    ) -> Response:
        status = node.tx_status(bytes.fromhex(tx_id))
        if status.status == "unknown":
            raise ApiError(404, "tx_not_found", f"no tx {tx_id.lower()} is known to this node")
        return JSONResponse(
            {
                "tx_id": tx_id.lower(),
                "status": status.status,
                "height": status.height,
                "position": status.position,
                "code": status.code,
                "message": status.message,
            }
        )

    @app.get(
        "/accounts/{account}",
        response_model=AccountOut,
        responses=_not_found("account"),
        summary="Balances and nonce of an account",
    )
    async def account(
        account: Annotated[str, Path(pattern=HEX32, description="account public key")],
    ) -> Response:
        info = node.account(bytes.fromhex(account))
        if info is None:
            raise ApiError(404, "account_not_found", f"account {account.lower()} is not registered")
        return JSONResponse(
            {
                "account": info.account.hex(),
                "bank": info.bank,
                "nonce": info.nonce,
                "next_nonce": info.next_nonce,
                "balances": dict(info.balances),
            }
        )

    @app.get(
        "/accounts/{account}/txs",
        response_model=AccountTxsOut,
        responses=_not_found("account"),
        summary="Committed transactions to or from an account, newest first",
    )
    async def account_txs(
        account: Annotated[str, Path(pattern=HEX32, description="account public key")],
        limit: Annotated[
            int, Query(ge=1, le=MAX_HISTORY_PAGE, description="Txs per page; see next_before.")
        ] = DEFAULT_HISTORY_PAGE,
        before: Annotated[
            int | None,
            Query(ge=1, le=MAX_HEIGHT, description="Only txs in blocks below this height."),
        ] = None,
    ) -> Response:
        page = node.account_txs(bytes.fromhex(account), before, limit)
        if page is None:
            raise ApiError(404, "account_not_found", f"account {account.lower()} is not registered")
        return JSONResponse(
            {
                "account": account.lower(),
                "txs": [account_tx_json(entry) for entry in page.txs],
                "next_before": page.next_before,
            }
        )

    @app.get(
        "/blocks/{height}",
        response_model=BlockOut,
        responses=_not_found("block"),
        summary="A committed block",
    )
    async def block(height: Annotated[int, Path(ge=1, le=MAX_HEIGHT)]) -> Response:
        committed = node.block(height)
        if committed is None:
            raise ApiError(404, "block_not_found", f"no block at height {height}")
        return JSONResponse(block_json(committed))

    @app.get("/head", response_model=HeadOut, summary="The committed tip")
    async def head() -> Response:
        tip = node.head()
        return JSONResponse(
            {
                "chain_id": tip.chain_id,
                "height": tip.height,
                "hash": tip.block_hash.hex(),
                "state_root": tip.state_root.hex(),
                "time_ms": tip.time_ms,
            }
        )

    @app.get("/status", response_model=StatusOut, summary="Consensus and node status")
    async def status() -> Response:
        s = node.status()
        return JSONResponse(
            {
                **s.extra,
                "bank": s.bank,
                "chain_id": s.chain_id,
                "height": s.height,
                "round": s.round,
                "step": s.step,
                "peers": s.peers,
                "mempool_size": s.mempool_size,
                "evidence": s.evidence,
            }
        )

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
        summary="Prometheus metrics",
    )
    async def metrics() -> Response:
        return Response(generate_latest(node.registry), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        """FastAPI's document, minus the 422 answers it assumes: ours are 400s."""
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            for operations in schema["paths"].values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            schemas = schema.get("components", {}).get("schemas", {})
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
    return app


async def _read_json(request: Request) -> object:
    """The request body as JSON, read at most MAX_BODY_BYTES (a client cannot make us buffer
    more); otherwise what ``await request.json()`` does."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise ApiError(413, "body_too_large", f"request body is over {MAX_BODY_BYTES} bytes")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(413, "body_too_large", f"request body is over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, RecursionError):  # JSONDecodeError, bad UTF-8, huge ints, deep nesting
        raise ApiError(400, "malformed_json", "request body is not valid JSON") from None


def _parse_submit(doc: object) -> list[bytes]:
    """``{"txs": ["<hex>", ...]}`` -> wire bytes; any flaw refuses the whole batch."""
    if type(doc) is not dict:
        raise ApiError(400, "invalid_request", 'body must be a JSON object {"txs": [...]}')
    txs = doc.get("txs")
    if type(txs) is not list:
        raise ApiError(400, "invalid_request", '"txs" must be a list of hex strings')
    if not txs:
        raise ApiError(400, "empty_batch", '"txs" holds no transactions')
    if len(txs) > MAX_BATCH:
        raise ApiError(413, "batch_too_large", f"a batch holds at most {MAX_BATCH} txs")
    raws = []
    for index, item in enumerate(txs):
        if type(item) is not str:
            raise ApiError(400, "invalid_request", f"txs[{index}] must be a hex string")
        try:
            raws.append(bytes.fromhex(item))
        except ValueError:
            raise ApiError(400, "bad_hex", f"txs[{index}] is not valid hex") from None
    return raws


# --- Rendering --------------------------------------------------------------------------


def tx_json(tx: Tx) -> dict[str, Any]:
    return {
        "tx_id": tx.tx_id.hex(),
        "kind": tx.kind.name.lower(),
        "chain_id": tx.chain_id,
        "sender": tx.sender.hex(),
        "nonce": tx.nonce,
        "to": tx.to.hex(),
        "token": tx.token,
        "amount": tx.amount,
        "memo": tx.memo,
        "signature": tx.signature.hex(),
    }


def account_tx_json(entry: AccountTx) -> dict[str, Any]:
    return {
        **tx_json(entry.tx),
        "height": entry.height,
        "position": entry.position,
        "time_ms": entry.time_ms,
    }


def header_json(header: Header) -> dict[str, Any]:
    return {
        "chain_id": header.chain_id,
        "height": header.height,
        "round": header.round,
        "prev_hash": header.prev_hash.hex(),
        "proposer": header.proposer.hex(),
        "time_ms": header.time_ms,
        "tx_root": header.tx_root.hex(),
        "state_root": header.state_root.hex(),
        "last_cert_hash": header.last_cert_hash.hex(),
    }


def cert_json(cert: CommitCertificate | None) -> dict[str, Any] | None:
    if cert is None:
        return None
    return {
        "height": cert.height,
        "round": cert.round,
        "block_hash": cert.block_hash.hex(),
        "signatures": [[index, signature.hex()] for index, signature in cert.signatures],
    }


def block_json(committed: CommittedBlock) -> dict[str, Any]:
    """The JSON form of a block (also what ``depnet chain block --json`` prints)."""
    block = committed.block
    return {
        "height": block.height,
        "hash": block.hash.hex(),
        "header": header_json(block.header),
        "txs": [tx_json(tx) for tx in block.txs],
        "last_cert": cert_json(block.last_cert),
        "cert": cert_json(committed.cert),
    }


# --- Serving ----------------------------------------------------------------------------


async def serve_api(
    app: FastAPI,
    host: str,
    port: int,
    shutdown_trigger: Callable[[], Awaitable[object]],
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` with hypercorn on trio until ``shutdown_trigger`` returns.

    Start it with ``await nursery.start(serve_api, app, host, port, event.wait)``: that
    returns the bound URLs (e.g. ``["http://127.0.0.1:8545"]``; port 0 picks a free one)
    once the socket listens. Hypercorn installs no signal handlers; the runner's SIGTERM
    handling sets the trigger. Logs go to the ``depnet.api`` logger, so the runner's log
    configuration applies; per-request access lines are off.
    """
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.errorlog = log
    config.accesslog = None
    # Load generators and wallets poll over long-lived connections; hypercorn's default
    # closes each after 1,000 requests and after 5 s idle.
    config.keep_alive_timeout = 30
    config.keep_alive_max_requests = 1_000_000
    config.graceful_timeout = 3
    await serve(app, config, shutdown_trigger=shutdown_trigger, task_status=task_status)  # type: ignore[arg-type]
