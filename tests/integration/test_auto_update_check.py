"""`updock auto-update` discovery, checks and report against the real podman auto-update.

Every scenario here changes nothing (`--dry-run`, or errors before any update), so both tools
run on the very same containers and their reports must be equal row for row.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.integration.conformance import (
    Outcome,
    podman_since,
    run_both,
    run_podman,
    run_updock,
    sorted_table,
)
from updock.testing.lab import Lab

pytestmark = pytest.mark.lab

INVALID_POLICY = (
    'invalid auto-update policy "bogus": valid policies are ["disabled" "image" "local" "registry"]'
)


def test_policies_dry_run_report_equals_podman(lab: Lab) -> None:
    new = lab.build_image(f"{lab.plain.host}/chk/new:1")
    same = lab.build_image(f"{lab.plain.host}/chk/same:1")
    local = lab.build_image("localhost/chk/local:1", local=True)
    lab.create_service("reg-new", new)
    lab.create_service("img-same", same, policy="image")
    lab.create_service("loc-new", local, policy="local")
    lab.create_service("loc-same", local, policy="local")
    lab.create_service("dis", same, policy="disabled")
    lab.create_service("empty", same, policy="")
    lab.create_service("nolabel", same, policy=None)
    lab.build_image(new)  # v2 in the registry
    lab.build_image(local, local=True)  # v2 under the local name

    updock, podman = run_both(lab, "--dry-run", "--format", "json")

    assert (updock.returncode, podman.returncode) == (0, 0), (updock.stderr, podman.stderr)
    assert updock.rows() == podman.rows()
    assert updock.statuses() == {
        "reg-new": "pending",
        "img-same": "false",
        "loc-new": "pending",
        "loc-same": "pending",
    }
    assert {r["Policy"] for r in updock.rows()} == {"registry", "local"}
    # The default table: the same lines; updock's are sorted by unit.
    updock_t, podman_t = run_both(lab, "--dry-run")
    assert sorted_table(updock_t.stdout) == sorted_table(podman_t.stdout)
    assert updock_t.stdout.splitlines()[1:] == sorted(updock_t.stdout.splitlines()[1:])
    # Nothing changed.
    assert lab.container_version("reg-new") == "v1"


def test_invalid_policy_is_an_error_for_that_container_only(lab: Lab) -> None:
    image = lab.build_image(f"{lab.plain.host}/chk/bogus:1")
    lab.create_service("bogus", image, policy="bogus")
    lab.create_service("fine", image)
    bogus_id = lab.podman("inspect", "--format", "{{.Id}}", "bogus").stdout.strip()

    updock, podman = run_both(lab, "--dry-run", "--format", "json")

    assert (updock.returncode, podman.returncode) == (125, 125)
    assert updock.rows() == podman.rows()
    assert updock.statuses() == {"fine": "false"}
    assert INVALID_POLICY in podman.stderr
    assert INVALID_POLICY in updock.stderr
    assert bogus_id in updock.stderr  # updock also names the container
    assert updock.stderr.startswith("Error: ")


def test_nothing_to_do_prints_nothing(lab: Lab) -> None:
    image = lab.build_image(f"{lab.plain.host}/chk/idle:1")
    lab.create_service("idle", image, policy=None)
    lab.create_service("off", image, policy="disabled")

    updock, podman = run_both(lab)

    assert (updock.returncode, updock.stdout, updock.stderr) == (0, "", "")
    assert (podman.returncode, podman.stdout) == (0, "")
    assert lab.container_version("idle") == "v1"


def test_formats_equal_podman_byte_for_byte(lab: Lab) -> None:
    image = lab.build_image(f"{lab.plain.host}/chk/fmt:1")
    lab.create_service("fmt", image)
    lab.build_image(image)

    for fmt in (
        "json",
        "{{.Unit}},{{.Updated}}",
        "{{.ContainerName}} {{.ContainerID}} {{.Image}} {{.Policy}}",
        "table {{.Unit}}\t{{.Container}}\t{{.Updated}}",
        "table {{.ContainerID}} {{.ContainerName}}",
        "{{json .}}",
        "{{.Unit}}\\t{{.Updated}}",  # a tab, but no table: not aligned
        "{{range . }}\t{{.Unit}}\t{{.Image}}\n{{end -}}",
        "table {{.}} {{json .}}",
    ):
        updock, podman = run_both(lab, "--dry-run", "--format", fmt)
        assert (updock.returncode, podman.returncode) == (0, 0), fmt
        assert updock.stdout == podman.stdout, fmt
    updock, podman = run_both(lab, "--dry-run")
    assert updock.stdout == podman.stdout
    assert re.fullmatch(
        r" {12}UNIT +CONTAINER +IMAGE +POLICY +UPDATED", podman.stdout.split("\n")[0]
    )


def test_bad_format_and_arguments_exit_125_and_change_nothing(lab: Lab) -> None:
    image = lab.build_image(f"{lab.plain.host}/chk/args:1")
    lab.create_service("args", image)
    lab.build_image(image)

    updock = run_updock(lab, "some-container")
    podman = run_podman(lab, "some-container")
    assert (updock.returncode, podman.returncode) == (125, 125)
    assert "takes no arguments" in updock.stderr
    assert "takes no arguments" in podman.stderr

    updock = run_updock(lab, "--format", "{{.Nope}}")
    assert updock.returncode == 125
    assert "Nope" in updock.stderr
    assert updock.stdout == ""

    updock = run_updock(lab, "--authfile", str(lab.root / "no-such.json"))
    assert updock.returncode == 125
    assert "no-such.json" in updock.stderr

    assert lab.container_version("args") == "v1"  # none of them updated anything


def test_image_references_must_be_fully_qualified_with_tag(lab: Lab) -> None:
    image = lab.build_image(f"{lab.plain.host}/chk/ref:1")
    lab.pull(image)
    digest = lab.podman("image", "inspect", "--format", "{{.Digest}}", image).stdout.strip()
    # podman refuses to create a container with a short name and the registry policy, but a
    # digest-pinned one gets through.
    lab.create_service("by-digest", f"{lab.plain.host}/chk/ref@{digest}", pull=False)
    lab.podman("tag", image, "localhost/chk/short:1")
    lab.create_service("short-local", "chk/short:1", policy="local", pull=False)
    lab.create_service("good", image)

    updock, podman = run_both(lab, "--dry-run", "--format", "json")

    assert updock.returncode == 125
    assert updock.statuses() == {"good": "false", "short-local": "false"}
    # The raw image name, as typed, is what both report.
    assert {r["Image"] for r in updock.rows()} == {image, "chk/short:1"}
    cid = lab.podman("inspect", "--format", "{{.Id}}", "by-digest").stdout.strip()
    assert cid in updock.stderr
    assert "(no tag)" in updock.stderr
    # podman 4.3.1 does not validate the reference at update time (the spec says it must): it
    # reports the pinned container `false`, and the user never learns it cannot be updated.
    assert podman.returncode == 0
    assert podman.statuses() == {"good": "false", "short-local": "false", "by-digest": "false"}
    assert [r for r in podman.rows() if r["ContainerName"] != "by-digest"] == updock.rows()


def _bad_authfile(lab: Lab) -> str:
    bad = lab.root / "bad-auth.json"
    bad.write_text(json.dumps({"auths": {lab.secure.host: {"auth": "d3Jvbmc6d3Jvbmc="}}}))
    return str(bad)


def test_authfile_precedence(lab: Lab) -> None:
    image = lab.build_image(f"{lab.secure.host}/chk/secret:1")
    lab.create_service("secret", image)
    lab.build_image(image)
    good, bad = str(lab.authfile), _bad_authfile(lab)
    cid = lab.podman("inspect", "-f", "{{.Id}}", "secret").stdout.strip()

    # No credentials at all: the check fails, naming the container.
    updock, podman = run_both(lab, "--dry-run", "--format", "json")
    assert updock.returncode == 125
    assert updock.statuses() == {"secret": "failed"}
    assert cid in updock.stderr
    assert "credentials" in updock.stderr
    if podman_since(lab, "4.6"):
        # Check errors give `failed` since podman 4.6, as in updock.
        assert (podman.returncode, podman.rows()) == (125, updock.rows())
        assert "authentication required" in podman.stderr
    else:
        # podman 4.3.1 ignores check errors (its debug log says "ignoring error") and reports
        # `false`: an update that exists is silently missed. The spec says `failed`.
        assert (podman.returncode, podman.statuses()) == (0, {"secret": "false"})

    # --authfile, then REGISTRY_AUTH_FILE, then --authfile over REGISTRY_AUTH_FILE.
    for args, env in (
        (("--authfile", good), None),
        ((), {"REGISTRY_AUTH_FILE": good}),
        (("--authfile", good), {"REGISTRY_AUTH_FILE": bad}),
    ):
        updock, podman = run_both(lab, "--dry-run", "--format", "json", *args, env=env)
        assert updock.returncode == 0, (args, env, updock.stderr)
        assert updock.statuses() == {"secret": "pending"}, (args, env)
        if podman_since(lab, "4.6"):
            # The auth file reaches podman's check since 4.6: the same report.
            assert (podman.returncode, podman.rows()) == (0, updock.rows()), (args, env)
        else:
            # podman 4.3.1 does not pass the auth file to its registry check (its debug log
            # shows it looking only in the default locations), so it never sees the update.
            assert podman.statuses() == {"secret": "false"}, (args, env)
    # A wrong password is an error naming the container, never showing the secret.
    updock, podman = run_both(lab, "--dry-run", "--format", "json", "--authfile", bad)
    assert (updock.returncode, updock.statuses()) == (125, {"secret": "failed"})
    assert cid in updock.stderr
    assert "d3Jvbmc6d3Jvbmc=" not in updock.stderr
    assert "wrong" not in updock.stderr
    if podman_since(lab, "4.6"):
        assert (podman.returncode, podman.rows()) == (125, updock.rows())


def test_authfile_label_wins_over_flag(lab: Lab) -> None:
    image = lab.build_image(f"{lab.secure.host}/chk/labelled:1")
    lab.create_service(
        "labelled", image, labels={"io.containers.autoupdate.authfile": str(lab.authfile)}
    )
    lab.build_image(image)

    updock = run_updock(lab, "--dry-run", "--format", "json", "--authfile", _bad_authfile(lab))

    assert updock.returncode == 0, updock.stderr
    assert updock.statuses() == {"labelled": "pending"}


def test_tls_verify_flag(lab: Lab) -> None:
    image = lab.build_image(f"{lab.secure.host}/chk/tls:1")
    lab.create_service(
        "tls", image, labels={"io.containers.autoupdate.authfile": str(lab.authfile)}
    )
    lab.build_image(image)
    # The lab's certs.d trusts the CA: default verification works.
    updock = run_updock(lab, "--dry-run", "--format", "json")
    assert (updock.returncode, updock.statuses()) == (0, {"tls": "pending"}), updock.stderr
    # Without the CA, verification fails, and --tls-verify=false lets the check through.
    ca = lab.etc_containers / "certs.d" / lab.secure.host / "ca.crt"
    saved = ca.read_bytes()
    ca.unlink()
    try:
        updock = run_updock(lab, "--dry-run", "--format", "json")
        assert (updock.returncode, updock.statuses()) == (125, {"tls": "failed"})
        assert "certificate" in updock.stderr.lower()
        for flag, expected in (
            ("--tls-verify=false", (0, "pending")),
            ("--tls-verify=true", (125, "failed")),
        ):
            updock, podman = run_both(lab, "--dry-run", "--format", "json", flag)
            assert (updock.returncode, updock.statuses()) == (expected[0], {"tls": expected[1]})
            _same_as_podman_with_tls_verify(lab, updock, podman)
    finally:
        ca.write_bytes(saved)


def _same_as_podman_with_tls_verify(lab: Lab, updock: Outcome, podman: Outcome) -> None:
    """podman has `--tls-verify` since 4.6, and then reports what updock does."""
    if podman_since(lab, "4.6"):
        assert (podman.returncode, podman.rows()) == (updock.returncode, updock.rows())
    else:
        assert (podman.returncode, podman.stdout) == (125, "")
        assert "unknown flag: --tls-verify" in podman.stderr


def test_plain_http_registry_needs_insecure_or_tls_verify_false(lab: Lab) -> None:
    image = lab.build_image(f"{lab.plain.host}/chk/plain:1")
    lab.create_service("plain", image)
    lab.build_image(image)
    # registries.conf marks the plain registry insecure: HTTP is allowed by default...
    assert run_updock(lab, "--dry-run", "--format", "json").statuses() == {"plain": "pending"}
    # ...but not when the user demands verification.
    updock, podman = run_both(lab, "--dry-run", "--format", "json", "--tls-verify=true")
    assert (updock.returncode, updock.statuses()) == (125, {"plain": "failed"})
    assert lab.plain.host in updock.stderr
    _same_as_podman_with_tls_verify(lab, updock, podman)


def test_kube_play_pod_per_container_policies(lab: Lab) -> None:
    image = lab.build_image(f"{lab.plain.host}/chk/kube:1")
    lab.pull(image)
    yaml = lab.root / "kube-chk.yaml"
    yaml.write_text(
        f"""apiVersion: v1
