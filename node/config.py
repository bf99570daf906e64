"""A validator node's configuration file (``<node home>/config.json``) and its checks.

The same file runs a node on one machine or across machines: peers are named by their
genesis validator key and a libp2p multiaddr, so moving a bank to another host only
changes addresses. Every mistake in the file is a ConfigError that names the field.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

from multiaddr import Multiaddr

from chain.errors import GenesisError
from chain.genesis import Genesis, parse_genesis
from chain.tx import KEY_SIZE
from consensus.events import Timeouts

CONFIG_FILE = "config.json"
KEY_FILE = "validator.key"
ADMIN_TOKEN_FILE = "admin.token"


class ConfigError(Exception):
    """The node's configuration is missing, unreadable or inconsistent."""


@dataclass(frozen=True)
class Peer:
    bank: str
    validator: str  # hex Ed25519 public key, as in genesis
    address: str  # libp2p multiaddr, e.g. /ip4/127.0.0.1/tcp/26601


@dataclass(frozen=True)
class NodeConfig:
    bank: str
    genesis: str  # path, relative to the node home
    p2p_listen: str
    api_host: str
    api_port: int
    peers: tuple[Peer, ...]
    observers: tuple[str, ...] = ()  # extra libp2p peer ids allowed to connect
    # The mempool takes txs from clients up to about mempool_seconds of the measured commit
    # rate, within [mempool_min_txs, mempool_max_txs]; clients see mempool_full (HTTP 429)
    # beyond, and are told to come back in half that time. Past capacity a tx waits
    # about that long in the pool, so the latency of an overloaded network is bounded by
    # it (measured at twice the capacity offered: p99 1.1 s, 95 % of the peak committed).
    mempool_max_txs: int = 20_000
    mempool_min_txs: int = 2_000
    mempool_seconds: float = 0.5
    block_max_txs: int = 2_000
    timeouts: Timeouts = field(default_factory=lambda: Timeouts(commit_ms=20))
    # CometBFT's choice: with create_empty_blocks and an interval of 0, a height starts at
    # once, txs or not; otherwise a height with no txs waits for one, or for the interval.
    create_empty_blocks: bool = True
    empty_block_interval_ms: int = 1_000

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class NodeHome:
    """Where a node keeps its files; one folder per validator."""

    path: Path

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def key_file(self) -> Path:
        return self.path / KEY_FILE

    @property
    def data_dir(self) -> Path:
        return self.path / "data"

    @property
    def signer_file(self) -> Path:
        return self.path / "signer-state.bin"

    @property
    def admin_token_file(self) -> Path:
        return self.path / ADMIN_TOKEN_FILE

    @property
    def log_file(self) -> Path:
        return self.path / "node.log"

    @property
    def pid_file(self) -> Path:
        return self.path / "node.pid"

    def load_config(self) -> NodeConfig:
        try:
            data = json.loads(self.config_file.read_text())
        except FileNotFoundError:
            raise ConfigError(f"no node config at {self.config_file} (run `depnet init`)") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read {self.config_file}: {exc}") from None
        return parse_config(data)

    def save_config(self, config: NodeConfig) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(json.dumps(config.to_json(), indent=2) + "\n")

    def load_genesis(self, config: NodeConfig) -> Genesis:
        return load_genesis(self.path / config.genesis)

    def load_key(self) -> bytes:
        """The validator's 32-byte Ed25519 seed (hex in the key file)."""
        try:
            seed = bytes.fromhex(self.key_file.read_text().strip())
        except FileNotFoundError:
            raise ConfigError(f"no validator key at {self.key_file}") from None
        except ValueError:
            raise ConfigError(f"validator key {self.key_file} is not hex") from None
        if len(seed) != KEY_SIZE:
            raise ConfigError(f"validator key {self.key_file} must hold {KEY_SIZE} bytes")
        return seed

    def admin_token(self) -> str:
        """The secret the admin API (/admin/faults) asks for: created on first use, readable
        by the node's user only (mode 0600)."""
        path = self.admin_token_file
        if not path.exists():
            token = secrets.token_hex(32)
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
                f.write(token + "\n")
            return token
        path.chmod(0o600)
        token = path.read_text().strip()
        if not token:
            raise ConfigError(f"admin token {path} is empty; delete it to make a new one")
        return token

    def save_key(self, seed: bytes) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.key_file.write_text(seed.hex() + "\n")
        self.key_file.chmod(0o600)


