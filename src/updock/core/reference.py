"""Image references: parsing, normalization, and the auto-update validation rules.

The grammar is the one of github.com/distribution/reference (`reference.go`, `regexp.go`), which
podman uses through its fork in containers/image:

    reference        := name [ ":" tag ] [ "@" digest ]
    name             := [domain "/"] remote-name
    domain           := host [":" port-number]
    host             := domain-name | IPv4address | "[" IPv6address "]"
    domain-name      := domain-component ["." domain-component]*
    domain-component := /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
    remote-name      := path-component ["/" path-component]*
    path-component   := /[a-z0-9]+/ [separator /[a-z0-9]+/]*
    separator        := /[_.]|__|[-]+/
    tag              := /[\\w][\\w.-]{0,127}/
    digest           := algorithm ":" /[0-9a-fA-F]{32,}/

Unlike distribution's `Parse`, which calls any first component a domain when a `/` follows it,
`parse_reference` uses the rule of distribution's `splitDockerDomain` (the rule `docker pull`,
podman and `shortnames.IsShortName` apply): the first component is a domain only if it contains
`.` or `:` or is `localhost`. So `foo/bar` has no domain; `normalize` turns it into
`docker.io/foo/bar`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace

from updock.core.policy import go_quote
from updock.errors import ImageReferenceError

#: A repository name (domain and path) longer than this is rejected, as by containers/image.
NAME_TOTAL_LENGTH_MAX = 255

DOCKER_HUB_DOMAIN = "docker.io"
"""Where a name without domain lives, after `normalize`."""
LEGACY_DOCKER_HUB_DOMAIN = "index.docker.io"
"""An old spelling of `docker.io` that `normalize` rewrites."""
OFFICIAL_REPO_PREFIX = "library/"
"""Namespace of Docker Hub's official images (`docker.io/library/alpine`)."""

# Transports of containers/image other than `docker`: a name starting with `<transport>:` is
# parsed by that transport (alltransports.ParseImageName), so it is no registry reference.
OTHER_TRANSPORTS = frozenset(
    {
        "containers-storage",
        "dir",
        "docker-archive",
        "docker-daemon",
        "oci",
        "oci-archive",
        "ostree",
        "sif",
        "tarball",
    }
)
DOCKER_TRANSPORT_PREFIX = "docker://"

# The patterns of distribution's regexp.go. Go's regexp is RE2 (no backtracking), Python's is
# not: the separator is `[-]+` rather than the grammar's `[-]*` (same language, since a run of
# alphanumerics can always be split) so that a long invalid name cannot backtrack exponentially.
# `\w` is spelled out because Python's `\w` matches non-ASCII letters and Go's does not.
_ALPHANUMERIC = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALPHANUMERIC}(?:{_SEPARATOR}{_ALPHANUMERIC})*"
_REMOTE_NAME = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6_ADDRESS = r"\[(?:[a-fA-F0-9:]+)\]"
_HOST = rf"(?:{_DOMAIN_NAME}|{_IPV6_ADDRESS})"
_DOMAIN_AND_PORT = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[0-9A-Za-z_][0-9A-Za-z_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}"

_REFERENCE_RE = re.compile(
    rf"(?P<name>(?:{_DOMAIN_AND_PORT}/)?{_REMOTE_NAME})"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?"
)
_DOMAIN_RE = re.compile(_DOMAIN_AND_PORT)
_REMOTE_NAME_RE = re.compile(_REMOTE_NAME)

# Hex lengths of the digest algorithms podman links in (go-digest's registered algorithms).
_DIGEST_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
_LOWER_HEX_RE = re.compile(r"[a-f0-9]+")

# Error texts of distribution / go-digest, reused so that messages read like podman's.
ERR_NAME_EMPTY = "repository name must have at least one component"
ERR_INVALID_FORMAT = "invalid reference format"
ERR_UPPERCASE = "repository name must be lowercase"
ERR_NAME_TOO_LONG = f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters"
ERR_DIGEST_LENGTH = "invalid checksum digest length"
ERR_DIGEST_FORMAT = "invalid checksum digest format"
ERR_DIGEST_UNSUPPORTED = "unsupported digest algorithm"


@dataclass(frozen=True)
class ImageReference:
    """A parsed image reference.

    Attributes:
        domain: registry host with optional port (`quay.io`, `localhost:5000`, `[::1]:5000`),
            or "" when the name has none (a short name such as `alpine` or `library/alpine`).
        path: the repository path below the domain (`podman/stable`).
        tag: the tag, or None.
        digest: the digest (`sha256:<64 hex>`), or None.
    """

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The repository name: `domain/path`, or `path` when there is no domain."""
        return f"{self.domain}/{self.path}" if self.domain else self.path

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


class _ParseFailure(Exception):
    """Internal: carries distribution's error text, without the input, to the callers."""


