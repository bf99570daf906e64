"""Issue 4 acceptance: four validator processes on 127.0.0.1 under load and process faults.

Every test starts its own network (tests/netfixture.py): one `depnet node run` process per
bank, 50 funded accounts per bank. Transfers are signed in the test, then submitted in
batches through the HTTP API of different nodes; what was committed is read back from the
blocks, and every node's balances and nonces are checked against a model that applies
each committed transfer once. Waits poll a condition until a deadline; the only wait of a
fixed length is the 20 s freeze that the acceptance criterion itself prescribes.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import httpx
import libp2p.network.swarm
import msgpack
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from multiaddr import Multiaddr
from nacl.signing import SigningKey

from chain.tx import Tx
from cli.devnet.load import Payer, expected_balances, interleave, load_payers, sign_transfers
from cli.devnet.localnet import ChainScan, LocalNet
from cli.devnet.start import free_ports
from consensus.messages import Vote, VoteKind, encode_message, vote_sign_bytes
from node.p2p import (
    CONSENSUS_PROTOCOL,
    SYNC_PROTOCOL,
    TXS_PROTOCOL,
    Kind,
    P2PNetwork,
    RequestFailed,
    peer_id_from_pubkey,
)
from tests.netfixture import localnet_fixture  # noqa: F401  (provides `localnet`)

pytestmark = pytest.mark.network

BATCH = 250
COMMIT_TIMEOUT = 90.0
VICTIM = "BNP"


# --- helpers ----------------------------------------------------------------------------


def payers_of(ln: LocalNet) -> dict[str, list[Payer]]:
    """Funded load accounts grouped by their bank; each bank's node receives their txs."""
    grouped: dict[str, list[Payer]] = {bank: [] for bank in ln.banks}
    for payer in load_payers(ln.net):
        grouped[payer.wallet.bank].append(payer)
    return grouped


def sign(ln: LocalNet, payers: Sequence[Payer], per_payer: int, **kw: object) -> list[list[Tx]]:
    return sign_transfers(ln.genesis.chain_id, payers, per_payer, **kw)  # type: ignore[arg-type]


def submit(ln: LocalNet, bank: str, txs: Sequence[Tx], batch: int = BATCH) -> None:
    """POST ``txs`` to one node in batches; every tx must be accepted into its mempool."""
    for start in range(0, len(txs), batch):
        chunk = txs[start : start + batch]
        answer = ln.submit(bank, [tx.raw for tx in chunk])
        refused = [r for r in answer["results"] if not r["accepted"]]
        assert answer["accepted"] == len(chunk), f"{bank} refused {refused[:3]}"
        assert [r["tx_id"] for r in answer["results"]] == [tx.tx_id.hex() for tx in chunk]


def wait_committed(ln: LocalNet, scan: ChainScan, txs: Iterable[Tx], banks: Sequence[str]) -> int:
    """Until the scanned node's blocks hold every tx in ``txs``; returns that height."""
    wanted = {tx.tx_id.hex() for tx in txs}

    def done() -> int | None:
        scan.update()
        return scan.height if wanted <= scan.tx_heights.keys() else None

    return ln.wait_for(done, COMMIT_TIMEOUT, f"{len(wanted)} txs to commit", banks)


def assert_agree(ln: LocalNet, banks: Sequence[str]) -> tuple[int, str, str]:
    """Every node has the same block (hash and state root) at the lowest of their heights."""
    height = min(ln.heights(banks).values())
    blocks = {bank: ln.block(bank, height) for bank in banks}
    hashes = {bank: b["hash"] for bank, b in blocks.items()}
    roots = {bank: b["header"]["state_root"] for bank, b in blocks.items()}
    assert len(set(hashes.values())) == 1, f"block hashes differ at {height}: {hashes}"
    assert len(set(roots.values())) == 1, f"state roots differ at {height}: {roots}"
    return height, hashes[banks[0]], roots[banks[0]]


