"""Each ledger rule, accepted and rejected, with the specific Reason it must give.

Invalid transactions that ``sign_tx`` refuses to build are packed by hand and signed
properly, so only the rule under test can reject them.
"""

from __future__ import annotations

import msgpack
import pytest

from chain.errors import Reason, TxRejected
from chain.state import Changes, State, apply_tx, check_tx
from chain.tx import MAX_AMOUNT, MAX_MEMO_BYTES, MAX_TX_BYTES, Tx, TxKind, decode_tx, sign_tx
from tests.ledger_helpers import CHAIN_ID, SGD, USD, key, make_genesis, pub, rejection, view
from tests.test_ledger_payments import REFUSALS as PAYMENT_REFUSALS

GENESIS = make_genesis()
REGISTER, MINT, BURN, TRANSFER = TxKind.REGISTER, TxKind.MINT, TxKind.BURN, TxKind.TRANSFER

# Every reason the chain raises; DUPLICATE and MEMPOOL_FULL belong to the mempool.
CHAIN_REASONS = set(Reason) - {Reason.DUPLICATE, Reason.MEMPOOL_FULL}


def tx(signer: str, kind: TxKind, nonce: int = 0, chain_id: str = CHAIN_ID, **fields) -> Tx:
    return sign_tx(key(signer), kind, chain_id, nonce, **fields)


def hand_signed(fields: list, signer: str = "alice") -> bytes:
    """Wire bytes for a body sign_tx would refuse, with a valid signature over it."""
    body = msgpack.packb(fields, use_bin_type=True)
    return body + key(signer).sign(body).signature


def transfer_fields(**overrides) -> list:
    fields = {
        "kind": 4,
        "chain_id": CHAIN_ID,
        "sender": pub("alice"),
        "nonce": 0,
        "to": pub("carol"),
        "token": USD,
        "amount": 100,
        "memo": "INV-1",
    }
    fields.update(overrides)
    return list(fields.values())


def rejected_by_rules(t: Tx, changes: Changes | None = None) -> Reason:
    """Run the full admission check; assert it rejected and that nothing changed."""
    return rejection(changes or Changes(State(GENESIS)), t)


def rejected_by_decoder(raw: object) -> Reason:
    with pytest.raises(TxRejected) as info:
        decode_tx(raw)  # type: ignore[arg-type]
    return info.value.reason


def applied(*txs: Tx) -> Changes:
    changes = Changes(State(GENESIS))
    for t in txs:
        check_tx(changes, t)
    return changes


# -- each kind does what it says --------------------------------------------------------


def test_register_admits_an_account_at_the_issuing_bank() -> None:
    changes = applied(tx("jpm-issuer", REGISTER, to=pub("dave")))
    assert changes.bank_of(pub("dave")) == "JPM"
    assert changes.nonce(pub("jpm-issuer")) == 1


def test_mint_credits_the_account_and_counts_as_issued() -> None:
    changes = applied(tx("jpm-issuer", MINT, to=pub("carol"), token=USD, amount=700))
    assert changes.balance(pub("carol"), USD) == 700
    assert changes.supply_of(USD) == 101_700


def test_burn_debits_the_holder_and_counts_as_redeemed() -> None:
    changes = applied(tx("alice", BURN, token=USD, amount=300))
    assert changes.balance(pub("alice"), USD) == 99_700
    assert changes.supply_of(USD) == 100_700


def test_transfer_moves_any_token_to_any_registered_account() -> None:
    changes = applied(tx("bob", TRANSFER, to=pub("alice"), token=SGD, amount=2_500, memo="PO-7"))
    assert changes.balance(pub("bob"), SGD) == 47_500
    assert changes.balance(pub("alice"), SGD) == 2_500
    assert changes.supply_of(SGD) == 50_000


def test_transfer_of_a_whole_balance_drops_the_entry() -> None:
    changes = applied(tx("bob", TRANSFER, to=pub("carol"), token=USD, amount=1_000))
    assert (pub("bob"), USD) not in view(changes)["balances"]


