"""The update of units that share an image name: a canary, then waves (`core.waves`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from updock.core.model import Container, Phase, Policy, Status, Task
from updock.core.plan import (
    Action,
    Begin,
    Check,
    CheckResult,
    Finish,
    Journal,
    Outcome,
    Pull,
    Restart,
    Retag,
    SetPhase,
    SharedImageState,
    Tag,
    Together,
    Verify,
    drive,
)
from updock.core.reference import registry_image_name
from updock.core.waves import update_group
from updock.errors import Interrupted, ServiceError, UpdockError, VerificationError

IMAGE = "quay.io/app/web:latest"
OLD, NEW = "0" * 64, "f" * 64
DIGEST = "sha256:" + "ab" * 32


def task(name: str, image: str = IMAGE) -> Task:
    container = Container(id=(name * 64)[:64], name=name, image_id=OLD, raw_image_name=image)
    return Task(f"{name}.service", container, Policy.REGISTRY, registry_image_name(image))


@dataclass
class Host:
    """Performs actions; `Together` drives its plans one after the other, in order, and logs
    which units went together. Restarts and verifications fail as scripted, per unit."""

    restart_fails: dict[str, list[bool]] = field(default_factory=dict)
    verify_fails: dict[str, list[bool]] = field(default_factory=dict)
    stop_at_begin: set[str] = field(default_factory=set)
    log: list[tuple[str, ...]] = field(default_factory=list)

    def _scripted(self, script: dict[str, list[bool]], unit: str) -> bool:
        steps = script.get(unit, [])
        return steps.pop(0) if steps else False

    def __call__(self, action: Action) -> Outcome:
        if isinstance(action, Together):
            self.log.append(("together", str(len(action.plans))))
            return tuple(drive(plan, self) for plan in action.plans)
        if isinstance(action, Begin):
            if action.unit in self.stop_at_begin:
                return Interrupted(f"stopped by SIGTERM: unit {action.unit} not begun")
            return None
        if isinstance(action, Check):
            self.log.append(("check", action.task.container.name, str(action.fresh)))
            return CheckResult(True, DIGEST)
        if isinstance(action, Pull):
            self.log.append(("pull", action.task.container.name))
            return NEW
        if isinstance(action, Journal):
            self.log.append(("journal", action.task.container.name, str(action.new_image)[:1]))
            return None
        if isinstance(action, Restart):
            self.log.append(("restart", action.unit))
            if self._scripted(self.restart_fails, action.unit):
                return ServiceError(f'restarting systemd unit "{action.unit}" failed')
            return None
        if isinstance(action, Verify):
            self.log.append(("verify", action.unit, *(i[:1] for i in action.expected)))
            if self._scripted(self.verify_fails, action.unit):
                return VerificationError(f"verifying unit {action.unit} failed: it died")
            return None
        if isinstance(action, Retag):
            self.log.append(("retag", action.task.container.name))
            return None
        if isinstance(action, Tag):
            self.log.append(("tag", action.task.container.name, action.image_id[:1]))
            return None
        if isinstance(action, SetPhase):
            self.log.append(("phase", action.unit, str(action.phase)))
            return None
        if isinstance(action, Finish):
            self.log.append(("finish", action.unit, str(action.verified)))
            return None
        raise TypeError(f"unexpected {action!r}")


def run(
    names: str, host: Host, *, wave_size: int = 8, rollback: bool = True, dry_run: bool = False
) -> tuple[dict[str, Status], list[UpdockError]]:
    tasks = {f"{n}.service": [task(n)] for n in names}
    rows, errors = drive(
        update_group(
            tasks,
            dry_run=dry_run,
            rollback=rollback,
            images_done=SharedImageState(),
            wave_size=wave_size,
        ),
        host,
    )
    return {r.container_name: r.updated for r in rows}, errors


def restarted_together(host: Host) -> list[list[str]]:
    """The units restarted in each `Together` (a canary's restart is a group of its own)."""
    groups: list[list[str]] = []
    pending: list[int] = []  # units expected in the current Together
    for entry in host.log:
        if entry[0] == "together":
            groups.append([])
            pending.append(int(entry[1]))
        elif entry[0] == "restart":
            if pending and len(groups[-1]) < pending[-1]:
                groups[-1].append(entry[1].removesuffix(".service"))
            else:
                groups.append([entry[1].removesuffix(".service")])
    return groups


def test_a_canary_then_one_wave_of_the_others() -> None:
    host = Host()
    statuses, errors = run("abcd", host)
    assert statuses == dict.fromkeys("abcd", Status.UPDATED)
    assert errors == []
    assert restarted_together(host) == [["a"], ["b", "c", "d"]]
    # One pull, by the canary; the others journal the pulled image as their new one.
    assert [e for e in host.log if e[0] == "pull"] == [("pull", "a")]
    assert ("journal", "b", "f") in host.log
    # Each is verified on the image the canary pulled (not on whatever the name holds then).
    assert [e for e in host.log if e[0] == "verify"] == [
        ("verify", f"{u}.service", "f") for u in "abcd"
    ]
    assert [e for e in host.log if e[0] == "finish"] == [
        ("finish", f"{u}.service", "True") for u in "abcd"
    ]


def test_waves_are_bounded() -> None:
    host = Host()
    statuses, _ = run("abcdef", host, wave_size=2)
    assert set(statuses.values()) == {Status.UPDATED}
    assert restarted_together(host) == [["a"], ["b", "c"], ["d", "e"], ["f"]]


def test_a_failing_canary_is_rolled_back_and_the_next_unit_is_the_next_canary() -> None:
    host = Host(verify_fails={"a.service": [True], "b.service": [True]})
    statuses, errors = run("abcd", host)
    assert statuses == {
        "a": Status.ROLLED_BACK,
        "b": Status.ROLLED_BACK,
        "c": Status.UPDATED,
        "d": Status.UPDATED,
    }
    assert errors == []  # rollbacks that worked, as podman reports them
    # Never side by side onto an image that failed: each unit a canary of its own, checking
    # and pulling the name again (the spec's point 6), until one verifies.
    assert restarted_together(host)[:5] == [["a"], ["a"], ["b"], ["b"], ["c"]]
    assert [e for e in host.log if e[0] in ("check", "pull")][:6] == [
        ("check", "a", "False"),
        ("pull", "a"),
        ("check", "b", "True"),
        ("pull", "b"),
        ("check", "c", "True"),
        ("pull", "c"),
    ]
    assert restarted_together(host)[5] == ["d"]  # the wave after c's canary


def test_a_failure_in_a_wave_rolls_back_that_unit_only() -> None:
    host = Host(verify_fails={"c.service": [True]})
    statuses, errors = run("abcd", host)
    assert statuses == {
        "a": Status.UPDATED,
        "b": Status.UPDATED,
        "c": Status.ROLLED_BACK,
        "d": Status.UPDATED,
    }
    assert errors == []
    after_wave = host.log[host.log.index(("finish", "d.service", "True")) + 1 :]
    assert after_wave == [
        ("phase", "c.service", str(Phase.ROLLING_BACK)),
        ("retag", "c"),
        ("together", "1"),
        ("restart", "c.service"),
        ("verify", "c.service"),
        ("finish", "c.service", "False"),
        ("tag", "c", "f"),  # the name goes back to the new image the others verified
    ]


def test_failures_in_a_wave_with_the_same_previous_image_are_rolled_back_together() -> None:
    host = Host(restart_fails={"b.service": [True]}, verify_fails={"d.service": [True]})
    statuses, errors = run("abcd", host)
    assert statuses["b"] is statuses["d"] is Status.ROLLED_BACK
    assert restarted_together(host) == [["a"], ["b", "c", "d"], ["b", "d"]]
    assert [e for e in host.log if e[0] == "retag"] == [("retag", "b")]  # once per name
    assert errors == []


def test_a_wave_rollback_that_fails_is_reported_with_what_was_seen() -> None:
    host = Host(verify_fails={"c.service": [True, True]})
    statuses, errors = run("abc", host)
    assert statuses == {"a": Status.UPDATED, "b": Status.UPDATED, "c": Status.FAILED}
    assert len(errors) == 2
    assert "it died" in str(errors[0])
    assert "during rollback" in str(errors[1])


def test_a_wave_without_rollback_leaves_the_failure() -> None:
    host = Host(verify_fails={"c.service": [True]})
    statuses, errors = run("abc", host, rollback=False)
    assert statuses["c"] is Status.FAILED
    assert [e for e in host.log if e[0] in ("retag", "tag")] == []
    assert len(errors) == 1


def test_units_not_begun_after_a_stop_have_no_rows() -> None:
    host = Host(stop_at_begin={"c.service", "d.service"})
    statuses, errors = run("abcd", host)
    assert statuses == {"a": Status.UPDATED, "b": Status.UPDATED}
    assert errors == []


def test_a_stop_before_a_wave_restart_leaves_the_unit_on_its_previous_image() -> None:
    def host_stopping(action: Action) -> Outcome:
        if isinstance(action, Restart) and action.unit == "c.service" and action.interruptible:
            return Interrupted("stopped by SIGINT: unit c.service not restarted", 130)
        return base(action)

    base = Host()
    tasks = {f"{n}.service": [task(n)] for n in "abc"}
    images = SharedImageState()
    plan = update_group(tasks, dry_run=False, rollback=True, images_done=images)

    def performer(action: Action) -> Outcome:
        if isinstance(action, Together):
            return tuple(drive(p, performer) for p in action.plans)
        return host_stopping(action)

    rows, errors = drive(plan, performer)
    assert {r.container_name: r.updated for r in rows}["c"] is Status.FAILED
    assert [e.exit_code for e in errors] == [130]
    assert "not restarted" in str(errors[0])
    assert ("retag", "c") not in base.log  # never restarted: the name stays on the new image


def test_a_dry_run_checks_each_unit_and_changes_nothing() -> None:
    host = Host()
    statuses, _ = run("abc", host, dry_run=True)
    assert statuses == dict.fromkeys("abc", Status.PENDING)
    assert {e[0] for e in host.log} == {"check"}


def test_units_with_other_names_wait_for_their_own_canary() -> None:
    tasks = {
        "a.service": [task("a")],
        "b.service": [task("b"), task("b2", "quay.io/app/side:1")],  # a second name: a canary
        "c.service": [task("c")],
    }
    host = Host()
    rows, _ = drive(
        update_group(tasks, dry_run=False, rollback=True, images_done=SharedImageState()), host
    )
    assert {r.container_name for r in rows if r.updated is Status.UPDATED} == {"a", "b", "b2", "c"}
    assert restarted_together(host) == [["a"], ["c"], ["b"]]


@pytest.mark.parametrize("fails", [[], ["a"], ["b"], ["a", "b"], ["c", "e"]])
def test_every_unit_ends_updated_rolled_back_or_failed_and_is_finished_once(
    fails: list[str],
) -> None:
    host = Host(verify_fails={f"{u}.service": [True] for u in fails})
    statuses, _ = run("abcde", host, wave_size=2)
    assert set(statuses) == set("abcde")
    for unit in "abcde":
        finishes = [e for e in host.log if e[0] == "finish" and e[1] == f"{unit}.service"]
        expected = Status.ROLLED_BACK if unit in fails else Status.UPDATED
        assert statuses[unit] is expected
        assert len(finishes) == 1, host.log  # one journal entry, one end
