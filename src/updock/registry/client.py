"""Asking a registry for the current manifest digest of an image name.

podman auto-update sends `GET /v2/` and a full manifest `GET` per container. `RegistryClient`
sends one `HEAD` per image name, over connections kept open across calls (`transport.py`,
imported on the first request only), and remembers per registry what the first exchange taught
it:

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
import contextlib
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import urlencode, urlsplit

from updock import defaults
from updock.errors import ConfigError, RegistryAuthError, RegistryError, UpdockError
from updock.registry import hints
from updock.registry.attempts import HostPacing, with_retries
from updock.registry.auth import DOCKER_HUB, CredentialHelpers, Credentials, find_credentials
from updock.registry.exchange import ExchangeFailure, Reply, TLSFailure, TransientFailure
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
from updock.registry.registries_conf import Source
from updock.registry.retry import (
    TOO_MANY_REQUESTS,
    RetryPolicy,
)
from updock.registry.tls import TLSConfig, TLSSettings

if TYPE_CHECKING:
    from updock.registry.transport import HTTPTransport

log = logging.getLogger(__name__)

DOCKER_HUB_ENDPOINT = "registry-1.docker.io"
"""Where the API of `docker.io` is served."""
_HUB_DOMAINS = frozenset({DOCKER_HUB, "index.docker.io"})

#: Shortest lifetime assumed for a token, as containers/image does (the spec's default is 60 s).
MIN_TOKEN_LIFETIME = 60.0
#: A token is renewed this many seconds before it expires, so it does not expire in flight.
TOKEN_EXPIRY_MARGIN = 5.0
#: The `client_id` of OAuth2 token requests (containers/image sends `containers/image`).
OAUTH2_CLIENT_ID = "updock"

#: Requests in flight to one registry at most, unless the caller says otherwise.
DEFAULT_CONCURRENCY = defaults.REGISTRY_CONCURRENCY
#: Seconds to wait for a connection, and for an answer, unless the caller says otherwise.
DEFAULT_TIMEOUT = (10.0, 30.0)


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


class _Turn:
    """Lets one thread at a time go first until what it goes to learn is known.

    Guarded by the client's lock. `event` is set when the thread that went first is done.
    """

    def __init__(self) -> None:
        self.event: threading.Event | None = None


@dataclass
class _HostState:
    """What the client knows of one host (a registry or a token server) for the run.

    Guarded by the client's lock, except `pacing`, which guards itself.
    """

    pacing: HostPacing
    scheme: str | None = None
    challenge: Challenge | None = None
    #: A first request is learning the scheme and authentication: others wait for it.
    first_contact: _Turn = field(default_factory=_Turn)
    #: The first request has ended: later requests use what it learned.
    contacted: bool = False
    #: A request is asking the registry whether a token server of the hints is still its own,
    #: before any credentials go there: other requests with credentials wait for it.
    confirmation: _Turn = field(default_factory=_Turn)
    #: `scheme` and `challenge` come from an earlier run (`hints.py`), not from this one.
    scheme_hinted: bool = False
    challenge_hinted: bool = False


@dataclass(frozen=True)
class _Token:
    value: str
    expires: float  # the client's clock


@dataclass(frozen=True)
class _Call:
    """One check of an image: everything the requests it makes need."""

    image: str
    domain: str
    endpoint: str
    repository: str
    creds: Credentials | None
    tls: TLSSettings

    @property
    def scope(self) -> str:
        return f"repository:{self.repository}:pull"


@dataclass(frozen=True)
class RemoteTag:
    """What `RegistryClient.head` learned of a tag; `RegistryClient.resolve` finishes it.

    Attributes:
        call: the check's connection details (credentials stay inside).
        digest: the digest the tag points at.
        media_type: its media type (a manifest list's, or an image manifest's).
        body: the manifest, when it had to be fetched (no digest in the `HEAD` answer).
    """

    call: _Call = field(repr=False)
    digest: str
    media_type: str
    body: bytes | None = field(default=None, repr=False)


@dataclass
class _TokenSlot:
    """The cached token of one (realm, service, scope, credentials) and the lock to fetch it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    token: _Token | None = None


