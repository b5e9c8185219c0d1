"""Never leave a service down: verification, rollback, crash recovery, one run at a time.

Against the real lab: podman, the registry and systemd. These are the places where podman
auto-update reports success for a service that is down; updock must not.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.integration.conformance import run_podman, run_updock
from updock.core.reference import previous_tag
from updock.testing.lab import HEALTH_ARGS, ImageKind, Lab

pytestmark = pytest.mark.lab

SETTLE = {"UPDOCK_SETTLE_TIME": "4"}  # longer than DIES_AFTER_SECONDS


def _service(
    lab: Lab, name: str, new: ImageKind, *, health: bool = False, repo: str | None = None
) -> str:
    """A service on a healthy v1, and `new` pushed as v2 (to `safe/<repo or name>`). Returns the
    unit."""
    image = lab.build_image(f"{lab.plain.host}/safe/{repo or name}:latest", version="v1")
    svc = lab.create_service(name, image, run_args=HEALTH_ARGS if health else ())
    lab.build_image(image, new, version="v2")
    return svc.unit


def _journal(lab: Lab) -> dict[str, object]:
    path = lab.root / "updock-state" / "state.json"
    if not path.exists():
        return {}
    units: dict[str, object] = json.loads(path.read_text())["units"]
    return units


@pytest.mark.parametrize(
    ("kind", "health"),
    [
        (ImageKind.EXITS_AT_ONCE, False),
        (ImageKind.MISSING_ENTRYPOINT, False),
        (ImageKind.DIES_AFTER_START, False),
        (ImageKind.UNHEALTHY, True),
    ],
)
def test_broken_updates_are_rolled_back_and_the_service_stays_up(
    lab: Lab, kind: ImageKind, health: bool
) -> None:
    name = f"brk-{kind.value}"
    unit = _service(lab, name, kind, health=health)

    res = run_updock(lab, "--format", "json", env=SETTLE)

    assert res.returncode == 0, res.stderr  # a working rollback is no error, as in podman
    assert res.statuses() == {name: "rolled back"}
    assert lab.unit_state(unit) == "active"
    assert lab.container_version(name) == "v1"
    # What was seen is said on stderr.
    assert f"verifying unit {unit} failed" in res.stderr or "restarting systemd unit" in res.stderr
    assert _journal(lab) == {}


def test_slow_to_become_healthy_is_a_success(lab: Lab) -> None:
    unit = _service(lab, "slowpoke", ImageKind.SLOW_HEALTHY, health=True)

    started = time.monotonic()
    res = run_updock(lab, "--format", "json", env={"UPDOCK_SETTLE_TIME": "1"})

    assert res.returncode == 0, res.stderr
    assert res.statuses() == {"slowpoke": "true"}, res.stderr
    assert lab.container_version("slowpoke") == "v2"
    assert lab.unit_state(unit) == "active"
    assert time.monotonic() - started > 4  # it waited for the health check


def test_health_failure_with_rollback_off_is_failed_with_what_was_seen(lab: Lab) -> None:
    _service(lab, "sick", ImageKind.UNHEALTHY, health=True)

    res = run_updock(lab, "--format", "json", "--rollback=false", env={"UPDOCK_SETTLE_TIME": "1"})

    assert res.returncode == 125
    assert res.statuses() == {"sick": "failed"}
    assert "container sick is unhealthy" in res.stderr
    assert "verifying unit container-sick.service failed" in res.stderr


def test_crash_after_start_podman_says_true_with_the_unit_down(lab: Lab) -> None:
    unit = _service(lab, "crashy", ImageKind.DIES_AFTER_START)
    podman = run_podman(lab, "--format", "json")
    time.sleep(4)  # the new container dies 2 s after start
    assert podman.statuses() == {"crashy": "true"}
    assert lab.unit_state(unit) != "active"

    lab.reset()
    unit = _service(lab, "crashy", ImageKind.DIES_AFTER_START)
    updock = run_updock(lab, "--format", "json", env=SETTLE)
    time.sleep(1)
    assert updock.statuses() == {"crashy": "rolled back"}
    assert lab.unit_state(unit) == "active"
    assert lab.container_version("crashy") == "v1"


def test_previous_image_is_kept_protected_and_manual_rollback_uses_it(lab: Lab) -> None:
    unit = _service(lab, "keeper", ImageKind.HEALTHY)
    v1 = lab.container_image("keeper")

    res = run_updock(lab, "--format", "json", env={"UPDOCK_SETTLE_TIME": "1"})
    assert res.statuses() == {"keeper": "true"}
    kept = str(previous_tag("keeper"))
    assert kept.startswith("localhost/updock-previous/keeper-")
    assert lab.image_id(kept) == v1
    lab.podman("image", "prune", "-f")  # what podman-auto-update.service runs after updating
    assert lab.image_id(kept) == v1

    back = lab.updock("rollback", unit, "--format", "json", env={"UPDOCK_SETTLE_TIME": "1"})
    assert back.returncode == 0, back.stderr
    assert [r["Updated"] for r in json.loads(back.stdout)] == ["rolled back"]
    assert lab.container_version("keeper") == "v1"
    assert lab.unit_state(unit) == "active"

    unknown = lab.updock("rollback", "container-nope.service")
    assert unknown.returncode == 125
    assert "container-nope.service" in unknown.stderr


def test_containers_whose_names_differ_in_case_keep_their_own_previous_image(lab: Lab) -> None:
    """`Web` and `web` are two containers for podman; each must go back to its own image."""
    upper = _service(lab, "Web", ImageKind.HEALTHY, repo="upper-web")
    lower = _service(lab, "web", ImageKind.HEALTHY, repo="lower-web")
    odd = _service(lab, "a..b", ImageKind.HEALTHY, repo="odd")  # a valid name, no valid tag
    before = {n: lab.container_image(n) for n in ("Web", "web", "a..b")}

    res = run_updock(lab, "--format", "json", env={"UPDOCK_SETTLE_TIME": "1"})
    assert res.returncode == 0, res.stderr
    assert res.statuses() == {"Web": "true", "web": "true", "a..b": "true"}

    listing = lab.updock("previous", "--format", "json")
    assert listing.returncode == 0, listing.stderr
    kept = {r["ContainerName"]: r for r in json.loads(listing.stdout)}
    assert {n: kept[n]["PreviousImageID"] for n in before} == before
    assert len({kept[n]["Previous"] for n in before}) == 3  # one name each

    for unit, name in ((upper, "Web"), (odd, "a..b")):
        back = lab.updock("rollback", unit, env={"UPDOCK_SETTLE_TIME": "1"})
        assert back.returncode == 0, back.stderr
        assert lab.container_image(name) == before[name]
    assert lab.container_version("web") == "v2"  # untouched by Web's rollback
    assert lab.unit_state(lower) == "active"


def test_keep_previous_false_releases_the_old_image(lab: Lab) -> None:
    _service(lab, "lean", ImageKind.HEALTHY)
    res = run_updock(lab, "--format", "json", "--keep-previous=false")
    assert res.statuses() == {"lean": "true"}
    assert lab.podman("image", "exists", str(previous_tag("lean")), check=False).returncode == 1


@pytest.mark.parametrize(
    ("crash_at", "new", "after"),
    [
        ("pull", ImageKind.HEALTHY, ("true", "v2", "undone before its restart")),
        ("restart", ImageKind.HEALTHY, ("false", "v2", "verified and completed")),
        ("verify", ImageKind.DIES_AFTER_START, ("rolled back", "v1", "rolled back")),
    ],
)
def test_a_killed_run_is_repaired_by_the_next(
    lab: Lab, crash_at: str, new: ImageKind, after: tuple[str, str, str]
) -> None:
    name = f"kill-{crash_at}"
    unit = _service(lab, name, new)

    killed = run_updock(lab, "--format", "json", env={**SETTLE, "UPDOCK_TEST_CRASH_AT": crash_at})
    assert killed.returncode == -9, killed.stderr  # SIGKILL
    assert list(_journal(lab)) == [unit]  # the intent survived the kill

    time.sleep(1)
    res = run_updock(lab, "--format", "json", env=SETTLE)
    status, version, recovery = after
    assert res.statuses() == {name: status}, res.stderr
    assert f"recovery: unit {unit}: the interrupted update was {recovery}" in res.stderr
    assert lab.unit_state(unit) == "active"
    assert lab.container_version(name) == version
    assert _journal(lab) == {}


def _start_updock(lab: Lab, *args: str, settle: float = 3) -> subprocess.Popen[str]:
    env = {"UPDOCK_SETTLE_TIME": f"{settle:g}"}
    proc, _ = lab.start_updock("auto-update", "--format", "json", *args, env=env)
    return proc


def test_two_runs_at_once_restart_nothing_twice(lab: Lab) -> None:
    unit = _service(lab, "pair", ImageKind.HEALTHY)
    assert lab.unit_starts(unit) == 1

    # The second gives up at once: one updates, the other says why it did nothing.
    first = _start_updock(lab, "--lock-wait=0")
    second = _start_updock(lab, "--lock-wait=0")
    outs = [p.communicate(timeout=120) for p in (first, second)]
    codes = sorted(p.returncode for p in (first, second))
    assert codes == [0, 125], outs
    loser = next(err for (_, err), p in zip(outs, (first, second), strict=True) if p.returncode)
    assert "another updock run" in loser
    assert lab.unit_starts(unit) == 2  # restarted once
    assert lab.container_version("pair") == "v2"

    # Waiting instead: the second run waits for the first, then finds nothing left to do.
    lab.build_image(f"{lab.plain.host}/safe/pair:latest", version="v3")
    first, second = _start_updock(lab), _start_updock(lab)
    results = [json.loads(p.communicate(timeout=120)[0] or "[]") for p in (first, second)]
    updated = sorted(r[0]["Updated"] for r in results)
    assert updated == ["false", "true"]
    assert lab.unit_starts(unit) == 3
    assert lab.container_version("pair") == "v3"


def test_a_run_that_waited_for_the_lock_lists_the_containers_again(lab: Lab) -> None:
    slow = _service(lab, "holder", ImageKind.HEALTHY)
    late_image = lab.build_image(f"{lab.plain.host}/safe/late:latest", version="v1")
    first = _start_updock(lab, settle=8)  # holds the lock while it verifies `holder`
    deadline = time.monotonic() + 30
    while lab.unit_starts(slow) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    second = _start_updock(lab)  # lists the containers now, then waits for the lock
    time.sleep(1)
    lab.create_service("late", late_image)  # appears while the second run waits
    out_first, err_first = first.communicate(timeout=120)
    out_second, err_second = second.communicate(timeout=120)
    assert first.returncode == 0, err_first
    assert second.returncode == 0, err_second
    assert [r["ContainerName"] for r in json.loads(out_first)] == ["holder"]
    rows = {r["ContainerName"]: r["Updated"] for r in json.loads(out_second)}
    assert rows == {"holder": "false", "late": "false"}


@pytest.mark.parametrize(
    ("label", "value"),
    [
        ("io.updock.verify.settle", "a while"),
        ("io.updock.verify.settle", "inf"),  # float() takes it: the run would never end
        ("io.updock.verify.timeout", "inf"),
        ("io.updock.verify.timeout", "-5"),
        ("io.updock.verify.settle", "1e9"),
    ],
)
def test_bad_verification_label_changes_nothing(lab: Lab, label: str, value: str) -> None:
    image = lab.build_image(f"{lab.plain.host}/safe/labelled:latest", version="v1")
    svc = lab.create_service("labelled", image, labels={label: value})
    other = _service(lab, "unlabelled", ImageKind.HEALTHY)
    lab.build_image(image, version="v2")

    started = time.monotonic()
    res = run_updock(lab, "--format", "json")

    assert time.monotonic() - started < 60  # the lock is not held for ever
    assert res.returncode == 125
    assert res.statuses() == {"unlabelled": "true"}  # the other container is not held back
    assert f"{label}={json.dumps(value)}" in res.stderr
    assert "(labelled)" in res.stderr
    assert lab.unit_starts(svc.unit) == 1  # never restarted
    assert lab.container_version("labelled") == "v1"
    assert lab.unit_state(other) == "active"


def _podman_wrapper(lab: Lab, name: str, before_inspect: str) -> dict[str, str]:
    """PATH for a `podman` that runs `before_inspect` (sh) before each `container inspect`, then
    the real podman: a race with systemd or another tool, made to happen every time."""
    folder = lab.root / f"wrap-{name}"
    folder.mkdir()
    wrapper = folder / "podman"
    wrapper.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = container ] && [ "$2" = inspect ]; then\n'
        f"{before_inspect}\n"
        "fi\n"
        'exec /usr/bin/podman "$@"\n'
    )
    wrapper.chmod(0o755)
    return {"PATH": f"{folder}:{os.environ['PATH']}"}


def test_containers_replaced_while_listed_again_and_again_fail_loudly(lab: Lab) -> None:
    """A container replaced between every `ps` and `inspect` is an error, never an empty run."""
    image = lab.build_image(f"{lab.plain.host}/safe/churn:latest", version="v1")
    lab.pull(image)
    # --stop-timeout 0: `sleep` ignores SIGTERM, and each replacement would wait 10 s for it.
    replace = (
        "/usr/bin/podman run -d --replace --stop-timeout 0 --name churn --network none "
        "--label io.containers.autoupdate=registry --label PODMAN_SYSTEMD_UNIT=churn.service "
        f"{image} sleep 1000 >/dev/null"
    )
    lab.podman("run", "-d", "--stop-timeout", "0", "--name", "churn", "--network", "none",
               "--label", "io.containers.autoupdate=registry", "--label",
               "PODMAN_SYSTEMD_UNIT=churn.service", image, "sleep", "1000")  # fmt: skip

    res = run_updock(
        lab, "--dry-run", "--format", "json", env=_podman_wrapper(lab, "churn", replace)
    )

    assert res.returncode == 125, (res.stdout, res.stderr)
    assert "vanished" in res.stderr
    assert "churn" in res.stderr


def test_a_container_removed_while_listed_is_left_out(lab: Lab) -> None:
    """Removed (not replaced) between `ps` and `inspect`: ignored, as podman 5.2 does."""
    _service(lab, "stays", ImageKind.HEALTHY)
    image = lab.build_image(f"{lab.plain.host}/safe/goes:latest", version="v1")
    lab.pull(image)
    lab.podman("run", "-d", "--name", "goes", "--network", "none", "--label",
               "io.containers.autoupdate=registry", "--label",
               "PODMAN_SYSTEMD_UNIT=goes.service", image, "sleep", "1000")  # fmt: skip
    remove = "/usr/bin/podman rm -f -t 0 goes >/dev/null 2>&1"

    res = run_updock(lab, "--dry-run", "--format", "json", env=_podman_wrapper(lab, "goes", remove))

    assert res.returncode == 0, res.stderr
    assert res.statuses() == {"stays": "pending"}


def test_a_podman_that_hangs_is_stopped_and_the_run_ends(lab: Lab) -> None:
    """podman blocked on its storage lock (held by another process) must not hold the run, and
    with it updock's lock, for ever."""
    import fcntl

    unit = _service(lab, "stuck", ImageKind.HEALTHY)
    lock = os.open(lab.root / "storage" / "graph" / "overlay-images" / "images.lock", os.O_RDWR)
    try:
        fcntl.lockf(lock, fcntl.LOCK_EX)  # what a long podman operation elsewhere holds
        started = time.monotonic()
        res = run_updock(lab, "--format", "json", env={"UPDOCK_PODMAN_TIMEOUT": "3"})
        took = time.monotonic() - started
    finally:
        os.close(lock)

    assert res.returncode == 125, res.stderr
    assert "did not end within 3s" in res.stderr
    assert took < 30
    # Nothing changed, and the next run (the storage free again) updates as usual.
    assert lab.container_version("stuck") == "v1"
    again = run_updock(lab, "--format", "json")
    assert again.returncode == 0, again.stderr
    assert again.statuses() == {"stuck": "true"}
    assert lab.unit_state(unit) == "active"


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_finishes_the_unit_in_flight_and_begins_no_other(
    lab: Lab, signum: int, status: int
) -> None:
    """systemctl stop (SIGTERM) or Ctrl-C (SIGINT) mid-run: the unit being updated is verified,
    the lock is held until then, the units not begun stay as they were, the report says what
    was done and the exit status says why the run stopped."""
    image = lab.build_image(f"{lab.plain.host}/safe/sig:latest", version="v1")
    units = {n: lab.create_service(n, image).unit for n in ("sig-a", "sig-b", "sig-c")}
    lab.build_image(image, version="v2")

    proc, pid = lab.start_updock("auto-update", "--format", "json", env={"UPDOCK_SETTLE_TIME": "4"})
    try:
        deadline = time.monotonic() + 60
        while lab.unit_starts(units["sig-a"]) < 2:  # the first unit (by name) is restarting
            assert time.monotonic() < deadline, "the first unit was never restarted"
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        os.kill(pid, signum)
        time.sleep(0.5)
        assert proc.poll() is None  # still verifying sig-a, not unwound
        other = run_updock(lab, "--lock-wait=0")
        assert other.returncode == 125
        assert "another updock run" in other.stderr  # the lock is still held
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    assert proc.returncode == status, err
    assert {r["ContainerName"]: r["Updated"] for r in json.loads(out)} == {"sig-a": "true"}
    assert f"stopped by {signal.Signals(signum).name}" in err
    assert "container-sig-b.service, container-sig-c.service" in err
    assert _journal(lab) == {}
    assert {n: lab.container_version(n) for n in units} == {
        "sig-a": "v2", "sig-b": "v1", "sig-c": "v1"
    }  # fmt: skip
    assert {lab.unit_state(u) for u in units.values()} == {"active"}
    # The next run takes up what was left.
    again = run_updock(lab, "--format", "json")
    assert again.statuses() == {"sig-a": "false", "sig-b": "true", "sig-c": "true"}, again.stderr


