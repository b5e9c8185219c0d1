"""The lab itself: real systemd runs a real container from the real registry, and the real
`podman auto-update` sees a new version pushed there."""

from __future__ import annotations

import json

import pytest

from updock.testing.lab import LAB_PASSWORD, ImageKind, Lab

pytestmark = pytest.mark.lab


def test_service_runs_image_from_registry_and_podman_sees_update(lab: Lab) -> None:
    image = lab.build_image(f"{lab.plain.host}/lab-proof:latest")
    svc = lab.create_service("lab-proof", image)

    assert lab.unit_state(svc.unit) == "active"
    assert lab.container_version("lab-proof") == "v1"
    ps = json.loads(lab.podman("ps", "--format", "json").stdout)
    assert [c["Names"] for c in ps] == [["lab-proof"]]
    assert ps[0]["Labels"]["PODMAN_SYSTEMD_UNIT"] == svc.unit

    before = lab.auto_update("--dry-run", "--format", "{{.Unit}} {{.Updated}}")
    assert (before.returncode, before.stdout) == (0, f"{svc.unit} false\n")

    lab.build_image(image)  # v2 pushed
    after = lab.auto_update("--dry-run", "--format", "{{.Unit}} {{.Updated}}")
    assert (after.returncode, after.stdout) == (0, f"{svc.unit} pending\n")
    # --dry-run changed nothing.
    assert lab.container_version("lab-proof") == "v1"
    assert lab.unit_state(svc.unit) == "active"


def test_podman_uses_only_the_lab_configuration(lab: Lab) -> None:
    info = json.loads(lab.podman("info", "--format", "json").stdout)
    assert info["store"]["graphRoot"].startswith(str(lab.root))
    assert info["store"]["configFile"] == lab.env["CONTAINERS_STORAGE_CONF"]
    assert info["host"]["ociRuntime"]["name"] == lab.oci_runtime
    # systemd's units get the same environment.
    env = lab.systemctl("show-environment").stdout
    assert f"CONTAINERS_CONF={lab.env['CONTAINERS_CONF']}" in env


def test_secure_registry_needs_credentials_and_trusts_lab_ca(lab: Lab) -> None:
    image = lab.build_image(f"{lab.secure.host}/lab-secure:1")
    denied = lab.podman("pull", image, check=False)
    assert denied.returncode != 0
    assert "unauthorized" in denied.stderr.lower() or "authentication" in denied.stderr.lower()
    # With the auth file and default TLS verification (the CA comes from the lab's certs.d).
    lab.podman("pull", "--authfile", str(lab.authfile), image)
    assert LAB_PASSWORD not in lab.authfile.read_text()  # stored base64-encoded, as podman does


def test_broken_images_behave_as_named(lab: Lab) -> None:
    for kind in (ImageKind.EXITS_AT_ONCE, ImageKind.MISSING_ENTRYPOINT):
        image = lab.build_image(f"{lab.plain.host}/lab-{kind.value}:1", kind)
        lab.pull(image)
        res = lab.podman("run", "--rm", "--network", "none", image, check=False)
        assert res.returncode != 0, kind
    image = lab.build_image(f"{lab.plain.host}/lab-dies:1", ImageKind.DIES_AFTER_START)
    lab.pull(image)
    res = lab.podman("run", "--rm", "--network", "none", image, check=False)
    assert res.returncode == 1
    assert res.stdout.startswith("dying v1")