def genesis_balances(ln: LocalNet) -> dict[tuple[bytes, str], int]:
    return {
        (account.account, symbol): amount
        for account in ln.genesis.accounts
        for symbol, amount in account.balances
    }


def assert_ledger(
    ln: LocalNet, banks: Sequence[str], payers: Sequence[Payer], committed: Sequence[Tx]
) -> None:
    """Every node's nonces and balances are what applying each committed tx once gives."""
    expected = expected_balances(genesis_balances(ln), committed)
    sent = Counter(tx.sender for tx in committed)
    for bank in banks:
        for payer in payers:
            info = ln.get(bank, f"/accounts/{payer.wallet.account}")
            assert info["nonce"] == sent[payer.account], (bank, payer.wallet.name)
            got = {token: amount for token, amount in info["balances"].items() if amount}
            want = {
                token: amount
                for (account, token), amount in expected.items()
                if account == payer.account and amount
            }
            assert got == want, (bank, payer.wallet.name)
    # the account index (read on one node: every node writes it in the same commit batch)
    # lists exactly the committed txs an account sent or received; ``committed`` is in
    # chain order: blocks in height order, each block's txs in its order
    for payer in payers:
        mine = [tx.tx_id.hex() for tx in committed if payer.account in (tx.sender, tx.to)]
        history = account_history(ln, banks[-1], payer.wallet.account)
        assert history == mine[::-1], (banks[-1], payer.wallet.name)


def account_history(ln: LocalNet, bank: str, account: str) -> list[str]:
    """The tx ids of GET /accounts/{account}/txs, newest first, every page."""
    found: list[str] = []
    before = ""
    while True:
        page = ln.get(bank, f"/accounts/{account}/txs?limit=20{before}")
        assert page["account"] == account
        found.extend(tx["tx_id"] for tx in page["txs"])
        if page["next_before"] is None:
            return found
        before = f"&before={page['next_before']}"


def committed_txs(scan: ChainScan, signed: dict[str, Tx]) -> list[Tx]:
    """The signed txs in the scanned chain, in chain order; the chain holds no others."""
    assert not scan.duplicates, f"txs committed twice: {scan.duplicates[:5]}"
    foreign = scan.tx_heights.keys() - signed.keys()
    assert not foreign, f"unexpected txs in the chain: {sorted(foreign)[:5]}"
    return [signed[tx_id] for tx_id in sorted(scan.tx_heights, key=scan.tx_heights.__getitem__)]


def by_id(*groups: Iterable[Tx]) -> dict[str, Tx]:
    return {tx.tx_id.hex(): tx for group in groups for tx in group}


def all_payers(grouped: dict[str, list[Payer]]) -> list[Payer]:
    return [p for payers in grouped.values() for p in payers]


# --- 4 validators, 2,000 transfers ------------------------------------------------------


def test_2000_transfers_through_different_nodes_all_commit_and_nodes_agree(
    localnet: LocalNet,
) -> None:
    ln = localnet
    grouped = payers_of(ln)
    per_bank = {bank: interleave(sign(ln, payers, 10)) for bank, payers in grouped.items()}
    signed = by_id(*per_bank.values())
    assert len(signed) == 2_000

    # Batches go to the nodes in turn, each node getting its own bank's accounts' txs.
    for start in range(0, 500, BATCH):
        for bank in ln.banks:
            submit(ln, bank, per_bank[bank][start : start + BATCH])

    scan = ChainScan(ln, "JPM")
    height = wait_committed(ln, scan, signed.values(), ln.banks)
    committed = committed_txs(scan, signed)
    assert len(committed) == 2_000

    ln.wait_height(height, timeout=COMMIT_TIMEOUT)
    agreed, block_hash, root = assert_agree(ln, ln.banks)
    scan.update(agreed)
    assert scan.blocks[agreed]["hash"] == block_hash
    # No tx after these, so every node's head has the same state root, whatever its height.
    assert {ln.get(b, "/head")["state_root"] for b in ln.banks} == {root}
    for bank in ln.banks:  # each node knows where every tx went
        sample = list(signed)[:: 97 if bank == "JPM" else 401]
        for tx_id in sample:
            status = ln.get(bank, f"/txs/{tx_id}")
            assert (status["status"], status["height"]) == ("committed", scan.tx_heights[tx_id])
    assert_ledger(ln, ln.banks, all_payers(grouped), committed)
    assert all(ln.status(b)["mempool_size"] == 0 for b in ln.banks)


