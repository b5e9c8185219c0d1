"""Asking a registry for the current manifest digest of an image name.

podman auto-update sends `GET /v2/` and a full manifest `GET` per container. `RegistryClient`
sends one `HEAD` per image name, over connections kept open across calls (one
`requests.Session`), and remembers per registry what the first exchange taught it:

- the scheme that works (an insecure registry is tried over HTTPS first, then plain HTTP);
- the authentication the registry wants: for `Basic`, later requests carry the credentials at
  once; for `Bearer`, the token for a repository is fetched before the request and reused until
  it expires. So only the first request to a registry meets a 401: while it is in flight, the
  other threads wait for what it learns instead of each meeting the 401 (and each trying HTTPS
  first) themselves. There is no `GET /v2/` probe at all.

A manifest is fetched (`GET`) only when the registry names no digest, or when the name points at
a manifest list that the local image does not know, to find the entry for its platform.

Faults: every request has a connect and a read timeout, and a whole answer must arrive within
the read timeout. Connection failures, timeouts and 5xx answers are tried again with backoff and
jitter (`retry.py`), at most `RetryPolicy.attempts` times; a 429 waits what its `Retry-After`
asks (capped), and every thread of the run waits with it. A registry that still cannot be
reached is remembered as such for the rest of the run: its other checks fail at once instead of
waiting out their own retries. At most `concurrency` requests are in flight per registry.

Every failure is a `RegistryError` (`RegistryAuthError` for refused credentials) whose message
starts with `checking <image>:` and names the registry; requests' exceptions never get past this
module.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

import requests
import requests.adapters
import requests.utils

from updock import __version__
from updock.errors import RegistryAuthError, RegistryError
from updock.registry.auth import DOCKER_HUB, Credentials, find_credentials
from updock.registry.manifest import (
    ACCEPT,
    MULTI_IMAGE_TYPES,
    Platform,
    choose_instance,
    digest_of,
    media_type,
    media_type_of_body,
    parse_index,
)
from updock.registry.tls import TLSConfig, TLSSettings

if TYPE_CHECKING:  # types of requests' stubs only
    from requests.adapters import _HostParams, _PoolKwargs

log = logging.getLogger(__name__)

DOCKER_HUB_ENDPOINT = "registry-1.docker.io"
"""Where the API of `docker.io` is served."""
_HUB_DOMAINS = frozenset({DOCKER_HUB, "index.docker.io"})

#: Shortest lifetime assumed for a token, as containers/image does (the spec's default is 60 s).
MIN_TOKEN_LIFETIME = 60.0
#: A token is renewed this many seconds before it expires, so it does not expire in flight.
TOKEN_EXPIRY_MARGIN = 5.0

_USER_AGENT = f"updock/{__version__}"


class Challenge(NamedTuple):
    """What a `WWW-Authenticate` header asks for.

    Attributes:
        scheme: "basic" or "bearer".
        realm: for bearer, the URL of the token server.
        service: for bearer, the `service` parameter to send to it ("" if none).
    """

    scheme: str
    realm: str = ""
    service: str = ""


_AUTH_SCHEME = re.compile(r"\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)(?:\s+|$)")
_AUTH_PARAM = re.compile(
    r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*(?:,|$)'
)


def parse_challenge(header: str) -> Challenge | None:
    """The first challenge of a `WWW-Authenticate` header, if it is Basic or Bearer."""
    m = _AUTH_SCHEME.match(header)
    if m is None:
        return None
    scheme = m.group(1).lower()
    params: dict[str, str] = {}
    pos = m.end()
    while pos < len(header):
        p = _AUTH_PARAM.match(header, pos)
        if p is None:  # the next challenge starts here
            break
        quoted, bare = p.group(2), p.group(3)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        params[p.group(1).lower()] = value
        pos = p.end()
    if scheme == "basic":
        return Challenge("basic")
    if scheme == "bearer" and params.get("realm"):
        return Challenge("bearer", params["realm"], params.get("service", ""))
    return None


def _basic(creds: Credentials) -> str:
    raw = f"{creds.username}:{creds.password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def _reason(exc: BaseException) -> str:
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
    return re.sub(r"^\w+\(host=[^)]*\):\s*", "", str(inner)) or type(inner).__name__


@dataclass
class _RegistryState:
    """What one registry taught the client; guarded by the client's lock."""

    scheme: str | None = None
    challenge: Challenge | None = None