class RegistryClient:
    """Asks registries for manifest digests; one per run, shared by threads, then `close()`d.

    Args:
        tls_verify: None: registries.conf decides (insecure registries are tried over HTTPS
            without verification, then plain HTTP); False: that for every registry; True:
            verified HTTPS only, whatever registries.conf says.
        timeout: seconds to wait for a connection and for an answer, as `(connect, read)`, or
            one number for both. An answer must be complete within the read timeout.
        concurrency: requests in flight to one registry at most (token servers count apart).
        retry: how often and after how long a failed request is tried again.
        registries_conf: registries.conf to read instead of the default (for tests).
        registries_conf_dirs: its drop-in folders instead of the default ones.
        certs_dirs: certs.d roots instead of the default ones.
        hints_file: where to read what earlier runs learned of registries (scheme,
            authentication), and to save what this one learned, on `close()`; None: neither.
        preload: import the HTTP stack (requests) now, in a background thread, so that it is
            ready when the run's first check starts (the run lists containers first).
        clock: seconds of a monotonic clock, for token expiry (for tests).
        sleep: waits a number of seconds, between attempts (for tests).
        rand: a uniform random number in [0, 1), the jitter of the waits (for tests).
    """

    def __init__(
        self,
        tls_verify: bool | None = None,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        retry: RetryPolicy | None = None,
        registries_conf: Path | None = None,
        registries_conf_dirs: Sequence[Path] | None = None,
        certs_dirs: Sequence[Path] | None = None,
        hints_file: Path | None = None,
        preload: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.concurrency = concurrency
        self._retry = retry or RetryPolicy()
        self._clock = clock
        self._sleep = sleep
        self._rand = rand
        self._tls = TLSConfig(
            tls_verify,
            registries_conf=registries_conf,
            registries_conf_dirs=registries_conf_dirs,
            certs_dirs=certs_dirs,
        )
        if isinstance(timeout, tuple):
            self._connect_timeout, self._read_timeout = timeout
        else:
            self._connect_timeout = self._read_timeout = float(timeout)
        self._pool_size = max(concurrency, 4)
        self._transport_instance: HTTPTransport | None = None
        if preload:
            self.preload()
        self._helpers = CredentialHelpers()
        self._lock = threading.Lock()
        self._hosts: dict[str, _HostState] = {}
        self._tokens: dict[tuple[str, str, str, Credentials | None], _TokenSlot] = {}
        self._hints_file = hints_file
        self._hints = hints.load(hints_file) if hints_file is not None else {}

    def preload(self) -> None:
        """Import the HTTP stack in a background thread now, before the first request needs it
        (the run calls this once it knows there is something to check)."""
        threading.Thread(target=_import_transport, name="preload", daemon=True).start()

    def close(self) -> None:
        """Close the connections kept open; save what was learned of registries (if asked)."""
        with self._lock:
            transport, self._transport_instance = self._transport_instance, None
            learned = {
                host: _hint_of(state)
                for host, state in self._hosts.items()
                if state.scheme is not None and not host.startswith(_TOKEN_HOST)
            }
        if transport is not None:
            transport.close()
        if self._hints_file is not None:
            hints.save(self._hints_file, learned)

    def _transport(self) -> HTTPTransport:
        """The HTTP transport, made (and requests imported) on the first request."""
        with self._lock:
            if self._transport_instance is None:
                from updock.registry.transport import HTTPTransport

                self._transport_instance = HTTPTransport(
                    self._tls, self._connect_timeout, self._read_timeout, self._pool_size
                )
            return self._transport_instance

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @staticmethod
    def endpoint(domain: str) -> str:
        """The host that serves the API of the registry `domain` (`docker.io` has its own)."""
        return DOCKER_HUB_ENDPOINT if domain.lower() in _HUB_DOMAINS else domain.lower()

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
        entry for the platform; otherwise the digest of what the tag points at. The same as
        `resolve(head(...), ...)`.

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
            ConfigError: the auth file, a credential helper, registries.conf or a certs.d file
                is broken.
        """
        remote = self.head(domain, repository, tag, authfile=authfile)
        return self.resolve(
            remote, os=os, architecture=architecture, variant=variant, known_digests=known_digests
        )

    def head(self, domain: str, repository: str, tag: str, *, authfile: str | None) -> RemoteTag:
        """What the tag points at: one `HEAD` (a `GET` if the registry gives no digest).

        Asked where podman's pull would look (`registries_conf.py`): each mirror of
        registries.conf in order, then the registry (its `location` when it is remapped); the
        first that has the tag answers. Needs no platform: a run starts these as soon as it
        knows the image names, before it knows the local images. Raises as `manifest_digest`
        does; a blocked registry is a `RegistryError` naming it.
        """
        image = f"{domain}/{repository}:{tag}"
        sources = self._tls.registries_conf().sources(domain, repository, tag)
        failures: list[tuple[Source, UpdockError]] = []
        for source in sources:
            try:
                return self._head_at(image, source, authfile)
            except (RegistryError, ConfigError) as exc:
                if len(sources) == 1:
                    raise
                log.debug("%s: %s failed: %s", image, source.name, exc)
                failures.append((source, exc))
        raise _all_failed(image, failures) from failures[-1][1]

    def _head_at(self, image: str, source: Source, authfile: str | None) -> RemoteTag:
        """`head` at one place: a mirror, or the registry."""
        if source.blocked_by is not None:
            raise RegistryError(
                f"checking {image}: registry {source.blocked_by.prefix} is blocked in "
                f"{source.blocked_by.origin}"
            )
        call = _Call(
            image=image,
            domain=source.domain,
            endpoint=self.endpoint(source.domain),
            repository=source.repository,
            # containers/image: the credentials of the place asked, not of the name's registry.
            creds=find_credentials(
                source.domain, source.repository, authfile, helpers=self._helpers
            ),
            tls=self._tls.for_insecure(source.insecure),
        )
        path = f"/v2/{source.repository}/manifests/{source.tag}"
        reply = self._request(call, "HEAD", path)
        digest = reply.headers.get("Docker-Content-Digest", "")
        mtype = media_type(reply.headers.get("Content-Type"))
        body: bytes | None = None
        if not digest or not mtype:
            reply = self._request(call, "GET", path)
            body = reply.body
            digest = digest_of(body)
            mtype = mtype or media_type(reply.headers.get("Content-Type"))
            mtype = mtype or media_type_of_body(body)
        return RemoteTag(call, digest, mtype, body)

    def resolve(
        self,
        remote: RemoteTag,
        *,
        os: str,
        architecture: str,
        variant: str,
        known_digests: Collection[str] = (),
    ) -> str:
        """The digest for a platform: the tag's own, or its manifest list's entry (one `GET` of
        the list, only when the list is not among `known_digests`). Raises as
        `manifest_digest` does."""
        call, digest, mtype, body = remote.call, remote.digest, remote.media_type, remote.body
        image = call.image
        if mtype not in MULTI_IMAGE_TYPES or digest in known_digests:
            return digest
        if body is None:
            body = self._request(call, "GET", f"/v2/{call.repository}/manifests/{digest}").body
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

    def _host(self, host: str) -> _HostState:
        with self._lock:
            state = self._hosts.get(host)
            if state is None:
                state = _HostState(HostPacing(self.concurrency))
                hint = self._hints.get(host)
                if hint is not None:  # no first contact to wait for: every request goes at once
                    state.scheme, state.scheme_hinted = hint.scheme, True
                    state.challenge = _challenge_of(hint)
                    state.challenge_hinted = state.challenge is not None
                    state.contacted = True
                self._hosts[host] = state
            return state

    @contextlib.contextmanager
    def _turn(self, turn: _Turn, known: Callable[[], bool]) -> Iterator[bool]:
        """Go first (yields True) while `known()` is false and no other thread goes first; wait
        for the one that does; go on at once (yields False) once `known()` holds.

        `known` is called under the client's lock. When the thread that went first ends without
        making `known()` true (it failed), the next waiting thread goes first.
        """
        while True:
            with self._lock:
                if known():
                    lead = False
                    break
                if turn.event is None:
                    event = turn.event = threading.Event()
                    lead = True
                    break
                event = turn.event
            event.wait()
        if not lead:
            yield False
            return
        try:
            yield True
        finally:
            with self._lock:
                turn.event = None
            event.set()

    @contextlib.contextmanager
    def _first_contact(self, state: _HostState) -> Iterator[None]:
        """Let one request at a time meet a registry until one of them has ended.

        The first request learns the scheme and the authentication the registry wants; the
        others wait for it, then use what it learned instead of meeting the same 401 (or the
        same failed HTTPS attempt) each.
        """
        with self._turn(state.first_contact, lambda: state.contacted) as lead:
            try:
                yield
            finally:
                if lead:
                    with self._lock:
                        state.contacted = True

    def _confirmation(
        self, state: _HostState, call: _Call
    ) -> contextlib.AbstractContextManager[bool]:
        """Whether this request must first ask the registry for its token server (True: it
        goes unauthenticated, and other requests with credentials wait for its answer).

        A token server named only by the hints file gets no credentials: a hints file that
        someone changed must not lead them elsewhere. The registry's own 401 in this run
        confirms (or replaces) it: one request per registry and run pays that round trip.
        Anonymous requests use the remembered token server at once.
        """

        def confirmed() -> bool:
            challenge = state.challenge
            return (
                call.creds is None
                or not state.challenge_hinted
                or challenge is None
                or challenge.scheme != "bearer"
            )

        return self._turn(state.confirmation, confirmed)

    def _request(self, call: _Call, method: str, path: str) -> Reply:
        """`method path` with the authentication the registry wants; a 2xx reply."""
        state = self._host(call.endpoint)
        with self._first_contact(state), self._confirmation(state, call) as confirming:
            with self._lock:
                challenge, hinted = state.challenge, state.challenge_hinted
            if confirming:
                challenge, hinted = None, False
            try:
                auth = self._authorization(call, challenge)
            except RegistryError as exc:
                if not hinted:
                    raise
                # The token server an earlier run met may have moved: ask the registry again.
                log.debug("%s: the remembered authentication failed (%s)", call.endpoint, exc)
                with self._lock:
                    if state.challenge == challenge:
                        state.challenge, state.challenge_hinted = None, False
                challenge, auth = None, None
            reply = self._send(call, state, method, path, auth)
            if confirming:
                # The registry answered: what it asks for now (below) replaces the hint.
                with self._lock:
                    if state.challenge_hinted:
                        state.challenge, state.challenge_hinted = None, False
            if reply.status == 401:
                challenge = parse_challenge(reply.headers.get("WWW-Authenticate", ""))
                if challenge is None:
                    raise RegistryAuthError(
                        f"checking {call.image}: {call.domain} demands authentication of a kind "
                        "updock does not support"
                    )
                with self._lock:
                    state.challenge, state.challenge_hinted = challenge, False
                if challenge.scheme == "bearer":  # the cached token (if any) was refused
                    self._forget_token(call, challenge, auth)
                retry = self._authorization(call, challenge)
                if retry is None:
                    raise RegistryAuthError(
                        f"checking {call.image}: {call.domain} demands credentials and no auth "
                        "file has any for it"
                    )
                if retry != auth:
                    reply = self._send(call, state, method, path, retry)
        self._check_status(call, reply)
        return reply

    def _authorization(self, call: _Call, challenge: Challenge | None) -> str | None:
        """The Authorization header for `call` once the registry has asked for `challenge`."""
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            if call.creds is None:
                return None
            if call.creds.identity_token and not call.creds.password:
                raise RegistryAuthError(
                    f"checking {call.image}: {call.domain} asks for a user name and password "
                    "(Basic authentication), but its credentials are an identity token, which "
                    "only works with token (Bearer) authentication"
                )
            return _basic(call.creds)
        return f"Bearer {self._token(call, challenge)}"

    def _may_send_credentials(self, scheme: str, host: str) -> bool:
        """Whether credentials may go to `host` over `scheme`: over HTTPS, or to a host that
        registries.conf (or `--tls-verify=false`) marks insecure.

        (A registry itself is spoken to over plain HTTP only when it is insecure, so its Basic
        credentials never need this check; a token server may be any host its registry names.)
        """
        return scheme == "https" or self._tls.settings(host).allow_http

    def _token_slot(self, call: _Call, challenge: Challenge) -> _TokenSlot:
        key = (challenge.realm, challenge.service, call.scope, call.creds)
        with self._lock:
            return self._tokens.setdefault(key, _TokenSlot())

    def _forget_token(self, call: _Call, challenge: Challenge, refused: str | None) -> None:
        slot = self._token_slot(call, challenge)
        with slot.lock:
            # Only the token that was refused: another thread may have fetched a new one.
            if slot.token is not None and f"Bearer {slot.token.value}" == refused:
                slot.token = None

    def _token(self, call: _Call, challenge: Challenge) -> str:
        """The token for the call's repository scope: the cached one, or a new one.

        One fetch per scope at a time: threads that need the same token wait for it.
        """
        slot = self._token_slot(call, challenge)
        with slot.lock:
            if slot.token is None or slot.token.expires <= self._clock():
                slot.token = self._fetch_token(call, challenge)
            return slot.token.value

    def _fetch_token(self, call: _Call, challenge: Challenge) -> _Token:
        """A new token from the realm: `GET` with the user name and password (or none), or,
        with an identity token, an OAuth2 `POST` with a `refresh_token` grant and no password.
        """
        split = urlsplit(challenge.realm)
        host = split.netloc.rpartition("@")[2]
        if split.scheme not in ("http", "https") or not host:
            raise RegistryError(
                f"checking {call.image}: {call.domain} names an invalid token server "
                f"{challenge.realm!r}"
            )
        who = f"the token server {host} of {call.domain}"
        if call.creds is not None and not self._may_send_credentials(split.scheme, host):
            raise RegistryAuthError(
                f"checking {call.image}: {who} speaks plain HTTP: updock sends credentials only "
                f"over HTTPS (mark {host} insecure in registries.conf, or use --tls-verify=false, "
                "to allow it)"
            )
        identity = call.creds.identity_token if call.creds is not None else ""
        headers: dict[str, str] = {}
        body: bytes | None = None
        if identity:
            # containers/image's getBearerTokenOAuth2: the form in the body, never in the URL.
            form = {"grant_type": "refresh_token", "refresh_token": identity}
            if challenge.service:
                form["service"] = challenge.service
            form |= {"scope": call.scope, "client_id": OAUTH2_CLIENT_ID}
            method, url, whose = "POST", challenge.realm, "the identity token"
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            body = urlencode(form).encode()
            # RFC 6749: an unknown or expired refresh token is a 400 `invalid_grant`.
            refused: tuple[int, ...] = (400, 401, 403)
        else:
            params = {"scope": call.scope}
            if challenge.service:
                params["service"] = challenge.service
            if call.creds is not None:
                params["account"] = call.creds.username
                headers["Authorization"] = _basic(call.creds)
            method = "GET"
            url = challenge.realm + ("&" if split.query else "?") + urlencode(params)
            whose = "the credentials" if call.creds is not None else "anonymous access"
            refused = (401, 403)
        verify = self._tls.settings(host).verify
        started = self._clock()
        state = self._host(f"{_TOKEN_HOST}{host}")
        reply = self._with_retries(
            call.image,
            state,
            lambda: self._transport().exchange(who, method, url, headers, verify, body),
        )
        if reply.status in refused:
            detail = _oauth2_error(reply.body, identity) if identity else ""
            raise RegistryAuthError(
                f"checking {call.image}: {who} refused {whose} ({reply.status} {reply.reason}"
                f"{detail})"
            )
        if not 200 <= reply.status < 300:
            raise RegistryError(
                f"checking {call.image}: {who} answered {reply.status} {reply.reason}"
                f"{_attempts(reply)}"
            )
        try:
            doc = json.loads(reply.body)
        except ValueError as exc:
            raise RegistryError(f"checking {call.image}: {who} answered no JSON") from exc
        value = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(value, str) or not value:
            raise RegistryError(f"checking {call.image}: {who} sent no token")
        lifetime = doc.get("expires_in")
        if not isinstance(lifetime, int | float) or lifetime < MIN_TOKEN_LIFETIME:
            lifetime = MIN_TOKEN_LIFETIME
        return _Token(value, started + float(lifetime) - TOKEN_EXPIRY_MARGIN)

    # -- one request, tried again when that may help --------------------------------------------

    def _send(
        self, call: _Call, state: _HostState, method: str, path: str, auth: str | None
    ) -> Reply:
        """One request to the registry, tried again on transient failures and 5xx/429."""
        headers: dict[str, str] = {"Accept": ACCEPT}
        if auth is not None:
            headers["Authorization"] = auth
        return self._with_retries(
            call.image, state, lambda: self._send_once(call, state, method, path, headers)
        )

    def _with_retries(self, image: str, state: _HostState, once: Callable[[], Reply]) -> Reply:
        return with_retries(
            once, state.pacing, self._retry, image=image, sleep=self._sleep, rand=self._rand
        )

    def _send_once(
        self, call: _Call, state: _HostState, method: str, path: str, headers: dict[str, str]
    ) -> Reply:
        """One attempt, over the scheme the registry speaks (trying HTTPS, then HTTP, at first).

        Raises:
            TransientFailure: the connection failed or timed out.
            RegistryError: anything else that went wrong (TLS, a broken URL, too big a body).
        """
        with self._lock:
            known, hinted = state.scheme, state.scheme_hinted
        if not call.tls.allow_http:
            schemes = ["https"]
        elif known is not None:
            schemes = [known]
        else:
            schemes = ["https", "http"]
        https_failure: ExchangeFailure | None = None
        for scheme in schemes:
            url = f"{scheme}://{call.endpoint}{path}"
            try:
                reply = self._transport().exchange(
                    call.endpoint, method, url, headers, call.tls.verify
                )
                if hinted and scheme == "http" and reply.status == 400:
                    # What a TLS server answers to plain HTTP: the registry moved to TLS.
                    raise TLSFailure("plain HTTP refused", "plain HTTP refused")
            except (TransientFailure, TLSFailure) as exc:
                if hinted and call.tls.allow_http and len(schemes) == 1:
                    # An earlier run's scheme no longer works: try both, as without hints.
                    log.debug("%s over %s failed (%s)", call.endpoint, scheme, exc.message)
                    with self._lock:
                        if state.scheme == scheme and state.scheme_hinted:
                            state.scheme, state.scheme_hinted = None, False
                    return self._send_once(call, state, method, path, headers)
                if scheme == "https" and len(schemes) > 1:
                    # containers/image does the same for an insecure registry.
                    log.debug("HTTPS to %s failed (%s); trying HTTP", call.endpoint, exc.message)
                    https_failure = exc
                    continue
                if isinstance(exc, TLSFailure):
                    raise RegistryError(f"checking {call.image}: {exc.message}") from exc.__cause__
                if https_failure is not None:
                    raise TransientFailure(
                        f"cannot connect to {call.endpoint} over HTTPS ({https_failure.reason}) "
                        f"nor over HTTP ({exc.reason})"
                    ) from exc.__cause__
                raise
            except ExchangeFailure as exc:
                raise RegistryError(f"checking {call.image}: {exc.message}") from exc.__cause__
            with self._lock:
                state.scheme, state.scheme_hinted = scheme, False
            return reply
        raise AssertionError("unreachable: the last scheme returns or raises")  # pragma: no cover

    @staticmethod
    def _check_status(call: _Call, reply: Reply) -> None:
        status = reply.status
        if 200 <= status < 300:
            return
        detail = _error_detail(reply.headers, reply.body)
        if status in (401, 403):
            who = "the credentials" if call.creds is not None else "anonymous access"
            raise RegistryAuthError(
                f"checking {call.image}: {call.domain} refused {who} ({status} {reply.reason})"
                f"{detail}"
            )
        if status == 404:
            raise RegistryError(f"checking {call.image}: manifest unknown to {call.domain}{detail}")
        if status == TOO_MANY_REQUESTS:
            after = reply.headers.get("Retry-After")
            raise RegistryError(
                f"checking {call.image}: {call.domain} is rate limiting "
                f"({status} {reply.reason}{f', Retry-After: {after}' if after else ''})"
                f"{_attempts(reply)}{detail}"
            )
        raise RegistryError(
            f"checking {call.image}: {call.domain} answered {status} {reply.reason}"
            f"{_attempts(reply)}{detail}"
        )


_OAUTH2_ERROR_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _oauth2_error(body: bytes, secret: str) -> str:
    """`: code` from an OAuth2 error answer (`{"error": "invalid_grant"}`), or "".

    Only the error code (a short word, never the secret): its description is free text.
    """
    try:
        code = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return ""
    if not isinstance(code, str) or not _OAUTH2_ERROR_CODE.match(code) or secret in code:
        return ""
    return f": {code}"


#: The prefix of the `_hosts` keys of token servers (the others are registries).
_TOKEN_HOST = "token "


def _challenge_of(hint: hints.Hint) -> Challenge | None:
    if hint.auth == "basic":
        return Challenge("basic")
    if hint.auth == "bearer" and hint.realm:
        return Challenge("bearer", hint.realm, hint.service)
    return None


def _hint_of(state: _HostState) -> hints.Hint:
    assert state.scheme is not None
    challenge = state.challenge
    if challenge is None:
        return hints.Hint(state.scheme)
    return hints.Hint(state.scheme, challenge.scheme, challenge.realm, challenge.service)


def _all_failed(image: str, failures: Sequence[tuple[Source, UpdockError]]) -> UpdockError:
    """The registry's own failure (the last place asked), naming what the mirrors said too."""
    _, primary = failures[-1]
    prefix = f"checking {image}: "
    mirrors = "; ".join(
        f"[{source.name}: {str(exc).removeprefix(prefix)}]" for source, exc in failures[:-1]
    )
    return type(primary)(f"{primary} (mirrors also failed: {mirrors})")


def _import_transport() -> None:
    import updock.registry.transport  # noqa: F401 (imported for its side effect: it is loaded)


def _attempts(reply: Reply) -> str:
    return f" (after {reply.attempts} attempts)" if reply.attempts > 1 else ""


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
