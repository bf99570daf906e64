"""The one HTTP client for a validator's API: the `depnet` commands, the local-network
harness and the network benchmark all talk to nodes through ``NodeClient``.

It speaks HTTP with the standard library's ``http.client``: importing httpx (which pulls
in httpcore, trio and an SSL context) costs more than a whole `depnet wallet transfer`
may take. Errors are typed (cli/devnet/errors.py) and their messages are the lines a
user reads.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from cli.devnet.errors import ApiError, NodeUnreachable
from node.layout import NetworkHome, NodeEntry

HTTP_TIMEOUT = 5.0
PROBE_TIMEOUT = 1.0  # a live node answers /head in milliseconds; a frozen one never does

Transport = Callable[[str, str, bytes | None], tuple[int, bytes]]
MSGPACK = "application/msgpack"
_JSON = {"Content-Type": "application/json"}
_MSGPACK = {"Content-Type": MSGPACK, "Accept": MSGPACK}
_ACCEPT_MSGPACK = {"Accept": MSGPACK}


class NodeClient:
    """A validator's HTTP API over one kept-alive connection (one thread at a time)."""

    # Tests put a fake here: (method, url, body) -> (status, body); OSError = unreachable.
    transport: Transport | None = None

    def __init__(self, entry: NodeEntry, timeout: float = HTTP_TIMEOUT) -> None:
        from urllib.parse import urlsplit

        self.entry = entry
        self.bank = entry.bank
        self.timeout = timeout
        url = urlsplit(entry.api_url)
        self._address = (url.hostname or "127.0.0.1", url.port or 80)
        self._conn: Any = None
        self.headers: dict[str, str] = {}  # sent with every request (the admin token)
        # Seconds the last answer asked to wait before offering more txs (a node that
        # refused txs for room says when it will have room again), else None.
        self.retry_after: float | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, path: str, *, timeout: float | None = None) -> dict:
        return self._request("GET", path, None, timeout or self.timeout)

    def post(self, path: str, body: dict) -> dict:
        return self._request("POST", path, json.dumps(body).encode(), self.timeout)

    def delete(self, path: str) -> dict:
        return self._request("DELETE", path, None, self.timeout)

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None,
        timeout: float,
        headers: dict | None = None,
    ) -> dict:
        from http.client import HTTPException

        try:
            status, raw, media, self.retry_after = self._exchange(
                method, path, body, timeout, headers
            )
        except TimeoutError:
            self.close()
            raise NodeUnreachable(
                f"node {self.bank} at {self.entry.api_url} did not answer within {timeout:g} s"
            ) from None
        except (OSError, HTTPException) as exc:
            self.close()
            reason = "connection refused" if isinstance(exc, ConnectionRefusedError) else exc
            raise NodeUnreachable(
                f"node {self.bank} not reachable at {self.entry.api_url} ({reason}); "
                "is the network up? (`depnet up`)"
            ) from None
        try:
            data = _unpack(raw) if media == MSGPACK else json.loads(raw)
        except ValueError:
            data = None
        if 200 <= status < 300 and isinstance(data, dict):
            return data
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            raise ApiError(str(error.get("code", "error")), str(error.get("message", "")), status)
        raise ApiError(
            "http_error", f"node {self.bank} answered {method} {path} with HTTP {status}", status
        )

    def _exchange(
        self, method: str, path: str, body: bytes | None, timeout: float, headers: dict | None
    ) -> tuple[int, bytes, str, float | None]:
        """One request/response: status, body, its media type and the wait it asks for
        (``retry_after``). A kept-alive connection the server has since closed is replaced
        once (every request here is safe to repeat: a resubmitted tx is a duplicate, which
        the node accepts)."""
        fake = type(self).transport  # via the class: a function stored there is not a method
        if fake is not None:
            return (*fake(method, self.entry.api_url + path, body), "application/json", None)
        from http.client import HTTPConnection, RemoteDisconnected

        while True:
            reused = self._conn is not None
            if not reused:
                self._conn = HTTPConnection(*self._address, timeout=timeout)
            conn = self._conn
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
            try:
                sent = {**self.headers, **(headers or (_JSON if body else {}))}
                conn.request(method, path, body=body, headers=sent)
                response = conn.getresponse()
                media = (response.getheader("Content-Type") or "").split(";")[0].strip()
                return response.status, response.read(), media, _retry_after(response)
            except (RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if not reused:
                    raise

    # The endpoints, one method each, so callers never spell paths.

    def status(self, *, timeout: float | None = None) -> dict:
        return self.get("/status", timeout=timeout)

    def head(self, *, after: int | None = None) -> dict:
        """The tip; with ``after``, once it is above that height (or after a second)."""
        return self.get("/head" if after is None else f"/head?after={after}")

    def block(self, height: int) -> dict:
        return self.get(f"/blocks/{height}")

    def block_bytes(self, height: int) -> bytes:
        """The committed block's canonical bytes, as the node stores them (decode with
        ``chain.block.Block.decode``): the node decodes nothing to answer."""
        answer = self._request("GET", f"/blocks/{height}", None, self.timeout, _ACCEPT_MSGPACK)
        data = answer.get("block")
        if not isinstance(data, bytes):
            raise ApiError("http_error", f"node {self.bank} sent no block bytes for {height}", 200)
        return data

    def account(self, account: bytes) -> dict:
        return self.get(f"/accounts/{account.hex()}")

    def account_txs(self, account: bytes, *, limit: int, before: int | None = None) -> dict:
        """One page of the account's committed txs, newest first (GET /accounts/{a}/txs)."""
        query = f"limit={limit}" + ("" if before is None else f"&before={before}")
        return self.get(f"/accounts/{account.hex()}/txs?{query}")

    def contract(self, contract_id: bytes) -> dict:
        return self.get(f"/contracts/{contract_id.hex()}")

    def contracts(self, *, party: bytes | None, open_only: bool, limit: int) -> list[dict]:
        return self.get(f"/contracts?{_list_query(party, open_only, limit)}")["contracts"]

    def offer(self, offer_id: bytes) -> dict:
        return self.get(f"/offers/{offer_id.hex()}")

    def offers(self, *, party: bytes | None, open_only: bool, limit: int) -> list[dict]:
        return self.get(f"/offers?{_list_query(party, open_only, limit)}")["offers"]

    def metrics(self) -> str:
        """GET /metrics: the node's Prometheus text. Raises OSError if it does not answer."""
        _, raw, _, _ = self._exchange("GET", "/metrics", None, self.timeout, {})
        return raw.decode()

    def evidence(self, height: int | None = None) -> list[dict]:
        """Committed proofs of equivocation (GET /evidence), those of one block if given."""
        query = "" if height is None else f"?height={height}"
        return self.get(f"/evidence{query}")["evidence"]

    def tx(self, tx_id: str) -> dict:
        return self.get(f"/txs/{tx_id}")

    def submit(self, raws: Sequence[bytes]) -> dict:
        """POST /txs with signed txs' wire bytes as one msgpack array (no hex to write or
        parse): the answer holds one result per tx. A full node answers ApiError
        ``mempool_full`` with status 429."""
        import msgpack

        body = msgpack.packb(list(raws), use_bin_type=True)
        return self._request("POST", "/txs", body, self.timeout, _MSGPACK)


def _retry_after(response: Any) -> float | None:
    """The wait an answer asks for, in seconds: ``Retry-After-Ms`` (a node's finer hint,
    as some cloud APIs send it), else ``Retry-After`` (whole seconds, HTTP's own)."""
    for name, unit in (("Retry-After-Ms", 1000), ("Retry-After", 1)):
        value = response.getheader(name)
        if value is not None:
            try:
                return max(0.0, float(value) / unit)
            except ValueError:
                continue
    return None


def _unpack(raw: bytes) -> object:
    import msgpack

    try:
        return msgpack.unpackb(raw, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ValueError(f"undecodable msgpack answer: {exc}") from None


def _list_query(party: bytes | None, open_only: bool, limit: int) -> str:
    query = f"limit={limit}&open={'true' if open_only else 'false'}"
    return query + ("" if party is None else f"&party={party.hex()}")


def connect(net: NetworkHome, prefer: str | None = None, *, only: bool = False) -> NodeClient:
    """A client for a live node that is not catching up: ``prefer``'s node first, then the
    others in order.

    A node catching up after a restart answers submissions with 503 ``syncing`` and knows
    only stale nonces, so the wallet falls over to another bank's node. With ``only`` (the
    user named a node with --node), no other node is tried, syncing or not.
    """
    nodes = net.nodes()
    if prefer is not None:
        first = net.node(prefer)
        nodes = [first] if only else [first, *(n for n in nodes if n.bank != first.bank)]
    last: NodeUnreachable | None = None
    syncing: list[str] = []
    for entry in nodes:
        client = NodeClient(entry)
        try:
            status = client.status(timeout=PROBE_TIMEOUT)
        except NodeUnreachable as exc:
            client.close()
            last = exc
            continue
        if status.get("syncing") and not only:
            client.close()
            syncing.append(f"{entry.bank} at {status['height']} of {status['network_height']}")
            continue
        return client
    if syncing:
        raise NodeUnreachable(
            f"every live node is catching up ({', '.join(syncing)}); retry in a few seconds"
        )
    if len(nodes) == 1 and last is not None:
        raise last
    raise NodeUnreachable(
        f"node not reachable: none of {', '.join(n.bank for n in nodes)} answers; "
        "is the network up? (`depnet up`)"
    )


def try_status(entry: NodeEntry, timeout: float) -> dict | None:
    """The node's /status, or None if it does not answer within ``timeout``."""
    with NodeClient(entry, timeout=timeout) as client:
        try:
            return client.status()
        except NodeUnreachable:
            return None
