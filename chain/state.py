"""The ledger's rules: apply a transaction or a block to the ledger's state. No I/O.

``State`` is the committed state (mirrored from the store). Execution never touches it
directly: it writes into a ``Changes`` overlay, so a block can be executed to check its
state root before the node votes for it, and thrown away if the block is not committed.
``State.commit(changes)`` folds an overlay in, and the store writes the same overlay in
one batch, so memory and disk change together.

Rules that depend on time read the block's time (``Changes.time_ms``): the header's
``time_ms``, which every validator executes the block at, so they all agree.

The state root is an incremental multiset hash: the sum, modulo 2**256, of the sha256 of
every non-empty entry (balance, nonce, registration, outstanding supply, contract, offer,
compliance hold). A block changes
a few entries, so its root costs a few hashes per changed entry instead of a pass over all
accounts.
It lets replicas prove they hold the same state; it is not meant as a proof system for
light clients (there are no inclusion proofs). The committed state keeps each entry's hash,
so an entry a block replaces is subtracted without being hashed again: a transfer then
hashes only the three entries it writes (two balances and a nonce).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, replace
from itertools import repeat

import msgpack

from chain.block import (
    Block,
    CommitCertificate,
    Header,
    cert_hash,
    check_structure,
    evidence_hash,
    tx_root,
)
from chain.errors import InvalidBlock, Reason, TxRejected, ensure, present, rejected
from chain.escrow import Contract, Offer, OfferStatus, Settlement
from chain.genesis import Genesis, Token
from chain.tx import (
    MAX_AMOUNT,
    MAX_TIME_MS,
    ContractTerms,
    Ref,
    Tx,
    TxKind,
    verify_signature,
)

ROOT_MODULUS = 2**256

# The same bytes as msgpack.packb, without building a Packer per call.
_pack = msgpack.Packer(use_bin_type=True).pack
_sha256 = hashlib.sha256


def _hash_all(entries: Iterable[tuple]) -> list[int]:
    """The hash each state entry adds to the root: the sha256 of its msgpack bytes, as a
    big-endian integer. One comprehension, without a Python call per entry: a block
    hashes thousands of them (it measured faster than chaining ``map`` over each step)."""
    pack, sha256, from_bytes = _pack, _sha256, int.from_bytes
    return [from_bytes(sha256(pack(entry)).digest(), "big") for entry in entries]


class State:
    """Committed balances, nonces, registrations, supply, contracts, offers and holds,
    plus the chain's tip."""

    def __init__(self, genesis: Genesis) -> None:
        self.chain_id = genesis.chain_id
        self.tokens: dict[str, Token] = genesis.tokens
        self.banks: dict[bytes, str] = {b.issuer: b.name for b in genesis.banks}
        self.balances: dict[tuple[bytes, str], int] = {}
        self.nonces: dict[bytes, int] = {}
        self.accounts: dict[bytes, str] = {}
        self.supply: dict[str, int] = {}  # token -> outstanding: minted minus burned
        self.contracts: dict[bytes, Contract] = {}  # id (the opening tx's id) -> contract
        self.offers: dict[bytes, Offer] = {}  # id (the offering tx's id) -> offer
        self.frozen: dict[bytes, bool] = {}  # accounts under a compliance hold -> True
        self.height = 0
        self.last_hash = bytes(32)
        self.last_time_ms = genesis.genesis_time_ms
        self.root_acc = 0
        # Per table tag, the hash of each entry: what a block subtracts when it replaces one.
        self.hashes: dict[str, dict] = {tag: {} for tag, _ in _tables(self)}
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
        contracts: dict[bytes, Contract],
        offers: dict[bytes, Offer],
        frozen: dict[bytes, bool],
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
        state.contracts = dict(contracts)
        state.offers = dict(offers)
        state.frozen = dict(frozen)
        state.height = height
        state.last_hash = last_hash
        state.last_time_ms = last_time_ms
        state.hashes = {tag: _hashed(tag, table) for tag, table in _tables(state)}
        state.root_acc = (
            sum(sum(hashes.values()) for hashes in state.hashes.values()) % ROOT_MODULUS
        )
        return state

    @property
    def state_root(self) -> bytes:
        return self.root_acc.to_bytes(32, "big")

    def computed_root_acc(self) -> int:
        """The root accumulator from scratch over every entry: what the incremental root
        maintained by ``commit`` must always equal. Costs one hash per entry."""
        total = sum(sum(_hashed(tag, table).values()) for tag, table in _tables(self))
        return total % ROOT_MODULUS

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
        """Fold changes in, with the hashes of their entries (computed with their root); a
        value that empties its entry (a balance or a supply at zero, a hold lifted) leaves
        no entry."""
        entry_hashes = changes.entry_hashes()
        for (tag, table), (_, written) in zip(_tables(self), _tables(changes), strict=True):
            if written:
                hashes = self.hashes[tag]
                written_hashes, emptied = entry_hashes[tag]
                table.update(written)
                hashes.update(written_hashes)
                for key in emptied:
                    del table[key]
                    hashes.pop(key, None)


