"""The query side of a node: what the HTTP API may ask (``NodeService``) and its answers.

The API is an edge that hands bytes in and renders answers; ``LocalService`` answers from
this process's store, mempool and engine. The answer types are also the JSON shapes of the
API: a ``Hex`` field is bytes here and a hex string in JSON, so each shape is written once.
Only ``submit`` changes anything (it admits txs into the mempool and queues them for
gossip); every other call reads. The admin side (``FaultControl``) sets and clears the
faults injected into the node (node/faults.py).

A node that is behind its peers says so (``CatchUp``): until it has caught up it refuses
submissions with ``Syncing`` (the API's 503 ``syncing``), because what it would tell a
client (an account's next nonce, whether a tx is a duplicate) is stale and misleads it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Annotated, Any, Literal, Protocol, TypeVar

import trio
from prometheus_client import CollectorRegistry
from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

from chain.block import Block, CommitCertificate
from chain.errors import Reason, TxRejected
from chain.escrow import Contract, Offer, OfferStatus, Settlement
from chain.store import Store
from chain.tx import Tx, decode_tx
from consensus.engine import Engine
from consensus.evidence import decode_evidence
from node.mempool import ADMIT_SLICE, Mempool, MempoolError, MempoolFull, TxStatus
from node.metrics import Metrics
from node.txgossip import TxGossip

SYNC_LAG = 2  # blocks behind peers before a node counts as syncing (one: a commit in flight)


def _from_hex(value: object) -> object:
    return bytes.fromhex(value) if isinstance(value, str) else value


Hex = Annotated[
    bytes,
    BeforeValidator(_from_hex),  # so a client can read an answer back into its shape
    PlainSerializer(bytes.hex, return_type=str),
    WithJsonSchema({"type": "string", "pattern": "^([0-9a-f]{2})*$"}),
]


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """Outcome of one submitted tx, in the order submitted. ``accepted`` means the tx is now
    in this node's mempool; otherwise ``code`` (a ``chain.errors.Reason`` value) says why
    not (``duplicate`` when it already was, so a client that resubmits after a timeout can
    tell that apart)."""

    tx_id: Hex  # sha256 of the submitted bytes, even when they do not decode
    accepted: bool
    code: str | None = None
    message: str | None = None

    @classmethod
    def admitted(cls, tx_id: bytes) -> SubmitResult:
        return cls(tx_id, True)

    @classmethod
    def rejected(cls, raw: bytes, exc: TxRejected | MempoolError) -> SubmitResult:
        return cls(sha256(raw).digest(), False, exc.reason.value, exc.detail or str(exc))


@dataclass(frozen=True, slots=True)
class AccountInfo:
    account: Hex
    bank: str
    nonce: int  # committed: the number of txs this account has had applied
    next_nonce: int  # counting its txs in the mempool: the nonce its next tx should carry
    balances: Mapping[str, int]  # token symbol -> amount in minor units; zero balances left out
    # what it has locked in open contracts (as the buyer) and open offers (as the maker)
    locked: Mapping[str, int] = field(default_factory=dict)
    frozen: bool = False  # under a compliance hold by its bank


@dataclass(frozen=True, slots=True)
class MilestoneInfo:
    name: str
    amount: int
    due_ms: int  # the block time it must be released before; 0: the contract's expiry
    state: Literal["locked", "released", "refunded"]


@dataclass(frozen=True, slots=True)
class ContractInfo:
    """A contract in escrow (open while it still locks something), by its id: the id of
    the tx that opened it. Amounts in the token's minor units; times are block times."""

    id: Hex
    status: Literal["open", "closed"]
    buyer: Hex
    supplier: Hex
    approver: Hex
    token: str
    total: int
    locked: int
    released: int  # paid to the supplier
    refunded: int  # returned to the buyer
    expiry_ms: int
    terms_hash: Hex  # sha256 of the terms document
    milestones: Sequence[MilestoneInfo]

    @classmethod
    def of(cls, contract_id: bytes, contract: Contract) -> ContractInfo:
        return cls(
            id=contract_id,
            status="open" if contract.is_open else "closed",
            buyer=contract.buyer,
            supplier=contract.supplier,
            approver=contract.approver,
            token=contract.token,
            total=sum(m.amount for m in contract.milestones),
            locked=contract.locked,
            released=contract.total(Settlement.RELEASED),
            refunded=contract.total(Settlement.REFUNDED),
            expiry_ms=contract.expiry_ms,
            terms_hash=contract.terms_hash,
            milestones=[
                MilestoneInfo(m.name, m.amount, m.due_ms, s.name.lower())  # type: ignore[arg-type]
                for m, s in zip(contract.milestones, contract.settled, strict=True)
            ],
        )

    def involves(self, account: bytes) -> bool:
        return account in (self.buyer, self.supplier, self.approver)