def test_consecutive_nonces_apply_in_order() -> None:
    changes = applied(
        tx("alice", TRANSFER, 0, to=pub("carol"), token=USD, amount=1),
        tx("alice", TRANSFER, 1, to=pub("carol"), token=USD, amount=2),
    )
    assert changes.nonce(pub("alice")) == 2
    assert changes.balance(pub("carol"), USD) == 3


def test_a_memo_of_exactly_the_limit_is_accepted() -> None:
    memo = "x" * MAX_MEMO_BYTES
    assert decode_tx(tx("alice", TRANSFER, to=pub("carol"), token=USD, amount=1, memo=memo).raw)


# -- signature and chain ----------------------------------------------------------------


def test_a_flipped_signature_byte_is_a_bad_signature() -> None:
    good = tx("alice", TRANSFER, to=pub("carol"), token=USD, amount=1)
    raw = good.raw[:-1] + bytes([good.raw[-1] ^ 1])
    assert rejected_by_rules(decode_tx(raw)) is Reason.BAD_SIGNATURE


def test_a_signature_by_someone_else_is_a_bad_signature() -> None:
    assert rejected_by_rules(decode_tx(hand_signed(transfer_fields(), signer="bob"))) is (
        Reason.BAD_SIGNATURE
    )


def test_a_tampered_amount_breaks_the_signature() -> None:
    good = tx("alice", TRANSFER, to=pub("carol"), token=USD, amount=100)
    forged_body = msgpack.packb(transfer_fields(amount=99_000), use_bin_type=True)
    forged = decode_tx(forged_body + good.signature)
    assert rejected_by_rules(forged) is Reason.BAD_SIGNATURE


def test_a_tx_for_another_chain_is_wrong_chain() -> None:
    t = tx("alice", TRANSFER, chain_id="depnet-other", to=pub("carol"), token=USD, amount=1)
    assert rejected_by_rules(t) is Reason.WRONG_CHAIN


# -- nonces -----------------------------------------------------------------------------


def test_a_nonce_ahead_of_the_account_is_a_bad_nonce() -> None:
    assert rejected_by_rules(tx("alice", TRANSFER, 1, to=pub("carol"), token=USD, amount=1)) is (
        Reason.BAD_NONCE
    )


def test_replaying_an_applied_tx_is_a_bad_nonce() -> None:
    t = tx("alice", TRANSFER, 0, to=pub("carol"), token=USD, amount=1)
    changes = applied(t)
    assert rejected_by_rules(t, changes) is Reason.BAD_NONCE
    assert changes.balance(pub("carol"), USD) == 1


# -- accounts and banks -----------------------------------------------------------------


def test_an_unregistered_sender_is_rejected() -> None:
    t = tx("dave", TRANSFER, to=pub("alice"), token=USD, amount=1)
    assert rejected_by_rules(t) is Reason.SENDER_NOT_REGISTERED


@pytest.mark.parametrize(
    "t",
    [
        tx("alice", TRANSFER, to=pub("dave"), token=USD, amount=1),
        tx("jpm-issuer", MINT, to=pub("dave"), token=USD, amount=1),
    ],
    ids=["transfer", "mint"],
)
def test_an_unregistered_recipient_is_rejected(t: Tx) -> None:
    assert rejected_by_rules(t) is Reason.RECIPIENT_NOT_REGISTERED


@pytest.mark.parametrize("account", ["alice", "carol", "dbs-issuer"])
def test_registering_a_registered_account_is_rejected(account: str) -> None:
    t = tx("jpm-issuer", REGISTER, to=pub(account))
    assert rejected_by_rules(t) is Reason.ALREADY_REGISTERED


def test_registering_twice_in_one_block_is_rejected() -> None:
    changes = applied(tx("jpm-issuer", REGISTER, 0, to=pub("dave")))
    again = tx("dbs-issuer", REGISTER, 0, to=pub("dave"))
    assert rejected_by_rules(again, changes) is Reason.ALREADY_REGISTERED


def test_only_a_bank_can_register() -> None:
    assert rejected_by_rules(tx("alice", REGISTER, to=pub("dave"))) is Reason.NOT_A_BANK


