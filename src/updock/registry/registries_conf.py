"""What registries.conf says about an image name: where to look for it (mirrors, a remapped
location), whether a place is blocked, and whether it may be spoken to without TLS verification.

Read as containers/image (`pkg/sysregistriesv2`) reads it, so that updock's check reaches the
registry podman's pull reaches:

- files: `$CONTAINERS_REGISTRIES_CONF`, else `$HOME/.config/containers/registries.conf` for
  non-root when it exists, else `/etc/containers/registries.conf`; then the drop-ins
  `/etc/containers/registries.conf.d/*.conf` and, for non-root,
  `$HOME/.config/containers/registries.conf.d/*.conf`, in name order. A drop-in's entry replaces
  the entry with the same prefix; within one file the first entry of a prefix counts.
- `[[registry]]` tables: `prefix` (default: `location`; `*.example.com` matches sub-domains),
  `location`, `insecure`, `blocked`, `mirror-by-digest-only` and `[[registry.mirror]]` tables
  (`location`, `insecure`, `pull-from-mirror`). The v1 form `[registries.insecure]` and
  `[registries.block]` (`registries = [...]`) is read too, but not mixed with v2 in one file.
- The entry with the longest prefix matching `host/repository` applies.

Where podman looks for an image named by a tag (`docker_image_src.go`, `newImageSource`): each
mirror in order (unless `mirror-by-digest-only`, or the mirror's `pull-from-mirror` is
`digest-only`), then the primary location; each with the matching prefix replaced by that
endpoint's `location`; the first that has the manifest is used. A place is blocked when the
entry matching its own (rewritten) name says `blocked` (`newDockerClient`), and its TLS is
skipped when its endpoint says `insecure`. Credentials and certs.d are those of the rewritten
name's registry (`newDockerClientFromRef`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from updock.errors import ConfigError

SYSTEM_REGISTRIES_CONF = Path("/etc/containers/registries.conf")
SYSTEM_REGISTRIES_CONF_D = Path("/etc/containers/registries.conf.d")

#: `pull-from-mirror` values: mirrors for every pull, for digests only, for tags only.
MIRROR_ALL, MIRROR_BY_DIGEST_ONLY, MIRROR_BY_TAG_ONLY = "all", "digest-only", "tag-only"

# A repository path as containers/image's reference grammar has it (lower case components
# separated by `/`); what a rewritten name must still be.
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
#: The top-level keys of the v2 format (others are ignored, as podman ignores them).
_V2_KEYS = frozenset(
    {
        "registry",
        "unqualified-search-registries",
        "credential-helpers",
        "short-name-mode",
        "aliases",
        "additional-layer-store-auth-helper",
    }
)


def user_config_dir() -> Path:
    """`$XDG_CONFIG_HOME`, else `$HOME/.config`: where users' containers settings live."""
    home = Path(os.environ.get("HOME") or Path.home())
    return Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")


def default_registries_conf() -> Path:
    """The main registries.conf file podman reads."""
    env = os.environ.get("CONTAINERS_REGISTRIES_CONF")
    if env:
        return Path(env)
    if os.geteuid() != 0:
        user = user_config_dir() / "containers" / "registries.conf"
        if user.exists():
            return user
    return SYSTEM_REGISTRIES_CONF


def default_registries_conf_dirs() -> list[Path]:
    """The drop-in folders for registries.conf, read after the main file."""
    dirs = [SYSTEM_REGISTRIES_CONF_D]
    if os.geteuid() != 0:
        dirs.append(user_config_dir() / "containers" / "registries.conf.d")
    return dirs


def prefix_match(ref: str, prefix: str) -> int:
    """Length of the part of `ref` that `prefix` matches (containers/image's rule), else -1.

    `ref` is `host[:port]/path[:tag]`. A plain prefix matches itself followed by `:`, `/` or
    `@`; `*.example.com` matches any sub-domain of example.com (in the host part only).
    """
    if prefix.startswith("*."):
        index = ref.find(prefix[1:])
        if index == -1 or "/" in ref[:index]:
            return -1
        end = index + len(prefix) - 1
        return end if end == len(ref) or ref[end] in ":/@" else -1
    if ref == prefix:
        return len(prefix)
    if ref.startswith(prefix) and ref[len(prefix)] in ":/@":
        return len(prefix)
    return -1


@dataclass(frozen=True)
class Mirror:
    """A `[[registry.mirror]]` table.

    Attributes:
        location: where the mirror serves the prefix's namespace (`host[:port][/path]`).
        insecure: plain HTTP and unverified TLS allowed there.
        pull_from_mirror: "" or `MIRROR_ALL`, `MIRROR_BY_DIGEST_ONLY`, `MIRROR_BY_TAG_ONLY`.
    """

    location: str
    insecure: bool = False
    pull_from_mirror: str = ""


