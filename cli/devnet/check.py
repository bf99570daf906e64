"""`depnet check`: a verdict over what every node committed, in the manner of Jepsen's
checkers: read everything after the fact, re-derive it, and name each broken invariant
with the node and height where it breaks.

Each node is read through its API, or, when its process is stopped, from its LevelDB
store (opening a store re-checks its entries against its head root). Then:

- agreement: one block hash per height across nodes (two hashes at a height is a fork);
- certificates: each block's commit certificate, and the parent certificate it carries,
  holds >= 2f+1 distinct validators' good precommit signatures for that block;
- replay: every distinct chain is re-executed from genesis with ``execute_block``, the
  ledger's one validity function, so each block's txs, header and state root are
  checked again, and each node's head root must be the replayed root at its height;
- supply: per token, the replayed outstanding supply equals the genesis balances plus
  the mints minus the burns counted in the blocks, after every block;
- acknowledged txs: every tx id in the load generator's ack log (a tx a client was told
  is committed) is in the chain exactly once;
- evidence: every proof of equivocation the longest chain committed decodes and verifies
  against the genesis validators and chain id (so no node is trusted for it), no fault
  (validator, height, kind) is committed twice, and every bank the caller made to
  equivocate or double-vote (``injected``) is accused by a committed proof.

The check demands a proof for every injected bank however recently it was made to
equivocate: a proof is committed a height or two after an honest node holds both signed
messages, so the caller lets the network run a few heights after the last injection
before it checks (the scenario runner waits for the proofs, a bounded number of heights).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from chain.block import Block, CommitCertificate, Header
from chain.errors import InvalidBlock, StoreError
from chain.genesis import Genesis
from chain.state import State, execute_block
from chain.tx import (
    Args,
    ContractTerms,
    Milestone,
    Ref,
    SwapTerms,
    Tx,
    TxKind,
    decode_tx,
)
from cli.devnet.client import NodeClient
from cli.devnet.errors import DevnetError
from cli.devnet.health import running_pid
from consensus.evidence import EvidenceKey, InvalidEvidence, decode_evidence, verify_equivocation
from consensus.validators import InvalidCertificate, ValidatorSet, verify_certificate
from node.layout import NetworkHome, NodeEntry

API_TIMEOUT = 5.0
EVIDENCE_CHECK = "committed evidence: valid, once each, injected banks accused"

_pack = msgpack.Packer(use_bin_type=True).pack


class CheckError(DevnetError):
    """The check could not run at all (an unreadable ack log, no network)."""


@dataclass(frozen=True)
class Violation:
    """One broken invariant: which check, on which node, at which height."""

    check: str
    node: str
    height: int | None
    detail: str

    def line(self) -> str:
        where = self.node if self.height is None else f"{self.node} at height {self.height}"
        return f"{self.check}: {where}: {self.detail}"


@dataclass(frozen=True)
class NodeChain:
    """What was read from one node: its committed blocks with their certificates."""

    bank: str
    source: str  # "api", "store", or "unreadable"
    blocks: tuple[tuple[Block, CommitCertificate | None], ...] = ()
    head_root: bytes | None = None  # the state root the node reports for its head
    evidence: int | None = None  # the evidence count its status shows (API only)
    note: str = ""

    @property
    def height(self) -> int:
        return len(self.blocks)


@dataclass(frozen=True)
class Ack:
    """A line of the ack log: a tx a node told the client is committed."""

    tx_id: str
    node: str


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    status: str  # "ok", "violated", "skipped" or "info"
    detail: str


@dataclass(frozen=True)
class CheckReport:
    nodes: tuple[NodeChain, ...]
    outcomes: tuple[CheckOutcome, ...]
    violations: tuple[Violation, ...]

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "nodes": [
                {
                    "bank": n.bank,
                    "source": n.source,
                    "height": n.height,
                    "evidence": n.evidence,
                    "note": n.note,
                }
                for n in self.nodes
            ],
            "checks": [vars(o) for o in self.outcomes],
            "violations": [vars(v) for v in self.violations],
        }


# --- reading nodes -----------------------------------------------------------------------


def read_network(net: NetworkHome) -> list[NodeChain]:
    """Every node of the network, each read by its API or, when stopped, its store."""
    genesis = net.genesis()
    return [read_node(net, entry, genesis) for entry in net.nodes()]


def read_node(net: NetworkHome, entry: NodeEntry, genesis: Genesis) -> NodeChain:
    with NodeClient(entry, timeout=API_TIMEOUT) as client:
        try:
            return _read_api(client)
        except DevnetError as exc:
            unanswered = str(exc)
    home = net.node_home(entry.bank)
    if running_pid(home) is not None:
        return NodeChain(entry.bank, "unreadable", note=f"running but {unanswered}")
    if not home.data_dir.exists():  # wiped, or never started: opening would create one
        return NodeChain(entry.bank, "store", head_root=None, note="no store")
    return read_store(entry.bank, home.data_dir, genesis)


def read_store(bank: str, path: Path, genesis: Genesis) -> NodeChain:
    """A stopped node's chain from its store; a store that fails its own open-time check
    is reported through ``NodeChain.note`` with source "corrupt"."""
    from chain.store import Store

    try:
        with Store.open(path, genesis) as store:
            blocks = tuple(store.blocks(1, store.head.height))
            return NodeChain(bank, "store", blocks, store.head.state_root)
    except StoreError as exc:
        return NodeChain(bank, "corrupt", note=str(exc))


def _read_api(client: NodeClient) -> NodeChain:
    status = client.status()
    height = status["height"]
    blocks = tuple(_block_of(client.block(h)) for h in range(1, height + 1))
    root = bytes.fromhex(status["state_root"])
    return NodeChain(client.bank, "api", blocks, root, evidence=status.get("evidence"))


def _block_of(data: Mapping[str, Any]) -> tuple[Block, CommitCertificate | None]:
    """A block and its certificate rebuilt from the API's JSON. Each tx's wire bytes are
    its fields packed as the body plus its signature, so the rebuilt block hashes as the
    node's did; a node serving altered JSON shows up as a hash that does not match."""
    header = data["header"]
    fields = {
        name: bytes.fromhex(value) if name in _HEADER_BYTES else value
        for name, value in header.items()
    }
    txs = tuple(_tx_of(tx) for tx in data["txs"])
    evidence = tuple(bytes.fromhex(proof) for proof in data["evidence"])
    block = Block(Header(**fields), txs, _cert_of(data["last_cert"]), evidence)
    if block.hash.hex() != data["hash"]:
        raise InvalidBlock(f"block {data['height']} as served does not hash to {data['hash']}")
    return block, _cert_of(data["cert"])