def _looks_like_domain(component: str) -> bool:
    """The `splitDockerDomain` rule: is the first component of a name a registry host?"""
    return "." in component or ":" in component or component == "localhost"


def _check_digest(digest: str) -> None:
    """Validate a digest as go-digest's `Digest.Validate` does (after the grammar matched)."""
    algorithm, _, encoded = digest.partition(":")
    expected = _DIGEST_HEX_LENGTHS.get(algorithm)
    if expected is None:
        raise _ParseFailure(ERR_DIGEST_UNSUPPORTED)
    if len(encoded) != expected:
        raise _ParseFailure(ERR_DIGEST_LENGTH)
    if not _LOWER_HEX_RE.fullmatch(encoded):
        raise _ParseFailure(ERR_DIGEST_FORMAT)


def _parse(text: str) -> ImageReference:
    """Parse `text`, raising `_ParseFailure` with distribution's error text."""
    if not text:
        raise _ParseFailure(ERR_NAME_EMPTY)
    match = _REFERENCE_RE.fullmatch(text)
    if match is None:
        lowered = text.lower()
        if lowered != text and _REFERENCE_RE.fullmatch(lowered):
            raise _ParseFailure(ERR_UPPERCASE)
        raise _ParseFailure(ERR_INVALID_FORMAT)
    name = match["name"]
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise _ParseFailure(ERR_NAME_TOO_LONG)

    first, slash, rest = name.partition("/")
    # A first component such as `foo_bar.com` passes the rule but is no host name: like
    # podman's IsShortName, which also asks the grammar, keep it in the path.
    if slash and _looks_like_domain(first) and _DOMAIN_RE.fullmatch(first):
        domain, path = first, rest
    else:
        domain, path = "", name
    # The grammar lets `Foo/bar` through with `Foo` as domain; when the rule says `Foo` is no
    # domain it is a path component, and those are lowercase.
    if not _REMOTE_NAME_RE.fullmatch(path):
        if _REMOTE_NAME_RE.fullmatch(path.lower()):
            raise _ParseFailure(ERR_UPPERCASE)
        raise _ParseFailure(ERR_INVALID_FORMAT)

    digest = match["digest"]
    if digest is not None:
        _check_digest(digest)
    return ImageReference(domain=domain, path=path, tag=match["tag"], digest=digest)


def parse_reference(text: str) -> ImageReference:
    """Parse an image reference without normalizing it.

    Args:
        text: a reference such as `quay.io/podman/stable:latest` or `alpine@sha256:...`.

    Returns:
        The reference; its domain is "" unless the first component is a registry host.

    Raises:
        ImageReferenceError: `text` is not a valid reference; the message names it.
    """
    try:
        return _parse(text)
    except _ParseFailure as exc:
        raise ImageReferenceError(f"invalid image reference {go_quote(text)}: {exc}") from None


def normalize(ref: ImageReference) -> ImageReference:
    """Apply Docker Hub's naming rules, as distribution's `ParseNormalizedNamed` does.

    `alpine` becomes `docker.io/library/alpine`, `foo/bar` becomes `docker.io/foo/bar` and
    `index.docker.io/...` becomes `docker.io/...`. Tag and digest are kept; no tag is added.

    Args:
        ref: a parsed reference.

    Returns:
        The reference with a domain.
    """
    domain = ref.domain
    if domain in ("", LEGACY_DOCKER_HUB_DOMAIN):
        domain = DOCKER_HUB_DOMAIN
    path = ref.path
    if domain == DOCKER_HUB_DOMAIN and "/" not in path:
        path = OFFICIAL_REPO_PREFIX + path
    return replace(ref, domain=domain, path=path)


def _transport_of(image_name: str) -> str | None:
    """The containers/image transport `image_name` names explicitly, if any but `docker`."""
    transport, colon, _ = image_name.partition(":")
    if colon and transport in OTHER_TRANSPORTS:
        return transport
    return None


