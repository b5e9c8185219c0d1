"""Image references: distribution's reference_test cases, podman's auto-update rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from updock.core.reference import (
    ImageReference,
    normalize,
    parse_image_name,
    parse_reference,
    previous_tag,
    registry_image_name,
    validate_auto_update_reference,
)
from updock.errors import ImageReferenceError

HEX64 = "f" * 64
HEX128 = "f" * 128

# (input, domain, path, tag, digest), from distribution's TestReferenceParse. Where distribution
# calls a first component without `.`, `:` or `localhost` a domain (`foo/foo_bar.com`), the
# domain here is "" and the component stays in the path: the splitDockerDomain rule.
VALID = [
    ("test_com", "", "test_com", None, None),
    ("test.com:tag", "", "test.com", "tag", None),
    ("test.com:5000", "", "test.com", "5000", None),
    ("test.com/repo:tag", "test.com", "repo", "tag", None),
    ("test:5000/repo", "test:5000", "repo", None, None),
    ("test:5000/repo:tag", "test:5000", "repo", "tag", None),
    (f"test:5000/repo@sha256:{HEX64}", "test:5000", "repo", None, f"sha256:{HEX64}"),
    (f"test:5000/repo:tag@sha256:{HEX64}", "test:5000", "repo", "tag", f"sha256:{HEX64}"),
    ("lowercase:Uppercase", "", "lowercase", "Uppercase", None),
    (
        "a/" * 127 + "a:tag-puts-this-over-max",
        "",
        "a/" * 127 + "a",
        "tag-puts-this-over-max",
        None,
    ),
    ("sub-dom1.foo.com/bar/baz/quux", "sub-dom1.foo.com", "bar/baz/quux", None, None),
    (
        "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
        "sub-dom1.foo.com",
        "bar/baz/quux",
        "some-long-tag",
        None,
    ),
    (
        "b.gcr.io/test.example.com/my-app:test.example.com",
        "b.gcr.io",
        "test.example.com/my-app",
        "test.example.com",
        None,
    ),
    ("xn--n3h.com/myimage:xn--n3h.com", "xn--n3h.com", "myimage", "xn--n3h.com", None),
    (
        f"xn--7o8h.com/myimage:xn--7o8h.com@sha512:{HEX128}",
        "xn--7o8h.com",
        "myimage",
        "xn--7o8h.com",
        f"sha512:{HEX128}",
    ),
    ("foo_bar.com:8080", "", "foo_bar.com", "8080", None),
    ("foo/foo_bar.com:8080", "", "foo/foo_bar.com", "8080", None),
    ("192.168.1.1", "", "192.168.1.1", None, None),
    ("192.168.1.1:tag", "", "192.168.1.1", "tag", None),
    ("192.168.1.1:5000", "", "192.168.1.1", "5000", None),
    ("192.168.1.1/repo", "192.168.1.1", "repo", None, None),
    ("192.168.1.1:5000/repo", "192.168.1.1:5000", "repo", None, None),
    ("192.168.1.1:5000/repo:5050", "192.168.1.1:5000", "repo", "5050", None),
    ("[2001:db8::1]/repo", "[2001:db8::1]", "repo", None, None),
    ("[2001:db8:1:2:3:4:5:6]/repo:tag", "[2001:db8:1:2:3:4:5:6]", "repo", "tag", None),
    ("[2001:db8::1]:5000/repo", "[2001:db8::1]:5000", "repo", None, None),
    ("[2001:db8::1]:5000/repo:tag", "[2001:db8::1]:5000", "repo", "tag", None),
    (
        f"[2001:db8::1]:5000/repo@sha256:{HEX64}",
        "[2001:db8::1]:5000",
        "repo",
        None,
        f"sha256:{HEX64}",
    ),
    (
        f"[2001:db8::1]:5000/repo:tag@sha256:{HEX64}",
        "[2001:db8::1]:5000",
        "repo",
        "tag",
        f"sha256:{HEX64}",
    ),
    ("[2001:db8::]:5000/repo", "[2001:db8::]:5000", "repo", None, None),
    ("[::1]:5000/repo", "[::1]:5000", "repo", None, None),
    ("[::1]:5000/foo:tag", "[::1]:5000", "foo", "tag", None),
    # From TestDomainAndPath and the separators of the grammar.
    ("test.com/foo", "test.com", "foo", None, None),
    ("test_com/foo", "", "test_com/foo", None, None),
    ("test:8080/foo", "test:8080", "foo", None, None),
    ("test.com:8080/foo", "test.com:8080", "foo", None, None),
    ("test-com:8080/foo", "test-com:8080", "foo", None, None),
    ("xn--n3h.com:18080/foo", "xn--n3h.com:18080", "foo", None, None),
    ("localhost/foo:1", "localhost", "foo", "1", None),
    (
        "localhost:5000/a__b/c---d/e.f_g:v1.0-rc_1",
        "localhost:5000",
        "a__b/c---d/e.f_g",
        "v1.0-rc_1",
        None,
    ),
    ("Quay.IO/podman/stable:latest", "Quay.IO", "podman/stable", "latest", None),
    ("foo_bar.com/x:1", "", "foo_bar.com/x", "1", None),  # `_` is no host name character
    ("docker.io/library/alpine:3.19", "docker.io", "library/alpine", "3.19", None),
]

# (input, error text from distribution / go-digest)
INVALID = [
    ("", "repository name must have at least one component"),
    (":justtag", "invalid reference format"),
    (f"@sha256:{HEX64}", "invalid reference format"),
    ("repo@sha256:" + "f" * 34, "invalid checksum digest length"),
    (f"validname@invaliddigest:{HEX64}", "unsupported digest algorithm"),
    ("Uppercase:tag", "repository name must be lowercase"),
    ("Uppercase/lowercase:tag", "repository name must be lowercase"),
    ("test:5000/Uppercase/lowercase:tag", "repository name must be lowercase"),
    ("a/" * 128 + "a:tag", "repository name must not be more than 255 characters"),
    ("aa/asdf$$^/aa", "invalid reference format"),
    ("[2001:db8::1]", "invalid reference format"),
    ("[2001:db8::1]:5000", "invalid reference format"),
    ("[2001:db8::1]:tag", "invalid reference format"),
    ("[fe80::1%eth0]:5000/repo", "invalid reference format"),
    ("[fe80::1%@invalidzone]:5000/repo", "invalid reference format"),
    ("x@sha256:" + "F" * 64, "invalid checksum digest format"),
    ("x@sha256:" + "f" * 31, "invalid reference format"),
    ("quay.io/a:" + "t" * 129, "invalid reference format"),
    ("quay.io/a:-tag", "invalid reference format"),
    ("quay.io/a-/b", "invalid reference format"),
    ("quay.io/a___b", "invalid reference format"),
    ("quay.io/a..b", "invalid reference format"),
    ("quay.io//a", "invalid reference format"),
    ("quay.io/a\n", "invalid reference format"),
    ("quay.io/ä:1", "invalid reference format"),
    ("quay.io/a:tä", "invalid reference format"),
]


@pytest.mark.parametrize(("text", "domain", "path", "tag", "digest"), VALID)
def test_parse_valid(
    text: str, domain: str, path: str, tag: str | None, digest: str | None
) -> None:
    ref = parse_reference(text)
    assert ref == ImageReference(domain, path, tag, digest)
    assert str(ref) == text
    assert ref.name == (f"{domain}/{path}" if domain else path)


@pytest.mark.parametrize(("text", "detail"), INVALID)
def test_parse_invalid(text: str, detail: str) -> None:
    with pytest.raises(ImageReferenceError) as caught:
        parse_reference(text)
    quoted = '"' + text.replace("\n", "\\n") + '"'
    assert str(caught.value) == f"invalid image reference {quoted}: {detail}"


def test_name_length_counts_domain_and_path() -> None:
    # 251 + 4 = 255 characters: allowed; one more is not.
    assert parse_reference("ab.c/" + "a" * 250 + ":t").name == "ab.c/" + "a" * 250
    with pytest.raises(ImageReferenceError, match="not be more than 255"):
        parse_reference("ab.c/" + "a" * 251)


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("alpine", "docker.io/library/alpine"),
        ("alpine:3", "docker.io/library/alpine:3"),
        ("foo/bar", "docker.io/foo/bar"),
        ("docker.io/alpine", "docker.io/library/alpine"),
        ("index.docker.io/alpine:1", "docker.io/library/alpine:1"),
        ("index.docker.io/foo/bar", "docker.io/foo/bar"),
        ("docker.io/library/alpine", "docker.io/library/alpine"),
        ("quay.io/alpine", "quay.io/alpine"),
        ("localhost/alpine", "localhost/alpine"),
        (f"alpine@sha256:{HEX64}", f"docker.io/library/alpine@sha256:{HEX64}"),
    ],
)
def test_normalize(text: str, normalized: str) -> None:
    assert str(normalize(parse_reference(text))) == normalized


@pytest.mark.parametrize(
    "name",
    [
        "quay.io/podman/stable:latest",
        "localhost:5000/busybox:1",
        "[::1]:5000/foo:tag",
        "docker://quay.io/podman/stable:latest",
        "registry.example.com/ns/app:v1.2",
    ],
)
def test_auto_update_reference_accepted(name: str) -> None:
    ref = validate_auto_update_reference(name)
    assert str(ref) == name.removeprefix("docker://")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "oci:/tmp/layout",
            'auto updates require the docker image transport but image is of transport "oci"',
        ),
        (
            "containers-storage:quay.io/a:1",
            "auto updates require the docker image transport but image is of transport "
            '"containers-storage"',
        ),
        (
            "docker-archive:/tmp/a.tar",
            "auto updates require the docker image transport but image is of transport "
            '"docker-archive"',
        ),
        (
            "dir:/tmp/a",
            'auto updates require the docker image transport but image is of transport "dir"',
        ),
        (
            "oci-archive:/tmp/a.tar",
            "auto updates require the docker image transport but image is of transport "
            '"oci-archive"',
        ),
        (
            "docker-daemon:quay.io/a:1",
            "auto updates require the docker image transport but image is of transport "
            '"docker-daemon"',
        ),
        (
            "quay.io/A:1",
            "enforcing fully-qualified docker transport reference for auto updates: "
            "repository name must be lowercase",
        ),
        (
            "docker:quay.io/a:1",
            "enforcing fully-qualified docker transport reference for auto updates: "
            "invalid reference format",
        ),
        (
            "",
            "enforcing fully-qualified docker transport reference for auto updates: "
            "repository name must have at least one component",
        ),
        (
            "busybox:latest",
            'short name: auto updates require fully-qualified image reference: "busybox:latest"',
        ),
        (
            "library/busybox:latest",
            "short name: auto updates require fully-qualified image reference: "
            '"library/busybox:latest"',
        ),
        (
            "docker://busybox:1",
            "short name: auto updates require fully-qualified image reference: "
            '"docker://busybox:1"',
        ),
        (
            "quay.io/podman/stable",
            "auto updates require fully-qualified image references (no tag): "
            '"quay.io/podman/stable"',
        ),
        (
            f"quay.io/podman/stable@sha256:{HEX64}",
            "auto updates require fully-qualified image references (no tag): "
            f'"quay.io/podman/stable@sha256:{HEX64}"',
        ),
        (
            f"quay.io/podman/stable:latest@sha256:{HEX64}",
            "auto updates require fully-qualified image references without digest: "
            f'"quay.io/podman/stable:latest@sha256:{HEX64}"',
        ),
    ],
)
def test_auto_update_reference_rejected(name: str, message: str) -> None:
    with pytest.raises(ImageReferenceError) as caught:
        validate_auto_update_reference(name)
    assert str(caught.value) == message


# --- properties -------------------------------------------------------------------------------

_ALNUM = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)
_SEPARATORS = st.sampled_from([".", "_", "__", "-", "--", "---"])


@st.composite
def _path_component(draw: st.DrawFn) -> str:
    parts = [draw(_ALNUM)]
    for _ in range(draw(st.integers(0, 3))):
        parts += [draw(_SEPARATORS), draw(_ALNUM)]
    return "".join(parts)


_HOST_LABEL = st.from_regex(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,6}[a-zA-Z0-9])?", fullmatch=True)
_PORT = st.integers(0, 65535).map(lambda port: f":{port}")


@st.composite
def _domain(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["dns", "dns-port", "host-port", "localhost", "ipv6"]))
    if kind == "localhost":
        return "localhost" + draw(st.sampled_from(["", ":5000"]))
    if kind == "ipv6":
        return draw(st.sampled_from(["[::1]", "[2001:db8::1]", "[fe80::a:b]"])) + draw(_PORT)
    if kind == "host-port":
        return draw(_HOST_LABEL) + draw(_PORT)
    labels = draw(st.lists(_HOST_LABEL, min_size=2, max_size=4))
    return ".".join(labels) + (draw(_PORT) if kind == "dns-port" else "")


@st.composite
def valid_references(draw: st.DrawFn) -> ImageReference:
    """References in the canonical shape `parse_reference` gives back."""
    domain = draw(st.one_of(st.just(""), _domain()))
    components = draw(st.lists(_path_component(), min_size=1, max_size=4))
    if not domain and len(components) > 1:
        # Without a domain, a first component like `a.b` would be read as one.
        first = components[0]
        if "." in first or first == "localhost":
            components[0] = first.replace(".", "_")
            if components[0] == "localhost":
                components[0] = "local-host"
    tag = draw(
        st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True))
    )
    digest = draw(
        st.one_of(
            st.none(),
            st.text("0123456789abcdef", min_size=64, max_size=64).map(lambda h: f"sha256:{h}"),
            st.text("0123456789abcdef", min_size=128, max_size=128).map(lambda h: f"sha512:{h}"),
        )
    )
    return ImageReference(domain, "/".join(components), tag, digest)


@given(valid_references())
def test_valid_references_round_trip(ref: ImageReference) -> None:
    text = str(ref)
    assert parse_reference(text) == ref
    assert str(parse_reference(text)) == text


@given(valid_references())
def test_normalize_is_idempotent_and_qualifies(ref: ImageReference) -> None:
    once = normalize(ref)
    assert once.domain
    assert normalize(once) == once
    assert parse_reference(str(once)) == once


@given(st.text(max_size=80))
def test_parse_never_fails_otherwise(text: str) -> None:
    try:
        ref = parse_reference(text)
    except ImageReferenceError:
        return
    assert str(ref) == text


# -- ImageName: the one parsed type every use of a container's image name goes through -------


@pytest.mark.parametrize(
    ("raw", "engine_name"),
    [
        ("docker://quay.io/app/web:1", "quay.io/app/web:1"),
        ("quay.io/app/web:1", "quay.io/app/web:1"),
        ("docker://docker.io/alpine:3", "docker.io/library/alpine:3"),
        ("index.docker.io/library/alpine:3", "docker.io/library/alpine:3"),
    ],
)
def test_registry_image_name_keeps_the_raw_text_and_drops_the_prefix(
    raw: str, engine_name: str
) -> None:
    image = registry_image_name(raw)
    assert image.raw == raw  # the report's Image column, as podman shows it
    assert str(image) == engine_name  # what podman tag / image inspect / pull get
    assert "docker://" not in str(image.with_digest("sha256:" + "a" * 64))


def test_spellings_of_one_name_share_a_key() -> None:
    keys = {
        parse_image_name(n).key
        for n in ("docker://host.io/a/b:latest", "host.io/a/b", "host.io/a/b:latest")
    }
    assert len(keys) == 1
    assert parse_image_name("host.io/a/b:2").key not in keys
    # Short names stay short (the local store resolves them); no docker.io is invented.
    assert parse_image_name("web:dev").key == "web:dev"


def test_other_transports_are_refused_by_name() -> None:
    with pytest.raises(ImageReferenceError, match="oci-archive"):
        parse_image_name("oci-archive:/x.tar")


def test_pinning_to_a_digest_drops_the_tag() -> None:
    digest = "sha256:" + "b" * 64
    assert str(registry_image_name("docker://q.io/a:1").with_digest(digest)) == f"q.io/a@{digest}"


@pytest.mark.parametrize(
    "names",
    [("Web", "web"), ("a..b", "a.b", "a-b", "a_b"), ("x" * 300, "x" * 301), ("_", "__")],
)
def test_previous_tags_are_unique_per_name_and_always_valid(names: tuple[str, ...]) -> None:
    tags = [previous_tag(n) for n in names]
    assert len({str(t) for t in tags}) == len(names)
    for tag in tags:
        assert parse_reference(str(tag)) == tag
        assert str(tag).startswith("localhost/updock-previous/")


def test_previous_tag_is_stable_and_readable() -> None:
    assert previous_tag("Web") == previous_tag("Web")
    assert previous_tag("My.Web_1").path.startswith("updock-previous/my-web-1-")
