"""The ledger's rules: apply a transaction or a block to the balances and nonces. No I/O.

``State`` is the committed state (mirrored from the store). Execution never touches it
directly: it writes into a ``Changes`` overlay, so a block can be executed to check its
state root before the node votes for it, and thrown away if the block is not committed.
``State.commit(changes)`` folds an overlay in, and the store writes the same overlay in
one batch, so memory and disk change together.

The state root is an incremental multiset hash: the sum, modulo 2**256, of the sha256 of
every non-empty entry (balance, nonce, registration, supply). A block changes a few entries,
so its root costs a few hashes per changed entry instead of a pass over all accounts.
It lets replicas prove they hold the same state; it is not meant as a proof system for
light clients (there are no inclusion proofs).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass

import msgpack

from chain.block import Block, CommitCertificate, Header, cert_hash, check_structure, tx_root
from chain.errors import InvalidBlock, Reason, TxRejected, ensure
from chain.genesis import Genesis, Token
from chain.tx import MAX_AMOUNT, Tx, TxKind, verify_signature

ROOT_MODULUS = 2**256

# The same bytes as msgpack.packb, without building a Packer per call.
_pack = msgpack.Packer(use_bin_type=True).pack
_sha256 = hashlib.sha256


def entry_hash(entry: tuple) -> int:
    """The hash one state entry adds to the root. Runs several times per transaction."""
    return int.from_bytes(_sha256(_pack(entry)).digest(), "big")


class State:
    """Committed balances, nonces, registrations and supply, plus the chain's tip."""

    def __init__(self, genesis: Genesis) -> None:
        self.chain_id = genesis.chain_id
        self.tokens: dict[str, Token] = genesis.tokens
        self.banks: dict[bytes, str] = {b.issuer: b.name for b in genesis.banks}
        self.balances: dict[tuple[bytes, str], int] = {}
        self.nonces: dict[bytes, int] = {}
        self.accounts: dict[bytes, str] = {}
        self.supply: dict[str, tuple[int, int]] = {}  # token -> (minted, burned)
        self.height = 0
        self.last_hash = bytes(32)
        self.last_time_ms = genesis.genesis_time_ms
        self.root_acc = 0
        opening = Changes(self)
        for bank in genesis.banks:
            opening.accounts[bank.issuer] = bank.name
        for account in genesis.accounts:
            opening.accounts[account.account] = account.bank
            for symbol, amount in account.balances:
                opening.balances[(account.account, symbol)] = amount
                minted, burned = opening.supply_of(symbol)
                opening.supply[symbol] = (minted + amount, burned)
        self.root_acc = opening.root_acc()
        self._merge(opening)

    @classmethod
    def restore(
        cls,
        genesis: Genesis,
        *,
        balances: dict[tuple[bytes, str], int],
        nonces: dict[bytes, int],
        accounts: dict[bytes, str],
        supply: dict[str, tuple[int, int]],
        height: int,
        last_hash: bytes,
        last_time_ms: int,
    ) -> State:
        """Rebuild the committed state from stored entries (a store reopening).

        The root is recomputed from every entry rather than trusted, so the caller can
        compare it with the root it stored and detect entries that do not belong together.
        """
        state = cls(genesis)
        state.balances = dict(balances)
        state.nonces = dict(nonces)
        state.accounts = dict(accounts)
        state.supply = dict(supply)
        state.height = height
        state.last_hash = last_hash
        state.last_time_ms = last_time_ms
        state.root_acc = state.computed_root_acc()
        return state

    @property
    def state_root(self) -> bytes:
        return self.root_acc.to_bytes(32, "big")

    def computed_root_acc(self) -> int:
        """The root accumulator from scratch over every entry: what the incremental root
        maintained by ``commit`` must always equal. Costs one hash per entry."""
        acc = sum(entry_hash(("b", a, t, v)) for (a, t), v in self.balances.items() if v)
        acc += sum(entry_hash(("n", a, v)) for a, v in self.nonces.items() if v)
        acc += sum(entry_hash(("a", a, v)) for a, v in self.accounts.items() if v)
        acc += sum(entry_hash(("s", t, v)) for t, v in self.supply.items() if v)
        return acc % ROOT_MODULUS

    def commit(self, changes: Changes, header: Header) -> None:
        """Fold an executed block's changes in; ``changes`` must have been built on this state."""
        if changes.base is not self or header.height != self.height + 1:
            raise InvalidBlock("changes were not executed on top of this state")
        self.root_acc = changes.root_acc()
        self._merge(changes)
        self.height = header.height
        self.last_hash = header.hash
        self.last_time_ms = header.time_ms

    def _merge(self, changes: Changes) -> None:
        for key, value in changes.balances.items():
            if value:
                self.balances[key] = value
            else:
                self.balances.pop(key, None)
        self.nonces.update(changes.nonces)
        self.accounts.update(changes.accounts)
        self.supply.update(changes.supply)


