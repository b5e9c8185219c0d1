"""The configuration of a recreated container, from the old one's (pure functions)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from updock.engines.docker import create_body
from updock.engines.podman import create_args
from updock.errors import EngineError

FIXTURES = Path(__file__).parent / "fixtures"
VOLUME = "ab" * 32


def podman(command: list[str], mounts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "Name": "loose",
        "Config": {"CreateCommand": command},
        "HostConfig": {"AutoRemove": False},
        "Mounts": mounts or [],
    }


def test_podman_runs_the_create_command_again_as_create() -> None:
    args = create_args(
        podman(
            ["podman", "run", "-d", "--name", "loose", "--pull=always", "--cidfile", "/x",
             "-e", "A=1", "--label", "io.containers.autoupdate=registry", "-v", "/anon",
             "--network", "none", "127.0.0.1:5000/app:latest", "sh", "-c", "sleep 9"],
            [{"Type": "volume", "Name": VOLUME, "Destination": "/anon"}],
        )
    )  # fmt: skip
    assert args == [
        "--pull=never",
        f"--volume={VOLUME}:/anon",
        "-e", "A=1", "--label", "io.containers.autoupdate=registry",
        "--network", "none", "127.0.0.1:5000/app:latest", "sh", "-c", "sleep 9",
    ]  # fmt: skip


def test_podman_leaves_the_name_to_the_create() -> None:
    # The old container may be renamed aside before this is read: the name is given at create.
    assert create_args(podman(["podman", "create", "--name=old", "img:1"])) == [
        "--pull=never", "img:1",
    ]  # fmt: skip


@pytest.mark.parametrize("version", ["4.3.1", "5.4.2"])
def test_podman_refuses_what_it_could_not_put_back(version: str) -> None:
    # Real inspect output: a unit's container, created with --rm.
    inspected = json.loads((FIXTURES / f"podman-{version}" / "container-inspect.json").read_text())
    auto_removed = next(c for c in inspected if c["HostConfig"]["AutoRemove"])
    with pytest.raises(EngineError, match=r"is removed when it stops \(--rm\)"):
        create_args(auto_removed)
    with pytest.raises(EngineError, match="no create command recorded"):
        create_args(podman([]))


def docker(config: dict[str, Any], host: dict[str, Any] | None = None, **more: Any) -> Any:
    return {
        "Id": "0123456789ab" + "c" * 52,
        "Config": config,
        "HostConfig": host or {"NetworkMode": "default"},
        **more,
    }


def test_docker_leaves_out_what_the_old_image_defined() -> None:
    old_image = {
        "Id": "sha256:old",
        "Config": {
            "Env": ["PATH=/bin", "IMG=old"],
            "Cmd": ["serve"],
            "Labels": {"img": "1", "shared": "image"},
            "WorkingDir": "/old",
            "User": "app",
            "ExposedPorts": {"80/tcp": {}},
            "Volumes": {"/data": {}},
            "Healthcheck": {"Test": ["CMD", "true"]},
        },
    }
    container = docker(
        {
            "Hostname": "0123456789ab",
            "Image": "reg/app:1",
            "Env": ["PATH=/bin", "IMG=old", "MINE=1"],
            "Cmd": ["serve"],
            "Labels": {"img": "1", "shared": "mine", "own": "x"},
            "WorkingDir": "/old",
            "User": "app",
            "ExposedPorts": {"80/tcp": {}, "81/tcp": {}},
            "Volumes": {"/data": {}},
            "Healthcheck": {"Test": ["CMD", "true"]},
        }
    )
    body, more = create_body(container, old_image, {"Id": "sha256:new"})
    assert body == {
        "Image": "reg/app:1",
        "Env": ["MINE=1"],
        "Labels": {"shared": "mine", "own": "x"},
        "ExposedPorts": {"81/tcp": {}},
        "HostConfig": {"NetworkMode": "default"},
    }
    assert more == []


def test_docker_keeps_the_users_entrypoint_and_its_cmd() -> None:
    image = {"Config": {"Entrypoint": ["/init"], "Cmd": ["serve"]}}
    container = docker({"Entrypoint": ["/bin/sh"], "Cmd": ["-c", "x"]})
    body, _ = create_body(container, image, {"Id": "new"})
    assert (body["Entrypoint"], body["Cmd"]) == (["/bin/sh"], ["-c", "x"])


def test_docker_networks_one_at_create_the_others_after() -> None:
    short = "0123456789ab"
    networks = {
        "front": {"Aliases": [short, "web"], "IPAMConfig": {"IPv4Address": "10.1.0.5"}},
        "back": {"Aliases": [short], "IPAMConfig": None, "Links": ["/db:/web/db"]},
    }
    container = docker(
        {}, {"NetworkMode": "front", "Links": ["/db:/web/dbalias"]},
        NetworkSettings={"Networks": networks},
    )  # fmt: skip
    body, more = create_body(container, {"Config": {}}, {"Id": "new"})
    assert body["NetworkingConfig"] == {
        "EndpointsConfig": {
            "front": {"Aliases": ["web"], "IPAMConfig": {"IPv4Address": "10.1.0.5"}}
        }
    }
    assert more == [("back", {"Links": ["db:db"]})]
    assert body["HostConfig"]["Links"] == ["db:dbalias"]


def test_docker_binds_anonymous_volumes_again_by_name() -> None:
    container = docker(
        {},
        {"NetworkMode": "none", "Binds": ["named:/named"]},
        Mounts=[
            {"Type": "volume", "Name": "named", "Destination": "/named", "RW": True},
            {"Type": "volume", "Name": VOLUME, "Destination": "/anon", "RW": False},
            {"Type": "bind", "Source": "/x", "Destination": "/bind", "RW": True},
        ],
    )
    body, _ = create_body(container, {"Config": {}}, {"Id": "new"})
    assert body["HostConfig"]["Binds"] == ["named:/named", f"{VOLUME}:/anon:ro"]
