"""Docker containers updated by recreating them, against a real dockerd (the Docker lab)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from updock.core.reference import previous_tag
from updock.testing.docker_lab import DockerLab
from updock.testing.lab import DIES_AFTER_SECONDS, HEALTH_ARGS, ImageKind

POLICY = "io.containers.autoupdate=registry"


def run_updock(lab: DockerLab, *args: str) -> subprocess.CompletedProcess[str]:
    return lab.updock(
        "auto-update", "--engine", "docker", "--format", "json", "--settle-time", "1", *args
    )


def rows(res: subprocess.CompletedProcess[str]) -> dict[str, dict[str, str]]:
    found: list[dict[str, str]] = json.loads(res.stdout) if res.stdout.strip() else []
    return {r["ContainerName"]: r for r in found}


def start(lab: DockerLab, name: str, image: str, *args: str) -> str:
    """`docker run -d` a labelled container; its ID."""
    lab.docker("pull", image)
    return lab.docker("run", "-d", "--name", name, "--label", POLICY, *args, image).stdout.strip()


def names(lab: DockerLab) -> list[str]:
    return sorted(lab.docker("ps", "-a", "--format", "{{.Names}}").stdout.split())


def test_a_container_is_recreated_on_the_new_image_and_the_old_one_removed(
    docker_lab: DockerLab,
) -> None:
    lab = docker_lab
    image = lab.build_image(f"{lab.registry}/plain/web:latest")
    old_id = start(lab, "web", image, "--network", "none")
    lab.build_image(image)

    res = run_updock(lab)

    assert res.returncode == 0, res.stderr
    row = rows(res)["web"]
    assert (row["Unit"], row["Updated"], row["Image"]) == ("container:web", "true", image)
    assert row["ContainerID"] == old_id
    assert lab.container_version("web") == "v2"
    assert names(lab) == ["web"]  # the old container is gone, nothing left aside
    new: Any = lab.inspect("web")
    assert new["Id"] != old_id
    assert new["Config"]["Image"] == image
    assert new["Config"]["Labels"]["updock.lab.version"] == "v2"  # the new image's label
    # The previous image is kept, as for units.
    kept = lab.image_id(str(previous_tag("web")))
    assert kept != lab.image_id(image)
    # Nothing new: nothing done.
    again = run_updock(lab)
    assert (again.returncode, rows(again)["web"]["Updated"]) == (0, "false"), again.stderr


@pytest.mark.parametrize(
    ("kind", "health"),
    [
        (ImageKind.EXITS_AT_ONCE, False),
        (ImageKind.MISSING_ENTRYPOINT, False),
        (ImageKind.DIES_AFTER_START, False),
        (ImageKind.UNHEALTHY, True),
    ],
)
def test_a_broken_image_is_rolled_back_to_the_old_container(
    docker_lab: DockerLab, kind: ImageKind, health: bool
) -> None:
    lab = docker_lab
    image = lab.build_image(f"{lab.registry}/broken/{kind.value}:latest")
    args = ["--network", "none"]
    if health:
        args += [a.replace("--health-retries=2", "--health-retries=1") for a in HEALTH_ARGS]
        args = [a.replace("--health-start-period=8s", "--health-start-period=1s") for a in args]
    old_id = start(lab, "app", image, *args)
    previous = lab.image_id(image)
    lab.build_image(image, kind)

    # Settled longer than the dying image lives.
    res = run_updock(lab, "--verify-timeout", "8", "--settle-time", str(DIES_AFTER_SECONDS + 1))

    assert res.returncode == 0, res.stderr
    assert rows(res)["app"]["Updated"] == "rolled back", res.stderr
    # The very same container runs again, on its image, under its name.
    assert names(lab) == ["app"]
    back: Any = lab.inspect("app")
    assert (back["Id"], back["Image"], back["State"]["Running"]) == (old_id, previous, True)
    assert lab.container_version("app") == "v1"
    # The image name is back on the previous image (a later `docker run` gets the good one).
    assert lab.image_id(image) == previous


def test_a_daemon_that_cannot_be_reached_is_an_error_naming_its_socket(
    docker_lab: DockerLab,
) -> None:
    missing = docker_lab.root / "no-such.sock"
    res = docker_lab.updock(
        "auto-update", "--engine", "docker", env={"DOCKER_HOST": f"unix://{missing}"}
    )
    assert res.returncode == 125
    assert f"cannot reach the Docker daemon at unix://{missing}" in res.stderr
    assert res.stdout == ""
