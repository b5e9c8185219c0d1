"""A webhook receiver on 127.0.0.1: what notifications arrived (for tests and the demo).

`Receiver` is a real HTTP server in a thread of its own that keeps every request it gets
(method, path, headers, body) and answers as told: 200, another status, or only after a delay
(a slow notifier). Use it as a context manager; it stops, and its thread ends, on exit.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

from updock.testing.lab import start_loopback_server


@dataclass(frozen=True)
class Received:
    """One request the receiver got."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        """The body, parsed as JSON."""
        return json.loads(self.body)


class Receiver:
    """An HTTP server on 127.0.0.1 that records requests.

    Args:
        status: the status it answers with.
        delay: seconds it waits before answering (a slow receiver).
        netns: the network namespace (`/proc/PID/ns/net`) whose 127.0.0.1 it listens on (the
            Docker lab's: `DockerLab.netns`); the caller's when None.
    """

    def __init__(self, status: int = 200, delay: float = 0.0, netns: str | None = None) -> None:
        self.status = status
        self.delay = delay
        self.netns = netns
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT`."""
        assert self._server is not None, "the receiver is not running"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def port(self) -> int:
        """Its port."""
        assert self._server is not None, "the receiver is not running"
        return int(self._server.server_address[1])

    def __enter__(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with receiver._arrived:
                    receiver.received.append(
                        Received(self.command, self.path, dict(self.headers.items()), body)
                    )
                    receiver._arrived.notify_all()
                if receiver.delay:
                    time.sleep(receiver.delay)
                self.send_response(receiver.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_POST = do_GET = do_PUT = _any

            def log_message(self, format: str, *args: object) -> None:
                pass  # the tests read `received`

        self._server, self._thread = start_loopback_server(Handler, "receiver", self.netns)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)

    def wait(self, count: int = 1, timeout: float = 10.0) -> list[Received]:
        """The requests received, once there are `count` of them (or `timeout` passed)."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._arrived.wait(left)
            return list(self.received)
