"""Registry credentials from auth files (containers-auth.json, docker's config.json).

The lookup follows containers/image (`pkg/docker/config`), which podman uses:

- an auth file given explicitly (the container's label, `--authfile`, or `REGISTRY_AUTH_FILE`)
  is the only file read, and must exist and be valid JSON;
- otherwise the default files are read in order, missing ones skipped:
  `$XDG_RUNTIME_DIR/containers/auth.json` (without `XDG_RUNTIME_DIR`:
  `/run/containers/<uid>/auth.json`), `${XDG_CONFIG_HOME:-$HOME/.config}/containers/auth.json`,
  `$DOCKER_CONFIG/config.json` (without `DOCKER_CONFIG`: `$HOME/.docker/config.json`), and the
  legacy `$HOME/.dockercfg`; the first file with an entry for the registry wins;
- within a file the most specific key wins: `host/ns/repo` over `host/ns` over `host`. Keys with
  an `http://`/`https://` prefix count for their host only (docker writes
  `https://index.docker.io/v1/`); `docker.io`, `index.docker.io` and `registry-1.docker.io` are
  one registry.

Secrets never leave this module in a message: no exception or log line carries the user name,
the password or the base64 text, and `Credentials` hides both in its repr.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from updock.errors import ConfigError

log = logging.getLogger(__name__)

DOCKER_HUB = "docker.io"
"""The canonical name of Docker Hub's registry, which several host names denote."""
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
# Docker writes API URLs such as `https://index.docker.io/v1/` as keys; without a scheme such a
# trailing `/v1/` (or `/v2/`) is still an API path, not a namespace.
_API_SUFFIXES = ("v1", "v2")


class Credentials(NamedTuple):
    """A user name and password for a registry; a plain `(user, password)` tuple.

    The repr hides both, so a stray log line or traceback shows no secret.
    """

    username: str
    password: str

    def __repr__(self) -> str:
        return "Credentials(<hidden>)"


@dataclass(frozen=True)
class AuthFile:
    """One auth file to search.

    Attributes:
        path: where it is.
        legacy: the old `~/.dockercfg` format: the `auths` map itself at the top level, and
            keys that name hosts only.
    """

    path: Path
    legacy: bool = False


def default_authfiles(environ: Mapping[str, str] | None = None) -> list[AuthFile]:
    """The auth files searched when none is given, in the order podman searches them.

    Args:
        environ: the environment to read (`os.environ` when None).
    """
    env = os.environ if environ is None else environ
    home = Path(env.get("HOME") or Path.home())
    runtime_dir = env.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        first = Path(runtime_dir) / "containers" / "auth.json"
    else:
        first = Path(f"/run/containers/{os.geteuid()}/auth.json")
    config_home = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    docker_config = env.get("DOCKER_CONFIG")
    docker = Path(docker_config) if docker_config else home / ".docker"
    return [
        AuthFile(first),
        AuthFile(config_home / "containers" / "auth.json"),
        AuthFile(docker / "config.json"),
        AuthFile(home / ".dockercfg", legacy=True),
    ]


def find_credentials(registry: str, repository: str, authfile: str | None) -> Credentials | None:
    """The credentials to use for `registry/repository`, or None to go anonymous.

    Args:
        registry: the registry as in the image name, e.g. `quay.io` or `127.0.0.1:5000`.
        repository: the path in the registry, e.g. `ns/app`.
        authfile: an auth file given explicitly; None to use `REGISTRY_AUTH_FILE`, then the
            default files.

    Raises:
        ConfigError: an explicit auth file (or `REGISTRY_AUTH_FILE`) is missing or unreadable,
            or a file read is not valid JSON or has an invalid entry for this registry.
    """
    explicit = authfile or os.environ.get("REGISTRY_AUTH_FILE") or None
    files = [AuthFile(Path(explicit))] if explicit else default_authfiles()
    wanted_host = _normalize_host(registry)
    wanted_paths = list(_namespaces(repository))
    for file in files:
        auths = _read_auths(file, required=bool(explicit))
        if auths is None:
            continue
        creds = _lookup(auths, file, wanted_host, wanted_paths)
        if creds is not None:
            log.debug("credentials for %s/%s found in %s", registry, repository, file.path)
            return creds
    return None


def _namespaces(repository: str) -> Iterator[str]:
    """`ns/sub/repo`, `ns/sub`, `ns`, "": the key paths to try, most specific first."""
    parts = [p for p in repository.split("/") if p]
    for n in range(len(parts), -1, -1):
        yield "/".join(parts[:n])


def _normalize_host(host: str) -> str:
    host = host.lower()
    return DOCKER_HUB if host in _DOCKER_HUB_ALIASES else host


def _parse_key(key: str, legacy: bool) -> tuple[str, str]:
    """(host, namespace path) of an auth file key, the path "" for a registry-wide key."""
    stripped = key.removeprefix("http://").removeprefix("https://")
    host, _, path = stripped.partition("/")
    if legacy or stripped != key:
        path = ""
    elif key.endswith("/"):
        path = path.rstrip("/")
        if path in _API_SUFFIXES:
            path = ""
    return _normalize_host(host), path


def _read_auths(file: AuthFile, *, required: bool) -> Mapping[str, object] | None:
    """The `auths` map of a file; None when an optional file does not exist."""
    try:
        text = file.path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        if not required:
            return None
        raise ConfigError(f"auth file {file.path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"cannot read auth file {file.path}: {reason}") from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        # The exception's message names a position only, never the file's content.
        raise ConfigError(
            f"auth file {file.path} is not valid JSON: {exc.msg} at line {exc.lineno}"
        ) from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"auth file {file.path} is not a JSON object")
    auths = doc if file.legacy else doc.get("auths", {})
    if not isinstance(auths, dict):
        raise ConfigError(f'auth file {file.path}: "auths" is not a JSON object')
    return auths


def _lookup(
    auths: Mapping[str, object], file: AuthFile, host: str, wanted_paths: list[str]
) -> Credentials | None:
    by_key: dict[tuple[str, str], list[str]] = {}
    for key in auths:
        by_key.setdefault(_parse_key(key, file.legacy), []).append(key)
    for path in wanted_paths:
        keys = by_key.get((host, path), [])
        # An exact key (as podman writes it) before one that only normalizes to the same.
        keys.sort(key=lambda k: k.startswith(("http://", "https://")) or k.endswith("/"))
        for key in keys:
            creds = _decode_entry(auths[key], file, key)
            if creds is not None:
                return creds
    return None


def _decode_entry(entry: object, file: AuthFile, key: str) -> Credentials | None:
    """Credentials of one entry; None for an entry without any (a credential-helper marker)."""
    if not isinstance(entry, dict):
        raise ConfigError(f"auth file {file.path}: the entry {key!r} is not a JSON object")
    encoded = entry.get("auth")
    if not encoded:
        return None
    if not isinstance(encoded, str):
        raise ConfigError(f'auth file {file.path}: "auth" of {key!r} is not a string')
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        # `from None`: the original exception's text could quote part of the secret.
        raise ConfigError(
            f'auth file {file.path}: "auth" of {key!r} is not base64 of "user:password"'
        ) from None
    user, sep, password = decoded.partition(":")
    if not sep:
        # Docker skips such an entry too; saying why would quote the secret.
        log.warning('auth file %s: "auth" of %r has no ":"; entry ignored', file.path, key)
        return None
    return Credentials(user, password)