# --- SIGKILL during load ----------------------------------------------------------------


def test_validator_killed_during_load_others_commit_and_it_catches_up_losing_nothing(
    localnet: LocalNet,
) -> None:
    ln = localnet
    others = [b for b in ln.banks if b != VICTIM]
    grouped = payers_of(ln)
    first = {bank: interleave(sign(ln, payers, 4, seed=2)) for bank, payers in grouped.items()}
    second = {
        bank: interleave(
            sign(ln, grouped[bank], 4, seed=3, first_nonce={p.account: 4 for p in grouped[bank]})
        )
        for bank in others
    }
    signed = by_id(*first.values(), *second.values())
    scan = ChainScan(ln, "JPM")

    for bank in ln.banks:
        submit(ln, bank, first[bank])
    # Kill as soon as part of the load is committed: the rest is in flight.
    ln.wait_for(lambda: scan.update() and len(scan.tx_heights) >= 100, COMMIT_TIMEOUT, "first txs")
    assert ln.kill(VICTIM) == -9
    before_kill = dict(scan.tx_heights)
    height_at_kill = scan.height

    for bank in others:
        submit(ln, bank, second[bank])
    wait_committed(ln, scan, [tx for b in others for tx in first[b] + second[b]], others)
    heights = ln.wait_progress(3, others, timeout=COMMIT_TIMEOUT)
    assert min(heights.values()) > height_at_kill + 3  # the three kept committing

    ln.start(VICTIM)
    ln.wait_height(max(ln.heights(others).values()), [VICTIM], timeout=COMMIT_TIMEOUT)
    ln.wait_progress(2, timeout=COMMIT_TIMEOUT)  # and now commits with them
    assert_agree(ln, ln.banks)

    scan.update()
    committed = committed_txs(scan, signed)
    # No committed tx lost: each is still at the height it was first committed at.
    assert {tx_id: scan.tx_heights[tx_id] for tx_id in before_kill} == before_kill
    # Whatever of the victim's own clients' txs did not get out before the kill is gone,
    # but every other tx is committed exactly once.
    missing = signed.keys() - scan.tx_heights.keys()
    assert missing <= {tx.tx_id.hex() for tx in first[VICTIM]}
    for tx_id in list(before_kill)[::25]:  # the restarted node agrees on where they are
        assert ln.get(VICTIM, f"/txs/{tx_id}")["height"] == before_kill[tx_id]
    assert_ledger(ln, ln.banks, all_payers(grouped), committed)


# --- SIGSTOP for 20 s -------------------------------------------------------------------


