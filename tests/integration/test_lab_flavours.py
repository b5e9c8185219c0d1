"""The lab's flavours: each runs its own podman and Python, and leaves the machine as it was."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from updock import __version__
from updock.testing.lab import Lab
from updock.testing.rootfs import RootfsLab, _cgroup_base, _make_cgroup, _remove_cgroup

pytestmark = pytest.mark.lab

#: podman and Python of each rootfs flavour (Debian's packages of that release).
EXPECTED = {"bookworm": ((4, 3, 1), "3.11"), "trixie": ((5, 4, 2), "3.13")}


def rootfs_only(lab: Lab) -> str:
    if not isinstance(lab, RootfsLab):
        pytest.skip("about the rootfs flavours")
    return lab.suite


def test_the_flavour_runs_its_own_podman_and_python(lab: Lab) -> None:
    python = lab.run([*lab.python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
    if isinstance(lab, RootfsLab):
        assert (lab.podman_version, python.stdout.strip()) == EXPECTED[lab.suite]
    else:
        host = subprocess.run(
            ["podman", "version", "--format", "{{.Client.Version}}"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        assert ".".join(map(str, lab.podman_version)) == host
        assert python.stdout.strip() == f"{sys.version_info[0]}.{sys.version_info[1]}"
    # updock runs there, from this checkout.
    res = lab.updock("--version")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"updock, version {__version__}"


def test_podman_exec_runs_in_the_container_and_the_lab_has_its_own_tmp(lab: Lab) -> None:
    """pivot_root, never chroot: with chroot, `podman exec` ran its command on the host."""
    rootfs_only(lab)
    image = lab.build_image(f"{lab.plain.host}/flavour/exec:1")
    lab.create_service("flv-exec", image)
    listing = lab.podman("exec", "flv-exec", "/bin/ls", "/").stdout.split()
    assert "version" in listing
    assert "usr" not in listing  # the image is busybox only; the rootfs has /usr
    assert lab.run(["hostname"]).stdout.strip() == "updock-lab"
    marker = f"flavour-marker-{os.getpid()}"
    lab.run(["touch", f"/tmp/{marker}"])
    assert not (Path("/tmp") / marker).exists()


def _lab_traces(lab: RootfsLab) -> dict[str, object]:
    """What of `lab` is left on the machine: processes, mounts, cgroups, files."""
    procs = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(lab.root) in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    procs.append(proc.name)
            except OSError:
                continue
    mounts = [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if str(lab.root) in line]  # fmt: skip
    cgroup = lab._cgroup
    return {
        "processes": procs,
        "systemd": lab.systemd_pid is not None and Path(f"/proc/{lab.systemd_pid}").exists(),
        "mounts": mounts,
        "cgroup": cgroup is not None and cgroup.exists(),
        "folder": lab.root.exists(),
    }


NOTHING = {"processes": [], "systemd": False, "mounts": [], "cgroup": False, "folder": False}


def test_stop_leaves_nothing_behind(lab: Lab) -> None:
    other = RootfsLab(rootfs_only(lab))
    tmp_before = set(os.listdir("/tmp"))
    try:
        other.start()
        image = other.build_image(f"{other.plain.host}/flavour/stop:1")
        other.create_service("flv-stop", image)
        assert other.unit_state("container-flv-stop.service") == "active"
        assert _lab_traces(other)["systemd"] is True
    finally:
        other.stop()
    assert _lab_traces(other) == NOTHING
    assert tmp_before <= set(os.listdir("/tmp"))  # systemd's boot wiped nothing


_OWNER = """
import json, sys, time
from updock.testing.rootfs import RootfsLab
lab = RootfsLab(sys.argv[1])
lab.start()
lab.create_service("flv-owner", lab.build_image(f"{lab.plain.host}/flavour/owner:1"))
print(json.dumps({"pid": lab.systemd_pid, "root": str(lab.root), "cgroup": str(lab._cgroup)}))
sys.stdout.flush()
time.sleep(600)
"""


def test_a_killed_owner_takes_its_lab_with_it(lab: Lab) -> None:
    """SIGKILL to the test process (no teardown possible): the lab's processes end with it,
    and the next lab removes its cgroup folder."""
    suite = rootfs_only(lab)
    env = {**os.environ, "UPDOCK_LAB_KEEP": "1"}
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER, suite], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        started = json.loads(owner.stdout.readline() if owner.stdout else "{}")
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    systemd, root, cgroup = started["pid"], Path(started["root"]), Path(started["cgroup"])
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{systemd}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{systemd}").exists()
        assert not [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                    if str(root) in line]  # fmt: skip
        assert cgroup.exists()  # nobody could remove it...
        _remove_cgroup(_make_cgroup())  # ...until the next lab starts
        assert not cgroup.exists()
        assert cgroup.parent == _cgroup_base()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_user_manager_runs_rootless_podman(lab: Lab) -> None:
    """`lab-user@1000.service` stands in for user@.service: the user's own systemd, session
    bus and rootless podman (for the rootless and Quadlet tests that build on it)."""
    rootfs_only(lab)
    assert isinstance(lab, RootfsLab)
    lab.systemctl("start", "lab-user@1000.service")
    try:
        state = lab.run([*lab.as_user(), "systemctl", "--user", "is-system-running"])
        assert state.stdout.strip() == "running"
        info = lab.run(
            [*lab.as_user(), "HOME=/home/u1", "podman", "info", "--format",
             "{{.Host.Security.Rootless}} {{.Store.GraphDriverName}} {{.Host.CgroupManager}}"]
        )  # fmt: skip
        # podman 4.3.1 picks vfs for a rootless user without a storage.conf of its own.
        driver = "overlay" if lab.podman_version >= (5,) else "vfs"
        assert info.stdout.split() == ["true", driver, "systemd"]
    finally:
        lab.systemctl("stop", "lab-user@1000.service")
