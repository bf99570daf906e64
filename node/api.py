"""The node's HTTP JSON API (FastAPI on hypercorn, in the node's trio process) and /metrics.

The API is an edge: it parses and checks requests, hands bytes to the node through the
small :class:`NodeService` protocol (node/service.py), and renders answers as JSON. It
never decodes transactions or touches state itself, so a bad request cannot reach the
node: every malformed body, path or method is answered with a 4xx and the body
``{"error": {"code": "<machine code>", "message": "<one sentence>"}}`` before the node is
called.

Each request costs ~0.5 ms of server CPU on this stack whatever its size, so transactions
are submitted in batches; ``async def`` endpoints avoid a worker thread per request; the
hot POST /txs parses its JSON itself instead of through a pydantic body model (~20 %
cheaper), and also takes a msgpack array of raw txs, so that a program sending many txs
pays no hex on either side; a node that takes no tx answers 429 before it decodes any;
and answers are serialized straight from their dataclasses, never validated again. Each
answer has one shape (a dataclass with ``Hex`` fields for bytes): it both renders the
JSON and documents it in the OpenAPI document.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from typing import Annotated, Any, Literal, TypeVar

import msgpack
import trio
from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from hypercorn.config import Config
from hypercorn.trio import serve
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, TypeAdapter
from pydantic import Field as PydanticField
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from chain.block import CommitCertificate, Header
from chain.codec import TX_IN_BLOCK, DecodeError, Limits, unpack
from chain.errors import Reason
from chain.tx import MAX_TX_BYTES, Args, ContractTerms, SwapTerms, Tx
from consensus.messages import MAX_HEIGHT
from node.mempool import MempoolFull, TxStatus
from node.service import (
    AccountInfo,
    AccountTx,
    AccountTxs,
    CommittedBlock,
    CommittedEvidence,
    ContractInfo,
    FaultControl,
    FaultsInForce,
    FaultSpecError,
    Head,
    Hex,
    NodeService,
    NodeStatus,
    OfferInfo,
    SubmitResult,
    Syncing,
)

MAX_BATCH = 1_000
# 1,000 txs of the largest size in hex, with quotes and commas, plus room for the envelope.
MAX_BODY_BYTES = MAX_BATCH * (2 * MAX_TX_BYTES + 4) + 1_024
MSGPACK = "application/msgpack"
# A msgpack body is one array of up to MAX_BATCH bins, each the wire bytes of one tx.
SUBMIT_BATCH = Limits(
    max_bytes=5 + MAX_BATCH * TX_IN_BLOCK.max_bytes,
    max_array=MAX_BATCH,
    max_bin=MAX_TX_BYTES,
    max_str=0,
)
RETRY_AFTER_S = 1  # HTTP's Retry-After is in whole seconds; depnet's clients read the ms
MAX_HISTORY_PAGE = 500
DEFAULT_HISTORY_PAGE = 50
MAX_LIST = 500  # contracts, offers or evidence per answer
# A long poll of /head waits this long by default, and at most the maximum (kept under the
# server's graceful shutdown so a waiting reader holds a stopping node up little).
DEFAULT_HEAD_WAIT_MS = 1_000
MAX_HEAD_WAIT_MS = 2_000
DEFAULT_LIST = 100
HEX32 = "^[0-9a-fA-F]{64}$"
MAX_FAULT_BODY_BYTES = 64 * 1024
SYNCING_RETRY_AFTER = "1"  # seconds: a catching-up node gains many blocks per second

log = logging.getLogger("depnet.api")
T = TypeVar("T")
TxIdParam = Annotated[str, Path(pattern=HEX32, description="tx id (sha256 of its bytes)")]
AccountParam = Annotated[str, Path(pattern=HEX32, description="account public key")]
RecordParam = Annotated[str, Path(pattern=HEX32, description="id: the opening tx's id")]
PartyQuery = Annotated[
    str | None, Query(pattern=HEX32, description="Only those this account is a party to.")
]
OpenQuery = Annotated[bool, Query(description="Only those still open.")]
LimitQuery = Annotated[int, Query(ge=1, le=MAX_LIST, description="At most this many.")]


# --- JSON shapes ------------------------------------------------------------------------
# The service's answers (node/service.py) are rendered as they are; these are the shapes of
# the answers that the API builds from chain objects.


@dataclass(frozen=True, slots=True)
class ErrorDetail:
    code: str  # machine-readable, e.g. "malformed_json" or a chain.errors.Reason value
    message: str  # one sentence for a person


@dataclass(frozen=True, slots=True)
class ErrorOut:
    error: ErrorDetail


class SubmitIn(BaseModel):
    """The body of POST /txs; documents it only (the route parses it itself)."""

    txs: list[str] = PydanticField(
        min_length=1,
        max_length=MAX_BATCH,
        description="Signed transactions, each its wire bytes in hex.",
    )


@dataclass(frozen=True, slots=True)
class SubmitOut:
    accepted: int
    rejected: int
    results: Sequence[SubmitResult]

    @classmethod
    def of(cls, results: Sequence[SubmitResult]) -> SubmitOut:
        accepted = sum(1 for r in results if r.accepted)
        return cls(accepted, len(results) - accepted, results)


@dataclass(frozen=True, slots=True, kw_only=True)
class TxStatusOut(TxStatus):
    """A tx's status and the id asked about (the API answers 404 for ``unknown``)."""

    tx_id: Hex


