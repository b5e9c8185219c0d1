"""The Docker lab itself: a real dockerd in a network namespace of its own, with its registry."""

from __future__ import annotations

import os
import subprocess

from updock.testing.docker_lab import DockerLab


def test_dockerd_runs_apart_from_the_machine_and_runs_containers(docker_lab: DockerLab) -> None:
    assert docker_lab.pid is not None
    # Its own network namespace: the bridge it made is not the machine's.
    ns = os.stat(f"/proc/{docker_lab.pid}/ns/net").st_ino
    assert ns != os.stat("/proc/self/ns/net").st_ino
    host_links = subprocess.run(
        ["ip", "-o", "link"], check=True, capture_output=True, text=True
    ).stdout
    assert "docker0" not in host_links
    assert "docker0" in docker_lab.run(["ip", "-o", "link"], netns=True).stdout
    api = docker_lab.docker("version", "--format", "{{.Server.APIVersion}}").stdout.strip()
    assert api >= "1.41"
    # An image pushed to the lab's registry, pulled by dockerd, runs.
    image = docker_lab.build_image(f"{docker_lab.registry}/lab/check:latest", version="x1")
    docker_lab.docker("pull", image)
    docker_lab.docker("run", "-d", "--name", "check", "--network", "none", image)
    assert docker_lab.container_version("check") == "x1"
    # Its processes are in the lab's own cgroups (which `stop` empties and removes).
    pid = docker_lab.docker("inspect", "--format", "{{.State.Pid}}", "check").stdout.strip()
    with open(f"/proc/{pid}/cgroup") as cgroups:
        assert f"/{docker_lab.cgroup_parent}/" in cgroups.read()