def test_frozen_validator_does_not_block_the_others_and_catches_up_after(
    localnet: LocalNet,
) -> None:
    ln = localnet
    others = [b for b in ln.banks if b != VICTIM]
    grouped = payers_of(ln)
    load = {bank: interleave(sign(ln, grouped[bank], 3, seed=4)) for bank in others}
    signed = by_id(*load.values())
    scan = ChainScan(ln, "JPM")

    ln.pause(VICTIM)
    frozen_at = time.monotonic()
    samples = [(0.0, max(ln.heights(others).values()))]  # (seconds frozen, height)

    def sample() -> float:
        now = time.monotonic() - frozen_at
        if now - samples[-1][0] >= 1.0:
            samples.append((now, max(ln.heights(others).values())))
        return now

    for bank in others:  # their tx batches queue up for the frozen peer
        submit(ln, bank, load[bank])
    wanted = {tx.tx_id for tx in signed.values()}

    def load_committed() -> bool:
        sample()
        scan.update()
        return {bytes.fromhex(t) for t in scan.tx_heights} >= wanted

    ln.wait_for(load_committed, 20.0, "the three to commit the load during the freeze", others)
    ln.wait_for(lambda: sample() >= 20.0, 30.0, "20 s of freeze", others)
    ln.resume(VICTIM)
    # Heights advanced in every third of the freeze, not only before writes blocked.
    thirds = [max(h for t, h in samples if t <= limit) for limit in (0.0, 7.0, 14.0, 21.0)]
    assert thirds == sorted(set(thirds)), f"heights during the freeze: {samples}"

    target = max(ln.heights(others).values())
    ln.wait_height(target, [VICTIM], timeout=COMMIT_TIMEOUT)
    ln.wait_progress(2, timeout=COMMIT_TIMEOUT)
    assert_agree(ln, ln.banks)
    assert_ledger(ln, [VICTIM], all_payers(grouped), committed_txs(scan, signed))


# --- data folder wiped ------------------------------------------------------------------


def test_wiped_validator_resyncs_from_peers_and_rejoins_consensus(localnet: LocalNet) -> None:
    ln = localnet
    grouped = payers_of(ln)
    load = {bank: interleave(sign(ln, payers, 2, seed=5)) for bank, payers in grouped.items()}
    signed = by_id(*load.values())
    scan = ChainScan(ln, "JPM")
    for bank in ln.banks:
        submit(ln, bank, load[bank])
    wait_committed(ln, scan, signed.values(), ln.banks)

    assert ln.terminate(VICTIM) == 0
    home = ln.home(VICTIM)
    ln.wipe_data(VICTIM)
    assert not home.data_dir.exists() and home.signer_file.exists()
    ln.start(VICTIM)
    others = [b for b in ln.banks if b != VICTIM]
    ln.wait_height(max(ln.heights(others).values()), [VICTIM], timeout=COMMIT_TIMEOUT)
    assert_ledger(ln, [VICTIM], all_payers(grouped), committed_txs(scan, signed))
    assert_agree(ln, ln.banks)

    # With HSBC stopped, a quorum (3 of 4) needs the wiped node's precommits: new blocks
    # prove it votes again, and their certificates carry its signature.
    assert ln.terminate("HSBC") == 0
    live = [b for b in ln.banks if b != "HSBC"]
    start = max(ln.heights(live).values())
    ln.wait_height(start + 3, live, timeout=COMMIT_TIMEOUT)
    victim_index = ln.banks.index(VICTIM)
    for height in range(start + 1, start + 4):
        signers = [index for index, _ in ln.block(VICTIM, height)["cert"]["signatures"]]
        assert victim_index in signers and ln.banks.index("HSBC") not in signers
    assert_agree(ln, live)


# --- a stranger on the p2p network ------------------------------------------------------