@dataclass(frozen=True, slots=True)
class OfferInfo:
    """A PvP swap offer by its id (the id of the tx that made it): ``amount`` of ``token``
    locked from the maker, for ``ask_amount`` of ``ask_token``."""

    id: Hex
    status: Literal["open", "taken", "cancelled"]
    maker: Hex
    counterparty: Hex  # empty: anyone may accept
    token: str
    amount: int
    ask_token: str
    ask_amount: int
    expiry_ms: int
    taker: Hex  # who accepted it; empty unless taken

    @classmethod
    def of(cls, offer_id: bytes, offer: Offer) -> OfferInfo:
        return cls(
            id=offer_id,
            status=offer.status.name.lower(),  # type: ignore[arg-type]
            maker=offer.maker,
            counterparty=offer.counterparty,
            token=offer.token,
            amount=offer.amount,
            ask_token=offer.ask_token,
            ask_amount=offer.ask_amount,
            expiry_ms=offer.expiry_ms,
            taker=offer.taker,
        )

    def involves(self, account: bytes) -> bool:
        return account in (self.maker, self.counterparty, self.taker)


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
class CommittedEvidence:
    """A proof that ``validator`` (of ``bank``) signed two conflicting ``kind`` messages at
    (height, round), committed by the block at ``committed_at``. ``proof`` is its bytes
    (``consensus.evidence.decode_evidence``), so a reader can verify it without trusting
    this node."""

    validator: Hex
    bank: str
    height: int
    round: int
    kind: str
    committed_at: int
    proof: Hex


@dataclass(frozen=True, slots=True)
class Head:
    """The committed tip. Before the first block: height 0, a zero hash, the genesis root."""

    chain_id: str
    height: int
    hash: Hex
    state_root: Hex
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
    head_hash: Hex
    state_root: Hex
    peer_ids: Sequence[str]  # connected validators' public keys, hex
    seconds_since_commit: float
    consensus: Mapping[str, Any]  # the engine's own summary (Engine.status)
    syncing: bool  # behind its peers: catching up, refusing submissions
    network_height: int  # the height its peers have committed, as far as it knows


class Syncing(Exception):
    """The node is catching up and refuses submissions until it has."""

    def __init__(self, height: int, network_height: int) -> None:
        super().__init__(f"catching up: height {height} of {network_height}")
        self.height = height
        self.network_height = network_height