@dataclass(frozen=True, slots=True)
class MilestoneOut:
    name: str
    amount: int
    due_ms: int


@dataclass(frozen=True, slots=True)
class ContractTermsOut:
    """The args of a contract_open: ``to`` is the supplier, ``amount`` the total."""

    approver: Hex
    expiry_ms: int
    terms_hash: Hex
    milestones: Sequence[MilestoneOut]


@dataclass(frozen=True, slots=True)
class SwapTermsOut:
    """The args of a swap_offer: what it asks for its ``amount`` of ``token``."""

    ask_token: str
    ask_amount: int
    expiry_ms: int


@dataclass(frozen=True, slots=True)
class RefOut:
    """The args of a tx on a contract or an offer: its id (and a release's milestone)."""

    id: Hex
    milestone: str


def _args_out(args: Args | None) -> ContractTermsOut | SwapTermsOut | RefOut | None:
    if args is None:
        return None
    if isinstance(args, ContractTerms):
        milestones = [MilestoneOut(m.name, m.amount, m.due_ms) for m in args.milestones]
        return ContractTermsOut(args.approver, args.expiry_ms, args.terms_hash, milestones)
    if isinstance(args, SwapTerms):
        return SwapTermsOut(args.ask_token, args.ask_amount, args.expiry_ms)
    return RefOut(args.id, args.milestone)


@dataclass(frozen=True, slots=True)
class TxOut:
    tx_id: Hex
    kind: Literal[
        "register",
        "mint",
        "burn",
        "transfer",
        "contract_open",
        "contract_release",
        "contract_refund",
        "contract_cancel",
        "swap_offer",
        "swap_accept",
        "swap_cancel",
        "freeze",
        "unfreeze",
    ]
    chain_id: str
    sender: Hex
    nonce: int
    to: Hex
    token: str
    amount: int
    memo: str
    signature: Hex
    args: Annotated[
        ContractTermsOut | SwapTermsOut | RefOut | None,
        PydanticField(description="A contract's or a swap's terms, or the contract or offer "
                      "acted on; null for the other kinds."),
    ] = None  # fmt: skip

    @staticmethod
    def fields(tx: Tx) -> dict[str, Any]:
        return {
            "tx_id": tx.tx_id,
            "kind": tx.kind.name.lower(),
            "chain_id": tx.chain_id,
            "sender": tx.sender,
            "nonce": tx.nonce,
            "to": tx.to,
            "token": tx.token,
            "amount": tx.amount,
            "memo": tx.memo,
            "signature": tx.signature,
            "args": _args_out(tx.args),
        }

    @classmethod
    def of(cls, tx: Tx) -> TxOut:
        return cls(**cls.fields(tx))


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountTxOut(TxOut):
    height: int
    position: int
    time_ms: Annotated[int, PydanticField(description="The time of the tx's block.")]

    @classmethod
    def of_entry(cls, entry: AccountTx) -> AccountTxOut:
        return cls(
            **TxOut.fields(entry.tx),
            height=entry.height,
            position=entry.position,
            time_ms=entry.time_ms,
        )


