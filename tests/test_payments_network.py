"""Programmable payments on four validator processes on 127.0.0.1 (issue 12 acceptance).

Each test starts its own network (tests/netfixture.py, on the default template, whose
wallets are the cast). Txs are signed here with those wallets and submitted through
different nodes' HTTP APIs; every node must end with the same contracts, offers and exact
balances. Waits poll a condition until a deadline.
"""

from __future__ import annotations

import threading
from hashlib import sha256

import pytest

from chain.tx import ContractTerms, Milestone, Ref, SwapTerms, Tx, TxKind, sign_tx
from cli.devnet.localnet import ChainScan, LocalNet
from tests.netfixture import localnet_fixture  # noqa: F401  (provides `localnet`)

pytestmark = pytest.mark.network

TIMEOUT = 60.0
BUYER, SUPPLIER, PLATFORM = "acme-buyer", "pearl-river-electronics", "tradeflow-platform"
TREASURY, OTHER_SUPPLIER = "hsbc-treasury", "lion-city-logistics"
USD, HKD = "USD.JPM", "HKD.HSBC"
WATCHED = (BUYER, SUPPLIER, PLATFORM, TREASURY, OTHER_SUPPLIER)


class Ledger:
    """Signs as the template's wallets with their next nonces and submits to a chosen node."""

    def __init__(self, net: LocalNet) -> None:
        self.net = net
        self.wallets = {w.name: w for w in net.net.wallets()}

    def account(self, name: str) -> bytes:
        return bytes.fromhex(self.wallets[name].account)

    def sign(self, name: str, kind: TxKind, nonce: int | None = None, **fields: object) -> Tx:
        if nonce is None:
            nonce = self.net.client("JPM").account(self.account(name))["next_nonce"]
        wallet = self.wallets[name]
        chain_id = self.net.genesis.chain_id
        return sign_tx(wallet.signing_key, kind, chain_id, nonce, **fields)  # type: ignore[arg-type]

    def commit(self, bank: str, tx: Tx) -> int:
        """Submit ``tx`` through ``bank``'s node and wait until every node has committed
        it (so the next nonce and block time read from any node include it)."""
        (result,) = self.net.submit(bank, [tx.raw])["results"]
        assert result["accepted"], result
        height = self.committed(bank, tx)
        self.net.wait_height(height, timeout=TIMEOUT)
        return height

    def committed(self, bank: str, tx: Tx) -> int:
        def height() -> int | None:
            status = self.net.tx(bank, tx.tx_id)
            assert status is None or status["status"] != "rejected", status
            return status["height"] if status and status["status"] == "committed" else None

        return self.net.wait_for(height, TIMEOUT, f"{tx.kind.name} to commit on {bank}")

    def head_time(self) -> int:
        return int(self.net.client("JPM").head()["time_ms"])

    def everywhere(self, height: int) -> dict[str, dict[str, dict]]:
        """Each node's view, once it has committed ``height``: every watched account."""
        self.net.wait_height(height, timeout=TIMEOUT)
        return {
            bank: {name: self.net.client(bank).account(self.account(name)) for name in WATCHED}
            for bank in self.net.banks
        }

    def balances(self) -> dict[str, dict[str, int]]:
        return {
            name: self.net.client("JPM").account(self.account(name))["balances"] for name in WATCHED
        }


def moved(before: dict[str, dict[str, int]], changes: dict[tuple[str, str], int]) -> dict:
    """``before`` with the (name, token) deltas of ``changes`` applied; zeros left out."""
    after = {name: dict(held) for name, held in before.items()}
    for (name, token), delta in changes.items():
        after[name][token] = after[name].get(token, 0) + delta
        if not after[name][token]:
            del after[name][token]
    return after