@pytest.mark.parametrize("signer", ["dbs-issuer", "alice"])
def test_only_the_issuing_bank_can_mint(signer: str) -> None:
    t = tx(signer, MINT, to=pub("carol"), token=USD, amount=1)
    assert rejected_by_rules(t) is Reason.NOT_ISSUER


@pytest.mark.parametrize(
    "t",
    [
        tx("alice", TRANSFER, to=pub("carol"), token="EUR.BNP", amount=1),
        tx("jpm-issuer", MINT, to=pub("carol"), token="EUR.BNP", amount=1),
        tx("alice", BURN, token="EUR.BNP", amount=1),
    ],
    ids=["transfer", "mint", "burn"],
)
def test_a_token_nobody_issues_is_unknown(t: Tx) -> None:
    assert rejected_by_rules(t) is Reason.UNKNOWN_TOKEN


# -- funds and amounts ------------------------------------------------------------------


@pytest.mark.parametrize(
    "t",
    [
        tx("alice", TRANSFER, to=pub("carol"), token=USD, amount=100_001),
        tx("carol", TRANSFER, to=pub("alice"), token=USD, amount=1),
        tx("alice", TRANSFER, to=pub("carol"), token=SGD, amount=1),
        tx("alice", BURN, token=USD, amount=100_001),
    ],
    ids=["over-balance", "empty-account", "token-not-held", "burn"],
)
def test_spending_more_than_held_is_insufficient_funds(t: Tx) -> None:
    assert rejected_by_rules(t) is Reason.INSUFFICIENT_FUNDS


@pytest.mark.parametrize("amount", [0, -1, -(2**63), 1.5, "100", None, b"\x01", [1]], ids=repr)
def test_a_non_positive_or_non_integer_amount_is_a_bad_amount(amount: object) -> None:
    assert rejected_by_decoder(hand_signed(transfer_fields(amount=amount))) is Reason.BAD_AMOUNT


def test_an_amount_over_the_maximum_is_a_bad_amount() -> None:
    assert rejected_by_decoder(hand_signed(transfer_fields(amount=MAX_AMOUNT + 1))) is (
        Reason.BAD_AMOUNT
    )


def test_minting_past_the_maximum_outstanding_supply_is_a_bad_amount() -> None:
    # USD.JPM opens with 101,000 outstanding (alice's and bob's opening balances).
    t = tx("jpm-issuer", MINT, to=pub("carol"), token=USD, amount=MAX_AMOUNT - 100_000)
    assert rejected_by_rules(t) is Reason.BAD_AMOUNT
    assert applied(tx("jpm-issuer", MINT, to=pub("carol"), token=USD, amount=MAX_AMOUNT - 101_000))


def test_a_burn_frees_issuance_capacity_for_later_mints() -> None:
    """The cap is on what is outstanding, not on what was ever minted: a token can issue
    and redeem many times its cap over its life."""
    room = MAX_AMOUNT - 101_000
    changes = applied(tx("jpm-issuer", MINT, 0, to=pub("carol"), token=USD, amount=room))
    over = tx("jpm-issuer", MINT, 1, to=pub("carol"), token=USD, amount=1)
    assert rejected_by_rules(over, changes) is Reason.BAD_AMOUNT  # nothing changed
    for cycle in range(3):  # redeem all of it, issue all of it again: thrice the cap
        check_tx(changes, tx("carol", BURN, cycle, token=USD, amount=room))
        assert changes.supply_of(USD) == 101_000
        check_tx(changes, tx("jpm-issuer", MINT, 1 + cycle, to=pub("carol"), token=USD,
                             amount=room))  # fmt: skip
        assert changes.supply_of(USD) == MAX_AMOUNT
    assert changes.balance(pub("carol"), USD) == room


def test_the_outstanding_supply_cap_names_itself() -> None:
    over = tx("jpm-issuer", MINT, to=pub("carol"), token=USD, amount=MAX_AMOUNT)
    with pytest.raises(TxRejected, match=r"USD\.JPM outstanding supply would pass"):
        check_tx(Changes(State(GENESIS)), over)