@dataclass(frozen=True)
class Entry:
    """A `[[registry]]` table, its prefix defaulted and checked.

    Attributes:
        prefix: the names it applies to.
        location: where those names are served ("" only for a `*.` prefix: not rewritten).
        insecure: plain HTTP and unverified TLS allowed at `location`.
        blocked: pulling names it matches is forbidden.
        mirrors: tried before `location`, in order.
        mirror_by_digest_only: mirrors are for pulls by digest only.
        origin: the file it comes from.
    """

    prefix: str
    location: str
    insecure: bool = False
    blocked: bool = False
    mirrors: tuple[Mirror, ...] = ()
    mirror_by_digest_only: bool = False
    origin: Path | None = None


@dataclass(frozen=True)
class Source:
    """One place where a tag may be looked up: a mirror, or the (possibly remapped) registry.

    Attributes:
        domain: its registry, `host[:port]`.
        repository: the path there.
        tag: the tag.
        insecure: plain HTTP and unverified TLS allowed (before `--tls-verify` decides).
        blocked_by: the entry that blocks it, or None.
        mirror: it is a mirror (the registry's own location is the last source).
    """

    domain: str
    repository: str
    tag: str
    insecure: bool = False
    blocked_by: Entry | None = None
    mirror: bool = False

    @property
    def name(self) -> str:
        """`domain/repository:tag`."""
        return f"{self.domain}/{self.repository}:{self.tag}"


class RegistriesConf:
    """registries.conf and its drop-ins, read once.

    Args:
        path: the main file; a missing file counts as empty.
        dropin_dirs: folders whose `*.conf` files are read after it, in name order.

    Raises:
        ConfigError: a file is not valid TOML, or has an entry podman would refuse (naming it).
    """

    def __init__(self, path: Path, dropin_dirs: Sequence[Path] = ()) -> None:
        entries = {e.prefix: e for e in _load(path, dropin=False)}
        for folder in dropin_dirs:
            if not folder.is_dir():
                continue
            for file in sorted(folder.glob("*.conf")):
                entries.update((e.prefix, e) for e in _load(file, dropin=True))
        self.entries = list(entries.values())

    def find(self, name: str) -> Entry | None:
        """The entry with the longest prefix matching `name` (`host[:port]/path`), or None."""
        best: Entry | None = None
        for entry in self.entries:
            if prefix_match(name, entry.prefix) != -1 and (
                best is None or len(entry.prefix) > len(best.prefix)
            ):
                best = entry
        return best

    def insecure(self, domain: str, repository: str = "") -> bool:
        """Whether the entry that applies to `domain/repository` says `insecure = true`."""
        entry = self.find(f"{domain}/{repository}" if repository else domain)
        return entry is not None and entry.insecure

    def sources(self, domain: str, repository: str, tag: str) -> list[Source]:
        """Where podman looks for `domain/repository:tag`, in order: mirrors, then the registry.

        Raises:
            ConfigError: a rewritten name is not a valid image name.
        """
        name = f"{domain}/{repository}"
        entry = self.find(name)
        if entry is None:
            return [Source(domain, repository, tag, blocked_by=self._blocking(name))]
        mirrors = [
            m
            for m in entry.mirrors
            if not entry.mirror_by_digest_only and m.pull_from_mirror != MIRROR_BY_DIGEST_ONLY
        ]
        endpoints = [(m.location, m.insecure, True) for m in mirrors]
        endpoints.append((entry.location, entry.insecure, False))
        sources = []
        for location, insecure, mirror in endpoints:
            d, r, t = _rewrite(f"{name}:{tag}", entry, location)
            sources.append(Source(d, r, t, insecure, self._blocking(f"{d}/{r}"), mirror))
        return sources

    def _blocking(self, name: str) -> Entry | None:
        entry = self.find(name)
        return entry if entry is not None and entry.blocked else None


def _rewrite(ref: str, entry: Entry, location: str) -> tuple[str, str, str]:
    """`ref` with `entry.prefix` replaced by `location`, as (domain, repository, tag)."""
    if location:
        ref = location + ref[prefix_match(ref, entry.prefix) :]
    domain, _, rest = ref.partition("/")
    repository, _, tag = rest.rpartition(":")
    canonical = (
        ("." in domain or ":" in domain or domain == "localhost")
        and not (domain in ("docker.io", "index.docker.io") and "/" not in repository)
        and _PATH.match(repository) is not None
        and _TAG.match(tag) is not None
    )
    if not canonical:
        raise ConfigError(
            f"{entry.origin}: the [[registry]] entry {entry.prefix!r} rewrites the image name "
            f"to {ref!r}, which is not a valid image name"
        )
    return domain, repository, tag


def _location(value: object, what: str, file: Path) -> str:
    """A `location` or `prefix` value, checked and without a trailing `/` (`parseLocation`)."""
    if not isinstance(value, str):
        raise ConfigError(f"{file}: {what} of a [[registry]] entry is not a string")
    value = value.rstrip("/")
    if value.startswith(("http://", "https://")):
        raise ConfigError(f"{file}: invalid {what} {value!r}: URI schemes are not supported")
    return value


