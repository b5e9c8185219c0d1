"""What a registry's answer to a manifest request means for the check: the reply itself when it
is a 2xx, else an error saying why, naming the image and the registry (pure; no I/O).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from updock.errors import RegistryAuthError, RegistryError
from updock.registry.call import Call
from updock.registry.exchange import Reply
from updock.registry.retry import TOO_MANY_REQUESTS


def check_status(call: Call, reply: Reply) -> None:
    """Return if `reply` is a 2xx answer.

    Raises:
        RegistryAuthError: a 401 or 403.
        RegistryError: any other status (404: the manifest is unknown; 429: rate limited).
    """
    status = reply.status
    if 200 <= status < 300:
        return
    detail = _error_detail(reply.headers, reply.body)
    if status in (401, 403):
        who = "the credentials" if call.creds is not None else "anonymous access"
        raise RegistryAuthError(
            f"checking {call.image}: {call.domain} refused {who} ({status} {reply.reason}){detail}"
        )
    if status == 404:
        raise RegistryError(f"checking {call.image}: manifest unknown to {call.domain}{detail}")
    if status == TOO_MANY_REQUESTS:
        after = reply.headers.get("Retry-After")
        raise RegistryError(
            f"checking {call.image}: {call.domain} is rate limiting "
            f"({status} {reply.reason}{f', Retry-After: {after}' if after else ''})"
            f"{attempts_note(reply)}{detail}"
        )
    raise RegistryError(
        f"checking {call.image}: {call.domain} answered {status} {reply.reason}"
        f"{attempts_note(reply)}{detail}"
    )


def attempts_note(reply: Reply) -> str:
    """` (after N attempts)` when the reply took more than one, else ""."""
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