@dataclass(eq=False)
class CatchUp:
    """How far behind its peers this node is, from the heights of the signed consensus
    messages they send (every validator re-sends its current height's votes, so a
    restarted node learns the network's height within one resend interval).

    A message for height h shows that its signer committed h - 1. The network's height is
    the (f+1)-th highest of these claims, one per validator: at least one honest
    validator vouches for it, so f byzantine ones signing far-future heights cannot keep
    a node "syncing" forever. Holds one integer per validator."""

    faulty: int  # f: the validators that may be byzantine
    claims: dict[bytes, int]  # validator -> highest height it signed a message for

    @classmethod
    def of(cls, validators: int) -> CatchUp:
        return cls((validators - 1) // 3, {})

    def observe(self, validator: bytes, height: int) -> None:
        if height > self.claims.get(validator, 0):
            self.claims[validator] = height

    def network_height(self, own: int) -> int:
        vouched = sorted(self.claims.values(), reverse=True)[self.faulty : self.faulty + 1]
        return max(own, vouched[0] - 1 if vouched else 0)

    def behind(self, own: int) -> bool:
        return self.network_height(own) - own >= SYNC_LAG


class FaultSpecError(Exception):
    """A fault spec the node refuses: ``code`` is the API's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class FaultsInForce:
    """What ``GET /admin/faults`` answers: the faults in force on one node and the frames
    it exchanged with each peer (by kind name), which show a fault acting."""

    bank: str
    seed: int
    faults: Sequence[Mapping[str, Any]]  # each as it would be posted
    skew_ms: int
    byzantine: str | None
    cut_to: Sequence[str]  # banks this node's frames do not reach
    cut_from: Sequence[str]  # banks whose frames this node discards
    frames: Mapping[str, Mapping[str, Mapping[str, int]]]  # peer -> counter -> kind -> n


class FaultControl(Protocol):
    """What the admin routes need from the node (node/faults.py ``FaultLayer``)."""

    def in_force(self) -> FaultsInForce: ...

    def set(self, doc: object) -> FaultsInForce:
        """Apply one fault spec; raises FaultSpecError (and changes nothing) if it is bad."""
        ...

    def clear(self) -> FaultsInForce: ...


class NodeService(Protocol):
    """What the API needs from the node. Only ``submit`` may change anything."""

    room_again_ms: int
    """When a node that refused txs for room expects room again, in ms: half the time its
    pool holds (``mempool_seconds``), by when half of it has committed."""

    @property
    def registry(self) -> CollectorRegistry:
        """Rendered at /metrics (node.metrics.Metrics.registry)."""
        ...

    async def submit(self, raws: list[bytes]) -> list[SubmitResult]:
        """Decode and admit each tx; one result per input, in order. Raises Syncing while
        the node is catching up, and MempoolFull when it takes no tx now; either way having
        decoded, checked and admitted nothing."""
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

    def block_bytes(self, height: int) -> tuple[bytes, bytes | None] | None:
        """The committed block's canonical bytes and its certificate's, as stored: a
        program that follows every block reads them without the node decoding a tx."""
        ...

    def contract(self, contract_id: bytes) -> ContractInfo | None: ...

    def contracts(self, party: bytes | None, open_only: bool, limit: int) -> list[ContractInfo]:
        """Up to ``limit`` contracts (those ``party`` is buyer, supplier or approver of, if
        given), open ones only if ``open_only``, in order of expiry."""
        ...

    def offer(self, offer_id: bytes) -> OfferInfo | None: ...

    def offers(self, party: bytes | None, open_only: bool, limit: int) -> list[OfferInfo]:
        """Up to ``limit`` offers (those ``party`` made, may take or took, if given), open
        ones only if ``open_only``, in order of expiry."""
        ...

    def evidence(self, height: int | None, limit: int) -> list[CommittedEvidence]:
        """The first ``limit`` proofs of equivocation committed (by the block at ``height``
        only, if given), in the order the chain committed them."""
        ...

    def head(self) -> Head: ...

    async def next_head(self, after: int, timeout: float) -> Head:
        """The tip once it is above height ``after``, or as it is when ``timeout`` seconds
        have passed: a reader follows the chain with one request per block, not a poll."""
        ...

    def status(self) -> NodeStatus: ...


@dataclass(eq=False, kw_only=True)
class LocalService:
    """The NodeService of the node in this process. ``since_commit`` gives the seconds
    since the last commit (or since the node started), on the node's clock."""

    bank: str
    store: Store
    mempool: Mempool
    engine: Engine
    metrics: Metrics
    gossip: TxGossip
    peers: Callable[[], set[bytes]]
    since_commit: Callable[[], float]
    catch_up: CatchUp
    room_again_ms: int
    _committed: trio.Event = field(default_factory=trio.Event, init=False, repr=False)

    @property
    def registry(self) -> CollectorRegistry:
        return self.metrics.registry

    def on_commit(self) -> None:
        """Wake the readers waiting for a new tip (``next_head``)."""
        self._committed.set()
        self._committed = trio.Event()

    async def submit(self, raws: list[bytes]) -> list[SubmitResult]:
        height = self.store.state.height
        if self.catch_up.behind(height):
            raise Syncing(height, self.catch_up.network_height(height))
        mempool = self.mempool
        try:
            mempool.check_room()
        except MempoolFull:
            self.metrics.rejected_txs.labels(Reason.MEMPOOL_FULL.value).inc(len(raws))
            raise
        results = []
        accepted = []
        for index, raw in enumerate(raws):
            if index % ADMIT_SLICE == ADMIT_SLICE - 1:
                await trio.lowlevel.checkpoint()
            try:
                mempool.check_room()  # the batch may fill the pool: refuse the rest undecoded
                tx = decode_tx(raw)
                mempool.add(tx)
            except (TxRejected, MempoolError) as exc:
                results.append(SubmitResult.rejected(raw, exc))
                self.metrics.on_reject(exc.reason.value)
                continue
            self.gossip.queue(tx.raw)
            accepted.append(tx.tx_id)
            results.append(SubmitResult.admitted(tx.tx_id))
        self.metrics.on_submit(accepted, trio.current_time())
        return results

    def tx_status(self, tx_id: bytes) -> TxStatus:
        location = self.store.tx_location(tx_id)
        if location is not None:
            return TxStatus.committed(*location)
        return self.mempool.status(tx_id)

    def account(self, account: bytes) -> AccountInfo | None:
        state = self.store.state
        bank = state.accounts.get(account)
        if bank is None:
            return None
        return AccountInfo(
            account=account,
            bank=bank,
            nonce=state.nonces.get(account, 0),
            next_nonce=self.mempool.next_nonce(account),
            balances={
                symbol: units
                for symbol in state.tokens
                if (units := state.balances.get((account, symbol), 0))
            },
            locked=locked_by(state.contracts.values(), state.offers.values(), account),
            frozen=state.frozen.get(account, False),
        )

    def account_txs(
        self, account: bytes, before_height: int | None, limit: int
    ) -> AccountTxs | None:
        if account not in self.store.state.accounts:
            return None
        entries, next_before = self.store.account_page(
            account, before_height=before_height, limit=limit
        )
        located = self.store.txs_at(entries)
        return AccountTxs(
            [
                AccountTx(height, position, time_ms, tx)
                for (height, position), (tx, time_ms) in zip(entries, located, strict=True)
            ],
            next_before,
        )

    def block(self, height: int) -> CommittedBlock | None:
        if not 1 <= height <= self.store.state.height:
            return None
        return CommittedBlock(self.store.block(height), self.store.certificate(height))

    def block_bytes(self, height: int) -> tuple[bytes, bytes | None] | None:
        if not 1 <= height <= self.store.state.height:
            return None
        data = self.store.block_bytes(height)
        return None if data is None else (data, self.store.certificate_bytes(height))

    def contract(self, contract_id: bytes) -> ContractInfo | None:
        contract = self.store.state.contracts.get(contract_id)
        return None if contract is None else ContractInfo.of(contract_id, contract)

    def contracts(self, party: bytes | None, open_only: bool, limit: int) -> list[ContractInfo]:
        found = (ContractInfo.of(i, c) for i, c in self.store.state.contracts.items())
        return _select(found, party, open_only, limit)

    def offer(self, offer_id: bytes) -> OfferInfo | None:
        offer = self.store.state.offers.get(offer_id)
        return None if offer is None else OfferInfo.of(offer_id, offer)

    def offers(self, party: bytes | None, open_only: bool, limit: int) -> list[OfferInfo]:
        found = (OfferInfo.of(i, o) for i, o in self.store.state.offers.items())
        return _select(found, party, open_only, limit)

    def evidence(self, height: int | None, limit: int) -> list[CommittedEvidence]:
        store = self.store
        entries = store.evidence() if height is None else store.evidence(height, height)
        banks = {bank.validator: bank.name for bank in store.genesis.banks}
        found = []
        for committed_at, proof in entries[:limit]:
            ev = decode_evidence(proof)
            found.append(
                CommittedEvidence(
                    ev.validator,
                    banks[ev.validator],
                    ev.height,
                    ev.round,
                    ev.kind,
                    committed_at,
                    proof,
                )
            )
        return found

    def head(self) -> Head:
        state = self.store.state
        return Head(
            chain_id=state.chain_id,
            height=state.height,
            hash=state.last_hash,
            state_root=state.state_root,
            time_ms=state.last_time_ms,
        )

    async def next_head(self, after: int, timeout: float) -> Head:
        with trio.move_on_after(timeout):
            while self.store.state.height <= after:
                await self._committed.wait()
        return self.head()

    def status(self) -> NodeStatus:
        engine = self.engine
        state = self.store.state
        peers = self.peers()
        return NodeStatus(
            bank=self.bank,
            chain_id=state.chain_id,
            height=state.height,
            round=engine.round,
            step=engine.step.name.lower(),
            peers=len(peers),
            mempool_size=len(self.mempool),
            evidence=len(engine.evidence),
            head_hash=state.last_hash,
            state_root=state.state_root,
            peer_ids=sorted(p.hex() for p in peers),
            seconds_since_commit=round(self.since_commit(), 3),
            consensus=engine.status().to_json(),
            syncing=self.catch_up.behind(state.height),
            network_height=self.catch_up.network_height(state.height),
        )


def locked_by(
    contracts: Iterable[Contract], offers: Iterable[Offer], account: bytes
) -> dict[str, int]:
    """What ``account`` has locked, by token: its open contracts as the buyer and its open
    offers as the maker (one pass over the records: a query, not a hot path)."""
    locked: dict[str, int] = {}
    for contract in contracts:
        if contract.buyer == account and contract.is_open:
            locked[contract.token] = locked.get(contract.token, 0) + contract.locked
    for offer in offers:
        if offer.maker == account and offer.status is OfferStatus.OPEN:
            locked[offer.token] = locked.get(offer.token, 0) + offer.amount
    return dict(sorted(locked.items()))


Record = TypeVar("Record", ContractInfo, OfferInfo)


def _select(
    records: Iterable[Record], party: bytes | None, open_only: bool, limit: int
) -> list[Record]:
    chosen = [
        r
        for r in records
        if (party is None or r.involves(party)) and (not open_only or r.status == "open")
    ]
    chosen.sort(key=lambda r: (r.expiry_ms, r.id))
    return chosen[:limit]
