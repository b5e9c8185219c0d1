"""podman containers that no systemd unit runs (started by hand, a script, podman-compose):
updated by recreating them, as Docker containers are, in the lab of each podman flavour."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from tests.integration.recreated import FOLLOW_CRASHES, same_configuration
from updock.testing.lab import DIES_AFTER_SECONDS, HEALTH_ARGS, ImageKind, Lab

pytestmark = pytest.mark.lab

POLICY = "io.containers.autoupdate=registry"


def updock(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return lab.updock("auto-update", "--format", "json", "--settle-time", "1", *args)


def rows(res: subprocess.CompletedProcess[str]) -> dict[str, dict[str, str]]:
    found: list[dict[str, str]] = json.loads(res.stdout) if res.stdout.strip() else []
    return {r["ContainerName"]: r for r in found}


def inspect(lab: Lab, name: str) -> Any:
    return json.loads(lab.podman("container", "inspect", name).stdout)[0]


def names(lab: Lab) -> list[str]:
    return sorted(lab.podman("ps", "-a", "--format", "{{.Names}}").stdout.split())


def loose(lab: Lab, name: str, image: str, *args: str) -> str:
    """A labelled container started by hand (no unit); its ID."""
    lab.pull(image)
    return lab.podman(
        "run", "-d", "--name", name, "--label", POLICY, "--network", "none", *args, image
    ).stdout.strip()


def test_a_container_no_unit_runs_is_recreated_with_its_volumes(lab: Lab) -> None:
    image = lab.build_image(f"{lab.plain.host}/loose/web:latest")
    old_id = loose(lab, "loose", image, "-v", "/anon", "-e", "MINE=1")
    lab.podman("exec", "loose", "sh", "-c", "echo kept > /anon/data")
    lab.build_image(image)

    res = updock(lab)

    assert res.returncode == 0, res.stderr
    row = rows(res)["loose"]
    assert (row["Unit"], row["Updated"], row["ContainerID"]) == ("container:loose", "true", old_id)
    assert lab.container_version("loose") == "v2"
    assert names(lab) == ["loose"]
    new = inspect(lab, "loose")
    assert new["Id"] != old_id
    assert "MINE=1" in new["Config"]["Env"]
    assert lab.podman("exec", "loose", "cat", "/anon/data").stdout.strip() == "kept"


#: Broken updates: (container name, the new image's kind).
BROKEN = (
    ("exits", ImageKind.EXITS_AT_ONCE),
    ("dies", ImageKind.DIES_AFTER_START),
    ("unhealthy", ImageKind.UNHEALTHY),
)


def test_broken_images_put_the_old_containers_back(lab: Lab) -> None:
    """One run, one container per broken image (no image name shared: their recreates go side
    by side): each old container is back, on its image, under its name."""
    health = [
        a.replace("--health-start-period=8s", "--health-start-period=1s") for a in HEALTH_ARGS
    ]
    before: dict[str, tuple[str, str]] = {}  # name: (container ID, image ID)
    for name, kind in BROKEN:
        image = lab.build_image(f"{lab.plain.host}/loose/{kind.value}:latest")
        before[name] = (loose(lab, name, image, *health), lab.image_id(image))
        lab.build_image(image, kind)

    res = updock(lab, "--verify-timeout", "8", "--settle-time", str(DIES_AFTER_SECONDS + 1))

    assert res.returncode == 0, res.stderr
    assert {n: r["Updated"] for n, r in rows(res).items()} == dict.fromkeys(
        before, "rolled back"
    ), res.stderr
    assert names(lab) == sorted(before)
    for name, (old_id, previous) in before.items():
        back = inspect(lab, name)
        assert (name, back["Id"], back["Image"], back["State"]["Running"]) == (
            name,
            old_id,
            previous,
            True,
        )
        assert (name, lab.container_version(name)) == (name, "v1")


def test_units_and_unitless_containers_in_one_run(lab: Lab) -> None:
    unit_image = lab.build_image(f"{lab.plain.host}/loose/unit:latest")
    lab.create_service("served", unit_image)
    image = lab.build_image(f"{lab.plain.host}/loose/own:latest")
    loose(lab, "own", image)
    lab.build_image(unit_image)
    lab.build_image(image)

    res = updock(lab)

    assert res.returncode == 0, res.stderr
    found = rows(res)
    assert {n: (r["Unit"], r["Updated"]) for n, r in found.items()} == {
        "served": ("container-served.service", "true"),
        "own": ("container:own", "true"),
    }
    assert (lab.container_version("served"), lab.container_version("own")) == ("v2", "v2")


def test_a_container_removed_when_it_stops_is_refused_untouched(lab: Lab) -> None:
    image = lab.build_image(f"{lab.plain.host}/loose/rm:latest")
    old_id = loose(lab, "gone", image, "--rm")
    lab.build_image(image)
    res = updock(lab)
    assert res.returncode == 125
    assert "container gone is removed when it stops (--rm)" in res.stderr
    assert rows(res)["gone"]["Updated"] == "failed"
    assert inspect(lab, "gone")["Id"] == old_id
    assert lab.container_version("gone") == "v1"


def test_a_docker_daemon_that_cannot_be_reached_fails_no_podman_container(lab: Lab) -> None:
    image = lab.build_image(f"{lab.plain.host}/loose/alone:latest")
    lab.create_service("alone", image)
    lab.build_image(image)
    socket = lab.root / "no-docker.sock"
    res = lab.updock(
        "auto-update", "--format", "json", "--settle-time", "1", "--engine", "podman,docker",
        env={"DOCKER_HOST": f"unix://{socket}"},
    )  # fmt: skip
    assert res.returncode == 125
    assert rows(res)["alone"]["Updated"] == "true"
    if lab.flavour == "host":  # a rootfs flavour's Python has no docker-py: that error instead
        assert f"cannot reach the Docker daemon at unix://{socket}" in res.stderr
    else:
        assert "pip install 'updock[docker]'" in res.stderr


# -- containers in a recreated container's network namespace ----------------------------------


def netns(lab: Lab, name: str) -> str:
    """The network namespace (`net:[inode]`) the container's process runs in, read in the lab
    (whose PID namespace the container's PID is of)."""
    pid = lab.podman("inspect", "--format", "{{.State.Pid}}", name).stdout.strip()
    return lab.run(["readlink", f"/proc/{pid}/ns/net"]).stdout.strip()


def two_in_one_namespace(lab: Lab, repo: str) -> tuple[Any, Any]:
    """`vpn` (labelled, no unit, a namespace of its own) and `app` (no label, its own image)
    in vpn's network namespace; both inspected."""
    vpn_image = lab.build_image(f"{lab.plain.host}/{repo}/vpn:latest")
    app_image = lab.build_image(f"{lab.plain.host}/{repo}/app:latest")
    loose(lab, "vpn", vpn_image)
    lab.pull(app_image)
    lab.podman("run", "-d", "--name", "app", "--network", "container:vpn", "-e", "MINE=1",
               "--label", "mine=1", app_image)  # fmt: skip
    assert netns(lab, "app") == netns(lab, "vpn")
    return inspect(lab, "vpn"), inspect(lab, "app")


#: What differs between any two containers of one configuration (beside their IDs), and what
#: a follower's recreate changes on purpose (which container's namespace it joins).
_VOLATILE = ("Id", "Created", "State", "GraphDriver", "NetworkSettings", "Dependencies",
             "LockNumber", "lockNumber")  # fmt: skip


def comparable(inspected: Any) -> Any:
    # Paths, the generated host name and its environment variable name the container's ID.
    ident = inspected["Id"]
    c = json.loads(json.dumps(inspected).replace(ident, "ID").replace(ident[:12], "ID"))
    for key in _VOLATILE:
        c.pop(key, None)
    c["HostConfig"].pop("NetworkMode")
    c["Config"].pop("CreateCommand")
    c["Config"]["Annotations"].pop("io.kubernetes.cri-o.Created", None)
    c["Config"]["Env"] = sorted(c["Config"]["Env"])  # in no fixed order (a Go map's)
    return c


def test_a_container_without_an_update_follows_the_recreated_one_into_its_namespace(
    lab: Lab,
) -> None:
    """`app` has no label: once `vpn` verified on its new image, app is recreated on its own
    image, in the new vpn's namespace, with its configuration otherwise unchanged."""
    vpn_before, app_before = two_in_one_namespace(lab, "follow")
    lab.build_image(vpn_before["ImageName"])

    res = updock(lab, "--log-level", "warning")

    assert res.returncode == 0, res.stderr
    assert {n: r["Updated"] for n, r in rows(res).items()} == {"vpn": "true"}
    vpn, app = inspect(lab, "vpn"), inspect(lab, "app")
    assert vpn["Id"] != vpn_before["Id"]
    assert lab.container_version("vpn") == "v2"
    # app runs again, in the new vpn's namespace.
    assert app["HostConfig"]["NetworkMode"] == f"container:{vpn['Id']}"
    assert app["State"]["Running"]
    assert netns(lab, "app") == netns(lab, "vpn")
    # A new container on the same image, configured as before but for the namespace's owner.
    assert app["Id"] != app_before["Id"]
    assert app["Image"] == app_before["Image"]
    assert lab.container_version("app") == "v1"
    same_configuration(comparable(app_before), comparable(app))
    assert names(lab) == ["app", "vpn"]  # both old containers removed
    assert (
        "container app shares the network namespace of container vpn, which was recreated: app "
        "was recreated on its own image"
    ) in res.stderr


def test_a_rolled_back_container_takes_the_others_in_its_namespace_back(lab: Lab) -> None:
    """vpn's new image fails: the old vpn runs again (in a namespace made at its start), and
    app, untouched, is restarted to join it."""
    vpn_before, app_before = two_in_one_namespace(lab, "back")
    lab.build_image(vpn_before["ImageName"], ImageKind.EXITS_AT_ONCE)

    res = updock(lab, "--log-level", "warning")

    assert res.returncode == 0, res.stderr
    assert rows(res)["vpn"]["Updated"] == "rolled back"
    vpn, app = inspect(lab, "vpn"), inspect(lab, "app")
    assert (vpn["Id"], app["Id"]) == (vpn_before["Id"], app_before["Id"])
    assert app["HostConfig"]["NetworkMode"] == f"container:{vpn['Id']}"
    assert (vpn["State"]["Running"], app["State"]["Running"]) == (True, True)
    assert netns(lab, "app") == netns(lab, "vpn")
    assert lab.container_version("vpn") == "v1"
    assert names(lab) == ["app", "vpn"]
    assert "vpn, which was rolled back: app was put back and restarted in it" in res.stderr


def test_a_dry_run_leaves_the_others_in_the_namespace_alone(lab: Lab) -> None:
    vpn_before, app_before = two_in_one_namespace(lab, "dry")
    lab.build_image(vpn_before["ImageName"])
    space = netns(lab, "app")

    res = updock(lab, "--dry-run")

    assert res.returncode == 0, res.stderr
    assert {n: r["Updated"] for n, r in rows(res).items()} == {"vpn": "pending"}
    assert inspect(lab, "vpn")["Id"] == vpn_before["Id"]
    assert inspect(lab, "app")["Id"] == app_before["Id"]
    assert netns(lab, "app") == netns(lab, "vpn") == space


def test_a_labelled_container_without_a_new_image_follows_too(lab: Lab) -> None:
    """app has a label of its own but its image has no update: it follows vpn as an unlabelled
    one does, and its row says it was not updated."""
    vpn_image = lab.build_image(f"{lab.plain.host}/labelled/vpn:latest")
    app_image = lab.build_image(f"{lab.plain.host}/labelled/app:latest")
    loose(lab, "vpn", vpn_image)
    lab.pull(app_image)
    old_app = lab.podman("run", "-d", "--name", "app", "--label", POLICY, "--network",
                         "container:vpn", app_image).stdout.strip()  # fmt: skip
    lab.build_image(vpn_image)

    res = updock(lab)

    assert res.returncode == 0, res.stderr
    assert {n: r["Updated"] for n, r in rows(res).items()} == {"vpn": "true", "app": "false"}
    vpn, app = inspect(lab, "vpn"), inspect(lab, "app")
    assert app["Id"] != old_app
    assert app["HostConfig"]["NetworkMode"] == f"container:{vpn['Id']}"
    assert netns(lab, "app") == netns(lab, "vpn")
    assert (lab.container_version("vpn"), lab.container_version("app")) == ("v2", "v1")
    assert names(lab) == ["app", "vpn"]


def test_a_container_that_cannot_follow_rolls_the_recreated_one_back(lab: Lab) -> None:
    """app's health check holds only beside the old vpn (it shares vpn's UTS namespace too, so
    its host name is vpn's): beside the new one it never gets healthy, so vpn is rolled back and
    app put back into the old vpn's namespace, both on their old containers."""
    vpn_image = lab.build_image(f"{lab.plain.host}/stuck/vpn:latest")
    app_image = lab.build_image(f"{lab.plain.host}/stuck/app:latest")
    vpn_id = loose(lab, "vpn", vpn_image)
    lab.pull(app_image)
    lab.podman(
        "run", "-d", "--name", "app", "--network", "container:vpn", "--uts", "container:vpn",
        f"--health-cmd=test $(cat /etc/hostname) = {vpn_id[:12]}",
        "--health-interval=1s", "--health-retries=1", "--health-start-period=1s",
        app_image,
    )  # fmt: skip
    app_before = inspect(lab, "app")
    lab.build_image(vpn_image)

    res = updock(lab, "--verify-timeout", "8")

    assert res.returncode == 125, res.stderr
    assert rows(res)["vpn"]["Updated"] == "rolled back"
    assert (
        "container app, which shares the network namespace of container vpn, could not join "
        "its new container"
    ) in res.stderr
    vpn, app = inspect(lab, "vpn"), inspect(lab, "app")
    assert (vpn["Id"], app["Id"]) == (vpn_id, app_before["Id"])
    assert (vpn["State"]["Running"], app["State"]["Running"]) == (True, True)
    assert app["HostConfig"]["NetworkMode"] == f"container:{vpn_id}"
    assert netns(lab, "app") == netns(lab, "vpn")
    assert lab.container_version("vpn") == "v1"
    assert names(lab) == ["app", "vpn"]


def both_with_new_images(lab: Lab, repo: str) -> None:
    """`vpn` and `app` in vpn's network namespace, both labelled, and a new image of each."""
    vpn_image = lab.build_image(f"{lab.plain.host}/{repo}/vpn:latest")
    app_image = lab.build_image(f"{lab.plain.host}/{repo}/app:latest")
    loose(lab, "vpn", vpn_image)
    lab.pull(app_image)
    lab.podman("run", "-d", "--name", "app", "--label", POLICY, "--network", "container:vpn",
               app_image)  # fmt: skip
    lab.build_image(vpn_image)
    lab.build_image(app_image)


def test_two_labelled_containers_in_one_namespace_are_both_updated(lab: Lab) -> None:
    """vpn and app (in vpn's namespace) both have new images: vpn is recreated first, then app
    on its own new image, joining the new vpn. podman refuses to remove vpn's old container
    while the old app still joins it: it goes once the old app went, in the same run."""
    both_with_new_images(lab, "both")

    res = updock(lab)

    assert res.returncode == 0, res.stderr
    assert {n: r["Updated"] for n, r in rows(res).items()} == {"vpn": "true", "app": "true"}
    vpn, app = inspect(lab, "vpn"), inspect(lab, "app")
    assert app["HostConfig"]["NetworkMode"] == f"container:{vpn['Id']}"
    assert (vpn["State"]["Running"], app["State"]["Running"]) == (True, True)
    assert netns(lab, "app") == netns(lab, "vpn")
    assert (lab.container_version("vpn"), lab.container_version("app")) == ("v2", "v2")
    assert names(lab) == ["app", "vpn"]  # no old container left aside


@pytest.mark.parametrize(("crash", "kind", "repaired"), FOLLOW_CRASHES)
def test_a_run_killed_while_a_container_follows_is_repaired_by_the_next(
    lab: Lab, crash: str, kind: ImageKind, repaired: str
) -> None:
    """Killed at any step of vpn's update or app's following: the next run repairs it (app
    back in the namespace of whichever vpn runs), then updates vpn again."""
    vpn_before, app_before = two_in_one_namespace(lab, f"crash-{crash.replace(':', '-')}")
    lab.build_image(vpn_before["ImageName"], kind)

    killed = lab.updock("auto-update", "--settle-time", "1", env={"UPDOCK_TEST_CRASH_AT": crash})
    assert killed.returncode != 0
    journal = json.loads((lab.root / "updock-state" / "state.json").read_text())
    assert [t["container"] for t in journal["units"]["container:vpn"]["tasks"]] == ["vpn", "app"]

    res = updock(lab)

    assert f"recovery: unit container:vpn: the interrupted update was {repaired}" in res.stderr
    assert json.loads((lab.root / "updock-state" / "state.json").read_text())["units"] == {}
    assert names(lab) == ["app", "vpn"]
    vpn, app = inspect(lab, "vpn"), inspect(lab, "app")
    assert (vpn["State"]["Running"], app["State"]["Running"]) == (True, True)
    assert app["HostConfig"]["NetworkMode"] == f"container:{vpn['Id']}"
    assert netns(lab, "app") == netns(lab, "vpn")
    assert app["Image"] == app_before["Image"]
    if kind is ImageKind.HEALTHY:
        assert res.returncode == 0, res.stderr
        assert lab.container_version("vpn") == "v2"
    else:
        assert rows(res)["vpn"]["Updated"] == "rolled back"
        assert (vpn["Id"], app["Id"]) == (vpn_before["Id"], app_before["Id"])


def test_an_old_container_left_aside_by_a_killed_run_is_removed_by_the_next(lab: Lab) -> None:
    """Killed once vpn's update was over but before app's (in vpn's namespace, with a new
    image of its own): vpn's old container, which podman could not remove while the old app
    joined it, is left aside; the next run repairs app, updates it, and removes that one."""
    both_with_new_images(lab, "sweep")

    killed = lab.updock(
        "auto-update", "--settle-time", "1", env={"UPDOCK_TEST_CRASH_AT": "step-stopping:app"}
    )
    assert killed.returncode != 0
    assert any(".updock-old-" in n for n in names(lab))  # vpn's old one, aside

    res = updock(lab, "--log-level", "warning")

    assert res.returncode == 0, res.stderr
    assert "an old container a killed run left aside" in res.stderr, (
        names(lab),
        res.stderr[-3000:],
    )
    assert names(lab) == ["app", "vpn"]
    vpn, app = inspect(lab, "vpn"), inspect(lab, "app")
    assert app["HostConfig"]["NetworkMode"] == f"container:{vpn['Id']}"
    assert netns(lab, "app") == netns(lab, "vpn")
    assert (lab.container_version("vpn"), lab.container_version("app")) == ("v2", "v2")
