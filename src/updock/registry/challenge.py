"""What a registry's 401 asks for (`WWW-Authenticate`), and the Basic header that answers it
(pure; no I/O).

Only the first challenge of the header counts, as containers/image has it, and only the two
kinds registries use: `Basic` (credentials in every request) and `Bearer` (a token from the
`realm`, a token server, for the `service`).
"""

from __future__ import annotations

import base64
import re
from typing import NamedTuple

from updock.registry.auth import Credentials


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


def basic_authorization(creds: Credentials) -> str:
    """The `Authorization` header value of Basic authentication with `creds`."""
    raw = f"{creds.username}:{creds.password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")
