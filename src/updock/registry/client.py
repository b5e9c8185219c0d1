"""Asking a registry for the current manifest digest of an image name.

podman auto-update sends `GET /v2/` and a full manifest `GET` per container. `RegistryClient`
sends one `HEAD` per image name, where podman's pull would look (mirrors and remapped locations
of registries.conf: `registries_conf.py`), over connections kept open across calls
(`transport.py`, imported on the first request only), and remembers per registry what the first
exchange taught it (`hosts.py`):

- the scheme that works (`schemes.py`: an insecure registry is tried over HTTPS first, then
  plain HTTP);
- the authentication the registry wants (`challenge.py`): for `Basic`, later requests carry the
  credentials at once; for `Bearer`, the token for a repository is fetched before the request
  and reused until it expires (`tokens.py`). So only the first request to a registry meets a
  401: while it is in flight, the other threads wait for what it learns (`contact.py`) instead
  of each meeting the 401 (and each trying HTTPS first) themselves. There is no `GET /v2/`
  probe at all.

A manifest is fetched (`GET`) only when the registry names no digest, or when the name points at
a manifest list that the local image does not know, to find the entry for its platform.

Faults (`attempts.py`): every request has a connect and a read timeout, and a whole answer must
arrive within the read timeout. Connection failures, timeouts and 5xx answers are tried again
with backoff and jitter, at most `RetryPolicy.attempts` times; a 429 waits what its
`Retry-After` asks (capped), and every thread of the run waits with it. A registry that still
cannot be reached is remembered as such for the rest of the run: its other checks fail at once
instead of waiting out their own retries. At most `concurrency` requests are in flight per host.

Every failure is a `RegistryError` (`RegistryAuthError` for refused credentials) whose message
starts with `checking <image>:` and names the registry (`replies.py`); requests' exceptions
never get past this package.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from updock import defaults
from updock.errors import ConfigError, RegistryAuthError, RegistryError, UpdockError
from updock.registry import hints
from updock.registry.attempts import HostPacing, with_retries
from updock.registry.auth import DOCKER_HUB, CredentialHelpers, find_credentials
from updock.registry.call import Call
from updock.registry.challenge import Challenge, basic_authorization, parse_challenge
from updock.registry.contact import confirmation, first_contact
from updock.registry.counts import RequestCounts
from updock.registry.exchange import Reply
from updock.registry.hosts import Hosts, HostState
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
from updock.registry.replies import check_status
from updock.registry.retry import RetryPolicy
from updock.registry.schemes import exchange_at
from updock.registry.tls import TLSConfig
from updock.registry.tokens import TokenRequest, Tokens

if TYPE_CHECKING:
    from updock.registry.transport import HTTPTransport

log = logging.getLogger(__name__)

DOCKER_HUB_ENDPOINT = "registry-1.docker.io"
"""Where the API of `docker.io` is served."""
_HUB_DOMAINS = frozenset({DOCKER_HUB, "index.docker.io"})

#: Requests in flight to one registry at most, unless the caller says otherwise.
DEFAULT_CONCURRENCY = defaults.REGISTRY_CONCURRENCY
#: Seconds to wait for a connection, and for an answer, unless the caller says otherwise.
DEFAULT_TIMEOUT = (10.0, 30.0)


@dataclass(frozen=True)
class RemoteTag:
    """What `RegistryClient.head` learned of a tag; `RegistryClient.resolve` finishes it.

    Attributes:
        call: the check's connection details (credentials stay inside).
        digest: the digest the tag points at.
        media_type: its media type (a manifest list's, or an image manifest's).
        body: the manifest, when it had to be fetched (no digest in the `HEAD` answer).
    """

    call: Call = field(repr=False)
    digest: str
    media_type: str
    body: bytes | None = field(default=None, repr=False)


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
        self._lock = threading.Lock()  # guards the transport
        self._hints_file = hints_file
        self._hosts = Hosts(concurrency, hints.load(hints_file) if hints_file is not None else {})
        self._tokens = Tokens(self._tls, self._token_request, clock)
        #: The requests sent, per host, and those that failed (`counts.py`).
        self.counts = RequestCounts()

    def preload(self) -> None:
        """Import the HTTP stack in a background thread now, before the first request needs it
        (the run calls this once it knows there is something to check)."""
        threading.Thread(target=_import_transport, name="preload", daemon=True).start()

    def close(self) -> None:
        """Close the connections kept open; save what was learned of registries (if asked)."""
        with self._lock:
            transport, self._transport_instance = self._transport_instance, None
        if transport is not None:
            transport.close()
        if self._hints_file is not None:
            hints.save(self._hints_file, self._hosts.learned())

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
                where = "the mirror" if source.mirror else "the registry"
                log.debug("%s: %s %s failed: %s", image, where, source.name, exc)
                failures.append((source, exc))
        raise _all_failed(image, failures) from failures[-1][1]

    def _head_at(self, image: str, source: Source, authfile: str | None) -> RemoteTag:
        """`head` at one place: a mirror, or the registry."""
        if source.blocked_by is not None:
            raise RegistryError(
                f"checking {image}: registry {source.blocked_by.prefix} is blocked in "
                f"{source.blocked_by.origin}"
            )
        call = Call(
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

    def _request(self, call: Call, method: str, path: str) -> Reply:
        """`method path` with the authentication the registry wants; a 2xx reply.

        Raises:
            RegistryAuthError: the registry (or its token server) refused access.
            RegistryError: the registry could not be reached, or answered another error.
        """
        state = self._hosts.registry(call.endpoint)
        lock = self._hosts.lock
        with (
            first_contact(lock, state),
            confirmation(lock, state, call.creds is not None) as confirming,
        ):
            with lock:
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
                with lock:
                    if state.challenge == challenge:
                        state.challenge, state.challenge_hinted = None, False
                challenge, auth = None, None
            reply = self._send(call, state, method, path, auth)
            if confirming:
                # The registry answered: what it asks for now (below) replaces the hint.
                with lock:
                    if state.challenge_hinted:
                        state.challenge, state.challenge_hinted = None, False
            if reply.status == 401:
                challenge = parse_challenge(reply.headers.get("WWW-Authenticate", ""))
                if challenge is None:
                    raise RegistryAuthError(
                        f"checking {call.image}: {call.domain} demands authentication of a kind "
                        "updock does not support"
                    )
                with lock:
                    state.challenge, state.challenge_hinted = challenge, False
                if challenge.scheme == "bearer":  # the cached token (if any) was refused
                    self._tokens.forget(call, challenge, auth)
                retry = self._authorization(call, challenge)
                if retry is None:
                    raise RegistryAuthError(
                        f"checking {call.image}: {call.domain} demands credentials and no auth "
                        "file has any for it"
                    )
                if retry != auth:
                    reply = self._send(call, state, method, path, retry)
        check_status(call, reply)
        return reply

    def _authorization(self, call: Call, challenge: Challenge | None) -> str | None:
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
            return basic_authorization(call.creds)
        return self._tokens.authorization(call, challenge)

    # -- one request, tried again when that may help --------------------------------------------

    def _send(
        self, call: Call, state: HostState, method: str, path: str, auth: str | None
    ) -> Reply:
        """One request to the registry, tried again on transient failures and 5xx/429."""
        headers: dict[str, str] = {"Accept": ACCEPT}
        if auth is not None:
            headers["Authorization"] = auth

        def exchange(method: str, url: str, headers: Mapping[str, str], verify: bool) -> Reply:
            return self._transport().exchange(call.endpoint, method, url, headers, verify)

        # Counted per attempt: an insecure registry's HTTPS probe before plain HTTP is a step
        # of one request, not a request (nor an error) of its own.
        return self._with_retries(
            call.image,
            state.pacing,
            lambda: self.counts.counted(
                call.endpoint,
                lambda: exchange_at(call, state, self._hosts.lock, exchange, method, path, headers),
            ),
        )

    def _token_request(self, image: str, request: TokenRequest) -> Reply:
        """One request to a token server, tried again as registry requests are."""
        r = request
        return self._with_retries(
            image,
            self._hosts.token_server(r.host),
            lambda: self.counts.counted(
                r.host,
                lambda: self._transport().exchange(
                    r.who, r.method, r.url, r.headers, r.verify, r.body
                ),
            ),
        )

    def _with_retries(self, image: str, pacing: HostPacing, once: Callable[[], Reply]) -> Reply:
        return with_retries(
            once, pacing, self._retry, image=image, sleep=self._sleep, rand=self._rand
        )


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