def test_a_failed_repair_stays_journaled_and_the_next_run_completes_it(lab: Lab) -> None:
    name = "mend"
    flags = lab.root / "flags" / name
    flags.mkdir(parents=True)
    image = lab.build_image(f"{lab.plain.host}/safe/{name}:latest", version="v1")
    # Healthy while there is no flag file: the flag makes even the previous image fail.
    health = ["-v", f"{flags}:/flag:ro", "--health-cmd=test ! -e /flag/bad"]
    health += ["--health-interval=1s", "--health-retries=1"]
    unit = lab.create_service(name, image, run_args=health).unit
    lab.build_image(image, ImageKind.DIES_AFTER_START, version="v2")
    killed = run_updock(lab, "--format", "json", env={**SETTLE, "UPDOCK_TEST_CRASH_AT": "verify"})
    assert killed.returncode == -9, killed.stderr

    (flags / "bad").write_text("")
    time.sleep(1)
    failed = run_updock(lab, "--format", "json", env=SETTLE)
    assert failed.returncode == 125
    assert failed.statuses() == {name: "failed"}  # reported, and not updated
    assert (
        f"repairing the interrupted update of unit {unit} failed (attempt 1; it is tried again "
        "on the next run" in failed.stderr
    )
    assert f"container {name} is unhealthy" in failed.stderr  # what was seen
    journal = _journal(lab)
    assert list(journal) == [unit]
    assert isinstance(entry := journal[unit], dict)
    assert (entry["phase"], entry["repair_attempts"]) == ("rolling back", 1)
    assert f"container {name} is unhealthy" in entry["repair_error"]
    assert lab.unit_starts(unit) == 3  # created, killed update, failed repair: no update tried

    (flags / "bad").unlink()
    res = run_updock(lab, "--format", "json", env=SETTLE)
    assert f"recovery: unit {unit}: the interrupted update was rolled back" in res.stderr
    assert res.returncode == 0, res.stderr
    assert res.statuses() == {name: "rolled back"}  # then updated again: v2 still dies
    assert _journal(lab) == {}
    assert lab.unit_state(unit) == "active"
    assert lab.container_version(name) == "v1"


