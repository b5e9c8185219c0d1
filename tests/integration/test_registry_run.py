"""Registry checks in whole `updock auto-update` runs, in the lab: services in systemd, real podman.

A registry that is down fails only the containers that use it; a credential helper named in an
auth file (docker config.json) supplies the credentials of a real registry.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from updock.testing.lab import LAB_PASSWORD, LAB_USER, Lab
from updock.testing.proxy import FaultProxy

pytestmark = pytest.mark.lab


def mark_insecure(lab: Lab, host: str) -> None:
    """Let podman and updock in the lab speak plain HTTP to `host` (the lab's own file)."""
    with (lab.conf / "registries.conf").open("a") as conf:
        conf.write(f'[[registry]]\nlocation = "{host}"\ninsecure = true\n')


def _rows(stdout: str) -> dict[str, str]:
    return {row["ContainerName"]: row["Updated"] for row in json.loads(stdout)}


def test_a_registry_that_is_down_fails_only_its_containers(lab: Lab) -> None:
    up_image = lab.build_image(f"{lab.plain.host}/regrun-up:latest")
    lab.build_image(f"{lab.plain.host}/regrun-down:latest")
    with FaultProxy(lab.plain.host) as proxy:
        mark_insecure(lab, proxy.host)
        down_image = f"{proxy.host}/regrun-down:latest"
        lab.create_service("regrun-down", down_image)  # pulled through the proxy
    # The proxy is gone: nothing listens on its port any more.
    lab.create_service("regrun-up", up_image)
    lab.build_image(up_image)  # a newer image: an update is pending
    down_id = lab.podman("inspect", "--format", "{{.Id}}", "regrun-down").stdout.strip()
    up_id = lab.podman("inspect", "--format", "{{.Id}}", "regrun-up").stdout.strip()
    before = len(lab.plain.requests())

    res = lab.updock("auto-update", "--dry-run", "--format", "json")

    assert res.returncode == 125, res.stderr
    assert _rows(res.stdout) == {"regrun-down": "failed", "regrun-up": "pending"}
    error = res.stderr.strip()
    assert error.startswith("Error: ")
    assert down_id in error
    assert f"{proxy.host}/regrun-down:latest" in error
    assert f"cannot connect to {proxy.host}" in error
    assert "(3 attempts)" in error
    assert up_id not in error
    # The registry that is up got one HEAD for its image, no probe, no manifest GET.
    assert lab.plain.requests()[before:] == [("HEAD", "/v2/regrun-up/manifests/latest")]


def test_every_changed_image_is_pulled_before_any_unit_restarts(lab: Lab) -> None:
    """A unit whose new image came fast is not restarted while another name still pulls: a pull
    and a restart compete for podman's locks and the CPU, which stretches the downtime."""
    fast = lab.build_image(f"{lab.plain.host}/ahead-fast:latest", version="v1")
    direct_slow = lab.build_image(f"{lab.plain.host}/ahead-slow:latest", version="v1")
    with FaultProxy(lab.plain.host) as proxy:
        mark_insecure(lab, proxy.host)
        slow = direct_slow.replace(lab.plain.host, proxy.host)
        lab.create_service("ahead-slow", slow)  # pulled through the proxy
        lab.create_service("ahead-fast", fast)
        lab.build_image(fast, version="v2")
        lab.build_image(direct_slow, version="v2")
        proxy.delay = 1.0  # each answer from the slow name's registry comes a second late
        epoch = time.time() - time.monotonic()
        res = lab.updock("auto-update", "--format", "json")
        blobs = [r for r in proxy.requests if r.method == "GET" and "/blobs/" in r.path]

    assert res.returncode == 0, res.stderr
    assert _rows(res.stdout) == {"ahead-fast": "true", "ahead-slow": "true"}
    assert blobs, "the slow name was not pulled through its registry"
    pulled = epoch + max(r.ended for r in blobs)  # its last blob's answer began
    fast_restarted = lab.unit_start_times("container-ahead-fast.service")[-1]
    early = pulled - fast_restarted
    assert fast_restarted > pulled, f"restarted {early:.2f}s before the pull ended"


def _helper(bin_dir: Path, calls: Path) -> None:
    """`docker-credential-labpass`: the lab's credentials for any server; logs each call."""
    secret = json.dumps({"Username": LAB_USER, "Secret": LAB_PASSWORD})
    script = bin_dir / "docker-credential-labpass"
    script.write_text(
        f'#!/bin/sh\n[ "$1" = get ] || exit 2\ncat >> {calls}\necho >> {calls}\n'
        f"printf '%s' '{secret}'\n"
    )
    script.chmod(0o755)


def test_credential_helper_supplies_the_credentials(lab: Lab, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    _helper(bin_dir, calls)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"auths": {}, "credHelpers": {lab.secure.host: "labpass"}}))
    names = [f"{lab.secure.host}/regrun-helper-{n}:latest" for n in (1, 2)]
    for n, name in enumerate(names, 1):
        lab.build_image(name)
        lab.create_service(
            f"regrun-helper-{n}", name, {"io.containers.autoupdate.authfile": str(config)}
        )
    lab.build_image(names[0])

    env = {"PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    res = lab.updock("auto-update", "--dry-run", "--format", "json", env=env)

    assert res.returncode == 0, res.stderr
    assert _rows(res.stdout) == {"regrun-helper-1": "pending", "regrun-helper-2": "false"}
    assert calls.read_text().split() == [lab.secure.host]  # asked once for the run
    assert LAB_PASSWORD not in res.stdout + res.stderr