@dataclass(frozen=True, slots=True)
class AccountTxsOut:
    account: Hex
    txs: Annotated[Sequence[AccountTxOut], PydanticField(description="Newest first.")]
    next_before: Annotated[
        int | None,
        PydanticField(
            description="Pass as `before` to read the next (older) page; null on the last "
            "page. A page never splits a block: it may hold fewer than `limit` txs, or more "
            "when one block alone holds more of the account's txs."
        ),
    ]

    @classmethod
    def of(cls, account: bytes, page: AccountTxs) -> AccountTxsOut:
        return cls(account, [AccountTxOut.of_entry(e) for e in page.txs], page.next_before)


@dataclass(frozen=True, slots=True)
class ContractsOut:
    contracts: Sequence[ContractInfo]


@dataclass(frozen=True, slots=True)
class OffersOut:
    offers: Sequence[OfferInfo]


@dataclass(frozen=True, slots=True)
class EvidenceOut:
    evidence: Sequence[CommittedEvidence]


@dataclass(frozen=True, slots=True)
class HeaderOut:
    chain_id: str
    height: int
    round: int
    prev_hash: Hex
    proposer: Hex
    time_ms: int
    tx_root: Hex
    state_root: Hex
    last_cert_hash: Hex
    evidence_hash: Hex

    @classmethod
    def of(cls, header: Header) -> HeaderOut:
        return cls(*(getattr(header, name) for name in cls.__dataclass_fields__))


@dataclass(frozen=True, slots=True)
class CertOut:
    height: int
    round: int
    block_hash: Hex
    signatures: Annotated[
        Sequence[tuple[int, Hex]],
        PydanticField(description="(validator index in genesis order, signature hex) pairs"),
    ]

    @classmethod
    def of(cls, cert: CommitCertificate | None) -> CertOut | None:
        if cert is None:
            return None
        return cls(cert.height, cert.round, cert.block_hash, cert.signatures)


@dataclass(frozen=True, slots=True)
class BlockOut:
    """A block as the API shows it (also what ``depnet chain block --json`` prints)."""

    height: int
    hash: Hex
    header: HeaderOut
    txs: Sequence[TxOut]
    last_cert: Annotated[
        CertOut | None, PydanticField(description="The parent's commit certificate.")
    ]
    cert: Annotated[CertOut | None, PydanticField(description="This block's commit certificate.")]
    evidence: Annotated[
        Sequence[Hex],
        PydanticField(description="Proofs of equivocation the block commits (GET /evidence)."),
    ]

    @classmethod
    def of(cls, committed: CommittedBlock) -> BlockOut:
        block = committed.block
        return cls(
            block.height,
            block.hash,
            HeaderOut.of(block.header),
            [TxOut.of(tx) for tx in block.txs],
            CertOut.of(block.last_cert),
            CertOut.of(committed.cert),
            block.evidence,
        )


@cache
def _adapter(shape: type) -> TypeAdapter[Any]:
    return TypeAdapter(shape)


def as_json(value: object) -> Any:
    """``value`` (one of the shapes above or a service answer) as JSON-ready data, as the
    API sends it."""
    return _adapter(type(value)).dump_python(value, mode="json")