kind: Pod
metadata:
  name: kchk
  annotations:
    io.containers.autoupdate: "registry"
    io.containers.autoupdate/side: "local"
    io.containers.autoupdate/off: "disabled"
spec:
  containers:
  - name: main
    image: {image}
  - name: side
    image: {image}
  - name: off
    image: {image}
"""
    )
    lab.run(
        ["podman", "kube", "play", "--network", "none", str(yaml)],
        env={"PODMAN_SYSTEMD_UNIT": "kube-chk.service"},
    )
    lab.build_image(image)

    updock, podman = run_both(lab, "--dry-run", "--format", "json")

    assert (updock.returncode, podman.returncode) == (0, 0), updock.stderr
    assert updock.rows() == podman.rows()
    assert updock.statuses() == {"kchk-main": "pending", "kchk-side": "false"}
    assert {r["Unit"] for r in updock.rows()} == {"kube-chk.service"}


def test_pod_containers_use_the_infra_containers_unit(lab: Lab) -> None:
    image = lab.build_image(f"{lab.plain.host}/chk/pod:1")
    lab.pull(image)
    lab.run(
        ["podman", "pod", "create", "--name", "pchk", "--network", "none"],
        env={"PODMAN_SYSTEMD_UNIT": "pod-pchk.service"},
    )
    label = "io.containers.autoupdate=registry"
    for name in ("pa", "pb"):
        lab.podman("create", "--pod", "pchk", "--name", name, "--label", label, image)
    lab.podman("pod", "start", "pchk")
    lab.build_image(image)

    updock, podman = run_both(lab, "--dry-run", "--format", "json")

    assert updock.returncode == 0, updock.stderr
    assert {r["ContainerName"]: r["Unit"] for r in updock.rows()} == {
        "pa": "pod-pchk.service",
        "pb": "pod-pchk.service",
    }
    assert updock.statuses() == {"pa": "pending", "pb": "pending"}
    if podman_since(lab, "4.4"):
        # podman 4.4 and later look the pod's unit up on the infra container: the same report.
        assert (podman.returncode, podman.rows()) == (0, updock.rows()), podman.stderr
    else:
        # podman 4.3.1 does not look up the pod's unit on the infra container (the spec's rule,
        # podman 4.4 and later): both containers are errors there.
        assert (podman.returncode, podman.rows()) == (125, [])
        assert podman.stderr.count("no PODMAN_SYSTEMD_UNIT label found") == 2