class Changes:
    """Writes of a block in progress, read through to the committed state beneath.

    Only ``apply_tx`` writes into a Changes (``State.__init__`` builds the opening one).
    """

    def __init__(self, base: State) -> None:
        self.base = base
        self.balances: dict[tuple[bytes, str], int] = {}
        self.nonces: dict[bytes, int] = {}
        self.accounts: dict[bytes, str] = {}
        self.supply: dict[str, tuple[int, int]] = {}
        self._root_memo: int | None = None  # root_acc() until the next apply_tx

    def balance(self, account: bytes, token: str) -> int:
        key = (account, token)
        value = self.balances.get(key)
        return self.base.balances.get(key, 0) if value is None else value

    def nonce(self, account: bytes) -> int:
        value = self.nonces.get(account)
        return self.base.nonces.get(account, 0) if value is None else value

    def bank_of(self, account: bytes) -> str | None:
        return self.accounts.get(account) or self.base.accounts.get(account)

    def supply_of(self, token: str) -> tuple[int, int]:
        value = self.supply.get(token)
        return self.base.supply.get(token, (0, 0)) if value is None else value

    def root_acc(self) -> int:
        """The state root after these changes, from the base root and the changed entries.

        A block's root is asked for by the proposer (build_block), by every validator
        (execute_block), then by the store and ``State.commit``; it costs a few hashes per
        changed entry, so it is remembered until ``apply_tx`` writes again.
        """
        if self._root_memo is not None:
            return self._root_memo
        base = self.base
        removed: list[tuple] = []  # entries whose hash leaves the sum
        added: list[tuple] = []  # entries whose hash joins it
        for (account, token), new in self.balances.items():
            old = base.balances.get((account, token), 0)
            if old != new:
                if old:
                    removed.append(("b", account, token, old))
                if new:
                    added.append(("b", account, token, new))
        for account, new in self.nonces.items():
            old = base.nonces.get(account, 0)
            if old != new:
                if old:
                    removed.append(("n", account, old))
                if new:
                    added.append(("n", account, new))
        for account, new in self.accounts.items():
            old = base.accounts.get(account)
            if old != new:
                if old:
                    removed.append(("a", account, old))
                if new:
                    added.append(("a", account, new))
        for token, new in self.supply.items():
            old = base.supply.get(token)
            if old != new:
                if old:
                    removed.append(("s", token, old))
                if new:
                    added.append(("s", token, new))
        acc = base.root_acc + sum(map(entry_hash, added)) - sum(map(entry_hash, removed))
        self._root_memo = acc % ROOT_MODULUS
        return self._root_memo


def check_chain_and_sender(changes: Changes, tx: Tx) -> None:
    """The first rules of every tx (the mempool checks them too): it is for this chain
    and its sender is registered. Raises TxRejected."""
    if tx.chain_id != changes.base.chain_id:
        raise TxRejected(Reason.WRONG_CHAIN, f"tx is for chain {tx.chain_id!r}")
    if changes.bank_of(tx.sender) is None:
        raise TxRejected(
            Reason.SENDER_NOT_REGISTERED, f"sender {_short(tx.sender)} is not registered"
        )


def apply_tx(changes: Changes, tx: Tx) -> None:
    """Apply one transaction whose signature was already checked.

    Every rule is checked before anything is written, so a TxRejected leaves ``changes``
    exactly as it was.
    """
    check_chain_and_sender(changes, tx)
    expected = changes.nonce(tx.sender)
    if tx.nonce != expected:
        raise TxRejected(Reason.BAD_NONCE, f"expected nonce {expected}, got {tx.nonce}")
    changes._root_memo = None
    _RULES[tx.kind](changes, tx)
    changes.nonces[tx.sender] = expected + 1


def _register(changes: Changes, tx: Tx) -> None:
    bank = changes.base.banks.get(tx.sender)
    ensure(bank is not None, Reason.NOT_A_BANK, "only a bank's issuer account can register")
    ensure(changes.bank_of(tx.to) is None, Reason.ALREADY_REGISTERED, "account already registered")
    changes.accounts[tx.to] = bank  # type: ignore[assignment]


def _mint(changes: Changes, tx: Tx) -> None:
    token = _token(changes, tx.token)
    if tx.sender != token.issuer:
        raise TxRejected(Reason.NOT_ISSUER, f"only {token.bank} can mint {token.symbol}")
    _require_registered(changes, tx.to)
    minted, burned = changes.supply_of(tx.token)
    # Capping what was ever minted caps every balance and sum below it too, so no amount
    # outgrows the 64-bit integers of the canonical encoding (entries, txs, the store).
    if minted + tx.amount > MAX_AMOUNT:
        raise TxRejected(Reason.BAD_AMOUNT, f"{tx.token} issuance would pass {MAX_AMOUNT}")
    changes.balances[(tx.to, tx.token)] = changes.balance(tx.to, tx.token) + tx.amount
    changes.supply[tx.token] = (minted + tx.amount, burned)


