"""Programmable payments, rule by rule: milestone contracts in escrow, PvP swap offers and
compliance holds, each accepted and refused with the Reason that names the rule.

Every refusal goes through ``Book.refused`` / ``rejection``, which also asserts that the
refused tx changed nothing, the state root included. Time is block time: ``Book.at``
moves the block time the rules read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest

from chain.errors import InvalidBlock, Reason, TxRejected
from chain.escrow import OfferStatus, Settlement
from chain.state import State, build_block, execute_block
from chain.store import Store
from chain.tx import ARGS_KINDS, Ref, SwapTerms, TxKind, decode_tx
from tests.ledger_helpers import (
    CHAIN_ID,
    EXPIRY,
    SGD,
    T0,
    USD,
    Book,
    build_next,
    certificate_for,
    commit,
    contract_terms,
    key,
    make_genesis,
    pub,
    rejection,
    view,
)

OPEN, RELEASE, REFUND, CANCEL = (
    TxKind.CONTRACT_OPEN,
    TxKind.CONTRACT_RELEASE,
    TxKind.CONTRACT_REFUND,
    TxKind.CONTRACT_CANCEL,
)
OFFER, ACCEPT, SWAP_CANCEL = TxKind.SWAP_OFFER, TxKind.SWAP_ACCEPT, TxKind.SWAP_CANCEL
FREEZE, UNFREEZE, TRANSFER, MINT, BURN = (
    TxKind.FREEZE,
    TxKind.UNFREEZE,
    TxKind.TRANSFER,
    TxKind.MINT,
    TxKind.BURN,
)


def locked(book: Book, token: str) -> int:
    """What open contracts and offers lock of ``token``."""
    changes = book.changes
    contracts = {**changes.base.contracts, **changes.contracts}
    offers = {**changes.base.offers, **changes.offers}
    return sum(c.locked for c in contracts.values() if c.token == token) + sum(
        o.locked for o in offers.values() if o.token == token
    )


def conserved(book: Book) -> bool:
    """Per token: balances + what is locked == outstanding supply."""
    view_balances = {**book.changes.base.balances, **book.changes.balances}
    return all(
        sum(v for (_, t), v in view_balances.items() if t == token) + locked(book, token)
        == book.changes.supply_of(token)
        for token in (USD, SGD)
    )


# -- contracts ------------------------------------------------------------------------------


def test_opening_a_contract_locks_its_total_under_the_opening_tx_id() -> None:
    book = Book()
    contract_id = book.open_contract()
    contract = book.changes.contract(contract_id)
    assert contract is not None
    assert (contract.buyer, contract.supplier, contract.approver) == (
        pub("alice"),
        pub("bob"),
        pub("carol"),
    )
    assert contract.locked == 1_000 and contract.settled == (Settlement.LOCKED,) * 2
    assert book.balance("alice", USD) == 99_000
    assert book.changes.supply_of(USD) == 101_000  # locked money is still outstanding
    assert conserved(book)


def test_the_approver_releases_milestone_by_milestone_to_the_supplier() -> None:
    book = Book()
    contract_id = book.open_contract()
    book.do("carol", RELEASE, args=Ref(contract_id, "shipment"))
    assert book.balance("bob", USD) == 1_000 + 300
    assert book.changes.contract(contract_id).locked == 700
    book.do("carol", RELEASE, args=Ref(contract_id, "delivery"))
    contract = book.changes.contract(contract_id)
    assert book.balance("bob", USD) == 1_000 + 1_000
    assert contract.locked == 0 and not contract.is_open
    assert contract.total(Settlement.RELEASED) == 1_000
    assert conserved(book)


def test_the_buyer_can_be_its_own_approver() -> None:
    book = Book()
    contract_id = book.open_contract(terms=contract_terms("alice"))
    book.do("alice", RELEASE, args=Ref(contract_id, "delivery"))
    assert book.balance("bob", USD) == 1_700


def test_after_the_expiry_the_buyer_takes_back_only_what_was_never_released() -> None:
    book = Book()
    contract_id = book.open_contract()
    book.do("carol", RELEASE, args=Ref(contract_id, "shipment"))
    assert rejection(book.changes, book.on("alice", REFUND, contract_id)) is (
        Reason.CONTRACT_NOT_EXPIRED
    )
    book.at(EXPIRY)
    assert rejection(book.changes, book.on("carol", RELEASE, contract_id, "delivery")) is (
        Reason.CONTRACT_EXPIRED
    )
    book.do("alice", REFUND, args=Ref(contract_id))
    contract = book.changes.contract(contract_id)
    assert book.balance("alice", USD) == 100_000 - 300
    assert contract.settled == (Settlement.RELEASED, Settlement.REFUNDED)
    assert conserved(book)
    # release and refund never both happen to one amount
    assert rejection(book.changes, book.on("alice", REFUND, contract_id)) is Reason.CONTRACT_CLOSED


def test_the_supplier_may_cancel_at_any_time_refunding_the_buyer() -> None:
    book = Book()
    contract_id = book.open_contract()
    book.do("carol", RELEASE, args=Ref(contract_id, "shipment"))
    book.do("bob", CANCEL, args=Ref(contract_id))
    assert book.balance("alice", USD) == 100_000 - 300
    assert book.balance("bob", USD) == 1_300
    assert rejection(book.changes, book.on("carol", RELEASE, contract_id, "delivery")) is (
        Reason.CONTRACT_CLOSED
    )
    assert conserved(book)


def test_a_milestone_past_its_due_time_is_no_longer_released_but_refunded_at_expiry() -> None:
    book = Book()
    terms = contract_terms(due={"shipment": T0 + 1_000})
    contract_id = book.open_contract(terms=terms)
    book.at(T0 + 1_000)
    assert rejection(book.changes, book.on("carol", RELEASE, contract_id, "shipment")) is (
        Reason.MILESTONE_OVERDUE
    )
    book.do("carol", RELEASE, args=Ref(contract_id, "delivery"))  # due only by the expiry
    book.at(EXPIRY).do("alice", REFUND, args=Ref(contract_id))
    assert book.balance("alice", USD) == 100_000 - 700


# -- swaps ----------------------------------------------------------------------------------


def test_a_swap_settles_both_legs_in_one_tx() -> None:
    book = Book()
    offer_id = book.offer("bob", give=(SGD, 1_350), ask=(USD, 1_000), to="alice")
    assert book.balance("bob", SGD) == 50_000 - 1_350
    assert book.changes.offer(offer_id).locked == 1_350
    book.do("alice", ACCEPT, args=Ref(offer_id))
    assert book.balance("alice", USD) == 99_000
    assert book.balance("alice", SGD) == 1_350
    assert book.balance("bob", USD) == 2_000
    assert book.balance("bob", SGD) == 48_650
    offer = book.changes.offer(offer_id)
    assert (offer.status, offer.taker, offer.locked) == (OfferStatus.TAKEN, pub("alice"), 0)
    assert conserved(book)


def test_an_offer_to_anyone_is_settled_at_most_once() -> None:
    book = Book()
    book.do("alice", TRANSFER, to=pub("carol"), token=USD, amount=5_000)
    offer_id = book.offer("bob")
    book.do("carol", ACCEPT, args=Ref(offer_id))
    assert rejection(book.changes, book.on("alice", ACCEPT, offer_id)) is Reason.OFFER_TAKEN
    assert rejection(book.changes, book.on("bob", SWAP_CANCEL, offer_id)) is Reason.OFFER_TAKEN
    assert book.balance("carol", SGD) == 1_350
    assert conserved(book)


def test_the_maker_cancels_any_time_and_anyone_after_the_expiry() -> None:
    book = Book()
    first = book.offer("bob")
    book.do("bob", SWAP_CANCEL, args=Ref(first))
    assert book.balance("bob", SGD) == 50_000
    assert rejection(book.changes, book.on("alice", ACCEPT, first)) is Reason.OFFER_CANCELLED
    second = book.offer("bob")
    assert rejection(book.changes, book.on("alice", SWAP_CANCEL, second)) is Reason.NOT_OFFERER
    book.at(EXPIRY)
    assert rejection(book.changes, book.on("alice", ACCEPT, second)) is Reason.OFFER_EXPIRED
    book.do("alice", SWAP_CANCEL, args=Ref(second))  # funds go back to the maker
    assert book.balance("bob", SGD) == 50_000
    assert book.balance("alice", SGD) == 0
    assert conserved(book)


# -- compliance holds -----------------------------------------------------------------------


def test_a_frozen_account_neither_sends_nor_receives_until_unfrozen() -> None:
    book = Book()
    book.do("jpm-issuer", FREEZE, to=pub("alice"))
    assert book.changes.is_frozen(pub("alice"))
    refusals = [
        book.refused("alice", TRANSFER, to=pub("carol"), token=USD, amount=1),
        book.refused("alice", BURN, token=USD, amount=1),
        book.refused("bob", TRANSFER, to=pub("alice"), token=USD, amount=1),
        book.refused("jpm-issuer", MINT, to=pub("alice"), token=USD, amount=1),
        book.refused("alice", OPEN, to=pub("bob"), token=USD, amount=1_000, args=contract_terms()),
    ]
    assert refusals == [Reason.ACCOUNT_FROZEN] * len(refusals)
    book.do("jpm-issuer", UNFREEZE, to=pub("alice"))
    book.do("alice", TRANSFER, to=pub("carol"), token=USD, amount=1)
    assert book.balance("carol", USD) == 1


def test_locked_money_does_not_pay_out_to_a_frozen_account_until_unfrozen() -> None:
    book = Book()
    contract_id = book.open_contract()
    offer_id = book.offer("bob", to="alice")
    book.do("dbs-issuer", FREEZE, to=pub("bob"))
    assert rejection(book.changes, book.on("carol", RELEASE, contract_id, "shipment")) is (
        Reason.ACCOUNT_FROZEN
    )
    assert rejection(book.changes, book.on("alice", ACCEPT, offer_id)) is Reason.ACCOUNT_FROZEN
    assert rejection(book.changes, book.on("bob", SWAP_CANCEL, offer_id)) is (Reason.ACCOUNT_FROZEN)
    book.do("dbs-issuer", UNFREEZE, to=pub("bob"))
    book.do("carol", RELEASE, args=Ref(contract_id, "shipment"))
    assert book.balance("bob", USD) == 1_300


def test_a_lifted_hold_leaves_no_entry() -> None:
    book = Book()
    book.do("jpm-issuer", FREEZE, to=pub("carol"))
    assert view(book.changes)["frozen"] == {pub("carol"): True}
    book.do("jpm-issuer", UNFREEZE, to=pub("carol"))
    assert view(book.changes)["frozen"] == {}


# -- blocks and the store -------------------------------------------------------------------


def test_the_rules_read_the_block_time_so_every_validator_decides_alike() -> None:
    """An accept in a block dated before the expiry applies; a proposer dating its block
    at the expiry leaves it out; a block at the expiry that carries it is invalid."""
    book = Book()
    offer_id = book.offer()
    state = State(make_genesis())
    first = build_next(state, book.applied)
    state.commit(first.changes, first.block.header)
    accept = book.on("alice", ACCEPT, offer_id)
    proposal = {
        "round": 0,
        "proposer": pub("jpm-validator"),
        "max_txs": 10,
        "last_cert": certificate_for(1, first.block.hash),
    }
    early = build_block(state, [accept], time_ms=EXPIRY - 1, **proposal)
    assert early.block.txs == (accept,)
    assert execute_block(state, early.block).root_acc() == early.changes.root_acc()
    late = build_block(state, [accept], time_ms=EXPIRY, **proposal)
    assert late.block.txs == () and late.rejected[0][1].reason is Reason.OFFER_EXPIRED
    header = dataclasses.replace(early.block.header, time_ms=EXPIRY)
    with pytest.raises(InvalidBlock, match="offer_expired"):
        execute_block(state, dataclasses.replace(early.block, header=header))


def test_contracts_offers_and_holds_are_stored_in_the_block_batch_and_restored(
    tmp_path: Path,
) -> None:
    genesis = make_genesis()
    book = Book(genesis)
    contract_id = book.open_contract()
    offer_id = book.offer("bob", to="alice")
    release = book.do("carol", RELEASE, args=Ref(contract_id, "shipment"))
    book.do("jpm-issuer", FREEZE, to=pub("carol"))
    with Store.open(tmp_path / "db", genesis) as store:
        commit(store, book.applied[:2])
        commit(store, book.applied[2:])
        root, head = store.state.state_root, store.head
        contract = store.state.contracts[contract_id]
        assert view(store.state) == view(book.changes)
    with Store.open(tmp_path / "db", genesis) as store:
        assert store.state.state_root == root and store.head == head
        assert store.contract(contract_id) == contract == store.state.contracts[contract_id]
        assert contract.settled == (Settlement.RELEASED, Settlement.LOCKED)
        assert store.offer(offer_id) == store.state.offers[offer_id]
        assert store.contracts() == [(contract_id, contract)]
        assert [i for i, _ in store.offers()] == [offer_id]
        assert store.is_frozen(pub("carol")) and store.state.frozen == {pub("carol"): True}
        # the supplier's history shows the release that paid it, though it did not sign it
        supplier_txs = [tx.tx_id for tx, _ in store.txs_at(store.account_txs(pub("bob")))]
        assert supplier_txs == [release.tx_id, offer_id, contract_id]


# -- every new reason: the rule that gives it, and nothing changes ---------------------------


def _contract_then(signer: str, kind: TxKind, milestone: str = "", **kw) -> Callable:
    def scenario(book: Book) -> Reason:
        contract_id = book.open_contract(**kw)
        return rejection(book.changes, book.on(signer, kind, contract_id, milestone))

    return scenario


def _offer_then(signer: str, kind: TxKind, **kw) -> Callable:
    def scenario(book: Book) -> Reason:
        offer_id = book.offer(**kw)
        return rejection(book.changes, book.on(signer, kind, offer_id))

    return scenario


def _after(setup: Callable[[Book], object], then: Callable[[Book], Reason]) -> Callable:
    def scenario(book: Book) -> Reason:
        setup(book)
        return then(book)

    return scenario


def _frozen_release(book: Book) -> Reason:
    contract_id = book.open_contract()
    book.do("dbs-issuer", FREEZE, to=pub("bob"))
    return rejection(book.changes, book.on("carol", RELEASE, contract_id, "delivery"))


def _released_twice(book: Book) -> Reason:
    contract_id = book.open_contract()
    book.do("carol", RELEASE, args=Ref(contract_id, "delivery"))
    return rejection(book.changes, book.on("carol", RELEASE, contract_id, "delivery"))


def _expired_release(book: Book) -> Reason:
    contract_id = book.open_contract()
    book.at(EXPIRY)
    return rejection(book.changes, book.on("carol", RELEASE, contract_id, "delivery"))


def _overdue_release(book: Book) -> Reason:
    contract_id = book.open_contract(terms=contract_terms(due={"shipment": T0 + 5}))
    book.at(T0 + 5)
    return rejection(book.changes, book.on("carol", RELEASE, contract_id, "shipment"))


def _closed_refund(book: Book) -> Reason:
    contract_id = book.open_contract()
    book.do("bob", CANCEL, args=Ref(contract_id))
    return rejection(book.changes, book.on("bob", CANCEL, contract_id))


def _taken_offer(book: Book) -> Reason:
    offer_id = book.offer()
    book.do("alice", ACCEPT, args=Ref(offer_id))
    return rejection(book.changes, book.on("alice", ACCEPT, offer_id))


def _cancelled_offer(book: Book) -> Reason:
    offer_id = book.offer()
    book.do("bob", SWAP_CANCEL, args=Ref(offer_id))
    return rejection(book.changes, book.on("alice", ACCEPT, offer_id))


def _expired_offer(book: Book) -> Reason:
    offer_id = book.offer()
    book.at(EXPIRY)
    return rejection(book.changes, book.on("alice", ACCEPT, offer_id))


def _refused(signer: str, kind: TxKind, **fields: object) -> Callable[[Book], Reason]:
    return lambda book: book.refused(signer, kind, **fields)


REFUSALS: dict[Reason, Callable[[Book], Reason]] = {
    Reason.ACCOUNT_FROZEN: _frozen_release,
    Reason.NOT_REGISTERING_BANK: _refused("dbs-issuer", FREEZE, to=pub("alice")),
    Reason.ALREADY_FROZEN: _after(
        lambda b: b.do("jpm-issuer", FREEZE, to=pub("carol")),
        _refused("jpm-issuer", FREEZE, to=pub("carol")),
    ),
    Reason.NOT_FROZEN: _refused("jpm-issuer", UNFREEZE, to=pub("carol")),
    Reason.BAD_EXPIRY: _refused(
        "alice", OPEN, to=pub("bob"), token=USD, amount=1_000, args=contract_terms(expiry_ms=T0)
    ),
    Reason.APPROVER_NOT_REGISTERED: _refused(
        "alice", OPEN, to=pub("bob"), token=USD, amount=1_000, args=contract_terms("dave")
    ),
    Reason.UNKNOWN_CONTRACT: lambda book: rejection(
        book.changes, book.on("carol", RELEASE, bytes(32), "shipment")
    ),
    Reason.NOT_APPROVER: _contract_then("bob", RELEASE, "shipment"),
    Reason.NOT_BUYER: _contract_then("carol", REFUND),
    Reason.NOT_SUPPLIER: _contract_then("alice", CANCEL),
    Reason.UNKNOWN_MILESTONE: _contract_then("carol", RELEASE, "installation"),
    Reason.MILESTONE_RELEASED: _released_twice,
    Reason.MILESTONE_OVERDUE: _overdue_release,
    Reason.CONTRACT_EXPIRED: _expired_release,
    Reason.CONTRACT_NOT_EXPIRED: _contract_then("alice", REFUND),
    Reason.CONTRACT_CLOSED: _closed_refund,
    Reason.UNKNOWN_OFFER: lambda book: rejection(book.changes, book.on("alice", ACCEPT, bytes(32))),
    Reason.NOT_COUNTERPARTY: _offer_then("carol", ACCEPT, to="alice"),
    Reason.NOT_OFFERER: _offer_then("alice", SWAP_CANCEL),
    Reason.OFFER_EXPIRED: _expired_offer,
    Reason.OFFER_TAKEN: _taken_offer,
    Reason.OFFER_CANCELLED: _cancelled_offer,
}


@pytest.mark.parametrize("reason", list(REFUSALS), ids=str)
def test_each_payment_rule_refuses_with_its_reason_and_changes_nothing(reason: Reason) -> None:
    assert REFUSALS[reason](Book()) is reason


@pytest.mark.parametrize(
    ("signer", "kind", "fields"),
    [
        ("alice", OPEN, {"to": pub("dave"), "token": USD, "amount": 1_000,
                         "args": contract_terms()}),
        ("bob", OFFER, {"to": pub("erin"), "token": SGD, "amount": 1,
                        "args": SwapTerms(USD, 1, EXPIRY)}),
        ("jpm-issuer", FREEZE, {"to": pub("dave")}),
    ],
    ids=["supplier", "counterparty", "held-account"],
)  # fmt: skip
def test_a_party_that_is_not_registered_is_refused(signer: str, kind: TxKind, fields: dict) -> None:
    assert Book().refused(signer, kind, **fields) is Reason.RECIPIENT_NOT_REGISTERED


# -- decoding the new kinds ----------------------------------------------------------------


def _open_fields(**args_overrides: object) -> list:
    """A contract_open body as plain fields, its args replaced as given."""
    args = dict(
        zip(
            ("approver", "expiry", "hash", "milestones"),
            contract_terms().to_list(),
            strict=True,
        )
    )
    args.update(args_overrides)
    return [5, CHAIN_ID, pub("alice"), 0, pub("bob"), USD, 1_000, "", list(args.values())]


def _fields(kind: int, to: bytes = b"", token: str = "", amount: int = 0, *args: object) -> list:
    """A body as plain fields, signed by alice; ``args`` (if any) is the ninth field."""
    return [kind, CHAIN_ID, pub("alice"), 0, to, token, amount, "", *args]


ID = bytes(32)


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param(_open_fields()[:8], id="open-without-args"),
        pytest.param(_fields(4, pub("bob"), USD, 1, []), id="transfer-with-args"),
        pytest.param(_open_fields(approver=bytes(31)), id="short-approver"),
        pytest.param(_open_fields(expiry=0), id="zero-expiry"),
        pytest.param(_open_fields(expiry=2**63), id="huge-expiry"),
        pytest.param(_open_fields(hash=b"abc"), id="short-terms-hash"),
        pytest.param(_open_fields(milestones=[]), id="no-milestones"),
        pytest.param(_open_fields(milestones=[["m", 1, 0]] * 13), id="13-milestones"),
        pytest.param(_open_fields(milestones=[["a", 500, 0], ["a", 500, 0]]), id="same-names"),
        pytest.param(_open_fields(milestones=[["", 1_000, 0]]), id="empty-name"),
        pytest.param(_open_fields(milestones=[["n" * 33, 1_000, 0]]), id="long-name"),
        pytest.param(_open_fields(milestones=[["a", 1_000, EXPIRY + 1]]), id="due-after-expiry"),
        pytest.param(_open_fields(milestones=[["a", 1_000]]), id="milestone-2-fields"),
        pytest.param([*_open_fields()[:8], [pub("carol"), EXPIRY]], id="terms-2-fields"),
        pytest.param(_fields(9, b"", SGD, 5, [SGD, 5, EXPIRY]), id="swap-same-token"),
        pytest.param(_fields(9, b"", SGD, 5, [USD, 5]), id="swap-2-args"),
        pytest.param(_fields(6, b"", "", 0, [ID]), id="release-no-name"),
        pytest.param(_fields(7, b"", "", 0, [ID, "x"]), id="refund-with-name"),
        pytest.param(_fields(10, b"", "", 0, [bytes(31)]), id="short-offer-id"),
        pytest.param(_fields(10, b"", USD, 0, [ID]), id="accept-with-token"),
        pytest.param(_fields(12), id="freeze-nobody"),
        pytest.param(_fields(13, pub("carol"), USD, 1), id="unfreeze-with-amount"),
        pytest.param(_fields(14), id="kind-14"),
    ],
)
def test_ill_shaped_payment_fields_are_malformed(fields: list) -> None:
    assert _decoder_reason(fields) is Reason.MALFORMED


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param(_open_fields(milestones=[["a", 400, 0], ["b", 500, 0]]), id="sum-short"),
        pytest.param(_open_fields(milestones=[["a", 0, 0], ["b", 1_000, 0]]), id="zero-milestone"),
        pytest.param(_fields(9, b"", SGD, 5, [USD, 0, EXPIRY]), id="ask-nothing"),
    ],
)  # fmt: skip
def test_amounts_that_do_not_add_up_are_bad_amounts(fields: list) -> None:
    assert _decoder_reason(fields) is Reason.BAD_AMOUNT


def _decoder_reason(fields: list) -> Reason:
    body = msgpack.packb(fields, use_bin_type=True)
    with pytest.raises(TxRejected) as info:
        decode_tx(body + key("alice").sign(body).signature)
    return info.value.reason


@pytest.mark.parametrize("kind", sorted(ARGS_KINDS | {FREEZE, UNFREEZE}), ids=lambda k: k.name)
def test_every_payment_kind_round_trips(kind: TxKind) -> None:
    fields: dict[str, object] = {
        OPEN: {"to": pub("bob"), "token": USD, "amount": 1_000, "args": contract_terms()},
        OFFER: {"token": SGD, "amount": 9, "args": SwapTerms(USD, 7, EXPIRY)},
        RELEASE: {"args": Ref(bytes(range(32)), "shipment")},
        FREEZE: {"to": pub("carol")},
        UNFREEZE: {"to": pub("carol")},
    }.get(kind, {"args": Ref(bytes(range(32)))})
    signed = Book().sign("alice", kind, memo="PO-1", **fields)
    again = decode_tx(signed.raw)
    assert again == signed and again.kind is kind
