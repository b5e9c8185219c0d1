"""Rootless: `updock auto-update` run by a user, on the user's own podman and systemd.

The lab's user `u1` has its own systemd user manager (`lab-user@1000.service`, the lab's
stand-in for `user@.service`), session bus and rootless podman (newuidmap, native overlay), and
defines its services as Quadlet files in `~/.config/containers/systemd/`. updock run as that user
must restart units through the user manager (its private socket), keep its state in the user's
folders, and see nothing of root's containers, as root's run sees nothing of the user's.

These run on podman 4.4 and later (trixie's 5.4.2): rootless services there are Quadlet files.
podman 4.3.1 (bookworm) has no Quadlet and, without a storage.conf of its own, gives a user vfs
storage (every layer copied per container): its rootless set-up would need hand-written units
and test nothing of updock that these do not (updock's side, the user bus, the state folder and
the installed units, does not depend on podman's version); and CI on Debian 12 runs the host and
trixie flavours only.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.integration.conformance import FAST_VERIFY, Outcome, record, run_updock, without_ids
from tests.integration.test_quadlet import container_file, quadlet_lab
from updock.testing.lab import Lab
from updock.testing.rootfs import USER_HOME, RootfsLab

pytestmark = pytest.mark.lab

STATE = f"{USER_HOME}/.local/state/updock"


def _user_service(lab: RootfsLab, name: str, image: str) -> str:
    """A rootless Quadlet service of `u1` on `image` (pulled into the user's store), started."""
    lab.user_run(["podman", "pull", "-q", image])
    unit = lab.write_quadlet(f"{name}.container", container_file(image), user=True)
    lab.user_systemctl("start", unit)
    return unit


def _outcome(res: subprocess.CompletedProcess[str], tool: str, args: tuple[str, ...]) -> Outcome:
    return record(Outcome(tool, res.returncode, res.stdout, res.stderr, args))


def user_updock(lab: RootfsLab, *args: str, env: dict[str, str] | None = None) -> Outcome:
    """`updock auto-update ARGS` run by the lab's user."""
    cmd = [*lab.updock_command(), "auto-update", *args]
    res = lab.user_run(cmd, check=False, env={**FAST_VERIFY, **(env or {})})
    return _outcome(res, "updock", args)


def user_podman(lab: RootfsLab, *args: str) -> Outcome:
    """The user's own `podman auto-update ARGS`."""
    return _outcome(lab.user_run(["podman", "auto-update", *args], check=False), "podman", args)


def user_version(lab: RootfsLab, container: str) -> str:
    """/version in the user's running container."""
    return lab.user_run(["podman", "exec", container, "cat", "/version"]).stdout.strip()


def test_a_users_run_restarts_through_its_user_manager_and_keeps_state_at_home(lab: Lab) -> None:
    qlab = quadlet_lab(lab)
    image = qlab.build_image(f"{qlab.plain.host}/rootless/app:latest", version="v1")
    unit = _user_service(qlab, "rapp", image)
    qlab.build_image(image, version="v2")

    # No session bus: only the user manager's private socket ($XDG_RUNTIME_DIR/systemd/private)
    # can restart the unit.
    no_bus = {"DBUS_SESSION_BUS_ADDRESS": "unix:path=/nonexistent"}
    updock = user_updock(qlab, "--format", "json", env=no_bus)

    assert updock.returncode == 0, updock.stderr
    assert [(r["Unit"], r["ContainerName"], r["Updated"]) for r in updock.rows()] == [
        (unit, "systemd-rapp", "true")
    ]
    assert user_version(qlab, "systemd-rapp") == "v2"
    assert qlab.user_systemctl("is-active", unit).stdout.strip() == "active"
    # Its state is the user's, in the user's folder (and root's is untouched).
    state = qlab.user_run(["stat", "-c", "%U %a", STATE, f"{STATE}/state.json"]).stdout.split("\n")
    assert state[:2] == ["u1 700", "u1 600"]
    assert json.loads(qlab.user_run(["cat", f"{STATE}/state.json"]).stdout)["units"] == {}
    assert not (qlab.root / "updock-state" / "state.json").exists()

    # The user's own podman agrees on the next version.
    qlab.build_image(image, version="v3")
    podman = user_podman(qlab, "--format", "json")
    assert (podman.returncode, without_ids(podman.rows())) == (0, without_ids(updock.rows()))
    assert user_version(qlab, "systemd-rapp") == "v3"


def test_install_units_user_gives_a_timer_whose_service_updates(lab: Lab) -> None:
    qlab = quadlet_lab(lab)
    image = qlab.build_image(f"{qlab.plain.host}/rootless/timed:latest", version="v1")
    unit = _user_service(qlab, "rtimed", image)
    qlab.build_image(image, version="v2")

    installed = qlab.user_run([*qlab.updock_command(), "install-units", "--user"], check=False)

    assert installed.returncode == 0, installed.stderr
    assert f"{USER_HOME}/.config/systemd/user/updock-auto-update.timer" in installed.stdout
    timer = "updock-auto-update.timer"
    assert qlab.user_systemctl("is-enabled", timer).stdout.strip() == "enabled"
    assert qlab.user_systemctl("is-active", timer).stdout.strip() == "active"
    # Started by hand, as a user would try it (a oneshot: `start` returns once it is over).
    qlab.user_systemctl("start", "updock-auto-update.service")
    show = qlab.user_systemctl(
        "show", "updock-auto-update.service", "-p", "Result", "-p", "ExecMainStatus"
    ).stdout.split()
    assert show == ["Result=success", "ExecMainStatus=0"]
    assert user_version(qlab, "systemd-rtimed") == "v2"
    assert qlab.user_systemctl("is-active", unit).stdout.strip() == "active"
    assert qlab.user_run(["test", "-f", f"{STATE}/state.json"], check=False).returncode == 0


def test_root_and_user_runs_touch_only_their_own_containers(lab: Lab) -> None:
    """The same image name in root's store and in the user's: each run updates its own."""
    qlab = quadlet_lab(lab)
    image = qlab.build_image(f"{qlab.plain.host}/rootless/both:latest", version="v1")
    root_unit = qlab.write_quadlet("rootside.container", container_file(image))
    qlab.pull(image)
    qlab.systemctl("start", root_unit)
    user_unit = _user_service(qlab, "userside", image)
    user_id = qlab.user_run(["podman", "inspect", "-f", "{{.Id}}", "systemd-userside"]).stdout
    qlab.build_image(image, version="v2")

    root = run_updock(qlab, "--format", "json")
    assert root.returncode == 0, root.stderr
    assert [(r["Unit"], r["Updated"]) for r in root.rows()] == [(root_unit, "true")]
    assert qlab.container_version("systemd-rootside") == "v2"
    # The user's container is the same one, still on v1.
    assert qlab.user_run(["podman", "inspect", "-f", "{{.Id}}", "systemd-userside"]).stdout == (
        user_id
    )
    assert user_version(qlab, "systemd-userside") == "v1"
    root_id = qlab.podman("inspect", "-f", "{{.Id}}", "systemd-rootside").stdout

    user = user_updock(qlab, "--format", "json")
    assert user.returncode == 0, user.stderr
    assert [(r["Unit"], r["Updated"]) for r in user.rows()] == [(user_unit, "true")]
    assert user_version(qlab, "systemd-userside") == "v2"
    assert qlab.podman("inspect", "-f", "{{.Id}}", "systemd-rootside").stdout == root_id
    # Nothing left to do for either.
    assert user_updock(qlab, "--format", "json", "--dry-run").statuses() == {
        "systemd-userside": "false"
    }
    assert run_updock(qlab, "--format", "json", "--dry-run").statuses() == {
        "systemd-rootside": "false"
    }