@dataclass(frozen=True)
class _Token:
    value: str
    expires: float  # time.monotonic()


@dataclass(frozen=True)
class _Call:
    """One `manifest_digest` call: everything the requests it makes need."""

    image: str
    domain: str
    endpoint: str
    repository: str
    creds: Credentials | None
    tls: TLSSettings

    @property
    def scope(self) -> str:
        return f"repository:{self.repository}:pull"


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


class RegistryClient:
    """Asks registries for manifest digests; one per run, shared by threads, then `close()`d.

    Args:
        tls_verify: None: registries.conf decides (insecure registries are tried over HTTPS
            without verification, then plain HTTP); False: that for every registry; True:
            verified HTTPS only, whatever registries.conf says.
        timeout: seconds to wait for a connection or an answer.
        registries_conf: registries.conf to read instead of the default (for tests).
        registries_conf_dirs: its drop-in folders instead of the default ones.
        certs_dirs: certs.d roots instead of the default ones.
        clock: seconds of a monotonic clock, for token expiry (for tests).
    """

    def __init__(
        self,
        tls_verify: bool | None = None,
        timeout: float = 30,
        *,
        registries_conf: Path | None = None,
        registries_conf_dirs: Sequence[Path] | None = None,
        certs_dirs: Sequence[Path] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._tls = TLSConfig(
            tls_verify,
            registries_conf=registries_conf,
            registries_conf_dirs=registries_conf_dirs,
            certs_dirs=certs_dirs,
        )
        self._timeout = timeout
        self._session = requests.Session()
        # No ~/.netrc, no REQUESTS_CA_BUNDLE: credentials and CAs come from podman's files.
        # Proxies from the environment are still honoured, per request (`_proxies`).
        self._session.trust_env = False
        self._session.headers["User-Agent"] = _USER_AGENT
        adapter = _TLSAdapter(self._tls, pool_maxsize=32)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        self._lock = threading.Lock()
        self._registries: dict[str, _RegistryState] = {}
        self._tokens: dict[tuple[str, str, str, Credentials | None], _Token] = {}

    def close(self) -> None:
        """Close the connections kept open."""
        self._session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the one question ---------------------------------------------------------------------

    def manifest_digest(
        self,
        domain: str,
        repository: str,
        tag: str,
        *,
        os: str,
        architecture: str,
        variant: str,
        authfile: str | None,
        known_digests: Collection[str] = (),
    ) -> str:
        """The digest the registry has for `domain/repository:tag` on a platform.

        For a manifest list (or OCI index) that is not in `known_digests`, the digest of its
        entry for the platform; otherwise the digest of what the tag points at.

        Args:
            domain: the registry, e.g. `quay.io` or `127.0.0.1:5000`.
            repository: the path in it, e.g. `ns/app` (`library/alpine` on docker.io).
            tag: the tag.
            os: the platform's OS, e.g. "linux".
            architecture: the platform's architecture, e.g. "arm64".
            variant: the platform's variant, e.g. "v8", or "" for any.
            authfile: credentials file; None: `REGISTRY_AUTH_FILE`, then the default files.
            known_digests: the digests the local image is known by; a manifest list among them
                is not fetched, its digest is returned.

        Raises:
            RegistryAuthError: the registry (or its token server) refused access.
            RegistryError: the registry could not be reached, has no such manifest, or
                answered with an error or with nonsense.
            ConfigError: the auth file, registries.conf or a certs.d file is broken.
        """
        image = f"{domain}/{repository}:{tag}"
        call = _Call(
            image=image,
            domain=domain,
            endpoint=DOCKER_HUB_ENDPOINT if domain.lower() in _HUB_DOMAINS else domain,
            repository=repository,
            creds=find_credentials(domain, repository, authfile),
            tls=self._tls.settings(domain, repository),
        )
        path = f"/v2/{repository}/manifests/{tag}"
        resp = self._request(call, "HEAD", path)
        digest = resp.headers.get("Docker-Content-Digest", "")
        mtype = media_type(resp.headers.get("Content-Type"))
        body: bytes | None = None
        if not digest or not mtype:
            resp = self._request(call, "GET", path)
            body = resp.content
            digest = digest_of(body)
            mtype = mtype or media_type(resp.headers.get("Content-Type"))
            mtype = mtype or media_type_of_body(body)
        if mtype not in MULTI_IMAGE_TYPES or digest in known_digests:
            return digest
        if body is None:
            body = self._request(call, "GET", f"/v2/{repository}/manifests/{digest}").content
            algorithm = digest.partition(":")[0]
            try:
                actual = digest_of(body, algorithm)
            except ValueError:  # an algorithm hashlib lacks: cannot check
                actual = digest
            if actual != digest:
                raise RegistryError(f"checking {image}: the manifest list does not match {digest}")
        try:
            entries = parse_index(body)
        except ValueError as exc:
            raise RegistryError(
                f"checking {image}: the manifest list {digest} is malformed: {exc}"
            ) from exc
        platform = Platform(os, architecture, variant)
        chosen = choose_instance(entries, platform)
        if chosen is None:
            raise RegistryError(
                f"checking {image}: no image for platform {platform} in the manifest list {digest}"
            )
        return chosen

    # -- requests with authentication ---------------------------------------------------------

    def _state(self, endpoint: str) -> _RegistryState:
        with self._lock:
            return self._registries.setdefault(endpoint, _RegistryState())

    def _request(self, call: _Call, method: str, path: str) -> requests.Response:
        """`method path` with the authentication the registry wants; a 2xx response."""
        state = self._state(call.endpoint)
        with self._lock:
            challenge = state.challenge
        auth = self._authorization(call, challenge)
        resp = self._send(call, state, method, path, auth)
        if resp.status_code == 401:
            challenge = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
            if challenge is None:
                raise RegistryAuthError(
                    f"checking {call.image}: {call.domain} demands authentication of a kind "
                    "updock does not support"
                )
            with self._lock:
                state.challenge = challenge
                if challenge.scheme == "bearer":  # the cached token (if any) was refused
                    self._tokens.pop(self._token_key(call, challenge), None)
            retry = self._authorization(call, challenge)
            if retry is None:
                raise RegistryAuthError(
                    f"checking {call.image}: {call.domain} demands credentials and no auth "
                    "file has any for it"
                )
            if retry != auth:
                resp = self._send(call, state, method, path, retry)
        self._check_status(call, resp)
        return resp

    def _authorization(self, call: _Call, challenge: Challenge | None) -> str | None:
        """The Authorization header for `call` once the registry has asked for `challenge`."""
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return _basic(call.creds) if call.creds is not None else None
        return f"Bearer {self._token(call, challenge)}"

    @staticmethod
    def _token_key(call: _Call, challenge: Challenge) -> tuple[str, str, str, Credentials | None]:
        return (challenge.realm, challenge.service, call.scope, call.creds)

    def _token(self, call: _Call, challenge: Challenge) -> str:
        key = self._token_key(call, challenge)
        with self._lock:
            token = self._tokens.get(key)
        if token is not None and token.expires > self._clock():
            return token.value
        token = self._fetch_token(call, challenge)
        with self._lock:
            self._tokens[key] = token
        return token.value

    def _fetch_token(self, call: _Call, challenge: Challenge) -> _Token:
        params = {"scope": call.scope}
        if challenge.service:
            params["service"] = challenge.service
        auth = None
        if call.creds is not None:
            params["account"] = call.creds.username
            auth = (call.creds.username, call.creds.password)
        host = urlsplit(challenge.realm).netloc.rpartition("@")[2]
        tls = self._tls.settings(host)
        started = self._clock()
        try:
            resp = self._session.get(
                challenge.realm,
                params=params,
                auth=auth,
                timeout=self._timeout,
                verify=tls.verify,
                proxies=self._proxies(challenge.realm),
            )
        except requests.exceptions.RequestException as exc:
            raise RegistryError(
                f"checking {call.image}: token server {host}: {_reason(exc)}"
            ) from exc
        if resp.status_code in (401, 403):
            who = "the credentials" if call.creds is not None else "anonymous access"
            raise RegistryAuthError(
                f"checking {call.image}: the token server {host} refused {who} "
                f"({resp.status_code} {resp.reason})"
            )
        if not 200 <= resp.status_code < 300:
            raise RegistryError(
                f"checking {call.image}: the token server {host} answered "
                f"{resp.status_code} {resp.reason}"
            )
        try:
            doc = resp.json()
        except ValueError as exc:
            raise RegistryError(
                f"checking {call.image}: the token server {host} answered no JSON"
            ) from exc
        value = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(value, str) or not value:
            raise RegistryError(f"checking {call.image}: the token server {host} sent no token")
        lifetime = doc.get("expires_in")
        if not isinstance(lifetime, int | float) or lifetime < MIN_TOKEN_LIFETIME:
            lifetime = MIN_TOKEN_LIFETIME
        return _Token(value, started + float(lifetime) - TOKEN_EXPIRY_MARGIN)

    # -- one HTTP exchange --------------------------------------------------------------------

    @staticmethod
    def _proxies(url: str) -> dict[str, str]:
        return dict(requests.utils.get_environ_proxies(url))

    def _send(
        self, call: _Call, state: _RegistryState, method: str, path: str, auth: str | None
    ) -> requests.Response:
        """One request, over the scheme the registry speaks; errors become RegistryError."""
        headers: dict[str, str] = {"Accept": ACCEPT}
        if auth is not None:
            headers["Authorization"] = auth
        with self._lock:
            known = state.scheme
        if not call.tls.allow_http:
            schemes = ["https"]
        elif known is not None:
            schemes = [known]
        else:
            schemes = ["https", "http"]
        https_error: requests.exceptions.ConnectionError | None = None
        for scheme in schemes:
            url = f"{scheme}://{call.endpoint}{path}"
            log.debug("%s %s", method, url)
            try:
                resp = self._session.request(
                    method,
                    url,
                    headers=headers,
                    timeout=self._timeout,
                    verify=call.tls.verify,
                    proxies=self._proxies(url),
                )
            except requests.exceptions.Timeout as exc:
                raise RegistryError(
                    f"checking {call.image}: {call.endpoint} did not answer within "
                    f"{self._timeout:g}s"
                ) from exc
            except requests.exceptions.ConnectionError as exc:
                if scheme == "https" and len(schemes) > 1:
                    # containers/image does the same for an insecure registry.
                    log.debug("HTTPS to %s failed (%s); trying HTTP", call.endpoint, _reason(exc))
                    https_error = exc
                    continue
                raise RegistryError(self._connection_message(call, exc, https_error)) from exc
            except requests.exceptions.RequestException as exc:
                raise RegistryError(
                    f"checking {call.image}: request to {call.endpoint} failed: {_reason(exc)}"
                ) from exc
            with self._lock:
                state.scheme = scheme
            return resp
        raise AssertionError("unreachable: the last scheme returns or raises")  # pragma: no cover

    @staticmethod
    def _connection_message(
        call: _Call,
        exc: requests.exceptions.ConnectionError,
        https_error: requests.exceptions.ConnectionError | None,
    ) -> str:
        if https_error is not None:
            return (
                f"checking {call.image}: cannot connect to {call.endpoint} over HTTPS "
                f"({_reason(https_error)}) nor over HTTP ({_reason(exc)})"
            )
        if isinstance(exc, requests.exceptions.SSLError):
            reason = _reason(exc)
            if "WRONG_VERSION_NUMBER" in reason:
                reason += (
                    " (does it speak plain HTTP? then mark it insecure in registries.conf, "
                    "or use --tls-verify=false)"
                )
            return f"checking {call.image}: TLS connection to {call.endpoint} failed: {reason}"
        return f"checking {call.image}: cannot connect to {call.endpoint}: {_reason(exc)}"

    @staticmethod
    def _check_status(call: _Call, resp: requests.Response) -> None:
        status = resp.status_code
        if 200 <= status < 300:
            return
        detail = _error_detail(resp.headers, resp.content)
        if status in (401, 403):
            who = "the credentials" if call.creds is not None else "anonymous access"
            raise RegistryAuthError(
                f"checking {call.image}: {call.domain} refused {who} ({status} {resp.reason})"
                f"{detail}"
            )
        if status == 404:
            raise RegistryError(f"checking {call.image}: manifest unknown to {call.domain}{detail}")
        raise RegistryError(
            f"checking {call.image}: {call.domain} answered {status} {resp.reason}{detail}"
        )


def _error_detail(headers: Mapping[str, str], body: bytes) -> str:
    """`: message` from a registry's JSON error body (distribution's format), or ""."""
    if not body or "json" not in headers.get("Content-Type", ""):
        return ""
    try:
        doc = json.loads(body)
        message = doc["errors"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        return ""
    return f": {message}" if isinstance(message, str) and message else ""
