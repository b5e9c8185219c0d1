"""What earlier runs learned about registries, so that the next run need not learn it again.

The first request of a run to a registry learns two things the others wait for (see
`client.py`): which scheme works (an insecure registry is tried over HTTPS first, then plain
HTTP) and which authentication it wants. A daily run would pay for that every day: one failed
HTTPS attempt and one round trip alone before the other checks may start. So the client keeps
both in `registry-hints.json` in updock's state folder, and starts every check at once when the
file knows the registry.

Hints never weaken anything: a scheme is only used where registries.conf (or `--tls-verify`)
allows it anyway, and a hint that no longer holds (the registry moved to TLS, its token server
moved) is noticed by the request that meets it, which then learns afresh as without hints. The
file holds no secret: schemes, challenge kinds, token server URLs and service names, which any
registry tells anyone who asks. It is read and written through `updock.statefolder` (a folder
of this user's only, no symbolic links, atomic replacement); in a folder that is unsafe, hints
are neither read nor written.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from updock.statefolder import StateFolder, UnsafeStateFolder

log = logging.getLogger(__name__)

FILE_NAME = "registry-hints.json"

#: Hints older than this are not used (a registry that was not checked for long may have
#: changed; learning again costs one round trip).
MAX_AGE = 30 * 24 * 3600.0


class Hint(NamedTuple):
    """What was learned of one registry host.

    Attributes:
        scheme: "https" or "http".
        auth: "" (anonymous access worked), "basic" or "bearer".
        realm: the bearer token server's URL.
        service: the bearer `service` parameter.
    """

    scheme: str
    auth: str = ""
    realm: str = ""
    service: str = ""


def load(path: Path, *, now: float | None = None) -> dict[str, Hint]:
    """The hints in `path`, by host; none if it is missing, unreadable or malformed (it is only
    a cache: the run learns again, and the next save replaces it)."""
    now = time.time() if now is None else now
    try:
        with StateFolder(path.parent, create=False) as folder:
            data = folder.read(path.name)
        if data is None:
            return {}
        doc = json.loads(data)
        hosts = doc["registries"]
        if doc.get("version") != 1 or not isinstance(hosts, dict):
            raise ValueError("unknown version")
    except FileNotFoundError:
        return {}
    except UnsafeStateFolder as exc:
        log.warning("registry hints not used: %s", exc)
        return {}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.debug("ignoring registry hints %s: %s", path, exc)
        return {}
    hints = {}
    for host, raw in hosts.items():
        try:
            hint = Hint(
                scheme=raw["scheme"],
                auth=raw.get("auth", ""),
                realm=raw.get("realm", ""),
                service=raw.get("service", ""),
            )
            fresh = now - float(raw.get("seen", 0)) <= MAX_AGE
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
        valid = hint.scheme in ("https", "http") and hint.auth in ("", "basic", "bearer")
        if valid and all(isinstance(v, str) for v in hint) and fresh:
            hints[host] = hint
    return hints


def save(path: Path, learned: Mapping[str, Hint], *, now: float | None = None) -> None:
    """Merge `learned` into the hints in `path`, atomically; a failure is only logged."""
    if not learned:
        return
    now = time.time() if now is None else now
    try:
        with StateFolder(path.parent) as folder:
            hosts: dict[str, object] = {}
            try:
                old = json.loads(folder.read(path.name) or b"")["registries"]
                hosts = {h: v for h, v in old.items() if now - float(v["seen"]) <= MAX_AGE}
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                pass  # nothing (valid) to keep
            for host, hint in learned.items():
                hosts[host] = {**hint._asdict(), "seen": now}
            doc = {"version": 1, "registries": hosts}
            folder.write(path.name, json.dumps(doc, indent=2, sort_keys=True).encode())
    except UnsafeStateFolder as exc:
        log.warning("registry hints not saved: %s", exc)
    except OSError as exc:
        log.debug("cannot save registry hints to %s: %s", path, exc)
