"""A fake validator network for CLI tests: the real ledger rules behind the node API's JSON.

Every node of the network answers from one shared ledger (chain/state.py), so a CLI test
sees real rejections (insufficient funds, unknown token, unregistered recipient) without
starting processes. Each accepted tx commits at once in a block of its own, dated a
second after the one before (``advance`` moves the clock on further, so deadlines can
pass). A test can take nodes down (connection refused), fill the mempool, or set what
/status reports.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

from chain.errors import TxRejected
from chain.state import Changes, State, check_tx
from chain.tx import decode_tx
from node.api import TxOut, as_json
from node.layout import NetworkHome
from node.service import ContractInfo, OfferInfo, locked_by
from tests.ledger_helpers import at_time


class FakeNetwork:
    def __init__(self, net: NetworkHome) -> None:
        self.net = net
        genesis = net.genesis()
        self.genesis = genesis
        self.changes = Changes(State(genesis))
        self.blocks: list[list[Any]] = []
        self.committed: dict[str, tuple[int, int]] = {}
        self.bank_by_port = {int(e.api_url.rsplit(":", 1)[1]): e.bank for e in net.nodes()}
        self.down: set[str] = set()
        self.mempool_full = False
        self.status: dict[str, dict] = {}  # bank -> fields that override /status
        self.requests: list[str] = []
        self.history_page = 500  # most txs a history page holds (a real node: up to limit)
        self.faults: dict[str, list[dict]] = {}  # bank -> fault specs posted to /admin/faults
        self.times: list[int] = []  # each block's time
        self.skipped_ms = 0  # how far ``advance`` moved the clock past one second a block

    def advance(self, ms: int) -> None:
        """Date the next block ``ms`` later than it would be."""
        self.skipped_ms += ms

    def time_of(self, height: int) -> int:
        """The time of block ``height`` (the genesis time at 0; the next one's if not yet)."""
        if 1 <= height <= len(self.times):
            return self.times[height - 1]
        return self.genesis.genesis_time_ms + 1000 * height + self.skipped_ms

    def transport(self, method: str, url: str, body: bytes | None) -> tuple[int, bytes]:
        """What cli.devnet.client.NodeClient calls instead of the network."""
        parts = urlsplit(url)
        bank = self.bank_by_port[parts.port]
        if bank in self.down:
            raise ConnectionRefusedError(111, "Connection refused")
        path = parts.path
        query = f"?{parts.query}" if parts.query else ""
        self.requests.append(f"{bank} {method} {path}{query}")
        if method == "POST" and path == "/txs":
            return self._submit(json.loads(body or b"{}")["txs"])
        if path == "/admin/faults":
            return self._admin(bank, method, body)
        for pattern, route in (
            (r"/txs/([0-9a-f]{64})", self._tx),
            (r"/accounts/([0-9a-f]{64})", self._account),
            (r"/accounts/([0-9a-f]{64})/txs", lambda a: self._account_txs(a, parts.query)),
            (r"/blocks/(\d+)", self._block),
            (r"/contracts/([0-9a-f]{64})", self._contract),
            (r"/contracts", lambda: self._records("contracts", parts.query)),
            (r"/offers/([0-9a-f]{64})", self._offer),
            (r"/offers", lambda: self._records("offers", parts.query)),
            (r"/head", self._head),
            (r"/status", lambda: self._status(bank)),
        ):
            match = re.fullmatch(pattern, path)
            if match:
                return route(*match.groups())
        return _error(404, "not_found", f"no route {path}")

    def balance_of(self, account: str, token: str) -> int:
        return self.changes.balance(bytes.fromhex(account), token)

    def _submit(self, raws: list[str]) -> tuple[int, bytes]:
        results = []
        for raw in raws:
            tx = decode_tx(bytes.fromhex(raw))
            if self.mempool_full:
                results.append(_result(tx.tx_id.hex(), False, "mempool_full", "pool is full"))
                continue
            height = len(self.blocks) + 1
            self.changes = at_time(self.changes, self.time_of(height))
            try:
                check_tx(self.changes, tx)
            except TxRejected as exc:
                results.append(_result(tx.tx_id.hex(), False, exc.reason.value, exc.detail))
                continue
            self.times.append(self.time_of(height))
            self.blocks.append([tx])
            self.committed[tx.tx_id.hex()] = (len(self.blocks), 0)
            results.append(_result(tx.tx_id.hex(), True, None, None))
        accepted = sum(r["accepted"] for r in results)
        return _ok(
            {"accepted": accepted, "rejected": len(results) - accepted, "results": results},
        )

    def _tx(self, tx_id: str) -> tuple[int, bytes]:
        if tx_id not in self.committed:
            return _error(404, "tx_not_found", f"no tx {tx_id} is known to this node")
        height, position = self.committed[tx_id]
        return _ok(
            {
                "tx_id": tx_id,
                "status": "committed",
                "height": height,
                "position": position,
                "code": None,
                "message": None,
            },
        )

    def _account(self, account: str) -> tuple[int, bytes]:
        key = bytes.fromhex(account)
        bank = self.changes.bank_of(key)
        if bank is None:
            return _error(404, "account_not_found", f"account {account} is not registered")
        balances = {
            t: self.changes.balance(key, t)
            for t in self.genesis.tokens
            if self.changes.balance(key, t)
        }
        nonce = self.changes.nonce(key)
        contracts, offers = self._all()
        return _ok(
            {
                "account": account,
                "bank": bank,
                "nonce": nonce,
                "next_nonce": nonce,
                "balances": balances,
                "locked": locked_by(contracts.values(), offers.values(), key),
                "frozen": self.changes.is_frozen(key),
            },
        )

    def _all(self) -> tuple[dict, dict]:
        base = self.changes.base
        return (
            {**base.contracts, **self.changes.contracts},
            {**base.offers, **self.changes.offers},
        )

    def _contract(self, contract_id: str) -> tuple[int, bytes]:
        found = self._all()[0].get(bytes.fromhex(contract_id))
        if found is None:
            return _error(404, "contract_not_found", f"no contract {contract_id}")
        return _ok(as_json(ContractInfo.of(bytes.fromhex(contract_id), found)))

    def _offer(self, offer_id: str) -> tuple[int, bytes]:
        found = self._all()[1].get(bytes.fromhex(offer_id))
        if found is None:
            return _error(404, "offer_not_found", f"no offer {offer_id}")
        return _ok(as_json(OfferInfo.of(bytes.fromhex(offer_id), found)))

    def _records(self, what: str, query: str) -> tuple[int, bytes]:
        """GET /contracts or /offers with the API's party, open and limit parameters."""
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        party = bytes.fromhex(params["party"]) if "party" in params else None
        contracts, offers = self._all()
        shape = ContractInfo if what == "contracts" else OfferInfo
        records = contracts if what == "contracts" else offers
        infos = [shape.of(i, r) for i, r in records.items()]  # type: ignore[attr-defined]
        chosen = [
            as_json(r)
            for r in sorted(infos, key=lambda r: (r.expiry_ms, r.id))
            if (party is None or r.involves(party))
            and (params.get("open") != "true" or r.status == "open")
        ]
        return _ok({what: chosen[: int(params.get("limit", "100"))]})

    def _account_txs(self, account: str, query: str) -> tuple[int, bytes]:
        """GET /accounts/{account}/txs: each block here holds one tx, so no page splits one."""
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        try:
            limit = int(params.get("limit", "50"))
            before = int(params["before"]) if "before" in params else None
        except ValueError:
            return _error(400, "invalid_request", "query limit/before: not an integer")
        if not 1 <= limit <= 500 or (before is not None and before < 1):
            return _error(400, "invalid_request", "query limit/before: out of range")
        if self.changes.bank_of(bytes.fromhex(account)) is None:
            return _error(404, "account_not_found", f"account {account} is not registered")
        top = len(self.blocks) if before is None else min(before - 1, len(self.blocks))
        found = []
        for height in range(top, 0, -1):
            for position, tx in enumerate(self.blocks[height - 1]):
                if account in (tx.sender.hex(), tx.to.hex()):
                    found.append((height, position, tx))
        page = found[: min(limit, self.history_page)]
        return _ok(
            {
                "account": account,
                "txs": [
                    {
                        **as_json(TxOut.of(tx)),
                        "height": h,
                        "position": p,
                        "time_ms": self.time_of(h),
                    }
                    for h, p, tx in page
                ],
                "next_before": page[-1][0] if len(found) > len(page) else None,
            },
        )

    def _block(self, height: str) -> tuple[int, bytes]:
        index = int(height) - 1
        if not 0 <= index < len(self.blocks):
            return _error(404, "block_not_found", f"no block at height {height}")
        return _ok(self.block_json(index + 1))

    def block_json(self, height: int) -> dict:
        txs = self.blocks[height - 1]
        return {
            "height": height,
            "hash": _hash(height),
            "header": {
                "chain_id": self.genesis.chain_id,
                "height": height,
                "round": 0,
                "prev_hash": _hash(height - 1),
                "proposer": self.genesis.banks[height % len(self.genesis.banks)].validator.hex(),
                "time_ms": self.time_of(height),
                "tx_root": "00" * 32,
                "state_root": "00" * 32,
                "last_cert_hash": "00" * 32,
            },
            "txs": [as_json(TxOut.of(tx)) for tx in txs],
            "last_cert": None,
            "cert": {
                "height": height,
                "round": 0,
                "block_hash": _hash(height),
                "signatures": [[0, "00"], [1, "00"], [2, "00"]],
            },
        }

    def _head(self) -> tuple[int, bytes]:
        height = len(self.blocks)
        return _ok(
            {
                "chain_id": self.genesis.chain_id,
                "height": height,
                "hash": _hash(height),
                "state_root": "00" * 32,
                "time_ms": self.time_of(height),
            },
        )

    def _status(self, bank: str) -> tuple[int, bytes]:
        height = len(self.blocks)
        validators = [b.validator.hex() for b in self.genesis.banks]
        body = {
            "bank": bank,
            "chain_id": self.genesis.chain_id,
            "height": height,
            "round": 0,
            "step": "propose",
            "peers": 3,
            "mempool_size": 0,
            "evidence": 0,
            "head_hash": _hash(height),
            "state_root": "00" * 32,
            "seconds_since_commit": 0.2,
            "syncing": False,
            "network_height": height,
            "consensus": {
                "height": height + 1,
                "round": 0,
                "step": "propose",
                "proposer": validators[(height + 1) % len(validators)],
                "proposal": None,
                "prevotes": [],
                "precommits": [],
                "quorum": 2 * len(validators) // 3 + 1,
                "validators": len(validators),
                "locked_round": -1,
                "valid_round": -1,
                "evidence": 0,
            },
        }
        override = self.status.get(bank, {})
        body.update({k: v for k, v in override.items() if k != "consensus"})
        body["consensus"].update(override.get("consensus", {}))
        return _ok(body)

    def _admin(self, bank: str, method: str, body: bytes | None) -> tuple[int, bytes]:
        """A node's fault list: POST appends a spec, DELETE empties it, GET reads it."""
        specs = self.faults.setdefault(bank, [])
        if method == "POST":
            specs.append(json.loads(body or b"{}"))
        elif method == "DELETE":
            specs.clear()
        return _ok({"bank": bank, "seed": 0, "faults": specs, "skew_ms": 0, "byzantine": None,
                    "cut_to": [], "cut_from": [], "frames": {}})  # fmt: skip


def _hash(height: int) -> str:
    return hashlib.sha256(str(height).encode()).hexdigest()


def _result(tx_id: str, accepted: bool, code: str | None, message: str | None) -> dict:
    return {"tx_id": tx_id, "accepted": accepted, "code": code, "message": message}


def _ok(body: dict) -> tuple[int, bytes]:
    return 200, json.dumps(body).encode()


def _error(status: int, code: str, message: str) -> tuple[int, bytes]:
    return status, json.dumps({"error": {"code": code, "message": message}}).encode()


def free_port_range(count: int) -> int:
    """A base port such that ``count`` consecutive ports are free on 127.0.0.1 right now."""
    import random
    import socket

    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20_000, 60_000 - count)
        socks = []
        try:
            for port in range(base, base + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports found")