@pytest.mark.parametrize("memo", ["x" * (MAX_MEMO_BYTES + 1), "€" * 90], ids=["ascii", "multibyte"])
def test_a_memo_over_the_limit_in_bytes_is_too_long(memo: str) -> None:
    assert rejected_by_decoder(hand_signed(transfer_fields(memo=memo))) is Reason.MEMO_TOO_LONG


# -- malformed bytes --------------------------------------------------------------------

_VALID_BODY = msgpack.packb(transfer_fields(), use_bin_type=True)
_SIG = bytes(64)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(bytes(64), id="signature-only"),
        pytest.param(bytes(MAX_TX_BYTES + 1), id="oversized"),
        pytest.param("a string", id="not-bytes"),
        pytest.param(memoryview(_VALID_BODY + _SIG), id="memoryview"),
        pytest.param(b"\xc1" + _SIG, id="reserved-msgpack-byte"),
        pytest.param(_VALID_BODY[:-5] + _SIG, id="truncated-body"),
        pytest.param(_VALID_BODY + b"\x00" + _SIG, id="trailing-data"),
        pytest.param(bytes(range(200)), id="garbage"),
        pytest.param(b"\x00" + _SIG, id="integer-body"),
        pytest.param(msgpack.packb({"kind": 4}) + _SIG, id="map-body"),
    ],
)
def test_garbage_bytes_are_malformed(raw: object) -> None:
    assert rejected_by_decoder(raw) is Reason.MALFORMED


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param(transfer_fields()[:7], id="seven-fields"),
        pytest.param([*transfer_fields(), 0], id="nine-fields"),
        pytest.param(transfer_fields(kind=0), id="kind-0"),
        pytest.param(transfer_fields(kind=5), id="kind-5"),
        pytest.param(transfer_fields(kind=True), id="kind-bool"),
        pytest.param(transfer_fields(kind="transfer"), id="kind-text"),
        pytest.param(transfer_fields(chain_id=""), id="empty-chain"),
        pytest.param(transfer_fields(chain_id="c" * 65), id="long-chain"),
        pytest.param(transfer_fields(chain_id=CHAIN_ID.encode()), id="chain-bytes"),
        pytest.param(transfer_fields(sender=pub("alice")[:31]), id="short-sender"),
        pytest.param(transfer_fields(sender=pub("alice").hex()), id="sender-text"),
        pytest.param(transfer_fields(nonce=-1), id="negative-nonce"),
        pytest.param(transfer_fields(nonce=2**63), id="huge-nonce"),
        pytest.param(transfer_fields(nonce=0.0), id="float-nonce"),
        pytest.param(transfer_fields(to=bytes(5)), id="short-recipient"),
        pytest.param(transfer_fields(token="T" * 33), id="long-token"),
        pytest.param(transfer_fields(token=USD.encode()), id="token-bytes"),
        pytest.param(transfer_fields(token=""), id="transfer-without-token"),
        pytest.param(transfer_fields(memo=b"INV-1"), id="memo-bytes"),
        pytest.param(transfer_fields(to=b""), id="transfer-without-recipient"),
        pytest.param(transfer_fields(kind=3), id="burn-with-recipient"),
        pytest.param(transfer_fields(kind=2, to=b""), id="mint-without-recipient"),
        pytest.param(transfer_fields(kind=1, token="", amount=5), id="register-with-amount"),
        pytest.param(transfer_fields(kind=1, amount=0), id="register-with-token"),
        pytest.param(transfer_fields(kind=1, to=b"", token="", amount=0), id="register-nobody"),
    ],
)
def test_ill_shaped_fields_are_malformed(fields: list) -> None:
    assert rejected_by_decoder(hand_signed(fields)) is Reason.MALFORMED


