"""Bearer tokens: fetched from the token server a registry names (its `realm`), one per
repository scope and credentials, reused for the run until they expire.

A token is asked for with a `GET` carrying the user name and password (Basic), or none for
anonymous access; with an identity token (an OAuth2 refresh token), with an OAuth2 `POST` of a
`refresh_token` grant and no password, as containers/image does. Credentials go to a token
server only over HTTPS, or to a host registries.conf (or `--tls-verify=false`) marks insecure.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from updock.errors import RegistryAuthError, RegistryError
from updock.registry.auth import Credentials
from updock.registry.call import Call
from updock.registry.challenge import Challenge, basic_authorization
from updock.registry.exchange import Reply
from updock.registry.replies import attempts_note
from updock.registry.tls import TLSConfig

#: Shortest lifetime assumed for a token, as containers/image does (the spec's default is 60 s).
MIN_TOKEN_LIFETIME = 60.0
#: A token is renewed this many seconds before it expires, so it does not expire in flight.
TOKEN_EXPIRY_MARGIN = 5.0
#: The `client_id` of OAuth2 token requests (containers/image sends `containers/image`).
OAUTH2_CLIENT_ID = "updock"

_OAUTH2_ERROR_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class TokenRequest:
    """One request to a token server.

    Attributes:
        host: the token server, `host[:port]`.
        who: the token server and its registry, for messages.
        method: "GET", or "POST" for OAuth2.
        url: the full URL.
        headers: the request's headers (credentials among them: not in the repr).
        verify: verify the server's certificate.
        body: the request's body (an OAuth2 form, holding a secret: not in the repr).
    """

    host: str
    who: str
    method: str
    url: str
    headers: Mapping[str, str] = field(repr=False)
    verify: bool
    body: bytes | None = field(default=None, repr=False)


#: Sends a token request for the check of an image (tried again as any request is).
Send = Callable[[str, TokenRequest], Reply]


@dataclass(frozen=True)
class _Token:
    value: str
    expires: float  # the cache's clock


@dataclass
class _Slot:
    """The cached token of one (realm, service, scope, credentials) and the lock to fetch it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    token: _Token | None = None


class Tokens:
    """The tokens of a run, shared by its threads.

    Args:
        tls: TLS settings (whether a token server may get credentials, and is verified).
        send: sends one request to a token server.
        clock: seconds of a monotonic clock, for expiry.
    """

    def __init__(
        self, tls: TLSConfig, send: Send, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._tls = tls
        self._send = send
        self._clock = clock
        self._lock = threading.Lock()
        self._slots: dict[tuple[str, str, str, Credentials | None], _Slot] = {}

    def authorization(self, call: Call, challenge: Challenge) -> str:
        """`Bearer <token>` for the call's repository scope: the cached token, or a new one.

        One fetch per scope at a time: threads that need the same token wait for it.

        Raises:
            RegistryAuthError: the token server refused, or may not get the credentials.
            RegistryError: it could not be reached, or answered nonsense.
        """
        slot = self._slot(call, challenge)
        with slot.lock:
            if slot.token is None or slot.token.expires <= self._clock():
                slot.token = self._fetch(call, challenge)
            return f"Bearer {slot.token.value}"

    def forget(self, call: Call, challenge: Challenge, refused: str | None) -> None:
        """Drop the cached token if it is the one the registry `refused` (an Authorization
        value): another thread may have fetched a new one meanwhile."""
        slot = self._slot(call, challenge)
        with slot.lock:
            if slot.token is not None and f"Bearer {slot.token.value}" == refused:
                slot.token = None

    def _slot(self, call: Call, challenge: Challenge) -> _Slot:
        key = (challenge.realm, challenge.service, call.scope, call.creds)
        with self._lock:
            return self._slots.setdefault(key, _Slot())

    def _fetch(self, call: Call, challenge: Challenge) -> _Token:
        """A new token from the realm."""
        split = urlsplit(challenge.realm)
        host = split.netloc.rpartition("@")[2]
        if split.scheme not in ("http", "https") or not host:
            raise RegistryError(
                f"checking {call.image}: {call.domain} names an invalid token server "
                f"{challenge.realm!r}"
            )
        who = f"the token server {host} of {call.domain}"
        if call.creds is not None and not self._tls.may_send_credentials(split.scheme, host):
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
                headers["Authorization"] = basic_authorization(call.creds)
            method = "GET"
            url = challenge.realm + ("&" if split.query else "?") + urlencode(params)
            whose = "the credentials" if call.creds is not None else "anonymous access"
            refused = (401, 403)
        verify = self._tls.settings(host).verify
        started = self._clock()
        reply = self._send(call.image, TokenRequest(host, who, method, url, headers, verify, body))
        if reply.status in refused:
            detail = _oauth2_error(reply.body, identity) if identity else ""
            raise RegistryAuthError(
                f"checking {call.image}: {who} refused {whose} ({reply.status} {reply.reason}"
                f"{detail})"
            )
        if not 200 <= reply.status < 300:
            raise RegistryError(
                f"checking {call.image}: {who} answered {reply.status} {reply.reason}"
                f"{attempts_note(reply)}"
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