class Changes:
    """Writes of a block in progress, read through to the committed state beneath.

    Only ``apply_tx`` writes into a Changes (``State.__init__`` builds the opening one).
    ``block_hash`` is set by ``execute_block`` and ``build_block`` once every rule of that
    block held, and cleared by any later write: committing asks for it, so only the
    checked execution of a block can be committed as that block.

    ``time_ms`` is the block time the rules apply at (see the property).
    ``valid_before_ms`` is the earliest deadline a tx applied here met (an expiry, a due
    time): from that time on, some of them would be refused, so a pool that keeps txs
    applied on an overlay must check them again.
    """

    def __init__(self, base: State, time_ms: int | None = None) -> None:
        self.base = base
        self.base_height = base.height
        self._time_ms = time_ms
        self.valid_before_ms = MAX_TIME_MS
        self.block_hash: bytes | None = None
        self.balances: dict[tuple[bytes, str], int] = {}
        self.nonces: dict[bytes, int] = {}
        self.accounts: dict[bytes, str] = {}
        self.supply: dict[str, int] = {}
        self.contracts: dict[bytes, Contract] = {}
        self.offers: dict[bytes, Offer] = {}
        self.frozen: dict[bytes, bool] = {}  # False: a hold lifted in these changes
        # root_acc() and the entry hashes it computed, until the next apply_tx
        self._root_memo: tuple[int, dict[str, tuple[dict, list]]] | None = None

    @property
    def time_ms(self) -> int:
        """The block time the rules apply at: the block's own when executing or building
        one. Without one (a mempool's overlay), the earliest time the next block on the
        committed state can carry, which moves on as blocks commit: a pool then admits a
        tx only if it would apply in that block, so every node judges a tx by the same
        committed block time, never by its own clock. A deadline passed in the meantime
        is what ``valid_before_ms`` tells the pool about."""
        time_ms = self._time_ms
        return self.base.last_time_ms + 1 if time_ms is None else time_ms

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
        burned, which is also the sum of every balance of it plus what contracts and
        offers lock of it."""
        value = self.supply.get(token)
        return self.base.supply.get(token, 0) if value is None else value

    def contract(self, contract_id: bytes) -> Contract | None:
        return self.contracts.get(contract_id) or self.base.contracts.get(contract_id)

    def offer(self, offer_id: bytes) -> Offer | None:
        return self.offers.get(offer_id) or self.base.offers.get(offer_id)

    def is_frozen(self, account: bytes) -> bool:
        value = self.frozen.get(account)
        return self.base.frozen.get(account, False) if value is None else value

    def root_acc(self) -> int:
        """The state root after these changes, from the base root and the changed entries.

        A block's root is asked for by the proposer (build_block), by every validator
        (execute_block), then by ``State.commit``; it costs a few hashes per
        changed entry, so it is remembered until ``apply_tx`` writes again.
        """
        if self._root_memo is None:
            base = self.base
            acc = base.root_acc
            hashes: dict[str, tuple[dict, list]] = {}
            for tag, table in _tables(self):
                if table:
                    replaced = base.hashes[tag]
                    written = _hashed(tag, table)
                    acc += sum(written.values()) - sum(map(replaced.get, table, repeat(0)))
                    emptied = (
                        [k for k in table if k not in written] if len(written) < len(table) else []
                    )
                    hashes[tag] = (written, emptied)
            self._root_memo = (acc % ROOT_MODULUS, hashes)
        return self._root_memo[0]

    def entry_hashes(self) -> dict[str, tuple[dict, list]]:
        """Per tag of a table these changes write: the hash of each entry they write, and
        the keys they leave without an entry (what committing them removes)."""
        self.root_acc()
        assert self._root_memo is not None
        return self._root_memo[1]


# The state's tables: the attribute holding each one in State and Changes, and the tag its
# entries carry in the root.
TABLES = {
    "balances": "b",
    "nonces": "n",
    "accounts": "a",
    "supply": "s",
    "contracts": "c",
    "offers": "o",
    "frozen": "f",
}


def _tables(holder: State | Changes) -> tuple[tuple[str, dict], ...]:
    """The state's tables, each with the tag its entries carry in the root."""
    return tuple((tag, getattr(holder, name)) for name, tag in TABLES.items())


