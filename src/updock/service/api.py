"""The HTTP API of `updock serve` (described in `openapi.json`, shipped beside this module).

    GET  /healthz            200 while the service runs (no token needed)
    GET  /metrics            Prometheus' text format (`updock.metrics`, and the next run)
    GET  /v1/status          the run in flight, the last run's report, the next run, the journal
    GET  /v1/history         the history (`?since=2h`)
    POST /v1/update          begin a run now (`{"dry_run": true}` only checks): 202, or 409
                             while one runs
    GET  /v1/openapi.json    the description of all this

Every route but `/healthz` needs `Authorization: Bearer <token>`, the token being the contents
of a file (never a flag: a command line is visible to every user of the host). A missing or
wrong token is 401, logged with the client's address and the route, never with the token.

The server is the standard library's `ThreadingHTTPServer`: the API is six small routes on a
loopback address, which does not call for a dependency. What a public server would get from a
framework is done here by hand, on purpose: every connection has a deadline to send its request
(`REQUEST_DEADLINE`, and `RECV_TIMEOUT` per read), so a slow client holds one thread for
seconds, not for ever; connections beyond `MAX_CONNECTIONS` are refused with 503 at once;
bodies over `MAX_BODY` are refused with 413; every answer closes its connection (HTTP/1.0), so
no idle keep-alive holds a thread either.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from updock.errors import UpdockError

log = logging.getLogger(__name__)

#: Seconds a client has to send its whole request (line, headers and body).
REQUEST_DEADLINE = 10.0
#: Seconds a single read from a client may wait.
RECV_TIMEOUT = 5.0
#: Connections served at once; more are answered 503 at once.
MAX_CONNECTIONS = 32
#: Largest request body taken (a `POST /v1/update` body is a few bytes).
MAX_BODY = 64 * 1024


class ApiError(Exception):
    """An answer other than success, with its status and message."""

    def __init__(self, status: HTTPStatus, message: str, **extra: object) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra


class Service:
    """What the API serves; `serve.py` gives the real one.

    Attributes:
        token: the bearer token.
        status: the status document.
        history: the history since a time (seconds since the epoch, or None).
        metrics: the metrics' text format.
        update: begins a run (dry or not; None: the service's default); the run's summary, or
            None when one is running already.
        running: the run in flight's summary, or None.
    """

    def __init__(
        self,
        token: str,
        *,
        status: Callable[[], dict[str, object]],
        history: Callable[[float | None], list[dict[str, object]]],
        metrics: Callable[[], bytes],
        update: Callable[[bool | None], dict[str, object] | None],
        running: Callable[[], dict[str, object] | None],
    ) -> None:
        self.token = token
        self.status = status
        self.history = history
        self.metrics = metrics
        self.update = update
        self.running = running


def openapi_document() -> bytes:
    """The shipped OpenAPI description."""
    return resources.files(__package__).joinpath("openapi.json").read_bytes()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(
        self, address: tuple[str, int], family: socket.AddressFamily, service: Service
    ) -> None:
        self.address_family = family
        self.service = service
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            # Too many at once (slow clients, or a flood): refuse this one now, cheaply.
            with contextlib.suppress(OSError):
                request.sendall(
                    b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n"
                    b"Connection: close\r\n\r\n"
                )
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"
    timeout = RECV_TIMEOUT  # each read from the client (socketserver sets it on the socket)
    server_version = "updock"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        # The whole request must arrive by the deadline: a client that trickles bytes (each
        # read within RECV_TIMEOUT) is cut off then.
        self._deadline = threading.Timer(REQUEST_DEADLINE, self._cut_off)
        self._deadline.daemon = True
        self._deadline.start()

    def _cut_off(self) -> None:
        log.warning("API: %s sent no whole request within %gs", self._client(), REQUEST_DEADLINE)
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        self._deadline.cancel()
        with contextlib.suppress(OSError):  # the client went away
            super().finish()

    def _client(self) -> str:
        host = self.client_address[0] if self.client_address else "?"
        return str(host)

    def log_message(self, format: str, *args: Any) -> None:
        # The request line has no secret (the token is a header): fine at debug level.
        log.debug("API: %s %s", self._client(), format % args)

    def log_error(self, format: str, *args: Any) -> None:
        log.info("API: %s %s", self._client(), format % args)

    # -- dispatch ---------------------------------------------------------------------------

    def __getattr__(self, name: str) -> Callable[[], None]:
        # `do_<METHOD>` for every method, so that one the API does not take is a 405 (or a
        # 404 on no route), never the base class's 501.
        if name.startswith("do_"):
            method = name[3:]
            return lambda: self._dispatch(method)
        raise AttributeError(name)

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        routes: Mapping[str, Mapping[str, Callable[[dict[str, list[str]]], None]]] = {
            "/healthz": {"GET": self._healthz},
            "/metrics": {"GET": self._metrics},
            "/v1/status": {"GET": self._status},
            "/v1/history": {"GET": self._history},
            "/v1/update": {"POST": self._update},
            "/v1/openapi.json": {"GET": self._openapi},
        }
        try:
            body = self._read_body()
            self._deadline.cancel()  # the request is in
            route = routes.get(url.path)
            if route is None:
                raise ApiError(HTTPStatus.NOT_FOUND, f"no such route: {url.path}")
            handler = route.get(method if method != "HEAD" else "GET")
            if handler is None:
                raise ApiError(
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    f"{url.path} takes {', '.join(route)}",
                    allow=", ".join(route),
                )
            if url.path != "/healthz":
                self._authenticate(method, url.path)
            self._body = body
            handler(parse_qs(url.query, keep_blank_values=True))
        except ApiError as exc:
            self._error(exc)
        except UpdockError as exc:
            log.error("API: %s %s: %s", method, url.path, exc)
            self._error(ApiError(HTTPStatus.INTERNAL_SERVER_ERROR, str(exc)))

    def _read_body(self) -> bytes:
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        try:
            length = int(raw)
        except ValueError:
            raise ApiError(HTTPStatus.BAD_REQUEST, "Content-Length is no number") from None
        if length < 0:
            raise ApiError(HTTPStatus.BAD_REQUEST, "Content-Length is negative")
        if length > MAX_BODY:
            raise ApiError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"bodies are {MAX_BODY} bytes at most"
            )
        body = self.rfile.read(length)
        if len(body) < length:
            raise ApiError(HTTPStatus.BAD_REQUEST, "the body ended early")
        return body

    def _authenticate(self, method: str, path: str) -> None:
        header = self.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            why = "no bearer token"
        elif hmac.compare_digest(given.strip().encode(), self.server.service.token.encode()):
            return
        else:
            why = "a wrong bearer token"
        log.warning("API: %s %s from %s: 401, %s", method, path, self._client(), why)
        raise ApiError(HTTPStatus.UNAUTHORIZED, "a valid bearer token is required", bearer=True)

    # -- answers ----------------------------------------------------------------------------

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(
        self, status: HTTPStatus, doc: object, headers: Mapping[str, str] | None = None
    ) -> None:
        body = json.dumps(doc, indent=2).encode() + b"\n"
        self._send(status, body, "application/json", headers)

    def _error(self, exc: ApiError) -> None:
        headers = {}
        if exc.extra.get("bearer"):
            headers["WWW-Authenticate"] = 'Bearer realm="updock"'
        if "allow" in exc.extra:
            headers["Allow"] = str(exc.extra["allow"])
        doc: dict[str, object] = {"error": str(exc)}
        if "current" in exc.extra:
            doc["current"] = exc.extra["current"]
        with contextlib.suppress(OSError):  # the client went away
            self._json(exc.status, doc, headers)

    def _healthz(self, query: dict[str, list[str]]) -> None:
        self._json(HTTPStatus.OK, {"status": "ok"})

    def _metrics(self, query: dict[str, list[str]]) -> None:
        self._send(
            HTTPStatus.OK,
            self.server.service.metrics(),
            "text/plain; version=0.0.4; charset=utf-8",
        )

    def _status(self, query: dict[str, list[str]]) -> None:
        self._json(HTTPStatus.OK, self.server.service.status())

    def _history(self, query: dict[str, list[str]]) -> None:
        from updock.history import parse_duration

        since = None
        values = query.get("since")
        if values:
            try:
                since = time.time() - parse_duration(values[-1])
            except ValueError as exc:
                raise ApiError(HTTPStatus.BAD_REQUEST, f"since: {exc}") from None
        self._json(HTTPStatus.OK, self.server.service.history(since))

    def _update(self, query: dict[str, list[str]]) -> None:
        dry_run = _update_request(self._body)
        begun = self.server.service.update(dry_run)
        if begun is None:
            raise ApiError(
                HTTPStatus.CONFLICT,
                "a run is in progress; try again once it has ended (GET /v1/status)",
                current=self.server.service.running(),
            )
        self._json(HTTPStatus.ACCEPTED, {"run": begun}, {"Location": "/v1/status"})

    def _openapi(self, query: dict[str, list[str]]) -> None:
        self._send(HTTPStatus.OK, openapi_document(), "application/json")


def _update_request(body: bytes) -> bool | None:
    """The `dry_run` of a `POST /v1/update` body (none, or a JSON object).

    Raises:
        ApiError: 400 for a body that is not such an object.
    """
    if not body.strip():
        return None
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"the body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ApiError(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
    unknown = sorted(set(doc) - {"dry_run"})
    if unknown:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"unknown fields: {', '.join(unknown)}")
    if "dry_run" not in doc:
        return None
    dry_run = doc["dry_run"]
    if not isinstance(dry_run, bool):
        raise ApiError(HTTPStatus.BAD_REQUEST, "dry_run must be true or false")
    return dry_run


def parse_listen(text: str) -> tuple[str, int, socket.AddressFamily]:
    """`127.0.0.1:8425`, `[::1]:8425` or `localhost:8425`: host, port and address family.

    Raises:
        ValueError: it is not such an address.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT (such as 127.0.0.1:8425 or [::1]:8425)")
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1], int(port), socket.AF_INET6
    if ":" in host:
        raise ValueError(f"{text!r}: put an IPv6 address in brackets ([::1]:8425)")
    return host, int(port), socket.AF_INET


class ApiServer:
    """The API, listening; `serve_forever` in a thread of its own until `close`.

    Raises:
        UpdockError: the address cannot be listened on.
    """

    def __init__(self, listen: str, service: Service) -> None:
        host, port, family = parse_listen(listen)
        try:
            self._server = _Server((host, port), family, service)
        except OSError as exc:
            raise UpdockError(f"cannot listen on {listen}: {exc}") from exc
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.2,), name="api", daemon=True
        )

    def start(self) -> None:
        """Serve, in a thread of its own."""
        self._thread.start()

    def close(self) -> None:
        """Stop serving (requests in flight finish in their threads) and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


__all__ = ["ApiServer", "Service", "openapi_document", "parse_listen"]
