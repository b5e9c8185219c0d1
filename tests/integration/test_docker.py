"""Docker containers updated by recreating them, against a real dockerd (the Docker lab)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from typing import Any

import pytest

from tests.integration.recreated import FOLLOW_CRASHES, same_configuration
from updock.core.reference import previous_tag
from updock.testing.docker_lab import DockerLab
from updock.testing.lab import DIES_AFTER_SECONDS, HEALTH_ARGS, ImageKind
from updock.testing.receiver import Receiver

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


def history(lab: DockerLab) -> list[dict[str, Any]]:
    """`updock history --format json` in the lab."""
    res = lab.updock("history", "--format", "json")
    assert res.returncode == 0, res.stderr
    found: list[dict[str, Any]] = json.loads(res.stdout)
    return found


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
    # The history (and so the notification and the metrics: one record) has the update.
    (entry,) = history(lab)
    assert (entry["engine"], entry["unit"], entry["container"], entry["outcome"]) == (
        "docker",
        "container:web",
        "web",
        "true",
    )
    assert entry["new_digest"].startswith("sha256:")
    assert entry["error"] == ""
    # Nothing new: nothing done.
    again = run_updock(lab)
    assert (again.returncode, rows(again)["web"]["Updated"]) == (0, "false"), again.stderr


#: Broken updates, each in its own way: (container name, the new image's kind, health check,
#: restart policy).
BROKEN = (
    ("exits", ImageKind.EXITS_AT_ONCE, False, "no"),
    ("noentry", ImageKind.MISSING_ENTRYPOINT, False, "no"),
    ("dies", ImageKind.DIES_AFTER_START, False, "no"),
    # dockerd restarts it in place: the same container, started again.
    ("restarted", ImageKind.DIES_AFTER_START, False, "unless-stopped"),
    ("unhealthy", ImageKind.UNHEALTHY, True, "no"),
)


def test_broken_images_are_rolled_back_to_the_old_containers(docker_lab: DockerLab) -> None:
    """One run, one container per broken image (they share no image name, so their recreates
    go side by side): each old container is back, on its image, under its name."""
    lab = docker_lab
    before: dict[str, tuple[str, str, str]] = {}  # name: (container ID, image ID, image name)
    for name, _, health, restart in BROKEN:
        image = lab.build_image(f"{lab.registry}/broken/{name}:latest")
        args = ["--network", "none", "--restart", restart]
        if health:
            args += [a.replace("--health-retries=2", "--health-retries=1") for a in HEALTH_ARGS]
            args = [a.replace("--health-start-period=8s", "--health-start-period=1s") for a in args]
        before[name] = (start(lab, name, image, *args), lab.image_id(image), image)
    for name, kind, _, _ in BROKEN:
        lab.build_image(before[name][2], kind)

    # Settled longer than the dying image lives.
    res = run_updock(lab, "--verify-timeout", "8", "--settle-time", str(DIES_AFTER_SECONDS + 1))

    assert res.returncode == 0, res.stderr
    assert {n: r["Updated"] for n, r in rows(res).items()} == dict.fromkeys(
        before, "rolled back"
    ), res.stderr
    # The very same containers run again, on their images, under their names.
    assert names(lab) == sorted(before)
    for name, (old_id, previous, image) in before.items():
        back: Any = lab.inspect(name)
        assert (name, back["Id"], back["Image"], back["State"]["Running"]) == (
            name,
            old_id,
            previous,
            True,
        )
        assert (name, lab.container_version(name)) == (name, "v1")
        # The image name is back on the previous image (a later `docker run` gets the good one).
        assert (name, lab.image_id(image)) == (name, previous)
    # The history says so, with what was seen of each new container.
    entries = {e["container"]: e for e in history(lab)}
    assert {n: (e["engine"], e["unit"], e["outcome"]) for n, e in entries.items()} == {
        n: ("docker", f"container:{n}", "rolled back") for n in before
    }
    for entry in entries.values():
        assert entry["error"], entry


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


#: Fields of `docker inspect` that differ between any two containers (IDs, times, paths made
#: from the ID, run state), or that the image defines.
_VOLATILE = ("Id", "Created", "State", "Image", "ResolvConfPath", "HostnamePath", "HostsPath",
             "LogPath", "RestartCount", "GraphDriver", "SizeRw", "SizeRootFs", "ExecIDs",
             "Path", "Args", "MountLabel", "ProcessLabel", "AppArmorProfile")  # fmt: skip


def comparable(inspected: Any) -> Any:
    """A container's inspected configuration without what differs between any two containers
    (`_VOLATILE`, the endpoint IDs and the addresses docker chose)."""
    c = json.loads(json.dumps(inspected))
    for key in _VOLATILE:
        c.pop(key, None)
    short = inspected["Id"][:12]
    if c["Config"].get("Hostname") == short:
        c["Config"].pop("Hostname")
    c["Mounts"] = sorted(c.get("Mounts") or [], key=lambda m: m["Destination"])
    # The daemon's default ulimits are stored in no fixed order (a Go map's).
    c["HostConfig"]["Ulimits"] = sorted(
        c["HostConfig"].get("Ulimits") or [], key=lambda u: u["Name"]
    )
    # Anonymous volumes are bound again by name (their data stays): the same mounts, which
    # docker then shows with mode "z" (a named bind's default) instead of "".
    for mount in c["Mounts"]:
        if mount["Type"] == "volume":
            mount.pop("Mode", None)
    c["HostConfig"]["Binds"] = [
        b for b in c["HostConfig"].get("Binds") or [] if not re.match(r"[0-9a-f]{64}:", b)
    ]
    settings = c.pop("NetworkSettings")
    c["Networks"] = {}
    for name, net in (settings.get("Networks") or {}).items():
        c["Networks"][name] = {
            "IPAMConfig": net.get("IPAMConfig"),
            "Aliases": sorted(a for a in net.get("Aliases") or [] if a != short),
            "Links": net.get("Links"),
        }
    c["Ports"] = settings.get("Ports")
    return c


def test_recreating_keeps_every_setting_and_takes_the_new_images_defaults(
    docker_lab: DockerLab,
) -> None:
    """One container with many settings at once: after the update its inspected configuration
    equals the old one but for what the image defines (its env, workdir and label)."""
    lab = docker_lab
    image = f"{lab.registry}/matrix/full:latest"
    changes = ["ENV IMG_VAR=old", "WORKDIR /old", "VOLUME /imgvol"]
    lab.build_image(image, changes=changes)
    lab.docker("pull", image)
    bind = lab.root / "tmp" / "bind"
    bind.mkdir(parents=True, exist_ok=True)
    lab.docker("network", "create", "--ipv6", "--subnet", "172.30.0.0/24",
               "--subnet", "fd00:30::/64", "net1")  # fmt: skip
    lab.docker("network", "create", "--subnet", "172.31.0.0/24", "net2")
    lab.docker("volume", "create", "named")
    lab.docker(
        "create", "--name", "full", "--label", POLICY, "--label", "custom=yes",
        "--restart", "unless-stopped",
        "-v", f"{bind}:/bind", "-v", "named:/named", "-v", "/anon",
        "--tmpfs", "/tmp:size=1m", "--tmpfs", "/scratch",
        "--device", "/dev/null:/dev/xnull",
        "--cap-add", "NET_ADMIN", "--cap-drop", "MKNOD",
        "--memory", "64m", "--cpus", "0.5", "--pids-limit", "100",
        "--ulimit", "nofile=512:512",
        "--log-driver", "json-file", "--log-opt", "max-size=1m",
        "-p", "127.0.0.1:18080:80", "--expose", "81",
        "--network", "net1", "--ip", "172.30.0.10", "--ip6", "fd00:30::10",
        "--network-alias", "first-alias",
        "--dns", "127.0.0.2", "--dns-search", "lab.test", "--dns-option", "ndots:2",
        "--add-host", "extra.test:127.0.0.3",
        "--hostname", "full-host", "--mac-address", "02:42:ac:1e:00:99",
        "--init", "--read-only", "--security-opt", "no-new-privileges",
        "--health-cmd", "test -f /tmp/ready", "--health-interval", "1s",
        "--health-retries", "2", "--stop-timeout", "3",
        "-e", "USER_VAR=mine",
        image,
    )  # fmt: skip
    lab.docker("network", "connect", "--ip", "172.31.0.20", "--alias", "second", "net2", "full")
    lab.docker("start", "full")
    lab.docker("exec", "full", "sh", "-c", "echo kept > /anon/data; echo kept > /imgvol/data")
    before: Any = lab.inspect("full")
    lab.build_image(image, changes=["ENV IMG_VAR=new", "WORKDIR /new", "VOLUME /imgvol"])

    res = run_updock(lab)

    assert res.returncode == 0, res.stderr
    assert rows(res)["full"]["Updated"] == "true", res.stderr
    after: Any = lab.inspect("full")
    assert after["Id"] != before["Id"]
    # What the image defines follows the new image...
    env = after["Config"]["Env"]
    assert "IMG_VAR=new" in env
    assert "USER_VAR=mine" in env
    assert after["Config"]["WorkingDir"] == "/new"
    assert after["Config"]["Labels"]["updock.lab.version"] == "v2"
    # ... and everything else is as it was, down to the addresses and the volumes' data.
    old, new = comparable(before), comparable(after)
    for c in (old, new):
        c["Config"]["Env"] = [e for e in c["Config"]["Env"] if not e.startswith("IMG_VAR=")]
        c["Config"].pop("WorkingDir")
        c["Config"]["Labels"].pop("updock.lab.version")
    same_configuration(old, new)
    assert lab.docker("exec", "full", "cat", "/anon/data", "/imgvol/data").stdout.split() == [
        "kept",
        "kept",
    ]
    assert after["NetworkSettings"]["Networks"]["net1"]["IPAddress"] == "172.30.0.10"
    assert after["NetworkSettings"]["Networks"]["net1"]["GlobalIPv6Address"] == "fd00:30::10"
    assert after["NetworkSettings"]["Networks"]["net2"]["IPAddress"] == "172.31.0.20"
    assert after["NetworkSettings"]["Networks"]["net1"]["MacAddress"] == "02:42:ac:1e:00:99"


def test_generated_hostname_and_mac_are_not_carried_over(docker_lab: DockerLab) -> None:
    lab = docker_lab
    image = lab.build_image(f"{lab.registry}/matrix/plain:latest")
    start(lab, "plain", image)
    before: Any = lab.inspect("plain")
    lab.build_image(image)
    res = run_updock(lab)
    assert rows(res)["plain"]["Updated"] == "true", res.stderr
    after: Any = lab.inspect("plain")
    assert after["Config"]["Hostname"] == after["Id"][:12]  # docker's own, not the old one
    assert before["Config"]["Hostname"] == before["Id"][:12]
    assert after["Config"].get("MacAddress", "") == ""  # docker's own, chosen afresh


@pytest.mark.parametrize("mode", ["host", "none"])
def test_network_modes_are_kept(docker_lab: DockerLab, mode: str) -> None:
    lab = docker_lab
    image = lab.build_image(f"{lab.registry}/matrix/mode-{mode}:latest")
    start(lab, "moded", image, "--network", mode)
    lab.build_image(image)
    res = run_updock(lab)
    assert rows(res)["moded"]["Updated"] == "true", res.stderr
    after: Any = lab.inspect("moded")
    assert after["HostConfig"]["NetworkMode"] == mode
    assert list(after["NetworkSettings"]["Networks"]) == [mode]


def test_links_are_kept(docker_lab: DockerLab) -> None:
    lab = docker_lab
    db = lab.build_image(f"{lab.registry}/matrix/db:latest")
    lab.docker("pull", db)
    lab.docker("run", "-d", "--name", "db", db)
    image = lab.build_image(f"{lab.registry}/matrix/linked:latest")
    start(lab, "linked", image, "--link", "db:dbalias")
    before: Any = lab.inspect("linked")
    lab.build_image(image)
    res = run_updock(lab)
    assert rows(res)["linked"]["Updated"] == "true", res.stderr
    after: Any = lab.inspect("linked")
    assert after["HostConfig"]["Links"] == before["HostConfig"]["Links"] == ["/db:/linked/dbalias"]
    hosts = lab.docker("exec", "linked", "cat", "/etc/hosts").stdout
    assert "dbalias" in hosts


def test_compose_containers_keep_compose_labels(docker_lab: DockerLab) -> None:
    """A container docker-compose (Debian's v1) created: reported as compose:<project>/<service>,
    recreated with every compose label, and a later `docker-compose up` keeps it on the new
    image."""
    lab = docker_lab
    image = lab.build_image(f"{lab.registry}/compose/web:latest")
    folder = lab.root / "tmp" / "shop"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "docker-compose.yml").write_text(
        "version: '2.4'\n"
        "services:\n"
        "  web:\n"
        f"    image: {image}\n"
        "    network_mode: none\n"
        "    labels:\n"
        "      io.containers.autoupdate: registry\n"
    )
    compose = ["docker-compose", "-p", "shop", "-f", str(folder / "docker-compose.yml")]
    lab.run([*compose, "up", "-d"], netns=True)
    before: Any = lab.inspect("shop_web_1")
    lab.build_image(image)

    res = run_updock(lab)

    assert res.returncode == 0, res.stderr
    row = rows(res)["shop_web_1"]
    assert (row["Unit"], row["Updated"]) == ("compose:shop/web", "true")
    after: Any = lab.inspect("shop_web_1")
    compose_labels = {
        k: v for k, v in before["Config"]["Labels"].items() if k.startswith("com.docker.compose")
    }
    assert {"com.docker.compose.project", "com.docker.compose.service",
            "com.docker.compose.config-hash"} <= set(compose_labels)  # fmt: skip
    assert {k: after["Config"]["Labels"].get(k) for k in compose_labels} == compose_labels
    assert lab.container_version("shop_web_1") == "v2"
    # compose still owns it: `up` finds it as the service's one container, on the new image.
    # (compose v1's config hash covers the image's ID, so v1 recreates it once, on the same
    # image; compose v2 compares `com.docker.compose.image`, which updock moves to the new one.)
    lab.run([*compose, "up", "-d"], netns=True)
    assert lab.container_version("shop_web_1") == "v2"
    assert len(lab.run([*compose, "ps", "-q"], netns=True).stdout.split()) == 1
    assert names(lab) == ["shop_web_1"]


def test_a_container_sharing_anothers_network_follows_it(docker_lab: DockerLab) -> None:
    """`app` runs in `vpn`'s network namespace: `vpn` is recreated (and verified) first, then
    `app`, pointed at the new `vpn`."""
    lab = docker_lab
    vpn_image = lab.build_image(f"{lab.registry}/deps/vpn:latest")
    app_image = lab.build_image(f"{lab.registry}/deps/app:latest")
    start(lab, "vpn", vpn_image)
    start(lab, "app", app_image, "--network", "container:vpn")
    lab.build_image(vpn_image)
    lab.build_image(app_image)

    res = lab.updock(
        "auto-update", "--engine", "docker", "--settle-time", "1", "--log-level", "info"
    )

    assert res.returncode == 0, res.stderr
    vpn: Any = lab.inspect("vpn")
    app: Any = lab.inspect("app")
    assert app["HostConfig"]["NetworkMode"] == f"container:{vpn['Id']}"
    assert (lab.container_version("vpn"), lab.container_version("app")) == ("v2", "v2")
    # vpn was verified before app was touched.
    log = res.stderr
    assert log.index("unit container:vpn: updated") < log.index(
        "unit container:app: old container stopped"
    )


@pytest.mark.parametrize(
    ("crash", "kind", "repaired"),
    [
        ("pull", ImageKind.HEALTHY, "undone before its restart"),
        ("step-stopping", ImageKind.HEALTHY, "rolled back"),
        ("step-renaming", ImageKind.HEALTHY, "rolled back"),
        ("step-creating", ImageKind.HEALTHY, "rolled back"),
        ("step-starting", ImageKind.HEALTHY, "verified and completed"),
        ("step-verified", ImageKind.HEALTHY, "verified and completed"),
        ("step-restoring", ImageKind.EXITS_AT_ONCE, "rolled back"),
    ],
)
def test_a_run_killed_at_any_step_is_repaired_by_the_next(
    docker_lab: DockerLab, crash: str, kind: ImageKind, repaired: str
) -> None:
    lab = docker_lab
    image = lab.build_image(f"{lab.registry}/crash/{crash}:latest")
    old_id = start(lab, "web", image)
    lab.build_image(image, kind)

    killed = lab.updock(
        "auto-update", "--engine", "docker", "--settle-time", "1",
        env={"UPDOCK_TEST_CRASH_AT": crash},
    )  # fmt: skip
    assert killed.returncode != 0
    journal = json.loads((lab.root / "updock-state" / "state.json").read_text())
    assert list(journal["units"]) == ["container:web"]

    res = run_updock(lab)

    assert f"recovery: unit container:web: the interrupted update was {repaired}" in res.stderr
    assert json.loads((lab.root / "updock-state" / "state.json").read_text())["units"] == {}
    # One container named web, nothing left aside, on the image the run ended with.
    assert names(lab) == ["web"]
    web: Any = lab.inspect("web")
    assert web["State"]["Running"]
    if kind is ImageKind.HEALTHY:
        assert res.returncode == 0, res.stderr
        assert lab.container_version("web") == "v2"
    else:  # the repair put the old container back, and the update was rolled back again
        assert rows(res)["web"]["Updated"] == "rolled back"
        assert (web["Id"], lab.container_version("web")) == (old_id, "v1")


def test_updock_rollback_puts_a_recreated_container_back_on_its_previous_image(
    docker_lab: DockerLab,
) -> None:
    lab = docker_lab
    image = lab.build_image(f"{lab.registry}/back/web:latest")
    start(lab, "web", image)
    previous = lab.image_id(image)
    lab.build_image(image)
    assert rows(run_updock(lab))["web"]["Updated"] == "true"

    res = lab.updock("rollback", "web", "--format", "json", "--settle-time", "1")

    assert res.returncode == 0, res.stderr
    assert rows(res)["web"]["Updated"] == "rolled back"
    assert lab.container_version("web") == "v1"
    assert lab.inspect("web")["Image"] == previous
    assert names(lab) == ["web"]
    # It sticks: the next run leaves it on the image it went back to.
    again = run_updock(lab)
    assert (again.returncode, rows(again)["web"]["Updated"]) == (0, "false"), again.stderr


def test_updock_previous_lists_docker_containers_with_their_engine(docker_lab: DockerLab) -> None:
    lab = docker_lab
    image = lab.build_image(f"{lab.registry}/prev/web:latest")
    start(lab, "web", image)
    previous = lab.image_id(image)
    lab.build_image(image)
    assert rows(run_updock(lab))["web"]["Updated"] == "true"

    listing = lab.updock("previous", "--format", "json")

    assert listing.returncode == 0, listing.stderr
    found = {(r["Engine"], r["ContainerName"]): r for r in json.loads(listing.stdout)}
    web = found[("docker", "web")]
    assert (web["Unit"], web["Image"], web["Previous"]) == (
        "container:web",
        image,
        str(previous_tag("web")),
    )
    assert web["PreviousImageID"] == previous
    table = lab.updock("previous")
    assert table.returncode == 0, table.stderr
    header, *lines = table.stdout.splitlines()
    assert header.split() == ["UNIT", "CONTAINER", "IMAGE", "PREVIOUS", "PREVIOUS", "ID", "ENGINE"]
    assert any(line.split()[:2] == ["container:web", "web"] and line.split()[-1] == "docker"
               for line in lines), table.stdout  # fmt: skip


def test_a_notification_names_each_docker_container_its_engine_and_outcome(
    docker_lab: DockerLab,
) -> None:
    """A real webhook receiver on the lab's own 127.0.0.1 (where updock runs) gets one message
    for a run that updated one container and rolled another back."""
    lab = docker_lab
    good = lab.build_image(f"{lab.registry}/notify/good:latest")
    bad = lab.build_image(f"{lab.registry}/notify/bad:latest")
    start(lab, "good", good, "--network", "none")
    start(lab, "bad", bad, "--network", "none")
    lab.build_image(good)
    lab.build_image(bad, ImageKind.EXITS_AT_ONCE)

    with Receiver(netns=lab.netns) as receiver:
        res = run_updock(lab, "--notify", f"{receiver.url}/hook")
        assert res.returncode == 0, res.stderr
        assert {n: r["Updated"] for n, r in rows(res).items()} == {
            "good": "true",
            "bad": "rolled back",
        }
        (got,) = receiver.wait(1)

    assert (got.method, got.path) == ("POST", "/hook")
    doc: Any = got.json()
    assert doc["title"].endswith(": 1 updated, 1 rolled back")
    assert doc["engine"] == "docker"
    found = {c["container"]: c for c in doc["containers"]}
    assert {n: (c["engine"], c["unit"], c["status"]) for n, c in found.items()} == {
        "good": ("docker", "container:good", "true"),
        "bad": ("docker", "container:bad", "rolled back"),
    }
    assert found["good"]["error"] == ""
    assert found["bad"]["error"]  # what was seen of the new container
    assert found["bad"]["old_digest"] != found["bad"]["new_digest"]
    assert "bad (container:bad): rolled back" in doc["body"]


def netns(lab: DockerLab, name: str) -> int:
    """The network namespace (its inode) the container's process runs in."""
    pid = lab.docker("inspect", "--format", "{{.State.Pid}}", name).stdout.strip()
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def mac(lab: DockerLab, name: str) -> str:
    """The address of eth0 as the container sees it."""
    return lab.docker("exec", name, "cat", "/sys/class/net/eth0/address").stdout.strip()


def two_in_one_namespace(lab: DockerLab, repo: str, *follower_args: str) -> tuple[Any, Any]:
    """`vpn` (labelled, on the default bridge) and `app` (no label, its own image) in vpn's
    network namespace; both inspected."""
    vpn_image = lab.build_image(f"{lab.registry}/{repo}/vpn:latest")
    app_image = lab.build_image(f"{lab.registry}/{repo}/app:latest")
    start(lab, "vpn", vpn_image)
    lab.docker("pull", app_image)
    lab.docker("run", "-d", "--name", "app", "--network", "container:vpn", *follower_args,
               app_image)  # fmt: skip
    assert netns(lab, "app") == netns(lab, "vpn")
    return lab.inspect("vpn"), lab.inspect("app")


def test_a_container_without_an_update_follows_the_recreated_one_into_its_namespace(
    docker_lab: DockerLab,
) -> None:
    """`app` has no label: once `vpn` verified on its new image, app is recreated on its own
    image, in the new vpn's namespace, with its configuration otherwise unchanged."""
    lab = docker_lab
    vpn_before, app_before = two_in_one_namespace(lab, "follow")
    lab.build_image(vpn_before["Config"]["Image"])

    res = run_updock(lab, "--log-level", "warning")

    assert res.returncode == 0, res.stderr
    assert {n: r["Updated"] for n, r in rows(res).items()} == {"vpn": "true"}
    vpn: Any = lab.inspect("vpn")
    app: Any = lab.inspect("app")
    assert vpn["Id"] != vpn_before["Id"]
    assert lab.container_version("vpn") == "v2"
    # app runs again, in the new vpn's namespace: it sees vpn's interfaces.
    assert app["HostConfig"]["NetworkMode"] == f"container:{vpn['Id']}"
    assert app["State"]["Running"]
    assert netns(lab, "app") == netns(lab, "vpn")
    assert mac(lab, "app") == mac(lab, "vpn")
    assert (
        lab.docker("exec", "app", "cat", "/etc/hostname").stdout
        == lab.docker("exec", "vpn", "cat", "/etc/hostname").stdout
    )
    # A new container on the same image, configured as before but for the namespace's owner.
    assert app["Id"] != app_before["Id"]
    assert app["Image"] == app_before["Image"]
    assert lab.container_version("app") == "v1"
    old, new = comparable(app_before), comparable(app)
    for c in (old, new):  # the namespace's owner, and its hostname, which app shows
        c["HostConfig"].pop("NetworkMode")
        c["Config"].pop("Hostname")
    same_configuration(old, new)
    assert names(lab) == ["app", "vpn"]  # both old containers removed
    assert (
        "container app shares the network namespace of container vpn, which was recreated: app "
        "was recreated on its own image"
    ) in res.stderr


def test_a_rolled_back_container_takes_the_others_in_its_namespace_back(
    docker_lab: DockerLab,
) -> None:
    """vpn's new image fails: the old vpn runs again (in a namespace of its own, made at its
    start), and app, untouched, is restarted to join it."""
    lab = docker_lab
    vpn_before, app_before = two_in_one_namespace(lab, "back")
    lab.build_image(vpn_before["Config"]["Image"], ImageKind.EXITS_AT_ONCE)

    res = run_updock(lab, "--log-level", "warning")

    assert res.returncode == 0, res.stderr
    assert rows(res)["vpn"]["Updated"] == "rolled back"
    vpn: Any = lab.inspect("vpn")
    app: Any = lab.inspect("app")
    assert vpn["Id"] == vpn_before["Id"]
    assert app["Id"] == app_before["Id"]
    assert app["HostConfig"]["NetworkMode"] == f"container:{vpn['Id']}"
    assert app["State"]["Running"]
    assert netns(lab, "app") == netns(lab, "vpn")
    assert mac(lab, "app") == mac(lab, "vpn")
    assert names(lab) == ["app", "vpn"]
    assert "vpn, which was rolled back: app was put back and restarted in it" in res.stderr


def test_a_container_that_cannot_follow_rolls_the_recreated_one_back(
    docker_lab: DockerLab,
) -> None:
    """app's health check holds only in the old vpn's namespace (its hostname is vpn's): in
    the new one it never gets healthy, so vpn is rolled back and app put back into the old
    vpn's namespace, both on their old containers."""
    lab = docker_lab
    vpn_image = lab.build_image(f"{lab.registry}/stuck/vpn:latest")
    start(lab, "vpn", vpn_image)
    vpn_config: Any = lab.inspect("vpn")["Config"]
    short = vpn_config["Hostname"]
    vpn_before, app_before = (
        lab.inspect("vpn"),
        two_in_one_namespace_app(lab, "stuck", short),
    )
    lab.build_image(vpn_image)

    res = run_updock(lab, "--verify-timeout", "8")

    assert res.returncode == 125, res.stderr
    assert rows(res)["vpn"]["Updated"] == "rolled back"
    assert (
        "container app, which shares the network namespace of container vpn, could not join "
        "its new container"
    ) in res.stderr
    vpn: Any = lab.inspect("vpn")
    app: Any = lab.inspect("app")
    assert (vpn["Id"], app["Id"]) == (vpn_before["Id"], app_before["Id"])
    assert app["State"]["Running"]
    assert netns(lab, "app") == netns(lab, "vpn")
    assert lab.container_version("vpn") == "v1"
    assert names(lab) == ["app", "vpn"]
    (entry,) = history(lab)
    assert (entry["container"], entry["outcome"]) == ("vpn", "rolled back")
    assert "container app" in entry["error"]


def two_in_one_namespace_app(lab: DockerLab, repo: str, hostname: str) -> Any:
    """`app` (no label) in vpn's namespace, healthy only while its hostname is `hostname`."""
    app_image = lab.build_image(f"{lab.registry}/{repo}/app:latest")
    lab.docker("pull", app_image)
    lab.docker(
        "run", "-d", "--name", "app", "--network", "container:vpn",
        "--health-cmd", f'test "$(cat /etc/hostname)" = {hostname}',
        "--health-interval", "1s", "--health-retries", "1", "--health-start-period", "1s",
        app_image,
    )  # fmt: skip
    return lab.inspect("app")


def test_a_dry_run_leaves_the_others_in_the_namespace_alone(docker_lab: DockerLab) -> None:
    lab = docker_lab
    vpn_before, app_before = two_in_one_namespace(lab, "dry")
    lab.build_image(vpn_before["Config"]["Image"])
    space = netns(lab, "app")

    res = run_updock(lab, "--dry-run")

    assert res.returncode == 0, res.stderr
    assert {n: r["Updated"] for n, r in rows(res).items()} == {"vpn": "pending"}
    assert lab.inspect("app")["Id"] == app_before["Id"]
    assert lab.inspect("vpn")["Id"] == vpn_before["Id"]
    assert netns(lab, "app") == netns(lab, "vpn") == space


@pytest.mark.parametrize(("crash", "kind", "repaired"), FOLLOW_CRASHES)
def test_a_run_killed_while_a_container_follows_is_repaired_by_the_next(
    docker_lab: DockerLab, crash: str, kind: ImageKind, repaired: str
) -> None:
    """Killed at any step of vpn's update or app's following: the next run repairs it (app
    back in the namespace of whichever vpn runs), then updates vpn again."""
    lab = docker_lab
    vpn_before, app_before = two_in_one_namespace(lab, f"crash-{crash.replace(':', '-')}")
    lab.build_image(vpn_before["Config"]["Image"], kind)

    killed = lab.updock(
        "auto-update", "--engine", "docker", "--settle-time", "1",
        env={"UPDOCK_TEST_CRASH_AT": crash},
    )  # fmt: skip
    assert killed.returncode != 0
    journal = json.loads((lab.root / "updock-state" / "state.json").read_text())
    assert [t["container"] for t in journal["units"]["container:vpn"]["tasks"]] == ["vpn", "app"]

    res = run_updock(lab)

    assert f"recovery: unit container:vpn: the interrupted update was {repaired}" in res.stderr
    assert json.loads((lab.root / "updock-state" / "state.json").read_text())["units"] == {}
    assert names(lab) == ["app", "vpn"]
    vpn: Any = lab.inspect("vpn")
    app: Any = lab.inspect("app")
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


def test_a_labelled_container_without_a_new_image_follows_too(docker_lab: DockerLab) -> None:
    """app has a label of its own but its image has no update: it follows vpn as an unlabelled
    one does, and its row says it was not updated."""
    lab = docker_lab
    vpn_image = lab.build_image(f"{lab.registry}/labelled/vpn:latest")
    app_image = lab.build_image(f"{lab.registry}/labelled/app:latest")
    start(lab, "vpn", vpn_image)
    old_app = start(lab, "app", app_image, "--network", "container:vpn")
    lab.build_image(vpn_image)

    res = run_updock(lab)

    assert res.returncode == 0, res.stderr
    assert {n: r["Updated"] for n, r in rows(res).items()} == {"vpn": "true", "app": "false"}
    vpn: Any = lab.inspect("vpn")
    app: Any = lab.inspect("app")
    assert app["Id"] != old_app
    assert app["HostConfig"]["NetworkMode"] == f"container:{vpn['Id']}"
    assert netns(lab, "app") == netns(lab, "vpn")
    assert lab.container_version("app") == "v1"
    assert names(lab) == ["app", "vpn"]


def test_updock_rollback_takes_the_containers_in_the_namespace_along(
    docker_lab: DockerLab,
) -> None:
    lab = docker_lab
    vpn_before, _ = two_in_one_namespace(lab, "manual")
    lab.build_image(vpn_before["Config"]["Image"])
    assert rows(run_updock(lab))["vpn"]["Updated"] == "true"

    res = lab.updock("rollback", "vpn", "--format", "json", "--settle-time", "1")

    assert res.returncode == 0, res.stderr
    assert rows(res)["vpn"]["Updated"] == "rolled back"
    assert lab.container_version("vpn") == "v1"
    vpn: Any = lab.inspect("vpn")
    app: Any = lab.inspect("app")
    assert app["HostConfig"]["NetworkMode"] == f"container:{vpn['Id']}"
    assert netns(lab, "app") == netns(lab, "vpn")
    assert names(lab) == ["app", "vpn"]


def app_broken_in_vpns_namespace(lab: DockerLab, repo: str) -> tuple[str, Any]:
    """`vpn` and `app` (in vpn's namespace), both labelled; vpn's update is good, app's exits
    at once. app's image name, and app inspected."""
    vpn_image = lab.build_image(f"{lab.registry}/{repo}/vpn:latest")
    app_image = lab.build_image(f"{lab.registry}/{repo}/app:latest")
    start(lab, "vpn", vpn_image)
    start(lab, "app", app_image, "--network", "container:vpn")
    app_before: Any = lab.inspect("app")
    lab.build_image(vpn_image)
    lab.build_image(app_image, ImageKind.EXITS_AT_ONCE)
    return app_image, app_before


def test_a_failed_update_in_a_recreated_containers_namespace_is_rolled_back_into_it(
    docker_lab: DockerLab,
) -> None:
    """vpn is updated (its old container removed); app's own new image fails after: app's old
    container cannot join the old vpn's namespace any more, so it is put back on its image and
    configuration in the new vpn's."""
    lab = docker_lab
    app_image, app_before = app_broken_in_vpns_namespace(lab, "both")

    res = run_updock(lab)

    assert {n: r["Updated"] for n, r in rows(res).items()} == {
        "vpn": "true",
        "app": "rolled back",
    }, res.stderr
    assert res.returncode == 0, res.stderr
    vpn: Any = lab.inspect("vpn")
    app: Any = lab.inspect("app")
    assert app["State"]["Running"]
    assert app["Image"] == app_before["Image"]
    assert lab.container_version("app") == "v1"
    assert app["HostConfig"]["NetworkMode"] == f"container:{vpn['Id']}"
    assert netns(lab, "app") == netns(lab, "vpn")
    assert names(lab) == ["app", "vpn"]
    assert app["Config"]["Image"] == app_image  # by its name: updated again by the next run
    again = run_updock(lab)
    assert again.returncode == 0, again.stderr
    assert rows(again)["app"]["Updated"] == "rolled back"


@pytest.mark.parametrize("crash", ["step-starting:app", "step-restoring:app"])
def test_a_repair_puts_a_container_back_into_a_recreated_containers_namespace(
    docker_lab: DockerLab, crash: str
) -> None:
    """Killed while app's own (broken) update ran, after vpn's verified: the repair puts app
    back on its image, in the new vpn's namespace."""
    lab = docker_lab
    repo = f"repair-{crash.removeprefix('step-').removesuffix(':app')}"
    app_image, app_before = app_broken_in_vpns_namespace(lab, repo)
    killed = lab.updock(
        "auto-update", "--engine", "docker", "--settle-time", "1",
        env={"UPDOCK_TEST_CRASH_AT": crash},
    )  # fmt: skip
    assert killed.returncode != 0

    res = run_updock(lab)

    assert "recovery: unit container:app: the interrupted update was rolled back" in res.stderr
    assert res.returncode == 0, res.stderr
    assert rows(res)["app"]["Updated"] == "rolled back"  # tried again, and rolled back again
    vpn: Any = lab.inspect("vpn")
    app: Any = lab.inspect("app")
    assert app["State"]["Running"]
    assert (app["Image"], app["Config"]["Image"]) == (app_before["Image"], app_image)
    assert app["HostConfig"]["NetworkMode"] == f"container:{vpn['Id']}"
    assert netns(lab, "app") == netns(lab, "vpn")
    assert names(lab) == ["app", "vpn"]
