"""Manifest media types, digests, and choosing a platform's entry of an index (no I/O).

Platform matching is containers/image's (`internal/pkg/platform`, `ChooseInstance`): the wanted
variants are tried from the most to the least specific, and a wanted variant "" matches an entry
of any variant.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"

MULTI_IMAGE_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
"""Media types of manifests that list one manifest per platform."""

ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST))
"""The Accept header of a manifest request."""

# Known variants of an architecture, from the most capable to the most compatible.
_VARIANT_COMPATIBILITY: dict[str, tuple[str, ...]] = {
    "arm": ("v8", "v7", "v6", "v5"),
    "arm64": ("v8",),
}


@dataclass(frozen=True)
class Platform:
    """An image platform; `variant` "" means none, or any when wanted."""

    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True)
class IndexEntry:
    """One manifest of an index: its digest and platform (None when the entry has none)."""

    digest: str
    platform: Platform | None


def media_type(content_type: str | None) -> str:
    """The media type of a Content-Type header, without parameters; "" for none."""
    return (content_type or "").partition(";")[0].strip().lower()


def media_type_of_body(body: bytes) -> str:
    """The media type a manifest declares (or implies, for an index without one); "" if unknown."""
    try:
        doc = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(doc, dict):
        return ""
    declared = doc.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    return OCI_INDEX if isinstance(doc.get("manifests"), list) else ""


def digest_of(body: bytes, algorithm: str = "sha256") -> str:
    """`algorithm:hex` of `body`.

    Raises:
        ValueError: an algorithm hashlib does not know.
    """
    import hashlib  # loads OpenSSL's libcrypto: only when a digest is computed (start-up time)

    return f"{algorithm}:{hashlib.new(algorithm, body).hexdigest()}"


def parse_index(body: bytes) -> list[IndexEntry]:
    """The entries of an OCI index or Docker manifest list.

    Raises:
        ValueError: the body is no index.
    """
    doc = json.loads(body)
    manifests = doc.get("manifests") if isinstance(doc, dict) else None
    if not isinstance(manifests, list):
        raise ValueError('no "manifests" array')
    entries = []
    for item in manifests:
        if not isinstance(item, dict) or not isinstance(item.get("digest"), str):
            raise ValueError("an entry without digest")
        raw = item.get("platform")
        platform = None
        if isinstance(raw, dict):
            platform = Platform(
                str(raw.get("os", "")),
                str(raw.get("architecture", "")),
                str(raw.get("variant", "")),
            )
        entries.append(IndexEntry(item["digest"], platform))
    return entries


def wanted_platforms(platform: Platform) -> list[Platform]:
    """The platforms to look for, in order, for an image of `platform`."""
    order = _VARIANT_COMPATIBILITY.get(platform.architecture, ())
    if platform.variant:
        if platform.variant in order:
            variants = [*order[order.index(platform.variant) :], ""]
        else:
            variants = [platform.variant, ""]
    else:
        variants = ["", *order]
    return [Platform(platform.os, platform.architecture, v) for v in variants]


def choose_instance(entries: Sequence[IndexEntry], platform: Platform) -> str | None:
    """The digest of the entry for `platform`, or None when no entry fits."""
    for wanted in wanted_platforms(platform):
        for entry in entries:
            p = entry.platform
            if (
                p is not None
                and p.os == wanted.os
                and p.architecture == wanted.architecture
                and (not wanted.variant or p.variant == wanted.variant)
            ):
                return entry.digest
    return None