def _hashed(tag: str, table: dict) -> dict:
    """The hash of each entry of a table, by key. An empty value (a zero balance, a hold
    lifted) has no entry. Each entry is a tag, the key and the value, as plain msgpack
    values; they are made one at a time as they are hashed, so that a block's thousands
    of them never live at once (the garbage collector would then walk them)."""
    if not all(table.values()):
        table = {key: value for key, value in table.items() if value}
    if tag == "b":  # a balance is keyed by (account, token), its entry is flat
        entries = (("b", account, token, v) for (account, token), v in table.items())
    elif tag in "co":  # a contract or an offer enters as its plain values
        entries = ((tag, key, record.to_list()) for key, record in table.items())
    else:
        entries = ((tag, key, value) for key, value in table.items())
    return dict(zip(table, _hash_all(entries), strict=True))


def check_chain_and_sender(changes: Changes, tx: Tx) -> None:
    """The first rules of every tx (the mempool checks them too): it is for this chain
    and its sender is registered. Raises TxRejected."""
    base, sender = changes.base, tx.sender
    if tx.chain_id != base.chain_id:
        raise rejected(Reason.WRONG_CHAIN, "tx is for chain {!r}", tx.chain_id)
    if (changes.accounts.get(sender) or base.accounts.get(sender)) is None:  # bank_of
        raise rejected(Reason.SENDER_NOT_REGISTERED, "sender {} is not registered", sender)


def apply_tx(changes: Changes, tx: Tx) -> None:
    """Apply one transaction whose signature was already checked.

    Every rule is checked before anything is written, so a TxRejected leaves ``changes``
    exactly as it was.
    """
    check_chain_and_sender(changes, tx)
    sender = tx.sender
    expected = changes.nonces.get(sender)  # changes.nonce(sender), without the call
    if expected is None:
        expected = changes.base.nonces.get(sender, 0)
    if tx.nonce != expected:
        raise rejected(Reason.BAD_NONCE, "expected nonce {}, got {}", expected, tx.nonce)
    _RULES[tx.kind](changes, tx)
    changes._root_memo = None
    changes.block_hash = None
    changes.nonces[sender] = expected + 1


def _register(changes: Changes, tx: Tx) -> None:
    bank = present(
        changes.base.banks.get(tx.sender),
        Reason.NOT_A_BANK,
        "only a bank's issuer account can register",
    )
    ensure(changes.bank_of(tx.to) is None, Reason.ALREADY_REGISTERED, "account already registered")
    changes.accounts[tx.to] = bank


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
    _require_unfrozen(changes, tx.to)
    outstanding = changes.supply_of(tx.token)
    # The outstanding supply is the sum of every balance of the token and of what is
    # locked of it, so capping it caps every balance, lock and sum too: no amount outgrows
    # the 64-bit integers of the canonical encoding (entries, txs, the store). What a burn
    # redeems can be issued again.
    ensure(
        outstanding + tx.amount <= MAX_AMOUNT,
        Reason.BAD_AMOUNT,
        "{} outstanding supply would pass {}",
        tx.token,
        MAX_AMOUNT,
    )
    _credit(changes, tx.to, tx.token, tx.amount)
    changes.supply[tx.token] = outstanding + tx.amount


def _burn(changes: Changes, tx: Tx) -> None:
    _token(changes, tx.token)
    _require_unfrozen(changes, tx.sender)
    _debit_sender(changes, tx, "burns")
    changes.supply[tx.token] = changes.supply_of(tx.token) - tx.amount


def _transfer(changes: Changes, tx: Tx) -> None:
    """The commonest tx, so its rules call as few functions as they can: each check is
    inline and calls its shared rule only to raise that rule's error."""
    base, to = changes.base, tx.to
    if tx.token not in base.tokens:
        _token(changes, tx.token)
    if (changes.accounts.get(to) or base.accounts.get(to)) is None:  # bank_of
        _require_registered(changes, to)
    if changes.frozen or base.frozen:
        _require_unfrozen(changes, tx.sender, to)
    _debit_sender(changes, tx, "sends")
    _credit(changes, to, tx.token, tx.amount)


# -- compliance holds -----------------------------------------------------------------------