def parse_config(data: object) -> NodeConfig:
    if not isinstance(data, dict):
        raise ConfigError("node config must be a JSON object")
    try:
        peers = tuple(Peer(**p) for p in data.get("peers", []))
        timeouts = Timeouts(**data.get("timeouts", {}))
        config = NodeConfig(
            **{k: v for k, v in data.items() if k not in ("peers", "timeouts", "observers")},
            peers=peers,
            observers=tuple(data.get("observers", ())),
            timeouts=timeouts,
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"node config has a wrong or missing field: {exc}") from None
    _check(config)
    return config


def _check(config: NodeConfig) -> None:
    _multiaddr(config.p2p_listen, "p2p_listen")
    for peer in config.peers:
        _multiaddr(peer.address, f"peer {peer.bank} address")
        try:
            key = bytes.fromhex(peer.validator)
        except ValueError:
            key = b""
        if len(key) != KEY_SIZE:
            raise ConfigError(f"peer {peer.bank} validator must be a 32-byte hex key")
    for observer in config.observers:
        _peer_id(observer)
    if not (isinstance(config.api_port, int) and 0 <= config.api_port < 65536):
        raise ConfigError(f"api_port {config.api_port!r} is not a port number")
    for name in ("mempool_max_txs", "mempool_min_txs", "block_max_txs"):
        value = getattr(config, name)
        if not (isinstance(value, int) and value > 0):
            raise ConfigError(f"{name} must be a positive integer")
    if config.mempool_min_txs > config.mempool_max_txs:
        raise ConfigError("mempool_min_txs must not exceed mempool_max_txs")
    if not (isinstance(config.mempool_seconds, int | float) and config.mempool_seconds > 0):
        raise ConfigError("mempool_seconds must be a positive number")
    if not isinstance(config.create_empty_blocks, bool):
        raise ConfigError("create_empty_blocks must be true or false")
    interval = config.empty_block_interval_ms
    if not (isinstance(interval, int) and interval >= 0):
        raise ConfigError("empty_block_interval_ms must be a non-negative integer (ms)")
    for name, value in asdict(config.timeouts).items():
        if not (isinstance(value, int) and value >= 0):
            raise ConfigError(f"timeouts.{name} must be a non-negative integer (ms)")


def _peer_id(text: object) -> None:
    """An observer entry must be a base58 libp2p peer id (a multihash), as P2PNetwork reads it."""
    # Imported here: libp2p takes about a second to import, and most configs list no observer.
    import multihash
    from libp2p.peer.id import ID

    try:
        if not (isinstance(text, str) and text):
            raise ValueError("not a non-empty string")
        multihash.decode(ID.from_base58(text).to_bytes())
    except Exception as exc:  # base58 and multihash raise several types for bad text
        raise ConfigError(f"observer {text!r} is not a libp2p peer id: {exc}") from None


def _multiaddr(text: str, what: str) -> None:
    try:
        Multiaddr(text)
    except Exception as exc:  # multiaddr raises several types for bad text
        raise ConfigError(f"{what} {text!r} is not a valid multiaddr: {exc}") from None


def load_genesis(path: Path) -> Genesis:
    """Read and validate a genesis file (chain/ does no file I/O besides the store)."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise GenesisError(f"cannot read genesis file {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise GenesisError(f"genesis file {path} is not valid JSON: {exc}") from None
    return parse_genesis(data)


def load_template(path: Path | None = None, banks: int | None = None) -> dict:
    """Read a network template; without a path, the default one in ``configs/``.

    The result holds the first ``banks`` banks (and the accounts at them). Without
    ``banks``, a template's ``default_banks`` says how many: the default template lists 7
    banks and a network of its first 4 is what `depnet up` starts unless asked for more.
    """
    source = resources.files("configs").joinpath("network.json") if path is None else Path(path)
    try:
        data = json.loads(source.read_text())
    except OSError as exc:
        raise GenesisError(f"cannot read network template {source}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise GenesisError(f"network template {source} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise GenesisError(f"network template {source} must be a JSON object")
    if not isinstance(data.get("banks"), list):
        raise GenesisError(f'network template {source} needs a "banks" list of bank objects')
    default = data.pop("default_banks", None)
    if default is not None and not (type(default) is int and default >= 1):
        raise GenesisError(f"network template {source}: default_banks must be a positive integer")
    count = banks or default or len(data["banks"])
    kept = data["banks"][:count]
    names = {b.get("name") for b in kept if isinstance(b, dict)}
    data["banks"] = kept
    if isinstance(data.get("accounts"), list):
        data["accounts"] = [
            a for a in data["accounts"] if not isinstance(a, dict) or a.get("bank") in names
        ]
    return data