def _non_canonical_bodies() -> list:
    """The canonical body with one field re-encoded in a longer msgpack form that
    unpacks to the same value: a second encoding would give the same tx a second id."""
    canonical = _VALID_BODY
    nonce_fixint = msgpack.packb(0)
    token_fixstr = msgpack.packb(USD)
    sender_bin8 = msgpack.packb(pub("alice"), use_bin_type=True)
    cases = {
        "array16-header": b"\xdc\x00\x08" + canonical[1:],
        "nonce-as-uint64": canonical.replace(
            sender_bin8 + nonce_fixint, sender_bin8 + b"\xcf" + bytes(8), 1
        ),
        "token-as-str8": canonical.replace(token_fixstr, b"\xd9\x07" + USD.encode(), 1),
        "sender-as-bin16": canonical.replace(sender_bin8, b"\xc5\x00\x20" + pub("alice"), 1),
    }
    for name, body in cases.items():
        assert body != canonical and msgpack.unpackb(body) == msgpack.unpackb(canonical), name
    return [pytest.param(body, id=name) for name, body in cases.items()]


@pytest.mark.parametrize("body", _non_canonical_bodies())
def test_a_non_canonical_encoding_is_malformed(body: bytes) -> None:
    raw = body + key("alice").sign(body).signature
    assert rejected_by_decoder(raw) is Reason.MALFORMED


def test_a_decoded_tx_round_trips_and_is_named_by_its_bytes() -> None:
    t = tx("alice", TRANSFER, 3, to=pub("carol"), token=USD, amount=42, memo="INV-9")
    again = decode_tx(bytearray(t.raw))
    assert again == t
    assert (again.kind, again.nonce, again.amount, again.memo) == (TRANSFER, 3, 42, "INV-9")
    other = tx("alice", TRANSFER, 3, to=pub("carol"), token=USD, amount=42, memo="INV-10")
    assert other.tx_id != t.tx_id


def test_a_rejection_in_apply_tx_leaves_changes_untouched_after_earlier_writes() -> None:
    changes = applied(tx("alice", TRANSFER, 0, to=pub("carol"), token=USD, amount=10))
    before = view(changes)
    with pytest.raises(TxRejected):
        apply_tx(changes, tx("alice", TRANSFER, 1, to=pub("carol"), token=USD, amount=10**6))
    assert view(changes) == before


def test_the_rules_give_every_chain_reason() -> None:
    """One example per reason: a new Reason without a rule (or a test) fails here. The
    reasons of programmable payments have theirs in tests/test_ledger_payments.py."""
    decoder = {
        Reason.MALFORMED: b"\xc1" + _SIG,
        Reason.BAD_AMOUNT: hand_signed(transfer_fields(amount=0)),
        Reason.MEMO_TOO_LONG: hand_signed(transfer_fields(memo="m" * 300)),
    }
    rules = {
        Reason.BAD_SIGNATURE: decode_tx(hand_signed(transfer_fields(), signer="bob")),
        Reason.WRONG_CHAIN: tx("alice", TRANSFER, chain_id="x", to=pub("bob"), token=USD, amount=1),
        Reason.BAD_NONCE: tx("alice", TRANSFER, 9, to=pub("bob"), token=USD, amount=1),
        Reason.INSUFFICIENT_FUNDS: tx("carol", BURN, token=USD, amount=1),
        Reason.SENDER_NOT_REGISTERED: tx("erin", BURN, token=USD, amount=1),
        Reason.RECIPIENT_NOT_REGISTERED: tx("bob", TRANSFER, to=pub("erin"), token=SGD, amount=1),
        Reason.ALREADY_REGISTERED: tx("dbs-issuer", REGISTER, to=pub("bob")),
        Reason.NOT_A_BANK: tx("bob", REGISTER, to=pub("erin")),
        Reason.NOT_ISSUER: tx("bob", MINT, to=pub("bob"), token=SGD, amount=1),
        Reason.UNKNOWN_TOKEN: tx("bob", BURN, token="HKD.HSBC", amount=1),
    }
    assert set(decoder) | set(rules) | set(PAYMENT_REFUSALS) == CHAIN_REASONS
    for reason, raw in decoder.items():
        assert rejected_by_decoder(raw) is reason
    for reason, t in rules.items():
        assert rejected_by_rules(t) is reason
