"""The ledger's rules: apply a transaction or a block to the balances and nonces. No I/O.

``State`` is the committed state (mirrored from the store). Execution never touches it
directly: it writes into a ``Changes`` overlay, so a block can be executed to check its
state root before the node votes for it, and thrown away if the block is not committed.
``State.commit(changes)`` folds an overlay in, and the store writes the same overlay in
one batch, so memory and disk change together.

The state root is an incremental multiset hash: the sum, modulo 2**256, of the sha256 of
every non-empty entry (balance, nonce, registration, outstanding supply). A block changes
a few entries, so its root costs a few hashes per changed entry instead of a pass over all
accounts.
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
        self.supply: dict[str, int] = {}  # token -> outstanding: minted minus burned
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
                opening.supply[symbol] = opening.supply_of(symbol) + amount
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
        supply: dict[str, int],
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
        tables = _tables(self)
        return _root_delta(tables, tuple((tag, {}) for tag, _ in tables)) % ROOT_MODULUS

    def check_changes(self, changes: Changes, block_hash: bytes) -> None:
        """Raise InvalidBlock unless ``changes`` are the checked execution of the block
        ``block_hash`` on this state as it is now.

        A State changes in place as blocks commit, so changes executed on it for an earlier
        height (a block already committed, a rival candidate of the same height) still name
        it as their base: the height they were executed at tells them apart.
        """
        ensure(
            changes.base is self and changes.base_height == self.height,
            InvalidBlock,
            "changes were not executed on this state at its current height",
        )
        ensure(changes.block_hash == block_hash, InvalidBlock, "changes are not this block's")

    def commit(self, changes: Changes, header: Header) -> None:
        """Fold an executed block's changes in (see ``check_changes``)."""
        self.check_changes(changes, header.hash)
        self.root_acc = changes.root_acc()
        self._merge(changes)
        self.height = header.height
        self.last_hash = header.hash
        self.last_time_ms = header.time_ms

    def _merge(self, changes: Changes) -> None:
        """Fold changes in; a balance or a supply that falls to zero leaves no entry."""
        for table, written in ((self.balances, changes.balances), (self.supply, changes.supply)):
            for key, value in written.items():
                if value:
                    table[key] = value
                else:
                    table.pop(key, None)
        self.nonces.update(changes.nonces)
        self.accounts.update(changes.accounts)


class Changes:
    """Writes of a block in progress, read through to the committed state beneath.

    Only ``apply_tx`` writes into a Changes (``State.__init__`` builds the opening one).
    ``block_hash`` is set by ``execute_block`` and ``build_block`` once every rule of that
    block held, and cleared by any later write: committing asks for it, so only the
    checked execution of a block can be committed as that block.
    """

    def __init__(self, base: State) -> None:
        self.base = base
        self.base_height = base.height
        self.block_hash: bytes | None = None
        self.balances: dict[tuple[bytes, str], int] = {}
        self.nonces: dict[bytes, int] = {}
        self.accounts: dict[bytes, str] = {}
        self.supply: dict[str, int] = {}
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

    def supply_of(self, token: str) -> int:
        """The outstanding supply of ``token``: minted (opening balances included) minus
        burned, which is also the sum of every balance of it."""
        value = self.supply.get(token)
        return self.base.supply.get(token, 0) if value is None else value

    def root_acc(self) -> int:
        """The state root after these changes, from the base root and the changed entries.

        A block's root is asked for by the proposer (build_block), by every validator
        (execute_block), then by ``State.commit``; it costs a few hashes per
        changed entry, so it is remembered until ``apply_tx`` writes again.
        """
        if self._root_memo is not None:
            return self._root_memo
        base = self.base
        acc = base.root_acc + _root_delta(_tables(self), _tables(base))
        self._root_memo = acc % ROOT_MODULUS
        return self._root_memo


def _tables(holder: State | Changes) -> tuple[tuple[str, dict], ...]:
    """The state's four tables, each with the tag its entries carry in the root."""
    return (
        ("b", holder.balances),
        ("n", holder.nonces),
        ("a", holder.accounts),
        ("s", holder.supply),
    )


def _root_delta(
    tables: tuple[tuple[str, dict], ...], base_tables: tuple[tuple[str, dict], ...]
) -> int:
    """What ``tables`` change in the root over ``base_tables``: the hashes of the entries
    they set, minus those of the entries they replace (an empty entry hashes to nothing)."""
    removed: list[tuple] = []
    added: list[tuple] = []
    for (tag, table), (_, base_table) in zip(tables, base_tables, strict=True):
        wide = tag == "b"  # a balance is keyed by (account, token), its entry is flat
        for key, new in table.items():
            old = base_table.get(key)
            if old != new:
                if old:
                    removed.append((tag, *key, old) if wide else (tag, key, old))
                if new:
                    added.append((tag, *key, new) if wide else (tag, key, new))
    return sum(map(entry_hash, added)) - sum(map(entry_hash, removed))


def check_chain_and_sender(changes: Changes, tx: Tx) -> None:
    """The first rules of every tx (the mempool checks them too): it is for this chain
    and its sender is registered. Raises TxRejected."""
    chain_id = tx.chain_id
    ensure(chain_id == changes.base.chain_id, Reason.WRONG_CHAIN, "tx is for chain {!r}", chain_id)
    sender = tx.sender
    ensure(
        changes.bank_of(sender) is not None,
        Reason.SENDER_NOT_REGISTERED,
        "sender {} is not registered",
        sender,
    )


