"""HTTP exchanges with registries and token servers, over requests and urllib3.

Imported by `RegistryClient` on its first request only (requests, urllib3 and ssl take longer to
import than the rest of updock's start-up). One seam: `HTTPTransport.exchange`, which sends one
request, reads the whole answer within the read timeout, and turns every library error into an
`ExchangeFailure` (`TransientFailure` when another attempt may help, `TLSFailure` for a failed
handshake).

Connections are kept open across exchanges (one `requests.Session`, a pool per host).
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import requests
import requests.adapters
import requests.utils

from updock import __version__
from updock.registry.exchange import ExchangeFailure, Reply, TLSFailure, TransientFailure
from updock.registry.tls import TLSConfig

if TYPE_CHECKING:  # types of requests' stubs only
    from collections.abc import Mapping

    from requests.adapters import _HostParams, _PoolKwargs

log = logging.getLogger(__name__)

#: The largest body read from a registry or token server: containers/image's limit for a
#: manifest; error bodies and tokens are far smaller.
MAX_BODY = 4 * 1024 * 1024

_USER_AGENT = f"updock/{__version__}"


def reason_of(exc: BaseException) -> str:
    """The innermost cause of a requests/urllib3 error, which says what actually went wrong."""
    inner = exc
    while True:
        nxt = getattr(inner, "reason", None)
        if not isinstance(nxt, BaseException) and inner.args:
            nxt = inner.args[0]
        if not isinstance(nxt, BaseException):
            break
        inner = nxt
    # urllib3 prefixes "HTTPConnection(host='…', port=…): ", which the caller's message names.
    text = re.sub(r"^\w+\(host=[^)]*\):\s*", "", str(inner))
    # and wraps a reset as ("Connection aborted.", ConnectionResetError(...)).
    if isinstance(inner, ConnectionResetError) or "ConnectionResetError" in text:
        return "connection reset by peer"
    return text or type(inner).__name__


#: Query parameters whose values a log line may show: they name what is asked for, never who asks.
_SHOWN_PARAMETERS = frozenset(("scope", "service", "client_id", "n", "last"))


def loggable_url(url: str) -> str:
    """`url` for a log line: without user information, and with the value of every query
    parameter but the harmless ones (`scope`, `service`, ...) hidden (a realm's own query, or
    the `account` of a token request, may identify a user)."""
    split = urlsplit(url)
    netloc = split.netloc.rpartition("@")[2]
    query = "&".join(
        pair if pair.partition("=")[0] in _SHOWN_PARAMETERS else pair.partition("=")[0] + "=***"
        for pair in split.query.split("&")
        if pair
    )
    return urlunsplit((split.scheme, netloc, split.path, query, ""))


class _TLSAdapter(requests.adapters.HTTPAdapter):
    """An adapter whose HTTPS connections use the per-registry SSL contexts of a `TLSConfig`.

    requests would otherwise trust only its own CA bundle, and a `verify=` path can name one
    bundle only; the contexts trust the system's CAs plus certs.d and carry client certificates.
    """

    def __init__(self, tls: TLSConfig, pool_maxsize: int) -> None:
        self._tls = tls
        super().__init__(pool_maxsize=pool_maxsize)

    def build_connection_pool_key_attributes(
        self,
        request: requests.PreparedRequest,
        verify: bool | str,
        cert: str | tuple[str, str] | None = None,
    ) -> tuple[_HostParams, _PoolKwargs]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        if host_params.get("scheme") == "https":
            netloc = urlsplit(request.url or "").netloc.rpartition("@")[2]
            pool_kwargs["ssl_context"] = self._tls.ssl_context(netloc, bool(verify))
            pool_kwargs.pop("ca_certs", None)
            pool_kwargs.pop("ca_cert_dir", None)
        return host_params, pool_kwargs

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        # The SSL context holds the trusted CAs; requests would load its own bundle into it on
        # every new connection.
        conn.cert_reqs = "CERT_REQUIRED" if verify else "CERT_NONE"
        conn.ca_certs = None
        conn.ca_cert_dir = None


class HTTPTransport:
    """Sends requests over kept-open connections; shared by threads, then `close()`d.

    Args:
        tls: per-registry TLS settings (CAs, client certificates).
        connect_timeout: seconds to wait for a connection.
        read_timeout: seconds to wait for an answer, and for the whole of it.
        pool_size: connections kept open per host.
    """

    def __init__(
        self, tls: TLSConfig, connect_timeout: float, read_timeout: float, pool_size: int
    ) -> None:
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._session = requests.Session()
        # No ~/.netrc, no REQUESTS_CA_BUNDLE: credentials and CAs come from podman's files.
        # Proxies from the environment are still honoured, per request.
        self._session.trust_env = False
        self._session.headers["User-Agent"] = _USER_AGENT
        adapter = _TLSAdapter(tls, pool_maxsize=pool_size)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)

    def close(self) -> None:
        """Close the connections kept open."""
        self._session.close()

    def exchange(
        self,
        who: str,
        method: str,
        url: str,
        headers: Mapping[str, str],
        verify: bool,
        body: bytes | None = None,
    ) -> Reply:
        """One HTTP exchange, read to its end within the read timeout.

        Args:
            who: the host, for messages.
            method: "HEAD" or "GET" ("POST" to a token server, with a `body`).
            url: the full URL.
            headers: the request's headers.
            verify: verify the server's certificate.
            body: the request's body (None: none). Never logged: it may hold a secret.

        Raises:
            TransientFailure: the connection failed, was reset, or timed out.
            TLSFailure: the TLS handshake failed.
            ExchangeFailure: anything else (a broken URL, too big an answer).
        """
        started = time.monotonic()
        try:
            reply = self._exchange(who, method, url, headers, verify, body)
        except ExchangeFailure as exc:
            took = time.monotonic() - started
            log.debug("%s %s: failed after %.3fs: %s", method, loggable_url(url), took, exc.message)
            raise
        took = time.monotonic() - started
        log.debug(
            "%s %s: %d %s in %.3fs", method, loggable_url(url), reply.status, reply.reason, took
        )
        return reply

    def _exchange(
        self,
        who: str,
        method: str,
        url: str,
        headers: Mapping[str, str],
        verify: bool,
        body: bytes | None,
    ) -> Reply:
        deadline = time.monotonic() + self._read_timeout
        try:
            resp = self._session.request(
                method,
                url,
                headers=dict(headers),
                data=body,
                timeout=(self._connect_timeout, self._read_timeout),
                verify=verify,
                proxies=dict(requests.utils.get_environ_proxies(url)),
                stream=True,
            )
        except requests.exceptions.SSLError as exc:
            reason = reason_of(exc)
            if "WRONG_VERSION_NUMBER" in reason:
                reason += (
                    " (does it speak plain HTTP? then mark it insecure in registries.conf, "
                    "or use --tls-verify=false)"
                )
            raise TLSFailure(f"TLS connection to {who} failed: {reason}", reason) from exc
        except requests.exceptions.ConnectTimeout as exc:
            reason = f"no connection within {self._connect_timeout:g}s"
            raise TransientFailure(f"cannot connect to {who}: {reason}", reason) from exc
        except requests.exceptions.ReadTimeout as exc:
            raise TransientFailure(f"{who} did not answer within {self._read_timeout:g}s") from exc
        except requests.exceptions.ConnectionError as exc:
            reason = reason_of(exc)
            raise TransientFailure(f"cannot connect to {who}: {reason}", reason) from exc
        except requests.exceptions.RequestException as exc:
            raise ExchangeFailure(f"request to {who} failed: {reason_of(exc)}") from exc
        with resp:
            body = self._read_body(resp, who, deadline)
        return Reply(resp.status_code, resp.reason or "", resp.headers, body)

    def _read_body(self, resp: requests.Response, who: str, deadline: float) -> bytes:
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in resp.iter_content(64 * 1024):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_BODY:
                    raise ExchangeFailure(f"{who} sent more than {MAX_BODY} bytes")
                if time.monotonic() > deadline:
                    raise TransientFailure(
                        f"{who} did not send its whole answer within {self._read_timeout:g}s"
                    )
        except requests.exceptions.RequestException as exc:  # reset, timeout, bad chunking
            raise TransientFailure(f"{who} broke off its answer: {reason_of(exc)}") from exc
        return b"".join(chunks)