def _answer(value: object, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    body = _adapter(type(value)).dump_json(value)
    return Response(body, status, headers, media_type="application/json")


# --- Errors -----------------------------------------------------------------------------


class ApiError(Exception):
    """A request the API refuses: every refusal, ours or the framework's, becomes one and
    is answered with ``ErrorOut`` and ``status``."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers

    def response(self) -> Response:
        return _answer(ErrorOut(ErrorDetail(self.code, self.message)), self.status, self.headers)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


async def _api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


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
    return ApiError(status, code, message, exc.headers).response()


async def _validation_error(_: Request, exc: Exception) -> Response:
    """FastAPI's parameter checks (path patterns, height range) as one of our 400s."""
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    where = " ".join(str(part) for part in first.get("loc", ()))
    message = f"{where}: {first.get('msg', 'invalid value')}"
    return ApiError(400, "invalid_request", message).response()


async def _syncing(_: Request, exc: Exception) -> Response:
    """A node catching up refuses submissions: what it knows of nonces is stale."""
    assert isinstance(exc, Syncing)
    message = f"{exc}; retry, or submit to another bank's node"
    return ApiError(503, "syncing", message, {"Retry-After": SYNCING_RETRY_AFTER}).response()


async def _internal_error(_: Request, __: Exception) -> Response:
    """Anything else. Starlette re-raises the exception after this answer, so hypercorn
    logs its traceback to ``depnet.api``; the client gets no trace."""
    return ApiError(500, "internal_error", "the node failed to answer; see its log").response()


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "Malformed request"},
}


def _not_found(what: str) -> dict[int | str, dict[str, Any]]:
    return {**_ERRORS, 404: {"model": ErrorOut, "description": f"No such {what}"}}


def _found(value: T | None, code: str, message: str) -> T:
    """``value``, or a 404 with ``code`` when the node has no such thing."""
    if value is None:
        raise ApiError(404, code, message)
    return value


# --- The app ----------------------------------------------------------------------------