def test_an_unreadable_journal_is_moved_aside_and_the_run_goes_on(lab: Lab) -> None:
    unit = _service(lab, "aside", ImageKind.HEALTHY)
    state = lab.root / "updock-state"
    state.mkdir(mode=0o700, exist_ok=True)
    (state / "state.json").write_text('{"version": 1, "units": {"gone.service": ')

    res = run_updock(lab, "--format", "json", env={"UPDOCK_SETTLE_TIME": "1"})

    assert res.returncode == 125
    (aside,) = state.glob("state.json.unreadable-*")
    assert aside.read_text().endswith('"gone.service": ')  # kept as it was
    assert f"updock's state file {state / 'state.json'} is not one of this updock's" in res.stderr
    assert f"moved it to {aside} (kept for inspection)" in res.stderr
    assert res.statuses() == {"aside": "true"}  # the run went on
    assert lab.container_version("aside") == "v2"
    assert lab.unit_state(unit) == "active"
    again = run_updock(lab, "--format", "json")
    assert (again.returncode, again.statuses()) == (0, {"aside": "false"}), again.stderr


@pytest.mark.parametrize("problem", ["world-writable", "another user's"])
def test_an_unsafe_state_folder_is_refused_by_name_and_nothing_changes(
    lab: Lab, problem: str
) -> None:
    unit = _service(lab, "unsafe", ImageKind.HEALTHY)
    folder = Path(tempfile.mkdtemp(prefix="state.", dir=lab.root))  # mode 0700
    if problem == "world-writable":
        folder.chmod(0o777)
    else:
        os.chown(folder, pwd.getpwnam("nobody").pw_uid, -1)

    res = run_updock(lab, "--format", "json", env={"UPDOCK_STATE_DIR": str(folder)})

    assert res.returncode == 125
    assert f"Error: updock's state folder {folder} " in res.stderr
    assert "refusing to use it" in res.stderr
    assert lab.unit_starts(unit) == 1  # never restarted
    assert lab.container_version("unsafe") == "v1"
    assert list(folder.iterdir()) == []