def _freeze(changes: Changes, tx: Tx) -> None:
    _require_registering_bank(changes, tx)
    ensure(not changes.is_frozen(tx.to), Reason.ALREADY_FROZEN, "{} is already frozen", tx.to)
    changes.frozen[tx.to] = True


def _unfreeze(changes: Changes, tx: Tx) -> None:
    _require_registering_bank(changes, tx)
    ensure(changes.is_frozen(tx.to), Reason.NOT_FROZEN, "{} is not frozen", tx.to)
    changes.frozen[tx.to] = False


def _require_registering_bank(changes: Changes, tx: Tx) -> None:
    """A hold is the decision of the bank that admitted the account (its KYC, its AML)."""
    bank = changes.base.banks.get(tx.sender)
    ensure(bank is not None, Reason.NOT_A_BANK, "only a bank's issuer account can hold accounts")
    _require_registered(changes, tx.to)
    registrar = changes.bank_of(tx.to)
    ensure(
        registrar == bank,
        Reason.NOT_REGISTERING_BANK,
        "{} was registered by {}, not {}",
        tx.to,
        registrar,
        bank,
    )


# -- contracts: milestone escrow ------------------------------------------------------------


def _contract_open(changes: Changes, tx: Tx) -> None:
    terms = tx.contract_terms
    _token(changes, tx.token)
    _require_registered(changes, tx.to)
    ensure(
        changes.bank_of(terms.approver) is not None,
        Reason.APPROVER_NOT_REGISTERED,
        "approver {} is not registered",
        terms.approver,
    )
    _require_unfrozen(changes, tx.sender, tx.to)
    deadline = min(_deadlines(terms))
    ensure(
        changes.time_ms < deadline,
        Reason.BAD_EXPIRY,
        "the contract (or a milestone) is due at {}, not after the block time {}",
        deadline,
        changes.time_ms,
    )
    _debit_sender(changes, tx, "locks")
    contract = Contract(
        buyer=tx.sender,
        supplier=tx.to,
        approver=terms.approver,
        token=tx.token,
        expiry_ms=terms.expiry_ms,
        terms_hash=terms.terms_hash,
        milestones=terms.milestones,
        settled=(Settlement.LOCKED,) * len(terms.milestones),
    )
    changes.contracts[tx.tx_id] = contract
    _met_deadline(changes, deadline)


def _contract_release(changes: Changes, tx: Tx) -> None:
    ref = tx.ref
    contract = _contract(changes, ref)
    ensure(
        tx.sender == contract.approver,
        Reason.NOT_APPROVER,
        "only the approver {} releases milestones",
        contract.approver,
    )
    position = present(
        contract.index(ref.milestone), Reason.UNKNOWN_MILESTONE, "no milestone {!r}", ref.milestone
    )
    settled = contract.settled[position]
    ensure(
        settled is not Settlement.RELEASED,
        Reason.MILESTONE_RELEASED,
        "milestone {!r} was already released",
        ref.milestone,
    )
    ensure(
        settled is Settlement.LOCKED,
        Reason.CONTRACT_CLOSED,
        "the contract was refunded to the buyer",
    )
    now = changes.time_ms
    ensure(
        now < contract.expiry_ms,
        Reason.CONTRACT_EXPIRED,
        "the contract expired at {} (block time {})",
        contract.expiry_ms,
        now,
    )
    milestone = contract.milestones[position]
    ensure(
        not milestone.due_ms or now < milestone.due_ms,
        Reason.MILESTONE_OVERDUE,
        "milestone {!r} was due by {} (block time {})",
        milestone.name,
        milestone.due_ms,
        now,
    )
    _require_unfrozen(changes, contract.supplier)
    _credit(changes, contract.supplier, contract.token, milestone.amount)
    changes.contracts[ref.id] = contract.settle([position], Settlement.RELEASED)
    _met_deadline(changes, min(contract.expiry_ms, milestone.due_ms or MAX_TIME_MS))


def _contract_refund(changes: Changes, tx: Tx) -> None:
    ref = tx.ref
    contract = _open_contract(changes, ref)
    ensure(tx.sender == contract.buyer, Reason.NOT_BUYER, "only the buyer takes a refund")
    ensure(
        changes.time_ms >= contract.expiry_ms,
        Reason.CONTRACT_NOT_EXPIRED,
        "the contract expires at {} (block time {})",
        contract.expiry_ms,
        changes.time_ms,
    )
    _refund_the_rest(changes, ref, contract)


