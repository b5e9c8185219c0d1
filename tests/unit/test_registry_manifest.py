"""Choosing a platform's entry of a manifest list, as containers/image does."""

from __future__ import annotations

import json

import pytest

from updock.registry.manifest import (
    IndexEntry,
    Platform,
    choose_instance,
    digest_of,
    media_type,
    media_type_of_body,
    parse_index,
)

ENTRIES = [
    IndexEntry("sha256:amd64", Platform("linux", "amd64")),
    IndexEntry("sha256:armv6", Platform("linux", "arm", "v6")),
    IndexEntry("sha256:armv7", Platform("linux", "arm", "v7")),
    IndexEntry("sha256:arm64", Platform("linux", "arm64", "v8")),
    IndexEntry("sha256:win", Platform("windows", "amd64")),
    IndexEntry("sha256:attestation", None),
]


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        (Platform("linux", "amd64"), "sha256:amd64"),
        (Platform("windows", "amd64"), "sha256:win"),
        (Platform("linux", "arm64"), "sha256:arm64"),  # no variant wanted: any
        (Platform("linux", "arm64", "v8"), "sha256:arm64"),
        (Platform("linux", "arm", "v7"), "sha256:armv7"),
        (Platform("linux", "arm", "v8"), "sha256:armv7"),  # the most capable compatible one
        (Platform("linux", "arm", "v6"), "sha256:armv6"),
        (Platform("linux", "arm", "v5"), "sha256:armv6"),  # then "" matches any variant
        (Platform("linux", "arm"), "sha256:armv6"),  # "" first: the first arm entry
        (Platform("linux", "s390x"), None),
        (Platform("darwin", "amd64"), None),
    ],
)
def test_choose_instance(wanted: Platform, expected: str | None) -> None:
    assert choose_instance(ENTRIES, wanted) == expected


def test_exact_variant_preferred_over_first_entry() -> None:
    entries = [
        IndexEntry("sha256:v5", Platform("linux", "arm", "v5")),
        IndexEntry("sha256:v7", Platform("linux", "arm", "v7")),
    ]
    assert choose_instance(entries, Platform("linux", "arm", "v7")) == "sha256:v7"


def test_parse_index() -> None:
    body = json.dumps(
        {
            "manifests": [
                {"digest": "sha256:a", "platform": {"os": "linux", "architecture": "amd64"}},
                {"digest": "sha256:b"},
            ]
        }
    ).encode()
    assert parse_index(body) == [
        IndexEntry("sha256:a", Platform("linux", "amd64")),
        IndexEntry("sha256:b", None),
    ]
    assert media_type_of_body(body) == "application/vnd.oci.image.index.v1+json"
    for bad in (b"[]", b"{}", b'{"manifests": [{}]}', b"nope"):
        with pytest.raises(ValueError):  # noqa: PT011 (json's and ours)
            parse_index(bad)


def test_media_type_and_digest() -> None:
    assert media_type("application/vnd.oci.image.index.v1+json; charset=utf-8") == (
        "application/vnd.oci.image.index.v1+json"
    )
    assert media_type(None) == ""
    assert digest_of(b"") == (
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert str(Platform("linux", "arm64", "v8")) == "linux/arm64/v8"
