"""`updock.systemd` against the lab's real systemd: restarts, job results, errors, states.

The lab's systemd sockets exist only inside its mount namespace, so each test runs the calls
there through `systemd_ops.py` (one connection per run, outcomes as JSON).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from updock.testing.lab import ImageKind, Lab, Service

pytestmark = pytest.mark.lab

OPS = Path(__file__).with_name("systemd_ops.py")


def run_calls(
    lab: Lab,
    calls: list[list[str]],
    *,
    timeout: float = 300,
    connections: int = 1,
    parallel: bool = False,
    hide_private_socket: bool = False,
) -> list[dict[str, Any]]:
    """Run `calls` on one connection inside the lab; each outcome without its duration.

    Args:
        connections: run them again on a new connection, this many times in all.
        parallel: run the calls side by side, each in a thread of its own (one connection).
        hide_private_socket: mount an empty /run/systemd first (in a mount namespace of its own),
            so that `connect` has to fall back to the system bus.
    """
    # The script's text, not its path: a rootfs flavour's Python does not see the host's files.
    args = [*lab.python, "-c", OPS.read_text()]
    if hide_private_socket:
        hide = 'mount -t tmpfs none /run/systemd && exec "$0" "$@"'
        args = ["unshare", "--mount", "--propagation", "private", "sh", "-c", hide, *args]
    res = lab.run(
        args,
        input=json.dumps(
            {"timeout": timeout, "calls": calls, "connections": connections, "parallel": parallel}
        ),
    )
    outcomes: list[dict[str, Any]] = json.loads(res.stdout)
    for outcome in outcomes:
        outcome.pop("seconds")
    return outcomes


def healthy_service(lab: Lab, name: str) -> Service:
    return lab.create_service(name, lab.build_image(f"{lab.plain.host}/{name}:1"))


def container_id(lab: Lab, name: str) -> str:
    return lab.podman("inspect", "--format", "{{.Id}}", name).stdout.strip()


def test_restart_replaces_the_container_and_the_unit_stays_active(lab: Lab) -> None:
    svc = healthy_service(lab, "sd-restart")
    before = container_id(lab, "sd-restart")

    outcomes = run_calls(lab, [["restart", svc.unit], ["active_state", svc.unit]])

    assert outcomes == [{"value": None}, {"value": "active"}]
    assert container_id(lab, "sd-restart") != before
    assert lab.unit_state(svc.unit) == "active"


def test_restarts_in_a_row_on_one_connection_all_succeed(lab: Lab) -> None:
    first, second = healthy_service(lab, "sd-first"), healthy_service(lab, "sd-second")
    before = container_id(lab, "sd-first"), container_id(lab, "sd-second")

    calls = [["restart", first.unit], ["restart", second.unit], ["restart", first.unit]]
    outcomes = run_calls(lab, calls)

    assert outcomes == [{"value": None}] * 3
    after = container_id(lab, "sd-first"), container_id(lab, "sd-second")
    assert after[0] != before[0]
    assert after[1] != before[1]


def test_threads_share_one_connection_for_restarts_side_by_side(lab: Lab) -> None:
    # A run's threads restart their units over one connection (systemd sends every signal to
    # every connection): each gets its own job's result, none waits for another's.
    names = [f"sd-par{i}" for i in range(6)]
    units = [healthy_service(lab, name).unit for name in names]
    before = [container_id(lab, name) for name in names]
    failing = lab.create_service(
        "sd-parbad",
        lab.build_image(f"{lab.plain.host}/sd-parbad:1", ImageKind.MISSING_ENTRYPOINT),
        start=False,
    ).unit

    calls = [["restart", u] for u in units] + [["restart", failing]]
    calls += [["active_state", u] for u in units] + [["job_pending", units[0]]]
    outcomes = run_calls(lab, calls, parallel=True)

    assert outcomes[: len(units)] == [{"value": None}] * len(units)
    bad = outcomes[len(units)]
    assert bad.get("error") == (
        f'restarting systemd unit "{failing}" failed: expected "done" but received "failed"'
    ), outcomes
    assert all(o.get("value") in ("active", "activating", "deactivating") for o in outcomes[7:13])
    assert outcomes[-1].get("value") in (True, False)
    assert all(
        a != b for a, b in zip(before, map(lambda n: container_id(lab, n), names), strict=True)
    )
    assert [lab.unit_state(u) for u in units] == ["active"] * len(units)


def test_the_first_call_on_each_new_connection_is_answered(lab: Lab) -> None:
    # Guards the AUTH/BEGIN handshake (see `_open_authenticated`): sent the way jeepney's
    # `prep_socket` does, a first call now and then got no answer at all.
    outcomes = run_calls(lab, [["active_state", "lab.target"]], timeout=2, connections=30)

    assert outcomes == [{"value": "active"}] * 30


def test_a_unit_that_cannot_start_fails_with_podmans_message(lab: Lab) -> None:
    image = lab.build_image(f"{lab.plain.host}/sd-broken:1", ImageKind.MISSING_ENTRYPOINT)
    svc = lab.create_service("sd-broken", image, start=False)

    calls = [["active_state", svc.unit], ["restart", svc.unit], ["active_state", svc.unit]]
    outcomes = run_calls(lab, calls)

    assert outcomes == [
        {"value": "inactive"},
        {
            "error": f'restarting systemd unit "{svc.unit}" failed: '
            'expected "done" but received "failed"',
            "cause": None,
        },
        {"value": "failed"},
    ]


def test_a_unit_that_does_not_exist_is_named_in_the_error(lab: Lab) -> None:
    unit = "updock-no-such.service"

    restart, state = run_calls(lab, [["restart", unit], ["active_state", unit]])

    assert restart["error"].startswith(f'restarting systemd unit "{unit}" failed: ')
    assert "org.freedesktop.systemd1.NoSuchUnit" in restart["error"]
    assert restart["cause"] == "DBusErrorResponse"
    # Like `systemctl show`: a unit that cannot be loaded is simply inactive.
    assert state == {"value": "inactive"}


def test_a_job_that_outlasts_the_timeout_fails_and_the_connection_stays_usable(lab: Lab) -> None:
    healthy = healthy_service(lab, "sd-quick")
    # Named container-* so that the lab's reset removes it like its own units.
    slow = "container-sd-slow.service"
    (lab.units / slow).write_text("[Service]\nType=oneshot\nExecStart=/bin/sleep 10\n")
    lab.systemctl("daemon-reload")

    calls = [["restart", slow], ["restart", healthy.unit], ["active_state", slow]]
    outcomes = run_calls(lab, calls, timeout=1.5)

    assert outcomes == [
        {
            "error": f'restarting systemd unit "{slow}" timed out after 1.5 s',
            "cause": "TimeoutError",
        },
        {"value": None},
        {"value": "activating"},  # the job goes on after updock stopped waiting
    ]


@pytest.mark.skipif(shutil.which("dbus-daemon") is None, reason="needs dbus-daemon")
def test_without_the_private_socket_the_system_bus_is_used(lab: Lab) -> None:
    svc = healthy_service(lab, "sd-bus")
    before = container_id(lab, "sd-bus")
    # systemd joins the system bus once dbus.socket and dbus.service run. A rootfs flavour has
    # its own (podman needs it there): that one is used, and left alone.
    own_bus = not (lab.units / "dbus.service").exists()
    if own_bus:
        shutil.copy("/lib/systemd/system/dbus.socket", lab.units)
        (lab.units / "dbus.service").write_text(
            "[Unit]\nRequires=dbus.socket\n[Service]\nType=notify\nNotifyAccess=main\n"
            "ExecStart=dbus-daemon --system --address=systemd: --nofork --nopidfile --syslog-only\n"
        )
    try:
        lab.systemctl("daemon-reload")
        lab.systemctl("start", "dbus.socket", "dbus.service")

        calls = [["restart", svc.unit], ["restart", "updock-no-such.service"]]
        calls += [["restart", svc.unit], ["active_state", svc.unit]]
        restart, missing, again, state = run_calls(lab, calls, hide_private_socket=True)

        assert (restart, again, state) == ({"value": None}, {"value": None}, {"value": "active"})
        assert "NoSuchUnit" in missing["error"]
        assert container_id(lab, "sd-bus") != before
    finally:
        if own_bus:
            lab.systemctl("stop", "dbus.service", "dbus.socket", check=False)
            for name in ("dbus.service", "dbus.socket"):
                (lab.units / name).unlink(missing_ok=True)
            lab.systemctl("daemon-reload")


def test_a_job_of_the_unit_is_seen_while_it_runs(lab: Lab) -> None:
    svc = healthy_service(lab, "sd-job")
    assert run_calls(lab, [["job_pending", svc.unit]]) == [{"value": False}]
    # A restart queued behind a slow stop (podman stop waits out the stop timeout of a `sleep`
    # PID 1 that ignores SIGTERM): the job is there while the unit is deactivating.
    lab.systemctl("restart", "--no-block", svc.unit)
    outcomes = run_calls(lab, [["job_pending", svc.unit], ["active_state", svc.unit]])
    assert outcomes[0] == {"value": True}
    lab.systemctl("start", svc.unit, timeout=120)  # waits for the restart job to end
    assert run_calls(lab, [["job_pending", svc.unit]]) == [{"value": False}]