def _contract_cancel(changes: Changes, tx: Tx) -> None:
    ref = tx.ref
    contract = _open_contract(changes, ref)
    ensure(tx.sender == contract.supplier, Reason.NOT_SUPPLIER, "only the supplier cancels")
    _refund_the_rest(changes, ref, contract)


def _refund_the_rest(changes: Changes, ref: Ref, contract: Contract) -> None:
    """The last rule of a refund or a cancel (a hold keeps the buyer from being paid),
    then every milestone still locked goes back to the buyer."""
    _require_unfrozen(changes, contract.buyer)
    _credit(changes, contract.buyer, contract.token, contract.locked)
    locked = [i for i, s in enumerate(contract.settled) if s is Settlement.LOCKED]
    changes.contracts[ref.id] = contract.settle(locked, Settlement.REFUNDED)


def _contract(changes: Changes, ref: Ref) -> Contract:
    return present(changes.contract(ref.id), Reason.UNKNOWN_CONTRACT, "no contract {}", ref.id)


def _open_contract(changes: Changes, ref: Ref) -> Contract:
    contract = _contract(changes, ref)
    ensure(contract.is_open, Reason.CONTRACT_CLOSED, "the contract has nothing locked any more")
    return contract


def _deadlines(terms: ContractTerms) -> list[int]:
    return [terms.expiry_ms, *(m.due_ms for m in terms.milestones if m.due_ms)]


# -- swaps: payment versus payment ----------------------------------------------------------


def _swap_offer(changes: Changes, tx: Tx) -> None:
    terms = tx.swap_terms
    _token(changes, tx.token)
    _token(changes, terms.ask_token)
    if tx.to:
        _require_registered(changes, tx.to)
    _require_unfrozen(changes, tx.sender)
    ensure(
        changes.time_ms < terms.expiry_ms,
        Reason.BAD_EXPIRY,
        "the offer expires at {}, not after the block time {}",
        terms.expiry_ms,
        changes.time_ms,
    )
    _debit_sender(changes, tx, "offers")
    changes.offers[tx.tx_id] = Offer(
        maker=tx.sender,
        counterparty=tx.to,
        token=tx.token,
        amount=tx.amount,
        ask_token=terms.ask_token,
        ask_amount=terms.ask_amount,
        expiry_ms=terms.expiry_ms,
    )
    _met_deadline(changes, terms.expiry_ms)


def _swap_accept(changes: Changes, tx: Tx) -> None:
    ref = tx.ref
    offer = _open_offer(changes, ref)
    taker = tx.sender
    ensure(
        not offer.counterparty or taker == offer.counterparty,
        Reason.NOT_COUNTERPARTY,
        "the offer is for {} only",
        offer.counterparty,
    )
    ensure(
        changes.time_ms < offer.expiry_ms,
        Reason.OFFER_EXPIRED,
        "the offer expired at {} (block time {})",
        offer.expiry_ms,
        changes.time_ms,
    )
    _require_unfrozen(changes, taker, offer.maker)
    held = changes.balance(taker, offer.ask_token)
    ensure(
        held >= offer.ask_amount,
        Reason.INSUFFICIENT_FUNDS,
        "holds {} {}, the offer asks {}",
        held,
        offer.ask_token,
        offer.ask_amount,
    )
    # Both legs in one tx: the taker's payment and the maker's locked amount move together.
    changes.balances[(taker, offer.ask_token)] = held - offer.ask_amount
    _credit(changes, offer.maker, offer.ask_token, offer.ask_amount)
    _credit(changes, taker, offer.token, offer.amount)
    changes.offers[ref.id] = replace(offer, status=OfferStatus.TAKEN, taker=taker)
    _met_deadline(changes, offer.expiry_ms)


def _swap_cancel(changes: Changes, tx: Tx) -> None:
    ref = tx.ref
    offer = _open_offer(changes, ref)
    ensure(
        tx.sender == offer.maker or changes.time_ms >= offer.expiry_ms,
        Reason.NOT_OFFERER,
        "only the maker cancels before the expiry at {} (block time {})",
        offer.expiry_ms,
        changes.time_ms,
    )
    _require_unfrozen(changes, offer.maker)
    _credit(changes, offer.maker, offer.token, offer.amount)
    changes.offers[ref.id] = replace(offer, status=OfferStatus.CANCELLED)


def _open_offer(changes: Changes, ref: Ref) -> Offer:
    offer = present(changes.offer(ref.id), Reason.UNKNOWN_OFFER, "no offer {}", ref.id)
    ensure(offer.status is not OfferStatus.TAKEN, Reason.OFFER_TAKEN, "the offer was already taken")
    ensure(offer.status is OfferStatus.OPEN, Reason.OFFER_CANCELLED, "the offer was cancelled")
    return offer