def create_app(
    node: NodeService, faults: FaultControl | None = None, admin_token: str | None = None
) -> FastAPI:
    """The API of one node. Handlers call ``node`` only after the request passed every check.
    With ``faults`` and ``admin_token``, the admin routes /admin/faults are served too."""
    app = FastAPI(
        title="depnet node API",
        version="1",
        description="Submit signed deposit-token transactions and read the chain of one node.",
    )
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # What a refusal for room asks of the client: HTTP's whole seconds, and the node's own
    # estimate in ms, which depnet's clients read (a whole second left pools to run dry).
    room_again = {"Retry-After": str(RETRY_AFTER_S), "Retry-After-Ms": str(node.room_again_ms)}
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Syncing, _syncing)
    app.add_exception_handler(Exception, _internal_error)

    @app.post(
        "/txs",
        response_model=SubmitOut,
        responses={
            **_ERRORS,
            413: {"model": ErrorOut, "description": "Body or batch too big"},
            429: {"model": ErrorOut, "description": "Mempool full: retry after Retry-After s"},
            503: {"model": ErrorOut, "description": "The node is catching up (`syncing`)"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": SubmitIn.model_json_schema()},
                    MSGPACK: {
                        "schema": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "maxItems": MAX_BATCH,
                        },
                        "example": "msgpack array of bin: each a signed tx's wire bytes",
                    },
                },
            }
        },
        summary="Submit a batch of signed transactions",
    )
    async def submit_txs(request: Request) -> Response:
        """Each tx is accepted into the mempool or rejected with a code, independently.
        A node that takes no tx now answers 429 with Retry-After, having checked none.

        The body is JSON ``{"txs": [hex, ...]}``, or, with Content-Type
        ``application/msgpack``, one msgpack array of the txs' wire bytes (no hex: what a
        program sending many txs should use). The answer is JSON unless the Accept header
        asks for ``application/msgpack``; then it is the same shape in msgpack."""
        if _media_type(request.headers.get("content-type", "")) == MSGPACK:
            raws = _parse_packed(await _read_body(request, SUBMIT_BATCH.max_bytes))
        else:
            raws = _parse_submit(_json(await _read_body(request, MAX_BODY_BYTES)))
        try:
            results = await node.submit(raws)
        except MempoolFull as exc:
            raise ApiError(429, exc.reason.value, exc.detail, room_again) from None
        if len(results) != len(raws):
            raise RuntimeError(f"node answered {len(results)} results for {len(raws)} txs")
        full = Reason.MEMPOOL_FULL.value
        headers = room_again if any(r.code == full for r in results) else None
        if MSGPACK in request.headers.get("accept", ""):
            return Response(_packed(SubmitOut.of(results)), headers=headers, media_type=MSGPACK)
        return _answer(SubmitOut.of(results), headers=headers)

    def get(path: str, shape: type, summary: str, missing: str | None = None) -> Any:
        """The decorator of a read route answering ``shape`` (404 if ``missing`` is named)."""
        responses = _not_found(missing) if missing else None
        return app.get(path, response_model=shape, responses=responses, summary=summary)

    @get("/txs/{tx_id}", TxStatusOut, "Status of a transaction", missing="transaction")
    async def tx_status(tx_id: TxIdParam) -> Response:
        key = bytes.fromhex(tx_id)
        status = node.tx_status(key)
        if status.status == "unknown":
            raise ApiError(404, "tx_not_found", f"no tx {key.hex()} is known to this node")
        return _answer(TxStatusOut(tx_id=key, **asdict(status)))

    @get("/accounts/{account}", AccountInfo, "Balances and nonce of an account", "account")
    async def account(account: AccountParam) -> Response:
        key = bytes.fromhex(account)
        return _answer(_found(node.account(key), *_unregistered(key)))

    @get(
        "/accounts/{account}/txs",
        AccountTxsOut,
        "Committed transactions to or from an account, newest first",
        missing="account",
    )
    async def account_txs(
        account: AccountParam,
        limit: Annotated[
            int, Query(ge=1, le=MAX_HISTORY_PAGE, description="Txs per page; see next_before.")
        ] = DEFAULT_HISTORY_PAGE,
        before: Annotated[
            int | None,
            Query(ge=1, le=MAX_HEIGHT, description="Only txs in blocks below this height."),
        ] = None,
    ) -> Response:
        key = bytes.fromhex(account)
        page = _found(node.account_txs(key, before, limit), *_unregistered(key))
        return _answer(AccountTxsOut.of(key, page))

    @app.get(
        "/blocks/{height}",
        response_model=BlockOut,
        responses={
            **_not_found("block"),
            200: {
                "content": {
                    MSGPACK: {
                        "example": "msgpack map: height, block (bin: the block's canonical "
                        "bytes, as hashed and stored), cert (bin or nil)"
                    }
                }
            },
        },
        summary="A committed block",
    )
    async def block(
        height: Annotated[int, Path(ge=1, le=MAX_HEIGHT)], request: Request
    ) -> Response:
        """The block decoded into JSON; or, when the Accept header asks for
        ``application/msgpack``, its stored bytes as they are (what a program following
        every block should read: the node decodes nothing, the reader checks what it needs)."""
        missing = ("block_not_found", f"no block at height {height}")
        if MSGPACK in request.headers.get("accept", ""):
            data, cert = _found(node.block_bytes(height), *missing)
            packed = msgpack.packb({"height": height, "block": data, "cert": cert})
            return Response(packed, media_type=MSGPACK)
        return _answer(BlockOut.of(_found(node.block(height), *missing)))

    @get("/contracts/{contract_id}", ContractInfo, "A contract in escrow", missing="contract")
    async def contract(contract_id: RecordParam) -> Response:
        key = bytes.fromhex(contract_id)
        found = node.contract(key)
        return _answer(_found(found, "contract_not_found", f"no contract {key.hex()}"))

    @get("/contracts", ContractsOut, "Contracts, in order of expiry")
    async def contracts(
        party: PartyQuery = None, open: OpenQuery = False, limit: LimitQuery = DEFAULT_LIST
    ) -> Response:
        chosen = node.contracts(_party(party), open, limit)
        return _answer(ContractsOut(chosen))

    @get("/offers/{offer_id}", OfferInfo, "A swap offer", missing="offer")
    async def offer(offer_id: RecordParam) -> Response:
        key = bytes.fromhex(offer_id)
        return _answer(_found(node.offer(key), "offer_not_found", f"no offer {key.hex()}"))

    @get("/offers", OffersOut, "Swap offers, in order of expiry")
    async def offers(
        party: PartyQuery = None, open: OpenQuery = False, limit: LimitQuery = DEFAULT_LIST
    ) -> Response:
        return _answer(OffersOut(node.offers(_party(party), open, limit)))

    @get("/evidence", EvidenceOut, "Committed proofs of equivocation, in the order committed")
    async def evidence(
        height: Annotated[
            int | None,
            Query(ge=1, le=MAX_HEIGHT, description="Only those the block at this height holds."),
        ] = None,
        limit: LimitQuery = MAX_LIST,
    ) -> Response:
        return _answer(EvidenceOut(node.evidence(height, limit)))

    @get("/head", Head, "The committed tip")
    async def head(
        after: Annotated[
            int | None,
            Query(
                ge=0,
                le=MAX_HEIGHT,
                description="Answer once the tip is above this height, or when wait_ms ends.",
            ),
        ] = None,
        wait_ms: Annotated[
            int,
            Query(ge=0, le=MAX_HEAD_WAIT_MS, description="How long `after` may wait, in ms."),
        ] = DEFAULT_HEAD_WAIT_MS,
    ) -> Response:
        """The tip; with ``after``, a long poll: one request per new block for a program
        that follows the chain (a poll every few ms cost a node ~6 % of its CPU)."""
        if after is None:
            return _answer(node.head())
        return _answer(await node.next_head(after, wait_ms / 1000))

    @get("/status", NodeStatus, "Consensus and node status")
    async def status() -> Response:
        return _answer(node.status())

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
        summary="Prometheus metrics",
    )
    async def metrics() -> Response:
        return Response(generate_latest(node.registry), media_type=CONTENT_TYPE_LATEST)

    if faults is not None and admin_token is not None:
        _admin_routes(app, faults, admin_token)

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