def test_peer_with_unknown_key_gets_no_tx_or_vote_accepted(localnet: LocalNet) -> None:
    ln = localnet
    tx = sign(ln, payers_of(ln)["JPM"][:2], 1, seed=6)[0][0]
    before = {b: ln.status(b) for b in ln.banks}
    stranger_seed = os.urandom(32)
    stranger = SigningKey(stranger_seed)
    validators = {bytes.fromhex(e.validator): e.p2p_address for e in ln.entries.values()}

    async def stranger_session() -> None:
        (port,) = free_ports(1)
        net = P2PNetwork(stranger_seed, f"/ip4/127.0.0.1/tcp/{port}", validators)
        height = before["JPM"]["height"] + 1
        votes = []
        for claimed in (bytes(stranger.verify_key), next(iter(validators))):  # own, forged
            for kind in VoteKind:
                body = vote_sign_bytes(ln.genesis.chain_id, kind, height, 0, None)
                signature = stranger.sign(body).signature
                votes.append(Vote(kind, height, 0, None, claimed, signature))
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            net.broadcast(Kind.TXS, msgpack.packb([tx.raw], use_bin_type=True))
            for vote in votes:
                net.broadcast(Kind.CONSENSUS, encode_message(vote))
            for pub in validators:
                with pytest.raises(RequestFailed):
                    await net.request(pub, Kind.SYNC_REQUEST, msgpack.packb([1, 8]), 10.0)
            # Keep knocking (the network redials) while the chain moves on.
            await trio.to_thread.run_sync(lambda: ln.wait_progress(4, timeout=COMMIT_TIMEOUT))
            assert net.connected_peers() == set()
            nursery.cancel_scope.cancel()

    trio.run(stranger_session)

    stranger_id = str(peer_id_from_pubkey(bytes(stranger.verify_key)))
    for bank in ln.banks:
        assert ln.tx(bank, tx.tx_id) is None, f"{bank} took the stranger's tx"
        status = ln.status(bank)
        assert status["evidence"] == 0 and status["mempool_size"] == 0
        assert status["state_root"] == before[bank]["state_root"]
        assert status["height"] > before[bank]["height"]
        assert bytes(stranger.verify_key).hex() not in status["peer_ids"]
        refusals = [
            line for line in ln.home(bank).log_file.read_text().splitlines() if "refused" in line
        ]
        assert any(stranger_id in line for line in refusals), f"{bank} logged no refusal"
    assert_agree(ln, ln.banks)
    # The same tx through the API commits: it was valid, only its messenger was not.
    submit(ln, "DBS", [tx])
    wait_committed(ln, ChainScan(ln, "DBS"), [tx], ln.banks)


# --- garbage on every protocol and route ------------------------------------------------


def _frame(kind: int, payload: bytes) -> bytes:
    return (len(payload) + 1).to_bytes(4, "big") + bytes([kind]) + payload


def _pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


GARBAGE = [
    os.urandom(3_000),
    b"\xff\xff\xff\xff" + os.urandom(64),  # a 4 GB length prefix
    b"\x00\x00\x00\x00",  # a zero length
    _frame(99, b"unknown kind"),
    _frame(Kind.SYNC_RESPONSE, b"not asked for"),
    _frame(Kind.CONSENSUS, os.urandom(500)),
    _frame(Kind.CONSENSUS, _pack([1, "x", None, {"a": [1.5]}])),
    _frame(Kind.CONSENSUS, _pack([2, 1, 10**18, -1, None, b"\x00" * 32, b"\x01" * 64])),
    _frame(Kind.TXS, os.urandom(500)),
    _frame(Kind.TXS, _pack({"txs": 1})),
    _frame(Kind.TXS, _pack([b"\x00" * 200, 7, "hex", None, [b"x"]])),
    _frame(Kind.SYNC_REQUEST, os.urandom(100)),
    _frame(Kind.SYNC_REQUEST, _pack([0, 10])),
    _frame(Kind.SYNC_REQUEST, _pack([1, -5])),
    _frame(Kind.SYNC_REQUEST, _pack(["1", 2**63])),
    _frame(Kind.SYNC_REQUEST, _pack([1, 2, 3])),
    _frame(Kind.HEARTBEAT, b"") + os.urandom(200),
    _frame(Kind.CONSENSUS, b"truncated")[:-4],  # then the stream closes
]