_HEADER_BYTES = frozenset(
    {"prev_hash", "proposer", "tx_root", "state_root", "last_cert_hash", "evidence_hash"}
)  # the Header fields the API shows in hex


def _tx_of(data: Mapping[str, Any]) -> Tx:
    kind = TxKind[data["kind"].upper()]
    fields = [
        int(kind),
        data["chain_id"],
        bytes.fromhex(data["sender"]),
        data["nonce"],
        bytes.fromhex(data["to"]),
        data["token"],
        data["amount"],
        data["memo"],
    ]
    args = _args_of(kind, data.get("args"))
    if args is not None:
        fields.append(args.to_list())
    return decode_tx(_pack(fields) + bytes.fromhex(data["signature"]))


def _args_of(kind: TxKind, data: Mapping[str, Any] | None) -> Args | None:
    """A programmable payment's args from the API's JSON of them (the API's rendering,
    reversed)."""
    if data is None:
        return None
    if kind is TxKind.CONTRACT_OPEN:
        milestones = tuple(
            Milestone(m["name"], m["amount"], m["due_ms"]) for m in data["milestones"]
        )
        return ContractTerms(
            bytes.fromhex(data["approver"]),
            data["expiry_ms"],
            bytes.fromhex(data["terms_hash"]),
            milestones,
        )
    if kind is TxKind.SWAP_OFFER:
        return SwapTerms(data["ask_token"], data["ask_amount"], data["expiry_ms"])
    return Ref(bytes.fromhex(data["id"]), data["milestone"])