def _admin_routes(app: FastAPI, faults: FaultControl, token: str) -> None:
    """GET, POST and DELETE /admin/faults, for a caller holding the node's admin token
    (``Authorization: Bearer <token>``; the token is in the node home's ``admin.token``).
    A refused request changes nothing: the token is checked before the body is read."""
    expected = token.encode()

    def authorize(request: Request) -> None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # Compared in constant time, so the answer's timing does not leak the token.
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), expected):
            raise ApiError(
                401,
                "unauthorized",
                "the admin API needs the node's admin token (Authorization: Bearer <token>)",
                {"WWW-Authenticate": "Bearer"},
            )

    unauthorized = {401: {"model": ErrorOut, "description": "No or a wrong admin token"}}

    @app.get(
        "/admin/faults",
        response_model=FaultsInForce,
        responses=unauthorized,
        summary="The faults in force on this node and its frame counts per peer",
    )
    async def faults_in_force(request: Request) -> Response:
        authorize(request)
        return _answer(faults.in_force())

    @app.post(
        "/admin/faults",
        response_model=FaultsInForce,
        responses={**_ERRORS, **unauthorized},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
                "description": 'One fault, e.g. {"fault": "drop", "rate": 0.3, "to": "DBS", '
                '"kind": "consensus"}; faults: drop, delay, duplicate, partition, oneway, '
                "heal, skew, byzantine; any may carry a seed.",
            }
        },
        summary="Set a fault on this node",
    )
    async def set_fault(request: Request) -> Response:
        authorize(request)
        doc = _json(await _read_body(request, MAX_FAULT_BODY_BYTES))
        try:
            return _answer(faults.set(doc))
        except FaultSpecError as exc:
            raise ApiError(400, exc.code, exc.message) from None

    @app.delete(
        "/admin/faults",
        response_model=FaultsInForce,
        responses=unauthorized,
        summary="Clear every fault on this node",
    )
    async def clear_faults(request: Request) -> Response:
        authorize(request)
        return _answer(faults.clear())