def apply_tx(changes: Changes, tx: Tx) -> None:
    """Apply one transaction whose signature was already checked.

    Every rule is checked before anything is written, so a TxRejected leaves ``changes``
    exactly as it was.
    """
    check_chain_and_sender(changes, tx)
    expected = changes.nonce(tx.sender)
    ensure(tx.nonce == expected, Reason.BAD_NONCE, "expected nonce {}, got {}", expected, tx.nonce)
    _RULES[tx.kind](changes, tx)
    changes._root_memo = None
    changes.block_hash = None
    changes.nonces[tx.sender] = expected + 1


def _register(changes: Changes, tx: Tx) -> None:
    bank = changes.base.banks.get(tx.sender)
    ensure(bank is not None, Reason.NOT_A_BANK, "only a bank's issuer account can register")
    ensure(changes.bank_of(tx.to) is None, Reason.ALREADY_REGISTERED, "account already registered")
    changes.accounts[tx.to] = bank  # type: ignore[assignment]


def _mint(changes: Changes, tx: Tx) -> None:
    token = _token(changes, tx.token)
    ensure(
        tx.sender == token.issuer,
        Reason.NOT_ISSUER,
        "only {} can mint {}",
        token.bank,
        token.symbol,
    )
    _require_registered(changes, tx.to)
    outstanding = changes.supply_of(tx.token)
    # The outstanding supply is the sum of every balance of the token, so capping it caps
    # every balance and sum too: no amount outgrows the 64-bit integers of the canonical
    # encoding (entries, txs, the store). What a burn redeems can be issued again.
    ensure(
        outstanding + tx.amount <= MAX_AMOUNT,
        Reason.BAD_AMOUNT,
        "{} outstanding supply would pass {}",
        tx.token,
        MAX_AMOUNT,
    )
    changes.balances[(tx.to, tx.token)] = changes.balance(tx.to, tx.token) + tx.amount
    changes.supply[tx.token] = outstanding + tx.amount


def _burn(changes: Changes, tx: Tx) -> None:
    _token(changes, tx.token)
    _debit_sender(changes, tx, "burns")
    changes.supply[tx.token] = changes.supply_of(tx.token) - tx.amount


def _transfer(changes: Changes, tx: Tx) -> None:
    _token(changes, tx.token)
    _require_registered(changes, tx.to)
    _debit_sender(changes, tx, "sends")
    changes.balances[(tx.to, tx.token)] = changes.balance(tx.to, tx.token) + tx.amount


def _debit_sender(changes: Changes, tx: Tx, verb: str) -> None:
    """The last rule of a burn or a transfer (the sender holds the amount), then its debit."""
    held = changes.balance(tx.sender, tx.token)
    ensure(
        held >= tx.amount,
        Reason.INSUFFICIENT_FUNDS,
        "holds {} {}, {} {}",
        held,
        tx.token,
        verb,
        tx.amount,
    )
    changes.balances[(tx.sender, tx.token)] = held - tx.amount


def _token(changes: Changes, symbol: str) -> Token:
    token = changes.base.tokens.get(symbol)
    ensure(token is not None, Reason.UNKNOWN_TOKEN, "no token {!r} on this network", symbol)
    return token  # type: ignore[return-value]


def _require_registered(changes: Changes, account: bytes) -> None:
    ensure(
        changes.bank_of(account) is not None,
        Reason.RECIPIENT_NOT_REGISTERED,
        "recipient {} is not registered",
        account,
    )


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
    """THE answer to "is this block valid for the ledger?": its structure, its header
    against the parent, every tx, and the state root they lead to. Raises InvalidBlock;
    ``state`` is never modified, and the returned changes are bound to ``block`` so that
    they, and only they, can commit it.

    ``verified`` holds tx ids whose signatures this node has already checked (mempool),
    so each signature is verified once per node. Rules that need a clock (how far ahead
    of local time a proposal may be dated) are not ledger rules: the consensus app that
    holds the clock applies them.
    """
    header = block.header
    check_structure(block)
    validate_header(state, header)
    changes = apply_txs(state, block.txs, verified)
    ensure(
        changes.root_acc() == int.from_bytes(header.state_root, "big"),
        InvalidBlock,
        "state root does not match re-execution",
    )
    changes.block_hash = block.hash
    return changes


def validate_header(state: State, header: Header) -> None:
    """The header rules that depend on the parent (the state's tip). Raises InvalidBlock."""
    ensure(
        header.chain_id == state.chain_id, InvalidBlock, "block is for chain {!r}", header.chain_id
    )
    ensure(
        header.height == state.height + 1,
        InvalidBlock,
        "block height {}, expected {}",
        header.height,
        state.height + 1,
    )
    ensure(
        header.prev_hash == state.last_hash, InvalidBlock, "block does not extend this node's head"
    )
    ensure(
        header.time_ms > state.last_time_ms, InvalidBlock, "block time is not after its parent's"
    )


def apply_txs(state: State, txs: Iterable[Tx], verified: Container[bytes] = ()) -> Changes:
    """Check and apply a block's txs in order on a fresh overlay of ``state``: one tx that
    breaks a rule makes the whole block invalid. Raises InvalidBlock naming that tx."""
    changes = Changes(state)
    for position, tx in enumerate(txs):
        try:
            check_tx(changes, tx, verified)
        except TxRejected as exc:
            raise InvalidBlock(f"tx {position} ({tx.tx_id.hex()[:16]}…) rejected: {exc}") from None
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
    block times stay strictly increasing. The header and txs satisfy ``execute_block`` by
    construction and ``check_structure`` checks what the caller supplied (``last_cert``),
    so the changes are bound to the block without executing it again.
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
    block = Block(header, tuple(included), last_cert)
    check_structure(block)
    changes.block_hash = block.hash
    return Built(block, changes, tuple(rejected))
