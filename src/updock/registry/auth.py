"""Registry credentials from auth files (containers-auth.json, docker's config.json).

The lookup follows containers/image (`pkg/docker/config`), which podman uses:

- an auth file given explicitly (the container's label, `--authfile`, or `REGISTRY_AUTH_FILE`)
  is the only file read, and must exist and be valid JSON;
- otherwise the default files are read in order, missing ones skipped:
  `$XDG_RUNTIME_DIR/containers/auth.json` (without `XDG_RUNTIME_DIR`:
  `/run/containers/<uid>/auth.json`), `${XDG_CONFIG_HOME:-$HOME/.config}/containers/auth.json`,
  `$DOCKER_CONFIG/config.json` (without `DOCKER_CONFIG`: `$HOME/.docker/config.json`), and the
  legacy `$HOME/.dockercfg`; the first file with an entry for the registry wins;
- within a file: a credential helper named for the registry in `credHelpers` wins; then the
  `auths` entries, the most specific key first: `host/ns/repo` over `host/ns` over `host`; then
  the default helper of `credsStore` (docker writes `{}` markers without `auth` into `auths` when
  it stores secrets in a helper, so those fall through to it). Keys with an `http://`/`https://`
  prefix count for their host only (docker writes `https://index.docker.io/v1/`); `docker.io`,
  `index.docker.io` and `registry-1.docker.io` are one registry. A helper that knows nothing for
  the registry sends the search on to the next file, as containers/image does.

A helper `NAME` is the program `docker-credential-NAME` in `PATH`, run as `docker-credential-NAME
get` with the server on its standard input; it prints `{"Username": ..., "Secret": ...}` (the
protocol of docker-credential-helpers). `CredentialHelpers` runs each (helper, server) once and
remembers the answer for the rest of the run.

Identity tokens (OAuth2 refresh tokens): a helper that answers the user name `<token>` holds an
identity token in `Secret`, and an `auths` entry may carry one in `identitytoken` (next to, or
instead of, `auth`), as docker and containers/image have it. `Credentials.identity_token` holds
it; the client then asks a Bearer token server for tokens with an OAuth2 `refresh_token` grant
instead of the user name and password.

Secrets never leave this module in a message: no exception or log line carries the user name,
the password, the identity token, the base64 text or a helper's output, and `Credentials` hides
them all in its repr.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
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
#: The server docker asks a helper about for Docker Hub (after `docker.io`, which podman uses).
DOCKER_HUB_HELPER_SERVER = "https://index.docker.io/v1/"
#: What docker-credential-helpers print (exit status 1) when they know nothing for the server.
HELPER_NOT_FOUND = "credentials not found in native keychain"
#: The user name with which a credential helper says that its `Secret` is an identity token.
IDENTITY_TOKEN_USER = "<token>"
#: Seconds a credential helper may take.
HELPER_TIMEOUT = 30.0
_HELPER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class Credentials(NamedTuple):
    """What updock knows to authenticate to a registry: `(user, password, identity_token)`.

    Attributes:
        username: the user name ("" with an identity token from a credential helper).
        password: the password, or an access token used as one.
        identity_token: an OAuth2 refresh token ("" when there is none): with one, Bearer
            tokens are fetched with a `refresh_token` grant instead of user name and password.

    The repr hides all of them, so a stray log line or traceback shows no secret.
    """

    username: str
    password: str
    identity_token: str = ""

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


def find_credentials(
    registry: str,
    repository: str,
    authfile: str | None,
    *,
    helpers: CredentialHelpers | None = None,
) -> Credentials | None:
    """The credentials to use for `registry/repository`, or None to go anonymous.

    Args:
        registry: the registry as in the image name, e.g. `quay.io` or `127.0.0.1:5000`.
        repository: the path in the registry, e.g. `ns/app`.
        authfile: an auth file given explicitly; None to use `REGISTRY_AUTH_FILE`, then the
            default files.
        helpers: runs credential helpers and remembers their answers; a new one (which
            remembers nothing past this call) when None.

    Raises:
        ConfigError: an explicit auth file (or `REGISTRY_AUTH_FILE`) is missing or unreadable,
            or a file read is not valid JSON or has an invalid entry for this registry, or a
            credential helper it names is missing or fails.
    """
    explicit = authfile or os.environ.get("REGISTRY_AUTH_FILE") or None
    files = [AuthFile(Path(explicit))] if explicit else default_authfiles()
    if helpers is None:
        helpers = CredentialHelpers()
    for file in files:
        doc = _read_file(file, required=bool(explicit))
        if doc is None:
            continue
        for source in credential_sources(doc, registry, repository):
            if isinstance(source, HelperSource):
                creds = helpers.get(source.helper, registry, file.path)
            else:
                creds = _decode_entry(doc.auths[source.key], file, source.key)
            if creds is not None:
                log.debug("credentials for %s/%s found in %s", registry, repository, file.path)
                return creds
    return None


@dataclass(frozen=True)
class AuthDoc:
    """What an auth file says, parsed.

    Attributes:
        auths: the `auths` map (the whole file for the legacy format), entries not decoded.
        cred_helpers: `credHelpers`: registry key -> helper name.
        creds_store: `credsStore`: the helper for every registry, or "".
        legacy: the file is in the old `~/.dockercfg` format.
    """

    auths: Mapping[str, object]
    cred_helpers: Mapping[str, str] = field(default_factory=dict)
    creds_store: str = ""
    legacy: bool = False


@dataclass(frozen=True)
class EntrySource:
    """Credentials in the `auths` entry `key` of an auth file."""

    key: str


@dataclass(frozen=True)
class HelperSource:
    """Credentials from the credential helper `helper` (`docker-credential-<helper>`)."""

    helper: str


def credential_sources(
    doc: AuthDoc, registry: str, repository: str
) -> list[EntrySource | HelperSource]:
    """Where one auth file may hold credentials for `registry/repository`, to try in order.

    A helper named for the registry in `credHelpers`, then the `auths` entries from the most
    specific key to the registry-wide ones, then the `credsStore` helper.
    """
    host = _normalize_host(registry)
    sources: list[EntrySource | HelperSource] = []
    # An exact key before one that only normalizes to the same host.
    for key in sorted(doc.cred_helpers, key=_is_url_key):
        if _parse_key(key, legacy=True)[0] == host:
            sources.append(HelperSource(doc.cred_helpers[key]))
            break
    by_key: dict[tuple[str, str], list[str]] = {}
    for key in doc.auths:
        by_key.setdefault(_parse_key(key, doc.legacy), []).append(key)
    for path in _namespaces(repository):
        keys = sorted(by_key.get((host, path), []), key=_is_url_key)
        sources.extend(EntrySource(key) for key in keys)
    if doc.creds_store:
        sources.append(HelperSource(doc.creds_store))
    return sources


def _is_url_key(key: str) -> bool:
    return key.startswith(("http://", "https://")) or key.endswith("/")


def helper_servers(registry: str) -> list[str]:
    """The server names to ask a credential helper about for `registry`, in order.

    The registry as written in image names; for Docker Hub `docker.io` (as podman stores it)
    and then docker's `https://index.docker.io/v1/`.
    """
    if _normalize_host(registry) == DOCKER_HUB:
        return [DOCKER_HUB, DOCKER_HUB_HELPER_SERVER]
    return [registry]


class CredentialHelpers:
    """Runs `docker-credential-<name> get`, each (helper, server) once, and remembers the answer.

    Shared by the threads of a run: one helper runs at a time (helpers may prompt a keyring).

    Args:
        timeout: seconds a helper may take.
        environ: the environment to find helpers in (`PATH`) and run them with; `os.environ`
            when None.
    """

    def __init__(
        self, timeout: float = HELPER_TIMEOUT, environ: Mapping[str, str] | None = None
    ) -> None:
        self._timeout = timeout
        self._environ = environ
        self._lock = threading.Lock()
        self._answers: dict[tuple[str, str], Credentials | ConfigError | None] = {}

    def get(self, helper: str, registry: str, source: Path) -> Credentials | None:
        """What `helper` has for `registry`; None when it has nothing.

        Args:
            helper: the helper's name (`NAME` of `docker-credential-NAME`).
            registry: the registry as in the image name.
            source: the auth file that names the helper (for error messages).

        Raises:
            ConfigError: the helper is not installed, fails, or answers nonsense.
        """
        with self._lock:
            for server in helper_servers(registry):
                key = (helper, server)
                if key not in self._answers:
                    try:
                        self._answers[key] = self._run(helper, server, source)
                    except ConfigError as exc:
                        self._answers[key] = exc
                answer = self._answers[key]
                if isinstance(answer, ConfigError):
                    raise answer
                if answer is not None:
                    return answer
        return None

    def _run(self, helper: str, server: str, source: Path) -> Credentials | None:
        program = f"docker-credential-{helper}"
        where = f"credential helper {program} (named in {source})"
        if not _HELPER_NAME.match(helper):
            raise ConfigError(f"auth file {source}: invalid credential helper name {helper!r}")
        env = dict(os.environ if self._environ is None else self._environ)
        path = shutil.which(program, path=env.get("PATH", os.defpath))
        if path is None:
            raise ConfigError(f"{where} is not installed (not found in PATH)")
        log.debug("asking %s for %s", program, server)
        try:
            done = subprocess.run(
                [path, "get"],
                input=server.encode(),
                capture_output=True,
                timeout=self._timeout,
                env=env,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ConfigError(f"{where} did not answer within {self._timeout:g}s") from None
        except OSError as exc:
            raise ConfigError(f"{where} cannot be run: {exc.strerror}") from None
        if done.returncode != 0:
            # docker-credential-helpers print "not found" on standard output.
            out = (done.stdout + b"\n" + done.stderr).decode("utf-8", "replace")
            if HELPER_NOT_FOUND in out.lower():
                return None
            # Only standard error is quoted (its first line, shortened: it says why, e.g. no
            # keyring): standard output is where a helper writes the secret, also when it fails.
            message = done.stderr.decode("utf-8", "replace").strip()
            first = message.splitlines()[0][:200] if message else f"exit status {done.returncode}"
            raise ConfigError(f"{where} failed for {server}: {first}")
        try:
            doc = json.loads(done.stdout)
        except (ValueError, UnicodeDecodeError):
            # Not quoted: the output could hold the secret.
            raise ConfigError(f"{where} answered no valid JSON for {server}") from None
        user = doc.get("Username") if isinstance(doc, dict) else None
        secret = doc.get("Secret") if isinstance(doc, dict) else None
        if not isinstance(user, str) or not isinstance(secret, str):
            raise ConfigError(f'{where} answered no "Username" and "Secret" strings for {server}')
        if not user and not secret:
            return None
        if user == IDENTITY_TOKEN_USER:
            # docker-credential-helpers' way to hand out an identity token (containers/image
            # and docker read it the same way); an empty one is no credentials at all.
            return Credentials("", "", secret) if secret else None
        return Credentials(user, secret)


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


def _read_file(file: AuthFile, *, required: bool) -> AuthDoc | None:
    """What a file says; None when an optional file does not exist."""
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
    if file.legacy:
        return AuthDoc(doc, legacy=True)
    auths = doc.get("auths", {})
    if not isinstance(auths, dict):
        raise ConfigError(f'auth file {file.path}: "auths" is not a JSON object')
    helpers = doc.get("credHelpers", {})
    if not isinstance(helpers, dict) or not all(isinstance(v, str) for v in helpers.values()):
        raise ConfigError(f'auth file {file.path}: "credHelpers" is not a map of names')
    store = doc.get("credsStore", "")
    if not isinstance(store, str):
        raise ConfigError(f'auth file {file.path}: "credsStore" is not a string')
    return AuthDoc(auths, helpers, store)


def _decode_entry(entry: object, file: AuthFile, key: str) -> Credentials | None:
    """Credentials of one entry; None for an entry without any (a credential-helper marker).

    An entry may hold `auth` (base64 of `user:password`), `identitytoken`, or both (docker
    writes `auth` with the user name and an empty password next to an identity token).
    """
    if not isinstance(entry, dict):
        raise ConfigError(f"auth file {file.path}: the entry {key!r} is not a JSON object")
    identity = entry.get("identitytoken") or ""
    if not isinstance(identity, str):
        raise ConfigError(f'auth file {file.path}: "identitytoken" of {key!r} is not a string')
    encoded = entry.get("auth")
    if not encoded:
        return Credentials("", "", identity) if identity else None
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
        kept = "only its identity token is used" if identity else "entry ignored"
        log.warning('auth file %s: "auth" of %r has no ":"; %s', file.path, key, kept)
        return Credentials("", "", identity) if identity else None
    return Credentials(user, password, identity)