def _media_type(header: str) -> str:
    return header.split(";", 1)[0].strip().lower()


async def _read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, read at most ``max_bytes`` (a client cannot make us buffer more).
    A client that leaves mid-body gets a 400 it will never read."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise ApiError(413, "body_too_large", f"request body is over {max_bytes} bytes")
    chunks = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise ApiError(413, "body_too_large", f"request body is over {max_bytes} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        # Nobody is left to answer, and a traceback per abandoned request would let any
        # client flood the log: one debug line, and an answer that goes nowhere.
        log.debug("client closed its connection mid-body (%d of %s bytes)", size, length or "?")
        raise ApiError(400, "incomplete_body", "the client closed the connection") from None
    return b"".join(chunks)


def _json(body: bytes) -> object:
    """What ``await request.json()`` does, with our 400."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # JSONDecodeError, bad UTF-8, huge ints, deep nesting
        raise ApiError(400, "malformed_json", "request body is not valid JSON") from None


def _party(text: str | None) -> bytes | None:
    return None if text is None else bytes.fromhex(text)


def _unregistered(account: bytes) -> tuple[str, str]:
    return "account_not_found", f"account {account.hex()} is not registered"


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


def _packed(out: SubmitOut) -> bytes:
    """``out`` in msgpack, the same shape as its JSON. Written out field by field: the
    generic ``as_json`` costs ~20 µs a result, which at thousands of txs a second was a
    few percent of a node's CPU."""
    results = [
        {"tx_id": r.tx_id.hex(), "accepted": r.accepted, "code": r.code, "message": r.message}
        for r in out.results
    ]
    doc = {"accepted": out.accepted, "rejected": out.rejected, "results": results}
    return msgpack.packb(doc, use_bin_type=True)


def _parse_packed(body: bytes) -> list[bytes]:
    """A msgpack array of bins -> wire bytes; any flaw refuses the whole batch. The array's
    length is read from its header first, so an oversized batch is told apart (413) from
    garbage (400) before anything is decoded."""
    count = _array_header(body)
    if count is None:
        raise ApiError(400, "malformed_msgpack", "body must be one msgpack array of txs")
    if count > MAX_BATCH:
        raise ApiError(413, "batch_too_large", f"a batch holds at most {MAX_BATCH} txs")
    if count == 0:
        raise ApiError(400, "empty_batch", "the array holds no transactions")
    try:
        txs = unpack(body, SUBMIT_BATCH)
    except DecodeError:
        raise ApiError(400, "malformed_msgpack", "body is not a msgpack array of txs") from None
    if type(txs) is not list:  # bytes after the array
        raise ApiError(400, "malformed_msgpack", "body is not a msgpack array of txs")
    for index, item in enumerate(txs):
        if type(item) is not bytes:
            raise ApiError(400, "invalid_request", f"txs[{index}] must be a msgpack bin")
    return txs


def _array_header(body: bytes) -> int | None:
    """The element count a msgpack array header at the start of ``body`` declares."""
    if not body:
        return None
    first = body[0]
    if 0x90 <= first <= 0x9F:
        return first & 0x0F
    if first == 0xDC and len(body) >= 3:
        return int.from_bytes(body[1:3], "big")
    if first == 0xDD and len(body) >= 5:
        return int.from_bytes(body[1:5], "big")
    return None


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