@dataclass(frozen=True)
class ImageName:
    """A container's image name, parsed once: every use of an image name goes through it.

    podman accepts a `docker://` prefix at creation (`podman run docker://host/app:1`), and
    keeps it in the container's raw image name; its image store, `podman tag` and `podman
    image inspect` do not accept it. So the raw text is only ever shown (the report's Image
    column, as podman shows it), and everything that acts uses `reference`, which has no
    transport prefix.

    Attributes:
        raw: the name as the user typed it when the container was created.
        reference: the parsed reference, without transport prefix.
    """

    raw: str
    reference: ImageReference

    def __str__(self) -> str:
        """The name podman's image store, `podman pull` and `podman tag` take."""
        return str(self.reference)

    @property
    def key(self) -> str:
        """Equal for every spelling of one image name.

        `docker://host/app:1` and `host/app:1` are one name, as are `host/app` and
        `host/app:latest`, and `index.docker.io/x/y` and `docker.io/x/y`: units that use one
        name are grouped by it and share its pull. Short names are kept as they are (the image
        store resolves them).
        """
        ref = normalize(self.reference) if self.reference.domain else self.reference
        if ref.tag is None and ref.digest is None:
            ref = replace(ref, tag="latest")
        return str(ref)

    def with_digest(self, digest: str) -> ImageReference:
        """The name pinned to `digest` (`host/app@sha256:...`), for a pull of exactly that."""
        return replace(self.reference, tag=None, digest=digest)


def parse_image_name(raw: str) -> ImageName:
    """Parse a container's raw image name (the `local` policy's rules: short names allowed).

    Raises:
        ImageReferenceError: another transport than `docker`, or no valid reference.
    """
    transport = _transport_of(raw)
    if transport is not None:
        raise ImageReferenceError(
            f"image {go_quote(raw)} is of transport {go_quote(transport)}, not docker"
        )
    return ImageName(raw, parse_reference(raw.removeprefix(DOCKER_TRANSPORT_PREFIX)))


def registry_image_name(raw: str) -> ImageName:
    """Parse a raw image name for the `registry` policy (see `validate_auto_update_reference`).

    The reference is normalized (`docker.io/alpine:3` is `docker.io/library/alpine:3`), as
    podman stores and pulls it.

    Raises:
        ImageReferenceError: with podman's message for the first rule `raw` breaks.
    """
    return ImageName(raw, normalize(validate_auto_update_reference(raw)))


def validate_auto_update_reference(image_name: str) -> ImageReference:
    """Check that a container's raw image name can be auto-updated from a registry.

    This is podman's `ValidateImageReference`: the name must be a reference of the docker
    transport (an optional `docker://` prefix is accepted) with a registry domain, a tag and no
    digest, e.g. `quay.io/podman/stable:latest`.

    Args:
        image_name: the raw image name the container was created from.

    Returns:
        The parsed reference, without the `docker://` prefix.

    Raises:
        ImageReferenceError: with podman's message for the first rule `image_name` breaks.
    """
    transport = _transport_of(image_name)
    if transport is not None:
        raise ImageReferenceError(
            "auto updates require the docker image transport but image is of transport "
            + go_quote(transport)
        )
    text = image_name.removeprefix(DOCKER_TRANSPORT_PREFIX)
    try:
        ref = _parse(text)
    except _ParseFailure as exc:
        raise ImageReferenceError(
            f"enforcing fully-qualified docker transport reference for auto updates: {exc}"
        ) from None
    if not ref.domain:
        # podman >= 4.4 says exactly this at container creation (validateAutoUpdateImageReference).
        raise ImageReferenceError(
            "short name: auto updates require fully-qualified image reference: "
            + go_quote(image_name)
        )
    if ref.tag is None:
        raise ImageReferenceError(
            "auto updates require fully-qualified image references (no tag): "
            + go_quote(image_name)
        )
    if ref.digest is not None:
        raise ImageReferenceError(
            "auto updates require fully-qualified image references without digest: "
            + go_quote(image_name)
        )
    return ref


def previous_tag(container_name: str) -> ImageReference:
    """The name that keeps a container's previous image, unique to that container name.

    Container names are unique per host but may differ only in case (`Web`, `web`) and may
    hold characters no repository name can (`a..b`, `A_B`): the name is turned into a
    readable lowercase slug, and a hash of the exact name makes it unique, e.g.
    `localhost/updock-previous/web-5b1d1f0a67c1:latest`. Always a valid reference.
    """
    digest = hashlib.sha256(container_name.encode()).hexdigest()[:12]
    slug = re.sub(r"[^a-z0-9]+", "-", container_name.lower()).strip("-")[:64].strip("-")
    path = f"{slug}-{digest}" if slug else digest
    return ImageReference("localhost", f"updock-previous/{path}", "latest")
