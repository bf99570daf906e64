"""Crash safety: a writer process is killed with SIGKILL at random moments, again and
again, and every reopening must find a head, blocks, certificates, tx indexes, balances
and nonces that agree with each other and with a replay of the blocks from genesis."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

from chain.state import State, execute_block
from chain.store import Store
from tests.ledger_helpers import make_genesis, pub, view

GENESIS = make_genesis()
ROOT = Path(__file__).resolve().parent.parent
KILLS = 24
NAMES = ["alice", "bob", "carol", "dave", "jpm-issuer", "dbs-issuer"]


class Replay:
    """A validator that only re-executes the committed blocks, from genesis onwards."""

    def __init__(self) -> None:
        self.state = State(GENESIS)
        self.hashes: list[bytes] = []  # block hash by height - 1
        self.by_account: dict[bytes, list[tuple[int, int]]] = {}  # oldest first

    def catch_up(self, store: Store) -> None:
        for height, block_hash in enumerate(self.hashes, start=1):
            stored = store.block(height)
            assert stored is not None and stored.hash == block_hash, f"block {height} changed"
        for block, cert in store.blocks(len(self.hashes) + 1, store.head.height):
            assert cert.height == block.height and cert.block_hash == block.hash
            changes = execute_block(self.state, block)  # signatures, rules and state root
            self.state.commit(changes, block.header)
            self.hashes.append(block.hash)
            for position, tx in enumerate(block.txs):
                assert store.tx_location(tx.tx_id) == (block.height, position)
                for account in {tx.sender, tx.to} - {b""}:
                    entry = (block.height, position)
                    self.by_account.setdefault(account, []).append(entry)


def _kill_at_a_random_moment(store_dir: Path, rng: random.Random) -> tuple[str, int]:
    """Start a writer, kill it by PID after a random number of progress lines, and
    return the last complete line it printed as (phase, height)."""
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.crash_writer", str(store_dir), str(rng.randrange(2**32))],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(rng.randint(1, 8)):
            line = writer.stdout.readline()  # type: ignore[union-attr]
            assert line, f"writer exited early: {writer.stderr.read()}"  # type: ignore[union-attr]
        writer.kill()  # SIGKILL: mid-batch after "committing", just after sync on "committed"
        writer.wait()
        # The writer may have gone on between our last read and the kill (on a busy
        # machine, several ms): what it printed before dying is still in the pipe, and
        # its last line is where it really stopped.
        complete = writer.stdout.read().split("\n")[:-1]  # type: ignore[union-attr]
        line = complete[-1] if complete else line
        phase, height = line.split()
        return phase, int(height)
    finally:
        writer.kill()
        writer.wait()
        writer.stdout.close()  # type: ignore[union-attr]
        writer.stderr.close()  # type: ignore[union-attr]


def test_a_killed_writer_always_leaves_a_consistent_store(tmp_path: Path) -> None:
    rng = random.Random(20261125)
    store_dir = tmp_path / "db"
    replay = Replay()
    mid_batch_kills = 0
    for _ in range(KILLS):
        phase, height = _kill_at_a_random_moment(store_dir, rng)
        with Store.open(store_dir, GENESIS) as store:  # itself checks root, head and tip
            head = store.head.height
            if phase == "committed":
                assert head == height, "a synced commit was lost"
            else:
                assert head in (height - 1, height), "head is neither the old nor the new"
                mid_batch_kills += 1
            replay.catch_up(store)
            assert replay.state.height == head
            assert replay.state.last_hash == store.head.hash
            assert replay.state.state_root == store.head.state_root == store.state.state_root
            assert view(replay.state) == view(store.state)
            for name in NAMES:
                account = pub(name)
                expected = {t: v for (a, t), v in replay.state.balances.items() if a == account}
                assert store.balances(account) == expected
                assert store.nonce(account) == replay.state.nonces.get(account, 0)
                # the per-account index holds exactly the blocks' txs: none lost, none
                # left behind by a batch that did not commit
                indexed = store.account_txs(account, limit=1_000_000)
                assert indexed == replay.by_account.get(account, [])[::-1]
    assert mid_batch_kills > 0 and replay.state.height > KILLS