# -- many units of one image name: a canary, then waves (issue 13) ------------------------------


def _shared_units(
    lab: Lab, repo: str, names: list[str], fragile: frozenset[str] = frozenset()
) -> str:
    """Units on v1 of one image; v2 pushed. A fragile unit runs a command only v1 has, so it
    cannot start on v2 (a failure of that unit alone). Returns the image name."""
    image = lab.build_image(f"{lab.plain.host}/safe/{repo}:latest", version="v1")
    for name in names:
        lab.create_service(name, image, command=["/bin/only-v1"] if name in fragile else ())
    lab.build_image(image, version="v2")
    return image


def test_a_failing_canary_is_never_followed_by_a_wave_onto_the_same_image(lab: Lab) -> None:
    names = ["can-a", "can-b", "can-c"]
    image = lab.build_image(f"{lab.plain.host}/safe/canary:latest", version="v1")
    for name in names:
        lab.create_service(name, image)
    lab.build_image(image, ImageKind.MISSING_ENTRYPOINT, version="v2")  # broken for everyone

    res = run_updock(lab, "--format", "json", env={"UPDOCK_SETTLE_TIME": "2"})

    assert res.returncode == 0, res.stderr
    assert res.statuses() == dict.fromkeys(names, "rolled back")
    assert {n: lab.container_version(n) for n in names} == dict.fromkeys(names, "v1")
    # One at a time, each a canary of its own: a unit's update begins only once the unit
    # before it was rolled back (created, updated, rolled back: three starts each).
    starts = {n: lab.unit_start_times(f"container-{n}.service") for n in names}
    assert [len(s) for s in starts.values()] == [3, 3, 3]
    assert starts["can-a"][2] < starts["can-b"][1]
    assert starts["can-b"][2] < starts["can-c"][1]
    # ... each checking and pulling the name again (the spec's point 6).
    assert res.stderr.count("Trying to pull") == 3


