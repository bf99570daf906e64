"""What can go wrong when talking to nodes or running them.

The `depnet` commands show a ``DevnetError`` as one line on stderr with exit status 1;
``LocalNetError`` is an AssertionError, so in a test it reads as the test's failure,
with the nodes' log tails in its message.
"""

from __future__ import annotations


class DevnetError(Exception):
    """A node or a local network did not do what was asked; the message says what."""


class NodeUnreachable(DevnetError):
    """No answer from a node: it is down, not started, or frozen."""


class ApiError(DevnetError):
    """The node answered with ``{"error": {"code", "message"}}``, or refused a tx."""

    def __init__(self, code: str, message: str, status: int = 0) -> None:
        self.code = code
        self.status = status
        super().__init__(message)


class NodeExited(DevnetError):
    """A node process exited while it was being waited for."""

    def __init__(self, bank: str, returncode: int) -> None:
        self.bank = bank
        self.returncode = returncode
        super().__init__(f"node {bank} exited with status {returncode}")


class WaitTimeout(DevnetError):
    """A condition polled by ``wait.until`` did not hold before its deadline."""


class LocalNetError(AssertionError):
    """A wait ran out or a node process died; the message carries the nodes' log tails."""