async def send_garbage(seed: bytes, targets: dict[bytes, str]) -> list[str]:
    """As the validator whose key is ``seed``, open a fresh stream per garbage payload on
    every protocol of every target (targets in parallel), write it and wait briefly for
    the target's reaction; returns those reactions."""
    libp2p.network.swarm._HAPPY_EYEBALLS_DELAY = 0.005  # as node/p2p.py does
    host = new_host(key_pair=create_new_key_pair(seed))
    outcomes: list[str] = []

    async def pester(pub: bytes) -> None:
        peer = peer_id_from_pubkey(pub)
        for protocol in (CONSENSUS_PROTOCOL, TXS_PROTOCOL, SYNC_PROTOCOL):
            for payload in GARBAGE:
                with trio.fail_after(20):
                    stream = await host.new_stream(peer, [protocol])
                outcome = "silent"
                try:
                    await stream.write(payload)
                    with trio.move_on_after(0.2):  # a reset, EOF or an answer
                        outcome = repr(await stream.read(1024))[:40]
                except Exception as exc:
                    outcome = type(exc).__name__
                finally:
                    with trio.move_on_after(1):
                        await stream.reset()
                outcomes.append(outcome)

    async with host.run(listen_addrs=[Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        for pub, addr in targets.items():
            host.get_peerstore().add_addrs(peer_id_from_pubkey(pub), [Multiaddr(addr)], 0)
        async with trio.open_nursery() as nursery:
            for pub in targets:
                nursery.start_soon(pester, pub)
    return outcomes


def api_garbage(url: str) -> list[tuple[str, str, int, int, object]]:
    """Malformed requests on every route; returns (method, path, expected, status, body).

    ``expected`` is 400 for "some 4xx with an error body", else the exact status: routes
    that take no input ignore a junk query string or body, and a batch of well-formed JSON
    whose tx is junk is answered 200 with that tx rejected."""
    long_hex = "ab" * 5_000
    json_type = {"content-type": "application/json"}
    requests: list[tuple[str, str, bytes | None, dict[str, str], int]] = []
    for body in (
        b"",
        b"{",
        b"\xff\xfe garbage",
        b"null",
        b"[]",
        b'"txs"',
        b'{"txs": "00"}',
        b'{"txs": [1, 2]}',
        b'{"txs": ["zz"]}',
        b'{"txs": []}',
        b'{"txs": null}',
        b'{"tx": ["00"]}',
        b'{"txs": [' + b'"00",' * 1_000 + b'"00"]}',  # 1,001: over the batch limit
        b"[" * 100_000 + b"]" * 100_000,
        b'{"txs": [1e999999]}',
        b'{"txs": [' + b"9" * 10_000 + b"]}",
        os.urandom(4_000),
    ):
        requests.append(("POST", "/txs", body, json_type, 400))
    requests.append(("POST", "/txs", b'{"txs": ["00", "zz00"]}', {}, 400))
    requests.append(
        ("POST", "/txs", b'{"txs": ["00", "' + os.urandom(600).hex().encode() + b'"]}', {}, 200)
    )
    for route in ("/txs/{}", "/accounts/{}", "/accounts/{}/txs"):
        for arg in ("zz", "00" * 33, "0" * 63, long_hex, "%00", "-1", "null"):
            requests.append(("GET", route.format(arg), None, {}, 400))
    for query in ("limit=0", "limit=501", "limit=x", "before=0", "before=%ff", "limit=" + long_hex):
        requests.append(("GET", f"/accounts/{'ab' * 32}/txs?{query}", None, {}, 400))
    for arg in ("0", "-1", "abc", "1.5", "9" * 40, "18446744073709551616", "%ff"):
        requests.append(("GET", f"/blocks/{arg}", None, {}, 400))
    for path in ("/head", "/status", "/metrics", "/blocks/1", "/openapi.json"):
        requests.append(("GET", path + "?x=%ff&" + "a" * 2_000, b"junk body", json_type, 200))
    for path in ("/head", "/status", "/metrics", "/txs", "/blocks/1", "/openapi.json"):
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            if (method, path) != ("POST", "/txs"):
                requests.append((method, path, os.urandom(300), json_type, 400))
    requests.append(("GET", "/txs", None, {}, 400))  # POST only
    requests.append(("GET", "/" + "x" * 5_000, None, {}, 400))
    requests.append(("BREW", "/status", None, {}, 400))

    results = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for method, path, body, headers, expected in requests:
            # A fresh connection each: the server may close one after refusing a body.
            headers = {**headers, "connection": "close"}
            try:
                response = client.request(method, path, content=body, headers=headers)
            except httpx.TransportError as exc:
                results.append((method, path[:60], expected, -1, repr(exc)))
                continue
            try:
                doc = response.json()
            except ValueError:
                doc = response.text[:80]
            results.append((method, path[:60], expected, response.status_code, doc))
    # Not HTTP at all: the server drops the connection and keeps serving.
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(os.urandom(2_000) + b"\r\n\r\n")
        sock.settimeout(10)
        with contextlib.suppress(OSError):
            while sock.recv(4096):
                pass
    return results


def test_garbage_on_every_protocol_and_route_leaves_nodes_running_and_unchanged(
    localnet: LocalNet,
) -> None:
    ln = localnet
    others = [b for b in ln.banks if b != VICTIM]
    before = {b: ln.status(b) for b in ln.banks}
    root = before["JPM"]["state_root"]

    for bank in ln.banks:
        for method, path, expected, code, doc in api_garbage(ln.url(bank)):
            if expected == 400:
                assert 400 <= code < 500, (bank, method, path, code, doc)
                assert isinstance(doc, dict) and set(doc["error"]) == {"code", "message"}, doc
            else:
                assert code == expected, (bank, method, path, code, doc)
        head = ln.get(bank, "/head")  # still serving, and nothing reached the state
        assert head["state_root"] == root

    # On the p2p side the garbage comes from an allowed identity: the victim's own key
    # (its process stopped), so the frames reach the nodes' stream handlers.
    assert ln.terminate(VICTIM) == 0
    seed = ln.home(VICTIM).load_key()
    targets = {bytes.fromhex(ln.entries[b].validator): ln.entries[b].p2p_address for b in others}
    outcomes = trio.run(send_garbage, seed, targets)
    assert len(outcomes) == 3 * 3 * len(GARBAGE)
    assert "StreamEOF" in outcomes or "StreamReset" in outcomes  # refused, not ignored

    for bank in others:
        assert ln.alive(bank)
    ln.wait_progress(3, others, timeout=COMMIT_TIMEOUT)
    bad_frames = sum(
        "bad frame" in line or "bad message from peer" in line
        for line in ln.home("JPM").log_file.read_text().splitlines()
    )
    assert bad_frames > 0  # the garbage did reach the node, and was refused

    ln.start(VICTIM)
    ln.wait_height(max(ln.heights(others).values()), [VICTIM], timeout=COMMIT_TIMEOUT)
    ln.wait_progress(2, timeout=COMMIT_TIMEOUT)
    assert_agree(ln, ln.banks)
    for bank in ln.banks:
        status = ln.status(bank)
        assert status["state_root"] == root, f"{bank}'s state changed"
        assert status["mempool_size"] == 0 and status["evidence"] == 0
        assert status["height"] > before[bank]["height"]


# --- depnet bench network ---------------------------------------------------------------


def test_bench_network_reports_figures_that_add_up_and_stops_its_nodes(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from cli.commands.bench import bench

    home = tmp_path / "bench"
    args = ["network", "--duration", "3", "--rate", "400", "--batch", "100"]
    args += ["--accounts", "80", "--keep", str(home), "--json"]
    result = CliRunner().invoke(bench, args)
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert figures["submitted_accepted"] > 0 and figures["submitted_rejected"] == {}
    assert figures["committed_of_accepted"] == figures["submitted_accepted"]
    assert figures["uncommitted_after_drain"] == 0 and figures["head_hashes_agree"]
    assert 0 < figures["committed_tx_per_s"] <= figures["accepted_tx_per_s"] * 1.5
    latency = figures["latency_ms"]
    assert 0 < latency["p50"] <= latency["p99"] <= latency["max"]
    assert set(figures["rss_mb"]) == {"JPM", "HSBC", "DBS", "BNP"}
    assert all(mb > 20 for mb in figures["rss_mb"].values())
    assert min(figures["heights"].values()) > figures["height_at_load_start"]
    # Every validator it started is gone: none still runs with a home under ``home``.
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                assert str(home).encode() not in cmdline, f"pid {pid} still runs"
