"""JSON-lines logging for a node: one object per line in ``<node home>/node.log``.

Lines are machine-readable so `depnet logs` and tests can filter them, and every line
carries the bank so logs of several nodes can be merged.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path


class JsonLineFormatter(logging.Formatter):
    def __init__(self, bank: str) -> None:
        super().__init__()
        self.bank = bank

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "bank": self.bank,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup_logging(log_file: Path, bank: str, level: int = logging.INFO) -> None:
    handler = logging.FileHandler(log_file)
    handler.setFormatter(JsonLineFormatter(bank))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    logging.getLogger("multiaddr").setLevel(logging.WARNING)
    logging.getLogger("hypercorn").setLevel(logging.WARNING)


def log_event(
    logger: logging.Logger, msg: str, level: int = logging.INFO, **fields: object
) -> None:
    """Log ``msg`` with structured ``fields`` merged into the JSON line."""
    logger.log(level, msg, extra={"fields": fields})