def _flag(table: dict[str, object], key: str, who: str, file: Path) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{file}: {key} of {who!r} is not a boolean")
    return value


def _load(file: Path, *, dropin: bool) -> list[Entry]:
    """The entries of one file, in the order podman keeps them (first of a prefix wins)."""
    import tomllib  # when the first registry is checked, not at start-up

    try:
        with file.open("rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file} is not valid TOML: {exc}") from exc
    v1 = doc.get("registries")
    if isinstance(v1, dict) and v1:
        if dropin:
            raise ConfigError(f"{file}: a drop-in must be in the v2 format ([[registry]] tables)")
        if set(doc) & _V2_KEYS:
            raise ConfigError(f"{file}: mixes the v1 format ([registries.*]) with v2")
        return _v1_entries(v1, file)
    tables = doc.get("registry", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{file}: [[registry]] must be an array of tables")
    entries = [_entry(table, file) for table in tables]
    _check_conflicts(entries, file)
    unique: dict[str, Entry] = {}
    for entry in entries:
        unique.setdefault(entry.prefix, entry)
    return list(unique.values())


def _v1_entries(v1: dict[str, object], file: Path) -> list[Entry]:
    """`[registries.block]` and `[registries.insecure]`, as containers/image converts them."""
    flags: dict[str, dict[str, bool]] = {}
    for kind in ("block", "insecure"):
        table = v1.get(kind, {})
        hosts = table.get("registries", []) if isinstance(table, dict) else None
        if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
            raise ConfigError(f"{file}: [registries.{kind}] registries must be a list of strings")
        for host in hosts:
            location = _location(host, "a v1 registry", file)
            flags.setdefault(location, {})[kind] = True
    return [
        Entry(
            loc, loc, insecure=f.get("insecure", False), blocked=f.get("block", False), origin=file
        )
        for loc, f in flags.items()
    ]


def _entry(table: dict[str, object], file: Path) -> Entry:
    """One `[[registry]]` table, checked as `postProcessRegistries` checks it."""
    location = _location(table.get("location", ""), "location", file)
    prefix = _location(table.get("prefix", ""), "prefix", file)
    if not prefix:
        if not location:
            raise ConfigError(f"{file}: a [[registry]] entry has neither prefix nor location")
        prefix = location
    elif not location and not prefix.startswith("*."):
        raise ConfigError(
            f"{file}: the [[registry]] entry {prefix!r} has no location, and its prefix is not "
            "of the form *.example.com"
        )
    if prefix.startswith("*.") and any(c in prefix for c in "/@:"):
        raise ConfigError(
            f"{file}: the wildcard prefix {prefix!r} must be of the form *.example.com"
        )
    if table.get("pull-from-mirror"):
        raise ConfigError(f"{file}: pull-from-mirror is for mirrors, not for {prefix!r}")
    by_digest = _flag(table, "mirror-by-digest-only", prefix, file)
    raw_mirrors = table.get("mirror", [])
    if not isinstance(raw_mirrors, list) or not all(isinstance(m, dict) for m in raw_mirrors):
        raise ConfigError(f"{file}: [[registry.mirror]] of {prefix!r} must be an array of tables")
    return Entry(
        prefix=prefix,
        location=location,
        insecure=_flag(table, "insecure", prefix, file),
        blocked=_flag(table, "blocked", prefix, file),
        mirrors=tuple(_mirror(m, prefix, by_digest, file) for m in raw_mirrors),
        mirror_by_digest_only=by_digest,
        origin=file,
    )


def _mirror(table: dict[str, object], prefix: str, by_digest: bool, file: Path) -> Mirror:
    location = _location(table.get("location", ""), "mirror location", file)
    if not location:
        raise ConfigError(f"{file}: a mirror of {prefix!r} has no location")
    usage = table.get("pull-from-mirror", "")
    if usage not in ("", MIRROR_ALL, MIRROR_BY_DIGEST_ONLY, MIRROR_BY_TAG_ONLY):
        raise ConfigError(f"{file}: unsupported pull-from-mirror {usage!r} for {location!r}")
    if by_digest and usage:
        raise ConfigError(
            f"{file}: {prefix!r} sets mirror-by-digest-only and its mirror {location!r} sets "
            "pull-from-mirror: only one may be set"
        )
    assert isinstance(usage, str)
    return Mirror(location, _flag(table, "insecure", location, file), usage)


def _check_conflicts(entries: Iterable[Entry], file: Path) -> None:
    """Entries for one location must agree on `insecure` and `blocked`, as podman demands."""
    seen: dict[str, Entry] = {}
    for entry in entries:
        key = entry.location or entry.prefix
        other = seen.setdefault(key, entry)
        for setting in ("insecure", "blocked"):
            if getattr(entry, setting) != getattr(other, setting):
                raise ConfigError(
                    f"{file}: registry {key!r} is defined more than once with conflicting "
                    f"{setting!r} settings"
                )
