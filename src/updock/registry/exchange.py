"""What one HTTP exchange with a registry gives the client: a complete reply, or why not.

Light on purpose (no requests, no ssl): `client.py` imports it at start-up, while the transport
that performs exchanges (`transport.py`, requests and urllib3) is imported on first use only, so
that a run with nothing to check does not pay for the HTTP stack.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    """A complete answer: status, headers and the whole body (empty for HEAD).

    Attributes:
        attempts: how many attempts it took (set by the client's retry loop).
    """

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes
    attempts: int = 1


class ExchangeFailure(Exception):
    """An exchange failed in a way another attempt would meet again.

    Attributes:
        message: what happened, naming the host (`cannot connect to HOST: ...`).
        reason: the bare cause, for messages that combine several attempts.
    """

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or message


class TLSFailure(ExchangeFailure):
    """The TLS handshake failed (an insecure registry may speak plain HTTP instead)."""


class TransientFailure(ExchangeFailure):
    """A failure another attempt may not meet: connection refused or reset, a timeout."""
