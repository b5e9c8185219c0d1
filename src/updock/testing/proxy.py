"""A loopback HTTP proxy in front of a lab registry that the tests and the benchmark control.

The client (updock, podman, skopeo) is pointed at the proxy as if it were the registry (image
names on `proxy.host`); the proxy forwards every request to the real registry and relays the
answer, and meanwhile:

- counts and records each request (method, path, status, when it arrived and ended, which
  connection), and the most requests it had in flight at once;
- adds latency: `delay` seconds before forwarding each request (a round trip), `connect_delay`
  once per new connection (the TCP handshake's round trip), `chunk_delay` between chunks of a
  response body (a slow link);
- injects faults, queued with `fail`, `reset` and `stall`: answer a status (5xx, 429 with
  `Retry-After`) instead of forwarding, close the connection with a TCP reset, or hold the
  answer back for a while. Each fault applies to the next N matching requests.

There is no `tc netem` on the lab's machines (see LAB-NOTES): this is how latency gets in.
Threads only (one per client connection), no process: `close()` ends them all, and they die
with the process that runs the proxy.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from types import TracebackType

from updock.testing.lab import start_loopback_server

#: Headers that concern one connection only, never forwarded (RFC 9110, 7.6.1).
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

#: Headers the proxy's own response writer sets.
_SET_BY_PROXY = frozenset({"content-length", "date", "server"})


@dataclass(frozen=True)
class ProxiedRequest:
    """One request the proxy received.

    Attributes:
        method: e.g. "HEAD".
        path: the path with the query, as sent.
        status: the status answered (0 when the connection was reset or nothing was answered).
        started: `time.monotonic()` when the request had been read.
        ended: `time.monotonic()` when the answer began to be sent (or the connection reset).
        connection: a number per client connection, from 1.
        fault: the kind of fault injected ("" when forwarded as is).
    """

    method: str
    path: str
    status: int
    started: float
    ended: float
    connection: int
    fault: str = ""


@dataclass
class _Fault:
    kind: str  # "status", "reset" or "stall"
    times: int
    path: re.Pattern[str] | None
    method: str | None
    status: int = 0
    headers: Mapping[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        if self.times <= 0:
            return False
        if self.method is not None and self.method != method:
            return False
        return self.path is None or self.path.search(path) is not None


class FaultProxy:
    """A proxy on 127.0.0.1 in front of `upstream` (`host:port` of a plain-HTTP registry).

    Use as a context manager, or call `close()`. Settings may change while it runs.

    Args:
        upstream: the registry to forward to, `127.0.0.1:PORT`.
        delay: seconds added before each request is forwarded (one round trip).
        connect_delay: seconds added once per new client connection (its handshake).
        chunk_delay: seconds between chunks of a response body.
        chunk_size: bytes per chunk of a response body.
    """

    def __init__(
        self,
        upstream: str,
        *,
        delay: float = 0.0,
        connect_delay: float = 0.0,
        chunk_delay: float = 0.0,
        chunk_size: int = 16 * 1024,
    ) -> None:
        if not upstream.startswith("127.0.0.1:"):
            raise ValueError("the proxy forwards to loopback only")
        self.upstream = upstream
        self.delay = delay
        self.connect_delay = connect_delay
        self.chunk_delay = chunk_delay
        self.chunk_size = chunk_size
        self._lock = threading.Lock()
        self._requests: list[ProxiedRequest] = []
        self._faults: list[_Fault] = []
        self._in_flight = 0
        self._max_in_flight = 0
        self._connections = 0
        self._sockets: set[socket.socket] = set()
        self._server, self._thread = start_loopback_server(_handler_class(self), "proxy")
        self.port = int(self._server.server_address[1])
        self._closed = False

    @property
    def host(self) -> str:
        """`127.0.0.1:PORT`: the registry part of image names that go through the proxy."""
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        """Stop accepting, cut every open connection, and end the proxy's threads."""
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- what it saw ----------------------------------------------------------------------

    @property
    def requests(self) -> list[ProxiedRequest]:
        """Every request received so far, in the order their answers began."""
        with self._lock:
            return list(self._requests)

    def counts(self) -> Counter[tuple[str, str]]:
        """How many requests of each (method, path) were received."""
        return Counter((r.method, r.path) for r in self.requests)

    @property
    def max_in_flight(self) -> int:
        """The most requests being handled at the same time so far."""
        with self._lock:
            return self._max_in_flight

    @property
    def connections(self) -> int:
        """Client connections accepted so far."""
        with self._lock:
            return self._connections

    def clear(self) -> None:
        """Forget the requests seen and the faults still queued; reset the counters."""
        with self._lock:
            self._requests.clear()
            self._faults.clear()
            self._max_in_flight = self._in_flight
            self._connections = 0

    # -- faults ---------------------------------------------------------------------------

    def fail(
        self,
        status: int,
        times: int = 1,
        *,
        path: str | None = None,
        method: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next `times` matching requests with `status` instead of forwarding them.

        Args:
            status: e.g. 503, or 429 (with `headers={"Retry-After": "1"}`).
            times: how many requests.
            path: a regular expression the path must contain a match of (any path when None).
            method: the method the request must have (any when None).
            headers: headers of the answer.
        """
        self._add(_Fault("status", times, _re(path), method, status, dict(headers or {})))

    def reset(self, times: int = 1, *, path: str | None = None, method: str | None = None) -> None:
        """Close the connection with a TCP reset, without an answer, for the next requests."""
        self._add(_Fault("reset", times, _re(path), method))

    def stall(
        self, seconds: float, times: int = 1, *, path: str | None = None, method: str | None = None
    ) -> None:
        """Hold the next matching requests back for `seconds` before forwarding them."""
        self._add(_Fault("stall", times, _re(path), method, seconds=seconds))

    def _add(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.times -= 1
                    return fault
        return None

    # -- bookkeeping for the handler ------------------------------------------------------

    def _opened(self, sock: socket.socket) -> int:
        with self._lock:
            self._connections += 1
            self._sockets.add(sock)
            return self._connections

    def _closed_connection(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)

    @contextlib.contextmanager
    def _in_flight_request(self) -> Iterator[None]:
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    def _record(self, request: ProxiedRequest) -> None:
        with self._lock:
            self._requests.append(request)


def _re(path: str | None) -> re.Pattern[str] | None:
    return None if path is None else re.compile(path)


def _handler_class(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        pass

    Handler.proxy = proxy
    return Handler


class _Handler(BaseHTTPRequestHandler):
    """One client connection: requests are read, forwarded and answered one after another."""

    proxy: FaultProxy
    #: (method, path, when it was read, fault kind) of the request being answered.
    _pending: tuple[str, str, float, str] | None = None
    protocol_version = "HTTP/1.1"
    timeout = 120  # an idle client connection is closed after this long

    def setup(self) -> None:
        super().setup()
        self.number = self.proxy._opened(self.connection)
        self.upstream: http.client.HTTPConnection | None = None
        if self.proxy.connect_delay > 0:
            time.sleep(self.proxy.connect_delay)

    def handle(self) -> None:
        # A TLS handshake (a client trying HTTPS first, as podman and updock do for an insecure
        # registry) has no line end to wait for: answer it at once, as a plain-HTTP registry
        # does, instead of reading until the client gives up.
        with contextlib.suppress(OSError):
            if self.connection.recv(1, socket.MSG_PEEK) == b"\x16":
                self.wfile.write(b"HTTP/1.0 400 Bad Request\r\nConnection: close\r\n\r\n")
                return
        # A client that drops an idle kept-alive connection (podman 5's HTTP client does)
        # resets it while the next request line is awaited: the connection is over, no error.
        with contextlib.suppress(ConnectionResetError):
            super().handle()

    def finish(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            super().finish()
        if self.upstream is not None:
            self.upstream.close()
        self.proxy._closed_connection(self.connection)

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._proxy()

    def do_HEAD(self) -> None:
        self._proxy()

    def do_POST(self) -> None:
        self._proxy()

    def do_PUT(self) -> None:
        self._proxy()

    def do_PATCH(self) -> None:
        self._proxy()

    def do_DELETE(self) -> None:
        self._proxy()

    def _proxy(self) -> None:
        proxy = self.proxy
        method, path = self.command, self.path
        body = self._read_request_body()
        fault = proxy._take_fault(method, path)
        self._pending = (method, path, time.monotonic(), fault.kind if fault else "")
        with proxy._in_flight_request():
            try:
                if fault is not None and fault.kind == "reset":
                    self._reset()
                    return
                if proxy.delay > 0:
                    time.sleep(proxy.delay)
                if fault is not None and fault.kind == "stall":
                    time.sleep(fault.seconds)
                if fault is not None and fault.kind == "status":
                    self._answer_fault(fault)
                    return
                self._forward(method, path, body)
            finally:
                self._record(0)

    def send_response(self, code: int, message: str | None = None) -> None:
        # Recorded before the answer leaves: a client that has its answer finds it recorded.
        self._record(code)
        super().send_response(code, message)

    def _record(self, status: int) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            method, path, started, fault = pending
            self.proxy._record(
                ProxiedRequest(method, path, status, started, time.monotonic(), self.number, fault)
            )

    def _read_request_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reset(self) -> None:
        """Close the client connection with RST (SO_LINGER 0), answering nothing."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()

    def _answer_fault(self, fault: _Fault) -> None:
        reason = http.client.responses.get(fault.status, "Error")
        body = json.dumps(
            {"errors": [{"code": "UNAVAILABLE", "message": f"injected {fault.status} {reason}"}]}
        ).encode()
        self.send_response(fault.status)
        for name, value in fault.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _forward(self, method: str, path: str, body: bytes) -> None:
        # A list, not a dict: clients repeat headers (podman sends one `Accept` per type).
        headers = [
            (k, v)
            for k, v in self.headers.items()
            if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length"
        ]
        if body or "Content-Length" in self.headers:
            headers.append(("Content-Length", str(len(body))))
        got = self._upstream_exchange(method, path, body, headers)
        if got is None:
            self.send_error(502, "the registry behind the proxy did not answer")
            return
        resp, data = got
        self.send_response(resp.status, resp.reason)
        for name, value in resp.getheaders():
            if name.lower() not in _HOP_BY_HOP | _SET_BY_PROXY:
                self.send_header(name, value)
        length = resp.getheader("Content-Length") if method == "HEAD" else str(len(data))
        if length is not None:
            self.send_header("Content-Length", length)
        self.end_headers()
        if method != "HEAD":
            self._write_body(data)
        self.wfile.flush()

    def _upstream_exchange(
        self, method: str, path: str, body: bytes, headers: Sequence[tuple[str, str]]
    ) -> tuple[http.client.HTTPResponse, bytes] | None:
        """The registry's answer, over the connection kept for this client connection."""
        for _ in (1, 2):
            upstream = self.upstream or http.client.HTTPConnection(self.proxy.upstream, timeout=60)
            self.upstream = upstream
            try:
                upstream.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
                for name, value in headers:  # the client's Host among them
                    upstream.putheader(name, value)
                upstream.endheaders(body or None)
                resp = upstream.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException):
                # The registry closed the kept-alive connection: one new connection may help.
                upstream.close()
                self.upstream = None
                continue
            if resp.will_close:  # the registry closes its side; the client's connection stays
                upstream.close()
                self.upstream = None
            return resp, data
        return None

    def _write_body(self, data: bytes) -> None:
        size = max(1, self.proxy.chunk_size)
        for start in range(0, len(data), size):
            if start and self.proxy.chunk_delay > 0:
                self.wfile.flush()
                time.sleep(self.proxy.chunk_delay)
            self.wfile.write(data[start : start + size])
