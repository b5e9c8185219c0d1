"""The shipped units: `updock install-units` writes them, and systemd runs the update with them."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from updock.testing.lab import Lab

pytestmark = pytest.mark.lab


def test_installed_service_updates_containers_and_timer_is_daily(lab: Lab) -> None:
    image = lab.build_image(f"{lab.plain.host}/units/app:latest", version="v1")
    lab.create_service("units-app", image)
    lab.build_image(image, version="v2")

    res = lab.updock("install-units", "--dest", str(lab.units), "--no-enable")
    assert res.returncode == 0, res.stderr
    service = (lab.units / "updock-auto-update.service").read_text()
    exec_start = next(line for line in service.splitlines() if line.startswith("ExecStart="))
    assert exec_start.endswith("/updock auto-update")
    lab.systemctl("daemon-reload")
    try:
        # A oneshot: `start` returns when the update is over.
        lab.systemctl("start", "updock-auto-update.service", timeout=120)
        assert lab.container_version("units-app") == "v2"
        assert lab.unit_state("container-units-app.service") == "active"

        lab.systemctl("start", "updock-auto-update.timer")
        show = lab.systemctl(
            "show", "updock-auto-update.timer", "-p", "TimersCalendar", "-p", "Persistent",
            "-p", "RandomizedDelayUSec", "-p", "ActiveState",
        ).stdout  # fmt: skip
        assert "OnCalendar=*-*-* 00:00:00" in show
        assert "Persistent=yes" in show
        assert "RandomizedDelayUSec=15min" in show
        assert "ActiveState=active" in show
    finally:
        lab.systemctl("stop", "updock-auto-update.timer", check=False)
        for name in ("updock-auto-update.service", "updock-auto-update.timer"):
            (lab.units / name).unlink()
        lab.systemctl("daemon-reload")


def test_user_units_go_to_the_users_folder(lab: Lab) -> None:
    home = lab.root / "home"
    res = lab.updock("install-units", "--user", "--no-enable", env={"HOME": str(home)})
    assert res.returncode == 0, res.stderr
    assert (home / ".config/systemd/user/updock-auto-update.timer").exists()
    assert (
        "OnCalendar=daily" in (home / ".config/systemd/user/updock-auto-update.timer").read_text()
    )


def test_stopping_the_service_mid_update_finishes_the_unit_in_flight(lab: Lab) -> None:
    """`systemctl stop` (or a shutdown) while the service updates: the unit being updated is
    verified, no other is begun, and the service ends cleanly (not `failed`)."""
    image = lab.build_image(f"{lab.plain.host}/units/stop:latest", version="v1")
    units = [lab.create_service(n, image).unit for n in ("stop-a", "stop-b")]
    lab.build_image(image, version="v2")
    res = lab.updock("install-units", "--dest", str(lab.units), "--no-enable")
    assert res.returncode == 0, res.stderr
    dropin = lab.units / "updock-auto-update.service.d"
    dropin.mkdir()
    (dropin / "settle.conf").write_text("[Service]\nEnvironment=UPDOCK_SETTLE_TIME=4\n")
    lab.systemctl("daemon-reload")
    try:
        show = lab.systemctl(
            "show", "updock-auto-update.service", "-p", "KillMode", "-p", "TimeoutStopUSec",
            "-p", "TimeoutStartUSec",
        ).stdout  # fmt: skip
        assert "KillMode=mixed" in show
        assert "TimeoutStopUSec=10min" in show
        assert "TimeoutStartUSec=2h" in show

        lab.systemctl("start", "--no-block", "updock-auto-update.service")
        deadline = time.monotonic() + 60
        while lab.unit_starts(units[0]) < 2:
            assert time.monotonic() < deadline, "the first unit was never restarted"
            time.sleep(0.05)
        lab.systemctl("stop", "updock-auto-update.service", timeout=120)

        assert lab.unit_state("updock-auto-update.service") == "inactive"
        assert lab.container_version("stop-a") == "v2"  # finished and verified
        assert lab.container_version("stop-b") == "v1"  # never begun
        assert {lab.unit_state(u) for u in units} == {"active"}
        state = lab.root / "updock-state" / "state.json"
        assert not state.exists() or json.loads(state.read_text())["units"] == {}
    finally:
        for name in ("updock-auto-update.service", "updock-auto-update.timer"):
            (lab.units / name).unlink()
        shutil.rmtree(dropin)
        lab.systemctl("daemon-reload")