def test_a_pvp_swap_and_a_contract_lifecycle_commit_on_every_node(localnet: LocalNet) -> None:
    net = localnet
    ledger = Ledger(net)
    before = ledger.balances()
    expiry = ledger.head_time() + 600_000
    terms = ContractTerms(
        ledger.account(PLATFORM),
        expiry,
        sha256(b"PO-NET-1").digest(),
        (Milestone("shipment", 30_000), Milestone("delivery", 70_000)),
    )
    opening = ledger.sign(BUYER, TxKind.CONTRACT_OPEN, to=ledger.account(SUPPLIER), token=USD,
                          amount=100_000, memo="PO-NET-1", args=terms)  # fmt: skip
    contract_id = opening.tx_id
    ledger.commit("JPM", opening)
    ledger.commit("HSBC", ledger.sign(PLATFORM, TxKind.CONTRACT_RELEASE,
                                      args=Ref(contract_id, "shipment")))  # fmt: skip
    quote = ledger.sign(TREASURY, TxKind.SWAP_OFFER, to=ledger.account(SUPPLIER), token=HKD,
                        amount=233_400, args=SwapTerms(USD, 30_000, expiry))  # fmt: skip
    ledger.commit("DBS", quote)
    ledger.commit("BNP", ledger.sign(SUPPLIER, TxKind.SWAP_ACCEPT, args=Ref(quote.tx_id)))
    ledger.commit("JPM", ledger.sign(PLATFORM, TxKind.CONTRACT_RELEASE,
                                     args=Ref(contract_id, "delivery")))  # fmt: skip
    short = ContractTerms(ledger.account(PLATFORM), ledger.head_time() + 3_000, bytes(32),
                          (Milestone("delivery", 5_000),))  # fmt: skip
    second = ledger.sign(BUYER, TxKind.CONTRACT_OPEN, to=ledger.account(OTHER_SUPPLIER),
                         token=USD, amount=5_000, args=short)  # fmt: skip
    ledger.commit("HSBC", second)
    net.wait_for(lambda: ledger.head_time() >= short.expiry_ms, TIMEOUT, "the expiry to pass")
    last = ledger.commit("DBS", ledger.sign(BUYER, TxKind.CONTRACT_REFUND, args=Ref(second.tx_id)))

    expected = moved(
        before,
        {
            (BUYER, USD): -100_000,
            (SUPPLIER, USD): 30_000 - 30_000 + 70_000,
            (SUPPLIER, HKD): 233_400,
            (TREASURY, HKD): -233_400,
            (TREASURY, USD): 30_000,
        },
    )
    for bank, accounts in ledger.everywhere(last).items():
        assert {n: a["balances"] for n, a in accounts.items()} == expected, bank
        assert all(not a["locked"] for a in accounts.values()), bank
        client = net.client(bank)
        first = client.contract(contract_id)
        assert (first["status"], first["released"], first["refunded"]) == ("closed", 100_000, 0)
        refunded = client.contract(second.tx_id)
        assert (refunded["released"], refunded["refunded"]) == (0, 5_000), bank
        offer = client.offer(quote.tx_id)
        assert (offer["status"], offer["taker"]) == ("taken", ledger.account(SUPPLIER).hex())


def test_a_swap_accepted_twice_from_two_nodes_at_once_settles_once(localnet: LocalNet) -> None:
    net = localnet
    ledger = Ledger(net)
    ledger.commit("JPM", ledger.sign(BUYER, TxKind.TRANSFER, to=ledger.account(OTHER_SUPPLIER),
                                     token=USD, amount=50_000))  # fmt: skip
    expiry = ledger.head_time() + 600_000
    offer = ledger.sign(TREASURY, TxKind.SWAP_OFFER, token=HKD, amount=100_000,
                        args=SwapTerms(USD, 12_800, expiry))  # fmt: skip
    opened_at = ledger.commit("HSBC", offer)
    before = ledger.balances()
    accepts = {
        "JPM": ledger.sign(BUYER, TxKind.SWAP_ACCEPT, args=Ref(offer.tx_id)),
        "DBS": ledger.sign(OTHER_SUPPLIER, TxKind.SWAP_ACCEPT, args=Ref(offer.tx_id)),
    }
    results: dict[str, dict] = {}
    start = threading.Barrier(len(accepts))

    def submit(bank: str, tx: Tx) -> None:
        client = net.client(bank)
        start.wait()
        (results[bank],) = client.submit([tx.raw])["results"]

    threads = [threading.Thread(target=submit, args=item) for item in accepts.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert set(results) == set(accepts)

    def settled() -> dict[str, str] | None:
        """Each accept's fate on the node it was sent to, once neither is pending."""
        fates = {}
        for bank, tx in accepts.items():
            status = net.tx(bank, tx.tx_id)
            fates[bank] = "unknown" if status is None else status["status"]
            if fates[bank] in ("pending", "queued"):
                return None
        return fates

    fates = net.wait_for(settled, TIMEOUT, "both accepts to be decided")
    assert sorted(fates.values()).count("committed") == 1, (fates, results)
    winner = next(bank for bank, fate in fates.items() if fate == "committed")
    taker = BUYER if winner == "JPM" else OTHER_SUPPLIER
    height = ledger.committed(winner, accepts[winner])

    scan = ChainScan(net, "BNP")
    net.wait_height(height, ["BNP"], timeout=TIMEOUT)
    scan.update(height)
    on_chain = [
        tx_id
        for tx_id, tx in scan.txs.items()
        if scan.tx_heights[tx_id] > opened_at
        and tx["kind"] == "swap_accept"
        and tx["args"]["id"] == offer.tx_id.hex()
    ]
    assert on_chain == [accepts[winner].tx_id.hex()] and not scan.duplicates
    expected = moved(
        before,
        {(taker, USD): -12_800, (taker, HKD): 100_000, (TREASURY, USD): 12_800},
    )
    for bank, accounts in ledger.everywhere(height).items():
        assert {n: a["balances"] for n, a in accounts.items()} == expected, bank
        settled_offer = net.client(bank).offer(offer.tx_id)
        assert settled_offer["status"] == "taken"
        assert settled_offer["taker"] == ledger.account(taker).hex()