def _burn(changes: Changes, tx: Tx) -> None:
    _token(changes, tx.token)
    held = changes.balance(tx.sender, tx.token)
    if held < tx.amount:
        raise TxRejected(Reason.INSUFFICIENT_FUNDS, f"holds {held} {tx.token}, burns {tx.amount}")
    changes.balances[(tx.sender, tx.token)] = held - tx.amount
    minted, burned = changes.supply_of(tx.token)
    changes.supply[tx.token] = (minted, burned + tx.amount)


def _transfer(changes: Changes, tx: Tx) -> None:
    _token(changes, tx.token)
    _require_registered(changes, tx.to)
    held = changes.balance(tx.sender, tx.token)
    if held < tx.amount:
        raise TxRejected(Reason.INSUFFICIENT_FUNDS, f"holds {held} {tx.token}, sends {tx.amount}")
    changes.balances[(tx.sender, tx.token)] = held - tx.amount
    changes.balances[(tx.to, tx.token)] = changes.balance(tx.to, tx.token) + tx.amount


def _token(changes: Changes, symbol: str) -> Token:
    token = changes.base.tokens.get(symbol)
    if token is None:
        raise TxRejected(Reason.UNKNOWN_TOKEN, f"no token {symbol!r} on this network")
    return token


def _require_registered(changes: Changes, account: bytes) -> None:
    if changes.bank_of(account) is None:
        raise TxRejected(
            Reason.RECIPIENT_NOT_REGISTERED, f"recipient {_short(account)} is not registered"
        )


def _short(account: bytes) -> str:
    return account.hex()[:16] + "…"


_RULES: dict[TxKind, Callable[[Changes, Tx], None]] = {
    TxKind.REGISTER: _register,
    TxKind.MINT: _mint,
    TxKind.BURN: _burn,
    TxKind.TRANSFER: _transfer,
}


def check_tx(changes: Changes, tx: Tx, verified: Container[bytes] = ()) -> None:
    """Signature (unless already verified) then rules: the full admission check of one tx."""
    if tx.tx_id not in verified:
        verify_signature(tx)
    apply_tx(changes, tx)


def execute_block(state: State, block: Block, verified: Container[bytes] = ()) -> Changes:
    """Re-execute a proposed or synced block on ``state`` and check every header field
    that execution determines. Raises InvalidBlock; ``state`` is never modified.

    ``verified`` holds tx ids whose signatures this node has already checked (mempool),
    so each signature is verified once per node.
    """
    header = block.header
    check_structure(block)
    if header.chain_id != state.chain_id:
        raise InvalidBlock(f"block is for chain {header.chain_id!r}")
    if header.height != state.height + 1:
        raise InvalidBlock(f"block height {header.height}, expected {state.height + 1}")
    if header.prev_hash != state.last_hash:
        raise InvalidBlock("block does not extend this node's head")
    if header.time_ms <= state.last_time_ms:
        raise InvalidBlock("block time is not after its parent's")
    changes = Changes(state)
    for position, tx in enumerate(block.txs):
        try:
            check_tx(changes, tx, verified)
        except TxRejected as exc:
            raise InvalidBlock(f"tx {position} ({tx.tx_id.hex()[:16]}…) rejected: {exc}") from None
    if changes.root_acc().to_bytes(32, "big") != header.state_root:
        raise InvalidBlock("state root does not match re-execution")
    return changes


@dataclass(frozen=True, slots=True)
class Built:
    """A block a proposer assembled, its changes, and the candidates it had to leave out."""

    block: Block
    changes: Changes
    rejected: tuple[tuple[Tx, TxRejected], ...]


def build_block(
    state: State,
    candidates: Iterable[Tx],
    *,
    round: int,
    proposer: bytes,
    time_ms: int,
    last_cert: CommitCertificate | None,
    max_txs: int,
    verified: Container[bytes] = (),
) -> Built:
    """Assemble the next block from candidates in order, skipping any that no longer apply.

    The time is raised to just after the parent's if the proposer's clock is behind, so
    block times stay strictly increasing.
    """
    changes = Changes(state)
    included: list[Tx] = []
    rejected: list[tuple[Tx, TxRejected]] = []
    for tx in candidates:
        if len(included) >= max_txs:
            break
        try:
            check_tx(changes, tx, verified)
        except TxRejected as exc:
            rejected.append((tx, exc))
            continue
        included.append(tx)
    header = Header(
        chain_id=state.chain_id,
        height=state.height + 1,
        round=round,
        prev_hash=state.last_hash,
        proposer=proposer,
        time_ms=max(time_ms, state.last_time_ms + 1),
        tx_root=tx_root(included),
        state_root=changes.root_acc().to_bytes(32, "big"),
        last_cert_hash=cert_hash(last_cert),
    )
    return Built(Block(header, tuple(included), last_cert), changes, tuple(rejected))
