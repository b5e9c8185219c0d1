"""How many requests a client sent to each host, and how many failed (for metrics).

A request counts once per attempt (a request tried again counts again; an insecure registry's
HTTPS probe before plain HTTP is part of one attempt). It failed when no answer came (a
connection error, a timeout, a broken TLS handshake) or the answer was an error other than the
401 that asks for credentials (a step of authentication, not a failure).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

from updock.errors import RegistryError
from updock.registry.exchange import ExchangeFailure, Reply


class RequestCounts:
    """Requests and failed requests per host; shared by the client's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()

    def counted(self, host: str, exchange: Callable[[], Reply]) -> Reply:
        """`exchange()`, counted as one request to `host` (and as an error when it fails)."""
        try:
            reply = exchange()
        except (ExchangeFailure, RegistryError):
            self._add(host, failed=True)
            raise
        self._add(host, failed=reply.status >= 400 and reply.status != 401)
        return reply

    def _add(self, host: str, *, failed: bool) -> None:
        with self._lock:
            self._requests[host] += 1
            if failed:
                self._errors[host] += 1

    def snapshot(self) -> tuple[dict[str, int], dict[str, int]]:
        """(requests, errors) per host so far."""
        with self._lock:
            return dict(self._requests), dict(self._errors)