def test_a_failure_in_a_later_wave_rolls_back_that_unit_only(lab: Lab) -> None:
    names = [f"wav-{c}" for c in "abcdef"]
    image = _shared_units(lab, "waves", names, fragile=frozenset({"wav-e"}))

    res = run_updock(
        lab, "--format", "json", env={"UPDOCK_SETTLE_TIME": "2", "UPDOCK_WAVE_SIZE": "2"}
    )

    assert res.returncode == 0, res.stderr
    assert res.statuses() == {n: "rolled back" if n == "wav-e" else "true" for n in names}
    assert {n: lab.container_version(n) for n in names} == {
        n: "v1" if n == "wav-e" else "v2" for n in names
    }
    assert {lab.unit_state(f"container-{n}.service") for n in names} == {"active"}
    # A canary (a), then waves of two: b and c side by side, then d and e, then f.
    first_update = {n: lab.unit_start_times(f"container-{n}.service")[1] for n in names}
    assert first_update["wav-a"] < min(first_update[n] for n in names[1:])
    assert abs(first_update["wav-b"] - first_update["wav-c"]) < 2.0
    assert abs(first_update["wav-d"] - first_update["wav-e"]) < 2.0
    assert first_update["wav-f"] > max(first_update["wav-d"], first_update["wav-e"])
    # The others verified v2: the name points at it again after e's rollback.
    assert lab.image_id(image) == lab.container_image("wav-d")
    assert res.stderr.count("Trying to pull") == 1
    assert _journal(lab) == {}


def test_a_run_killed_during_a_wave_is_repaired_for_every_unit_of_it(lab: Lab) -> None:
    names = [f"kw-{c}" for c in "abcd"]
    _shared_units(lab, "killwave", names)

    killed = run_updock(
        lab, "--format", "json", env={"UPDOCK_SETTLE_TIME": "3", "UPDOCK_TEST_CRASH_AT": "wave"}
    )
    assert killed.returncode == -9, killed.stderr
    journaled = _journal(lab)
    assert sorted(journaled) == [f"container-kw-{c}.service" for c in "bcd"]  # the wave

    time.sleep(1)
    res = run_updock(lab, "--format", "json", env={"UPDOCK_SETTLE_TIME": "3"})
    assert res.returncode == 0, res.stderr
    for unit in journaled:
        assert f"recovery: unit {unit}: the interrupted update was" in res.stderr
    assert _journal(lab) == {}
    assert {lab.unit_state(f"container-{n}.service") for n in names} == {"active"}
    # Completed or rolled back, every unit runs a verified image, and the run then updated
    # whatever was rolled back: all on v2 in the end.
    assert {n: lab.container_version(n) for n in names} == dict.fromkeys(names, "v2")