# -- shared rules and writes ----------------------------------------------------------------


def _debit_sender(changes: Changes, tx: Tx, verb: str) -> None:
    """The last rule of a tx that spends (the sender holds the amount), then its debit.
    Like ``_credit``, it reads the balance as ``Changes.balance`` does, without the call:
    every payment runs both."""
    key = (tx.sender, tx.token)
    held = changes.balances.get(key)
    if held is None:
        held = changes.base.balances.get(key, 0)
    if held < tx.amount:
        raise rejected(
            Reason.INSUFFICIENT_FUNDS, "holds {} {}, {} {}", held, tx.token, verb, tx.amount
        )
    changes.balances[key] = held - tx.amount


def _credit(changes: Changes, account: bytes, token: str, amount: int) -> None:
    key = (account, token)
    held = changes.balances.get(key)
    if held is None:
        held = changes.base.balances.get(key, 0)
    changes.balances[key] = held + amount


def _met_deadline(changes: Changes, deadline: int) -> None:
    """Note that a tx just applied relied on the block time being before ``deadline``."""
    if deadline < changes.valid_before_ms:
        changes.valid_before_ms = deadline


def _token(changes: Changes, symbol: str) -> Token:
    token = changes.base.tokens.get(symbol)
    if token is None:
        raise rejected(Reason.UNKNOWN_TOKEN, "no token {!r} on this network", symbol)
    return token


def _require_registered(changes: Changes, account: bytes) -> None:
    if changes.bank_of(account) is None:
        raise rejected(Reason.RECIPIENT_NOT_REGISTERED, "recipient {} is not registered", account)


def _require_unfrozen(changes: Changes, *accounts: bytes) -> None:
    """A frozen account neither sends nor receives, by any kind of tx. Checked in the
    order given; while no account is under a hold (the common case) one test answers."""
    if changes.frozen or changes.base.frozen:
        for account in accounts:
            if changes.is_frozen(account):
                raise rejected(Reason.ACCOUNT_FROZEN, "{} is frozen by its bank", account)


_RULES: dict[TxKind, Callable[[Changes, Tx], None]] = {
    TxKind.REGISTER: _register,
    TxKind.MINT: _mint,
    TxKind.BURN: _burn,
    TxKind.TRANSFER: _transfer,
    TxKind.CONTRACT_OPEN: _contract_open,
    TxKind.CONTRACT_RELEASE: _contract_release,
    TxKind.CONTRACT_REFUND: _contract_refund,
    TxKind.CONTRACT_CANCEL: _contract_cancel,
    TxKind.SWAP_OFFER: _swap_offer,
    TxKind.SWAP_ACCEPT: _swap_accept,
    TxKind.SWAP_CANCEL: _swap_cancel,
    TxKind.FREEZE: _freeze,
    TxKind.UNFREEZE: _unfreeze,
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
    changes = apply_txs(state, block.txs, verified, time_ms=header.time_ms)
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


def apply_txs(
    state: State, txs: Iterable[Tx], verified: Container[bytes] = (), *, time_ms: int
) -> Changes:
    """Check and apply a block's txs in order, at the block's time, on a fresh overlay of
    ``state``: one tx that breaks a rule makes the whole block invalid. Raises
    InvalidBlock naming that tx."""
    changes = Changes(state, time_ms)
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
    evidence: Sequence[bytes] = (),
) -> Built:
    """Assemble the next block from candidates in order, skipping any that no longer apply.

    The time is raised to just after the parent's if the proposer's clock is behind, so
    block times stay strictly increasing. The header and txs satisfy ``execute_block`` by
    construction and ``check_structure`` checks what the caller supplied (``last_cert``
    and ``evidence``, which the consensus app chose and checked), so the changes are bound
    to the block without executing it again.
    """
    time_ms = max(time_ms, state.last_time_ms + 1)
    changes = Changes(state, time_ms)
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
        time_ms=time_ms,
        tx_root=tx_root(included),
        state_root=changes.root_acc().to_bytes(32, "big"),
        last_cert_hash=cert_hash(last_cert),
        evidence_hash=evidence_hash(evidence),
    )
    block = Block(header, tuple(included), last_cert, tuple(evidence))
    check_structure(block)
    changes.block_hash = block.hash
    return Built(block, changes, tuple(rejected))
