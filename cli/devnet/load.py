"""Transfer load for a local network: funded accounts at genesis and pre-signed transfers.

The multi-process tests and `depnet bench network` share these, so both offer the same
kind of load: each funded account pays other funded accounts in its own bank's token,
nonces in order.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from chain.tx import Tx, TxKind, sign_tx
from node.config import load_template
from node.layout import NetworkHome, Wallet

T = TypeVar("T")


def funded_template(
    accounts_per_bank: int, balance: int = 10**12, base: dict | None = None
) -> dict:
    """The default 4-bank template (or ``base``) with ``accounts_per_bank`` extra accounts per
    bank, each holding ``balance`` of its bank's first token at genesis."""
    template = copy.deepcopy(base if base is not None else load_template())
    accounts = list(template.get("accounts", []))
    for bank in template["banks"]:
        symbol = bank["tokens"][0]["symbol"]
        for i in range(accounts_per_bank):
            accounts.append(
                {
                    "name": f"load-{bank['name'].lower()}-{i}",
                    "bank": bank["name"],
                    "balances": {symbol: balance},
                }
            )
    template["accounts"] = accounts
    return template


@dataclass(frozen=True)
class Payer:
    """A funded account that sends load: its key, and its bank's token."""

    wallet: Wallet
    token: str

    @property
    def account(self) -> bytes:
        return bytes.fromhex(self.wallet.account)


def load_payers(net: NetworkHome) -> list[Payer]:
    """The ``load-*`` accounts of a ``funded_template`` network, in a stable order."""
    genesis = net.genesis()
    token_of = {b.name: b.tokens[0].symbol for b in genesis.banks}
    return [Payer(w, token_of[w.bank]) for w in net.wallets() if w.name.startswith("load-")]


def sign_transfers(
    chain_id: str,
    payers: Sequence[Payer],
    per_payer: int,
    *,
    seed: int = 1,
    first_nonce: dict[bytes, int] | None = None,
    max_amount: int = 1_000,
) -> list[list[Tx]]:
    """``per_payer`` transfers from each payer (nonces in order) to random other payers, in
    the payer's own token. Returns one list per payer."""
    if len(payers) < 2:
        raise ValueError("transfers need at least two payers (one pays the other)")
    rng = random.Random(seed)
    accounts = [p.account for p in payers]
    out = []
    for index, payer in enumerate(payers):
        key = payer.wallet.signing_key
        start = (first_nonce or {}).get(payer.account, 0)
        txs = []
        for n in range(per_payer):
            to = accounts[(index + rng.randrange(1, len(accounts))) % len(accounts)]
            txs.append(
                sign_tx(
                    key,
                    TxKind.TRANSFER,
                    chain_id,
                    start + n,
                    to=to,
                    token=payer.token,
                    amount=rng.randrange(1, max_amount + 1),
                    memo=f"INV-{index}-{start + n}",
                )
            )
        out.append(txs)
    return out


def interleave(per_payer: Iterable[Sequence[T]]) -> list[T]:
    """Round-robin over the lists (each list's own order is kept)."""
    lists = [list(x) for x in per_payer]
    out: list[T] = []
    for i in range(max((len(x) for x in lists), default=0)):
        out.extend(x[i] for x in lists if i < len(x))
    return out


def expected_balances(
    genesis_balances: dict[tuple[bytes, str], int], txs: Iterable[Tx]
) -> dict[tuple[bytes, str], int]:
    """Balances after applying every transfer once (a tiny model of the ledger)."""
    balances = dict(genesis_balances)
    for tx in txs:
        balances[(tx.sender, tx.token)] = balances.get((tx.sender, tx.token), 0) - tx.amount
        balances[(tx.to, tx.token)] = balances.get((tx.to, tx.token), 0) + tx.amount
    return balances
