"""Policies, podman's error message, Go quoting and kube-play label variants."""

from __future__ import annotations

import pytest

from updock.core.model import Container, Policy
from updock.core.policy import (
    EffectiveLabels,
    authfile_label_for,
    candidate_names,
    effective_labels,
    go_quote,
    lookup_policy,
    policy_label_for,
)
from updock.errors import PolicyError

POLICY = "io.containers.autoupdate"
AUTHFILE = "io.containers.autoupdate.authfile"


@pytest.mark.parametrize(
    ("value", "policy"),
    [
        ("", Policy.DISABLED),
        ("disabled", Policy.DISABLED),
        ("registry", Policy.REGISTRY),
        ("image", Policy.REGISTRY),
        ("local", Policy.LOCAL),
    ],
)
def test_lookup_policy(value: str, policy: Policy) -> None:
    assert lookup_policy(value) is policy


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("fake", '"fake"'),
        ("Registry", '"Registry"'),
        (" registry", '" registry"'),
        ('a"b', '"a\\"b"'),
        ("a\\b", '"a\\\\b"'),
        ("tab\there", '"tab\\there"'),
        ("é", '"é"'),
    ],
)
def test_lookup_policy_error_is_podmans(value: str, quoted: str) -> None:
    with pytest.raises(PolicyError) as caught:
        lookup_policy(value)
    assert str(caught.value) == (
        f"invalid auto-update policy {quoted}: "
        'valid policies are ["disabled" "image" "local" "registry"]'
    )


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("", '""'),
        ("plain", '"plain"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("\a\b\f\n\r\t\v", '"\\a\\b\\f\\n\\r\\t\\v"'),
        ("\x00\x1b\x7f", '"\\x00\\x1b\\x7f"'),
        ("ünïcödé ✓ 😀", '"ünïcödé ✓ 😀"'),
        ("\u00a0", '"\\u00a0"'),  # no-break space: not printable for Go
        ("\u200b", '"\\u200b"'),  # zero width space (format character)
        ("\U000e0001", '"\\U000e0001"'),  # language tag (format character)
        ("\ud800", '"\\ufffd"'),  # lone surrogate: not a valid rune
        ("\udcff", '"\\xff"'),  # surrogate-escaped byte: Go prints the byte
    ],
)
def test_go_quote(text: str, quoted: str) -> None:
    assert go_quote(text) == quoted


def test_go_quote_ascii_only() -> None:
    assert go_quote("é😀", ascii_only=True) == '"\\u00e9\\U0001f600"'


def test_labels_pod_wide_value() -> None:
    labels = {POLICY: "registry", AUTHFILE: "/a.json"}
    assert policy_label_for(labels, "web") == "registry"
    assert authfile_label_for(labels, "web") == "/a.json"


def test_labels_per_container_variant_wins() -> None:
    labels = {
        POLICY: "registry",
        f"{POLICY}/web": "local",
        f"{POLICY}/db": "disabled",
        AUTHFILE: "/pod.json",
        f"{AUTHFILE}/web": "/web.json",
    }
    assert policy_label_for(labels, "web") == "local"
    assert policy_label_for(labels, "db") == "disabled"
    assert policy_label_for(labels, "cache") == "registry"
    assert authfile_label_for(labels, "web") == "/web.json"
    assert authfile_label_for(labels, "db") == "/pod.json"


def test_labels_candidates_in_order() -> None:
    labels = {f"{POLICY}/web": "local", f"{POLICY}/mypod-web": "registry"}
    assert policy_label_for(labels, ["mypod-web", "web"]) == "registry"
    assert policy_label_for(labels, ["other", "web"]) == "local"
    assert policy_label_for(labels, []) is None


def test_labels_absent() -> None:
    assert policy_label_for({}, "web") is None
    assert authfile_label_for({POLICY: "registry"}, "web") is None


def test_empty_per_container_value_still_wins() -> None:
    # An explicit empty value means "disabled" for that container.
    labels = {POLICY: "registry", f"{POLICY}/web": ""}
    assert policy_label_for(labels, "web") == ""


def _ctr(name: str, pod_id: str = "", **labels: str) -> Container:
    return Container(
        id="c" * 64, name=name, image_id="i" * 64, raw_image_name="quay.io/a:1",
        labels=labels, pod_id=pod_id,
    )  # fmt: skip


def test_candidate_names() -> None:
    assert candidate_names(_ctr("web")) == ("web",)
    # Outside a pod, a dash is just part of the name.
    assert candidate_names(_ctr("my-web")) == ("my-web",)
    assert candidate_names(_ctr("mypod-web-app", pod_id="p" * 64)) == (
        "mypod-web-app",
        "web-app",
        "app",
    )
    assert candidate_names(_ctr("mypod-web", pod_id="p" * 64), yaml_name="web") == (
        "web",
        "mypod-web",
    )


def test_effective_labels_kube_play_container() -> None:
    ctr = Container(
        id="c" * 64,
        name="mypod-web",
        image_id="i" * 64,
        raw_image_name="quay.io/a:1",
        labels={
            POLICY: "registry",
            f"{POLICY}/web": "local",
            f"{AUTHFILE}/web": "/web.json",
        },
        pod_id="p" * 64,
    )
    assert effective_labels(ctr) == EffectiveLabels(policy="local", authfile="/web.json")
    assert effective_labels(ctr, yaml_name="db") == EffectiveLabels("local", "/web.json")


def test_effective_labels_plain_container() -> None:
    ctr = _ctr("web", **{POLICY: "image"})
    assert effective_labels(ctr) == EffectiveLabels(policy="image", authfile=None)


def test_effective_labels_read_annotations() -> None:
    ctr = Container(
        id="c" * 64,
        name="mypod-web",
        image_id="i" * 64,
        raw_image_name="quay.io/a:1",
        labels={POLICY: "registry", AUTHFILE: "/label.json"},
        annotations={f"{POLICY}/web": "local", AUTHFILE: "/annotation.json"},
        pod_id="p" * 64,
    )
    # The per-container annotation beats the pod-wide label; a label beats the same annotation.
    assert effective_labels(ctr) == EffectiveLabels(policy="local", authfile="/label.json")


def test_effective_labels_annotation_only() -> None:
    ctr = Container(
        id="c" * 64,
        name="web",
        image_id="i" * 64,
        raw_image_name="quay.io/a:1",
        annotations={POLICY: "image"},
    )
    assert effective_labels(ctr).policy == "image"
