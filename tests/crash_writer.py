"""Commit blocks of random transactions to a store until killed (used by test_store_crash).

Usage: python -m tests.crash_writer STORE_DIR SEED

Before each commit it prints ``committing H`` and after it ``committed H`` (flushed), so
the test can kill it either while a batch is being written or just after one is durable.
Every run reopens the store and carries on from its head, as a restarted node does.
"""

from __future__ import annotations

import random
import sys

from chain.store import Store
from chain.tx import TxKind, sign_tx
from tests.ledger_helpers import SGD, USD, build_next, certificate, key, make_genesis, pub

PAYERS = ["alice", "bob", "carol"]


def main(path: str, seed: int) -> None:
    rng = random.Random(seed)
    genesis = make_genesis()
    # Checkpoints every few blocks: a kill lands before, in and after them.
    store = Store.open(path, genesis, checkpoint_blocks=rng.randint(1, 4))
    while True:
        state = store.state
        next_nonce = {name: state.nonces.get(pub(name), 0) for name in [*PAYERS, "jpm-issuer"]}
        txs = []
        for _ in range(rng.randint(0, 60)):
            roll = rng.random()
            if roll < 0.1:  # a deposit comes in
                signer, kind, fields = "jpm-issuer", TxKind.MINT, {"to": pub("carol")}
            elif roll < 0.2:  # a redemption
                signer, kind, fields = rng.choice(PAYERS), TxKind.BURN, {}
            else:
                signer, kind = rng.choice(PAYERS), TxKind.TRANSFER
                fields = {"to": pub(rng.choice(PAYERS))}
            tx = sign_tx(
                key(signer), kind, genesis.chain_id, next_nonce[signer],
                token=rng.choice([USD, SGD]), amount=rng.randint(1, 3_000), **fields,
            )  # fmt: skip
            next_nonce[signer] += 1
            txs.append(tx)
        # Txs that do not apply (a mint of SGD by JPM, an overdraft) are left out, and so
        # are the later ones of the same sender: the block keeps what is valid.
        built = build_next(store, txs)
        height = built.block.height
        print(f"committing {height}", flush=True)
        store.commit_block(built.block, certificate(built.block), built.changes)
        print(f"committed {height}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