def _cert_of(data: Mapping[str, Any] | None) -> CommitCertificate | None:
    if data is None:
        return None
    signatures = tuple((index, bytes.fromhex(sig)) for index, sig in data["signatures"])
    return CommitCertificate(
        data["height"], data["round"], bytes.fromhex(data["block_hash"]), signatures
    )


def read_acks(path: Path) -> list[Ack]:
    """The ack log: one ``<tx id hex> <bank>`` per line (more fields may follow)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CheckError(f"cannot read ack log {path}: {exc.strerror}") from None
    acks = []
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2 or len(parts[0]) != 64:
            raise CheckError(f"ack log {path} line {number}: expected '<tx id hex> <bank>'")
        acks.append(Ack(parts[0].lower(), parts[1]))
    return acks


# --- checking ----------------------------------------------------------------------------


@dataclass
class _Findings:
    violations: list[Violation] = field(default_factory=list)

    def add(self, check: str, node: str, height: int | None, detail: str) -> None:
        self.violations.append(Violation(check, node, height, detail))

    def count(self, check: str) -> int:
        return sum(1 for v in self.violations if v.check == check)


def check_chains(
    chains: Sequence[NodeChain],
    genesis: Genesis,
    acks: Sequence[Ack] | None = None,
    injected: Collection[str] | None = None,
) -> CheckReport:
    """Every invariant over the chains read from the nodes (see the module docstring).
    ``injected`` names the banks (as genesis spells them) made to equivocate or
    double-vote; None: not known, so no proof is demanded."""
    found = _Findings()
    for chain in chains:
        if chain.source == "unreadable":
            found.add("readable", chain.bank, None, chain.note)
        elif chain.source == "corrupt":
            found.add("store", chain.bank, None, chain.note)
    readable = [c for c in chains if c.source in ("api", "store")]
    validators = ValidatorSet(genesis.validators)
    outcomes = [
        _agreement(readable, found),
        _certificates(readable, validators, genesis.chain_id, found),
        *_replay(readable, genesis, found),
        _acks(readable, acks, found),
        _committed_evidence(readable, injected, genesis, validators, found),
        _evidence(chains),
    ]
    unread = found.count("readable") + found.count("store")
    if unread:
        outcomes.insert(0, CheckOutcome("every node read", "violated", f"{unread} not read"))
    return CheckReport(tuple(chains), tuple(outcomes), tuple(found.violations))


def _outcome(name: str, found: _Findings, check: str, ok_detail: str) -> CheckOutcome:
    bad = found.count(check)
    if bad:
        return CheckOutcome(name, "violated", f"{bad} violation{'s' * (bad != 1)}")
    return CheckOutcome(name, "ok", ok_detail)


def _agreement(chains: Sequence[NodeChain], found: _Findings) -> CheckOutcome:
    """One hash per height. A fork is reported at the height where it starts: where two
    different blocks follow one parent (the heights above a fork differ too, and say
    nothing new; a node holding one wrong block in the middle of a chain is named there)."""
    top = max((c.height for c in chains), default=0)
    for height in range(1, top + 1):
        present = [c for c in chains if c.height >= height]
        holders: dict[bytes, list[str]] = defaultdict(list)
        for chain in present:
            holders[chain.blocks[height - 1][0].hash].append(chain.bank)
        if len(holders) < 2:
            continue
        parents = {c.blocks[height - 2][0].hash for c in present} if height > 1 else {b""}
        if len(parents) >= len(holders):
            continue  # every side continues its own earlier branch
        groups = sorted(holders.items(), key=lambda kv: -len(kv[1]))
        sides = "; ".join(f"{', '.join(banks)} hold {h.hex()[:16]}…" for h, banks in groups)
        minority = ", ".join(b for _, banks in groups[1:] for b in banks)
        found.add("agreement", minority, height, f"fork: {sides}")
    return _outcome("one block hash per height", found, "agreement", f"{top} heights agree")


def _certificates(
    chains: Sequence[NodeChain], validators: ValidatorSet, chain_id: str, found: _Findings
) -> CheckOutcome:
    checked = 0
    for chain in chains:
        for height, (block, cert) in enumerate(chain.blocks, 1):
            parent = chain.blocks[height - 2][0].hash if height > 1 else None
            problem = _certificate_problem(cert, height, block.hash, validators, chain_id)
            if problem is None and parent is not None:
                problem = _certificate_problem(
                    block.last_cert, height - 1, parent, validators, chain_id
                )
                problem = problem and f"the parent certificate it carries: {problem}"
            if problem:
                found.add("certificate", chain.bank, height, problem)
            checked += 1
    return _outcome(
        "certificates: >= 2f+1 good signatures",
        found,
        "certificate",
        f"{checked} verified (quorum {validators.quorum} of {validators.n})",
    )


def _certificate_problem(
    cert: CommitCertificate | None,
    height: int,
    block_hash: bytes,
    validators: ValidatorSet,
    chain_id: str,
) -> str | None:
    if cert is None:
        return "no commit certificate"
    if cert.height != height or cert.block_hash != block_hash:
        return f"certificate is for height {cert.height}, block {cert.block_hash.hex()[:16]}…"
    try:
        verify_certificate(cert, validators, chain_id)
    except InvalidCertificate as exc:
        return str(exc)
    return None


def _replay(chains: Sequence[NodeChain], genesis: Genesis, found: _Findings) -> list[CheckOutcome]:
    """Re-execute each distinct chain once (a node whose blocks are a prefix of a chain
    already replayed shares its results), checking supply after every block."""
    replayed: list[tuple[list[bytes], list[bytes]]] = []  # (block hashes, replayed roots)
    blocks_run = 0
    opening = _opening_supply(genesis)
    for chain in sorted(chains, key=lambda c: -c.height):
        hashes = [block.hash for block, _ in chain.blocks]
        roots = next((r for h, r in replayed if h[: len(hashes)] == hashes), None)
        if roots is None:
            roots = _replay_chain(chain, genesis, opening, found)
            blocks_run += len(roots)
            replayed.append((hashes[: len(roots)], roots))
        if chain.height == 0:
            expected: bytes | None = State(genesis).state_root
        else:
            expected = roots[chain.height - 1] if len(roots) >= chain.height else None
        if expected is not None and chain.head_root is not None and chain.head_root != expected:
            found.add(
                "state_root",
                chain.bank,
                chain.height,
                f"head root {chain.head_root.hex()[:16]}… is not the replayed "
                f"{expected.hex()[:16]}…",
            )
    return [
        _outcome(
            "replay from genesis (execute_block)",
            found,
            "replay",
            f"{blocks_run} blocks re-executed in {len(replayed)} distinct chain"
            f"{'s' * (len(replayed) != 1)}",
        ),
        _outcome("equal state roots at equal heights", found, "state_root", "agree"),
        _outcome("supply = genesis + minted - burned", found, "supply", f"{len(opening)} tokens"),
    ]


def _replay_chain(
    chain: NodeChain, genesis: Genesis, opening: Mapping[str, int], found: _Findings
) -> list[bytes]:
    """The state root after each block, up to the first block that does not execute."""
    state = State(genesis)
    tally = Counter(opening)
    roots = []
    for block, _ in chain.blocks:
        height = block.header.height
        try:
            changes = execute_block(state, block)
        except InvalidBlock as exc:
            found.add("replay", chain.bank, len(roots) + 1, f"block does not re-execute: {exc}")
            return roots
        state.commit(changes, block.header)
        roots.append(state.state_root)
        for tx in block.txs:
            if tx.kind is TxKind.MINT:
                tally[tx.token] += tx.amount
            elif tx.kind is TxKind.BURN:
                tally[tx.token] -= tx.amount
        for token in opening:
            if state.supply.get(token, 0) != tally[token]:
                found.add(
                    "supply",
                    chain.bank,
                    height,
                    f"{token} supply {state.supply.get(token, 0)} is not genesis + minted - "
                    f"burned = {tally[token]}",
                )
    return roots


def _opening_supply(genesis: Genesis) -> dict[str, int]:
    supply = dict.fromkeys(genesis.tokens, 0)
    for account in genesis.accounts:
        for symbol, amount in account.balances:
            supply[symbol] += amount
    return supply


def _acks(
    chains: Sequence[NodeChain], acks: Sequence[Ack] | None, found: _Findings
) -> CheckOutcome:
    name = "acknowledged txs in the chain exactly once"
    if acks is None:
        return CheckOutcome(name, "skipped", "no ack log (--acks FILE)")
    longest = max(chains, key=lambda c: c.height, default=None)
    if longest is None:
        return CheckOutcome(name, "skipped", "no node could be read")
    heights: dict[str, list[int]] = defaultdict(list)
    for height, (block, _) in enumerate(longest.blocks, 1):
        for tx in block.txs:
            heights[tx.tx_id.hex()].append(height)
    for ack in acks:
        where = heights.get(ack.tx_id, [])
        if len(where) != 1:
            detail = "not in the chain" if not where else f"in the chain {len(where)} times"
            found.add(
                "acks",
                ack.node,
                where[0] if where else None,
                f"tx {ack.tx_id[:16]}… acknowledged as committed is {detail} of "
                f"{longest.bank} (height {longest.height})",
            )
    return _outcome(name, found, "acks", f"{len(acks)} acknowledged, all found once")


def _committed_evidence(
    chains: Sequence[NodeChain],
    injected: Collection[str] | None,
    genesis: Genesis,
    validators: ValidatorSet,
    found: _Findings,
) -> CheckOutcome:
    """The evidence the longest chain committed, re-verified from genesis alone: a proof
    that does not verify, or a fault committed twice, is a block the validators should
    have refused; an injected bank that no proof accuses is an equivocation the network
    saw (it was sent to honest nodes) and failed to commit."""
    longest = max(chains, key=lambda c: c.height, default=None)
    if longest is None:
        return CheckOutcome(EVIDENCE_CHECK, "skipped", "no node could be read")
    bank_of = {bank.validator: bank.name for bank in genesis.banks}
    committed_at: dict[EvidenceKey, int] = {}
    accused: Counter[str] = Counter()
    for height, (block, _) in enumerate(longest.blocks, 1):
        for position, proof in enumerate(block.evidence):
            try:
                ev = decode_evidence(proof)
                verify_equivocation(ev, validators, genesis.chain_id)
            except InvalidEvidence as exc:
                problem = f"proof {position} proves nothing: {exc}"
                found.add("evidence", longest.bank, height, problem)
                continue
            bank = bank_of[ev.validator]
            fault = f"{bank}'s two {ev.kind}s at height {ev.height}"
            if ev.key in committed_at:
                found.add(
                    "evidence",
                    longest.bank,
                    height,
                    f"proof {position} accuses {fault} again: committed at height "
                    f"{committed_at[ev.key]} already",
                )
                continue
            committed_at[ev.key] = height
            accused[bank] += 1
    for bank in sorted(injected or ()):
        if not accused[bank]:
            found.add(
                "evidence",
                bank,
                None,
                f"made to equivocate, but no proof committed up to height {longest.height} "
                f"({longest.bank}'s chain) accuses it",
            )
    return _outcome(EVIDENCE_CHECK, found, "evidence", _evidence_summary(accused, injected))


def _evidence_summary(accused: Mapping[str, int], injected: Collection[str] | None) -> str:
    proofs = sum(accused.values())
    if not proofs and not injected:
        named = "none injected" if injected is not None else "no injection named"
        return f"no proof committed, {named}"
    who = ", ".join(f"{bank} {count}" for bank, count in sorted(accused.items()))
    found = f"{proofs} proof{'s' * (proofs != 1)} verified, each fault once ({who})"
    if injected is None:
        return f"{found}; no injection named (--equivocated BANK)"
    return f"{found}; injected: {', '.join(sorted(injected)) or 'none'}"


def _evidence(chains: Iterable[NodeChain]) -> CheckOutcome:
    counts = [f"{c.bank} {c.evidence}" for c in chains if c.evidence is not None]
    return CheckOutcome(
        "evidence held by nodes (status)", "info", ", ".join(counts) or "no node answered"
    )
