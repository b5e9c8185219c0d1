"""The update of one unit, driven with plain functions: every path without any I/O."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import pytest

from updock.core.model import Container, Policy, ReportRow, Status, Task
from updock.core.plan import (
    Action,
    Check,
    CheckResult,
    Finish,
    Journal,
    Outcome,
    Pull,
    Restart,
    Retag,
    SharedImageState,
    Verify,
    drive,
    update_unit,
)
from updock.core.reference import parse_image_name, registry_image_name
from updock.errors import (
    EngineError,
    Interrupted,
    RegistryError,
    ServiceError,
    UpdockError,
    VerificationError,
)

IMAGE = "quay.io/app/web:latest"
DIGEST = "sha256:" + "ab" * 32
NEW_IMAGE = "f" * 64  # the ID of what a Pull pulled


def make_task(
    name: str,
    *,
    unit: str = "web.service",
    policy: Policy = Policy.REGISTRY,
    image: str = IMAGE,
) -> Task:
    container = Container(id=(name * 64)[:64], name=name, image_id="0" * 64, raw_image_name=image)
    parse = registry_image_name if policy is Policy.REGISTRY else parse_image_name
    return Task(unit=unit, container=container, policy=policy, image=parse(image))


@dataclass
class World:
    """Performs actions from a script and logs them; unlisted checks find an update.

    Attributes:
        checks: outcome of `Check` per container name.
        pulls: outcome of `Pull` per container name.
        restarts: outcomes of successive `Restart`s (then None).
        retags: outcome of `Retag` per container name.
        log: the actions performed, in order, as short tuples.
        order: the kind of every action performed, in order (both logs together).
    """

    checks: Mapping[str, Outcome] = field(default_factory=dict)
    pulls: Mapping[str, Outcome] = field(default_factory=dict)
    restarts: list[Outcome] = field(default_factory=list)
    retags: Mapping[str, Outcome] = field(default_factory=dict)
    verifies: list[Outcome] = field(default_factory=list)
    journals: Mapping[str, Outcome] = field(default_factory=dict)
    log: list[tuple[str, ...]] = field(default_factory=list)
    journal_log: list[tuple[str, ...]] = field(default_factory=list)
    order: list[str] = field(default_factory=list)

    def __call__(self, action: Action) -> Outcome:
        self.order.append(type(action).__name__)
        if isinstance(action, Check):
            self.log.append(("check", action.task.container.name))
            return self.checks.get(action.task.container.name, CheckResult(True, DIGEST))
        if isinstance(action, Pull):
            self.log.append(("pull", action.task.container.name, str(action.digest)))
            return self.pulls.get(action.task.container.name, NEW_IMAGE)
        if isinstance(action, Restart):
            self.log.append(("restart", action.unit))
            return self.restarts.pop(0) if self.restarts else None
        # Journal, Verify and Finish go to their own log, so the tests above read as podman's
        # sequence of checks, pulls, restarts and re-tags.
        if isinstance(action, Journal):
            self.journal_log.append(("journal", action.task.container.name))
            return self.journals.get(action.task.container.name)
        if isinstance(action, Verify):
            self.journal_log.append(("verify", action.unit))
            return self.verifies.pop(0) if self.verifies else None
        if isinstance(action, Finish):
            self.journal_log.append(("finish", action.unit, str(action.verified)))
            return None
        if not isinstance(action, Retag):
            raise TypeError(f"update_unit yielded {action!r}")
        self.log.append(("retag", action.task.container.name))
        return self.retags.get(action.task.container.name)


def run(
    tasks: Sequence[Task],
    world: Callable[[Action], Outcome],
    *,
    dry_run: bool = False,
    rollback: bool = True,
    images: SharedImageState | None = None,
) -> tuple[list[ReportRow], list[UpdockError]]:
    plan = update_unit(
        tasks[0].unit,
        tasks,
        dry_run=dry_run,
        rollback=rollback,
        images_done=images if images is not None else SharedImageState(),
    )
    return drive(plan, world)


def statuses(rows: Sequence[ReportRow]) -> list[Status]:
    return [row.updated for row in rows]


def test_no_update() -> None:
    world = World(checks={"web": CheckResult(False)})
    rows, errors = run([make_task("web")], world)
    assert statuses(rows) == [Status.NOT_UPDATED]
    assert errors == []
    assert world.log == [("check", "web")]


def test_dry_run_reports_pending_and_changes_nothing() -> None:
    world = World()
    images = SharedImageState()
    rows, errors = run([make_task("web")], world, dry_run=True, images=images)
    assert statuses(rows) == [Status.PENDING]
    assert errors == []
    assert world.log == [("check", "web")]
    assert not images.is_pulled(IMAGE)


def test_check_fails() -> None:
    task = make_task("web")
    world = World(checks={"web": RegistryError("connection refused")})
    rows, errors = run([task], world)
    assert statuses(rows) == [Status.FAILED]
    assert world.log == [("check", "web")]
    assert len(errors) == 1
    assert isinstance(errors[0], RegistryError)  # the class, and so the exit status, is kept
    assert str(errors[0]) == (
        f'registry auto-updating container "{task.container.id}": '
        f'image check for "{IMAGE}" failed: connection refused'
    )
    assert isinstance(errors[0].__cause__, RegistryError)


def test_pull_fails() -> None:
    task = make_task("web")
    world = World(pulls={"web": EngineError("no space left on device")})
    images = SharedImageState()
    rows, errors = run([task], world, images=images)
    assert statuses(rows) == [Status.FAILED]
    assert world.log == [("check", "web"), ("pull", "web", DIGEST)]
    assert str(errors[0]) == (
        f'registry auto-updating container "{task.container.id}": '
        f'image update for "{IMAGE}" failed: no space left on device'
    )
    assert not images.is_pulled(IMAGE)
    # The unit was never touched: its journal entry is cleared now, not "repaired" next run.
    assert world.journal_log == [("journal", "web"), ("finish", "web.service", "False")]


def test_restart_ok() -> None:
    world = World()
    images = SharedImageState()
    rows, errors = run([make_task("web")], world, images=images)
    assert statuses(rows) == [Status.UPDATED]
    assert errors == []
    # The pull is pinned to the digest the check found.
    assert world.log == [("check", "web"), ("pull", "web", DIGEST), ("restart", "web.service")]
    assert images.is_pulled(IMAGE)


def test_rows_carry_the_task() -> None:
    task = make_task("web")
    rows, _ = run([task], World())
    assert rows == [
        ReportRow(
            unit="web.service",
            container_id=task.container.id,
            container_name="web",
            image=IMAGE,
            policy=Policy.REGISTRY,
            updated=Status.UPDATED,
        )
    ]


def test_restart_fails_rollback_ok() -> None:
    world = World(restarts=[ServiceError('job for "web.service" ended "failed"'), None])
    images = SharedImageState()
    rows, errors = run([make_task("web")], world, images=images)
    assert statuses(rows) == [Status.ROLLED_BACK]
    # As in podman, a rollback that works is no error: the run exits 0.
    assert errors == []
    assert world.log == [
        ("check", "web"),
        ("pull", "web", DIGEST),
        ("restart", "web.service"),
        ("retag", "web"),
        ("restart", "web.service"),
    ]
    assert not images.is_pulled(IMAGE)
    assert images.was_rolled_back(IMAGE)


def restart_error(detail: str, unit: str = "web.service") -> ServiceError:
    """A ServiceError shaped like the systemd manager's."""
    return ServiceError(f'restarting systemd unit "{unit}" failed: {detail}')


def test_restart_fails_rollback_fails() -> None:
    task = make_task("web")
    world = World(restarts=[restart_error("first"), restart_error("second")])
    rows, errors = run([task], world)
    assert statuses(rows) == [Status.FAILED]
    cid = task.container.id
    assert [str(e) for e in errors] == [
        f'auto-updating container "{cid}": restarting systemd unit "web.service" failed: first',
        f'auto-updating container "{cid}": during rollback: '
        'restarting systemd unit "web.service" failed: second',
    ]
    assert all(isinstance(e, ServiceError) for e in errors)


def test_retag_fails() -> None:
    task = make_task("web")
    world = World(restarts=[ServiceError("boom")], retags={"web": EngineError("image gone")})
    images = SharedImageState()
    rows, errors = run([task], world, images=images)
    # Restarted again, but on the new image: not rolled back.
    assert statuses(rows) == [Status.FAILED]
    assert world.log[-2:] == [("retag", "web"), ("restart", "web.service")]
    assert [type(e) for e in errors] == [ServiceError, EngineError]
    assert str(errors[1]) == (
        f'auto-updating container "{task.container.id}": '
        f'falling back to previous image "{IMAGE}" failed: image gone'
    )
    assert not images.is_pulled(IMAGE)


def test_rollback_disabled() -> None:
    task = make_task("web")
    world = World(restarts=[restart_error("boom")])
    images = SharedImageState()
    rows, errors = run([task], world, rollback=False, images=images)
    assert statuses(rows) == [Status.FAILED]
    assert world.log == [("check", "web"), ("pull", "web", DIGEST), ("restart", "web.service")]
    assert [str(e) for e in errors] == [
        f'auto-updating container "{task.container.id}": '
        'restarting systemd unit "web.service" failed: boom'
    ]
    assert images.is_pulled(IMAGE)  # nothing was rolled back


def test_two_tasks_in_one_unit_restart_once() -> None:
    web = make_task("web", unit="pod.service", image="quay.io/app/web:1")
    db = make_task("db", unit="pod.service", image="quay.io/app/db:1")
    cache = make_task("cache", unit="pod.service", image="quay.io/app/cache:1")
    world = World(checks={"cache": CheckResult(False)})
    rows, errors = run([web, db, cache], world)
    assert errors == []
    assert statuses(rows) == [Status.UPDATED, Status.UPDATED, Status.NOT_UPDATED]
    assert world.log == [
        ("check", "web"),
        ("pull", "web", DIGEST),
        ("check", "db"),
        ("pull", "db", DIGEST),
        ("check", "cache"),
        ("restart", "pod.service"),
    ]


def test_failed_check_does_not_stop_the_unit() -> None:
    web = make_task("web", image="quay.io/app/web:1")
    db = make_task("db", image="quay.io/app/db:1")
    world = World(checks={"web": RegistryError("unauthorized")})
    rows, errors = run([web, db], world)
    assert statuses(rows) == [Status.FAILED, Status.UPDATED]
    assert len(errors) == 1
    assert world.log[-1] == ("restart", "web.service")


def test_two_tasks_rollback_names_both() -> None:
    web = make_task("web", image="quay.io/app/web:1")
    db = make_task("db", image="quay.io/app/db:1")
    world = World(restarts=[restart_error("x"), restart_error("y")])
    rows, errors = run([web, db], world)
    assert statuses(rows) == [Status.FAILED, Status.FAILED]
    assert str(errors[0]) == (
        f'auto-updating containers "{web.container.id}" "{db.container.id}": '
        'restarting systemd unit "web.service" failed: x'
    )
    assert world.log.count(("restart", "web.service")) == 2
    assert ("retag", "web") in world.log
    assert ("retag", "db") in world.log


def test_shared_image_pulled_once() -> None:
    images = SharedImageState()
    first = World()
    run([make_task("one", unit="one.service")], first, images=images)
    second = World()
    rows, errors = run([make_task("two", unit="two.service")], second, images=images)
    assert statuses(rows) == [Status.UPDATED]
    assert errors == []
    # Neither checked nor pulled again: only the unit restarts on the image already pulled.
    assert second.log == [("restart", "two.service")]


def test_shared_image_within_one_unit() -> None:
    world = World()
    rows, _ = run([make_task("a"), make_task("b")], world)
    assert statuses(rows) == [Status.UPDATED, Status.UPDATED]
    assert world.log == [("check", "a"), ("pull", "a", DIGEST), ("restart", "web.service")]


def test_shared_image_rechecked_after_rollback() -> None:
    images = SharedImageState()
    first = World(restarts=[ServiceError("dies"), None])
    rows, _ = run([make_task("one", unit="one.service")], first, images=images)
    assert statuses(rows) == [Status.ROLLED_BACK]
    second = World()
    rows, errors = run([make_task("two", unit="two.service")], second, images=images)
    # podman's bug: it would restart two.service on the image that just failed, unchecked.
    assert second.log == [("check", "two"), ("pull", "two", DIGEST), ("restart", "two.service")]
    assert statuses(rows) == [Status.UPDATED]
    assert errors == []
    assert images.is_pulled(IMAGE)
    assert not images.was_rolled_back(IMAGE)


def test_check_after_rollback_asks_afresh() -> None:
    images = SharedImageState()
    run([make_task("one", unit="one.service")], World(restarts=[ServiceError("x")]), images=images)
    seen: list[Action] = []

    def world(action: Action) -> Outcome:
        seen.append(action)
        return CheckResult(False) if isinstance(action, Check) else None

    task = make_task("two", unit="two.service")
    run([task], world, images=images)
    assert seen == [Check(task, fresh=True)]
    assert images.was_rolled_back(IMAGE)


def test_first_check_is_not_fresh() -> None:
    task = make_task("web")
    plan = update_unit(
        "web.service", [task], dry_run=True, rollback=True, images_done=SharedImageState()
    )
    assert next(plan) == Check(task, fresh=False)


def test_shared_image_after_rollback_may_find_no_update() -> None:
    images = SharedImageState()
    run([make_task("one", unit="one.service")], World(restarts=[ServiceError("x")]), images=images)
    second = World(checks={"two": CheckResult(False)})
    rows, _ = run([make_task("two", unit="two.service")], second, images=images)
    assert statuses(rows) == [Status.NOT_UPDATED]
    assert second.log == [("check", "two")]


def test_local_policy() -> None:
    task = make_task("web", policy=Policy.LOCAL, image="localhost/web:dev")
    world = World(checks={"web": CheckResult(True)})
    images = SharedImageState()
    rows, errors = run([task], world, images=images)
    assert statuses(rows) == [Status.UPDATED]
    assert errors == []
    assert world.log == [("check", "web"), ("restart", "web.service")]  # nothing to pull
    assert not images.is_pulled("localhost/web:dev")


def test_local_policy_never_takes_the_shortcut() -> None:
    images = SharedImageState()
    images.record_pull(IMAGE, NEW_IMAGE)
    world = World(checks={"web": CheckResult(False)})
    rows, _ = run([make_task("web", policy=Policy.LOCAL)], world, images=images)
    assert statuses(rows) == [Status.NOT_UPDATED]
    assert world.log == [("check", "web")]


def test_local_policy_rollback() -> None:
    task = make_task("web", policy=Policy.LOCAL, image="localhost/web:dev")
    world = World(restarts=[ServiceError("exit 1"), None])
    rows, errors = run([task], world)
    assert statuses(rows) == [Status.ROLLED_BACK]
    assert errors == []
    assert world.log == [
        ("check", "web"),
        ("restart", "web.service"),
        ("retag", "web"),
        ("restart", "web.service"),
    ]


def test_local_policy_check_error_message() -> None:
    task = make_task("web", policy=Policy.LOCAL, image="localhost/web:dev")
    _, errors = run([task], World(checks={"web": EngineError("image not known")}))
    assert str(errors[0]) == (
        f'locally auto-updating container "{task.container.id}": '
        'image check for "localhost/web:dev" failed: image not known'
    )


def test_handler_exceptions_are_failures() -> None:
    def world(action: Action) -> Outcome:
        if isinstance(action, Restart):
            raise restart_error("unit not found")
        if isinstance(action, Pull):
            return NEW_IMAGE
        return CheckResult(True, None) if isinstance(action, Check) else None

    rows, errors = run([make_task("web")], world, rollback=False)
    assert statuses(rows) == [Status.FAILED]
    assert str(errors[0]).endswith("failed: unit not found")


def test_pull_without_digest() -> None:
    world = World(checks={"web": CheckResult(True)})
    run([make_task("web")], world)
    assert ("pull", "web", "None") in world.log


def test_wrong_outcome_is_a_bug() -> None:
    with pytest.raises(TypeError):
        run([make_task("web")], lambda action: None)


def test_driven_by_hand() -> None:
    task = make_task("web")
    plan = update_unit(
        "web.service", [task], dry_run=False, rollback=True, images_done=SharedImageState()
    )
    assert next(plan) == Check(task)
    assert plan.send(CheckResult(True, DIGEST)) == Journal(task)
    assert plan.send(None) == Pull(task, DIGEST)
    # The update's restart may be answered `Interrupted`; the rollback's is always performed.
    assert plan.send(NEW_IMAGE) == Restart("web.service", interruptible=True)
    assert plan.send(ServiceError("failed")) == Retag(task)
    assert plan.send(None) == Restart("web.service", interruptible=False)
    assert plan.send(None) == Verify("web.service", (task,))
    assert plan.send(None) == Finish("web.service", (task,), verified=False)
    with pytest.raises(StopIteration) as stop:
        plan.send(None)
    rows, errors = stop.value.value
    assert statuses(rows) == [Status.ROLLED_BACK]
    assert errors == []


def test_shared_image_state() -> None:
    images = SharedImageState()
    assert not images.is_pulled("a")
    images.record_pull("a", NEW_IMAGE)
    assert images.is_pulled("a")
    images.record_rollback("a")
    assert not images.is_pulled("a")
    assert images.was_rolled_back("a")
    images.record_pull("a", NEW_IMAGE)
    assert images.is_pulled("a")
    assert not images.was_rolled_back("a")


# -- verification, journal (issue 5) ---------------------------------------------------------


def test_verified_update_is_journaled_then_finished() -> None:
    world = World()
    rows, errors = run([make_task("web")], world)
    assert statuses(rows) == [Status.UPDATED]
    assert errors == []
    assert world.journal_log == [
        ("journal", "web"),
        ("verify", "web.service"),
        ("finish", "web.service", "True"),
    ]
    assert world.log[:2] == [("check", "web"), ("pull", "web", DIGEST)]
    # The intent is recorded before anything changes: before the pull.
    assert world.order == ["Check", "Journal", "Pull", "Restart", "Verify", "Finish"]


def test_failed_verification_rolls_back_and_verifies_the_old_image() -> None:
    seen = ServiceError('container "web" exited 1 two seconds after start')
    world = World(verifies=[seen, None])
    rows, errors = run([make_task("web")], world)
    assert statuses(rows) == [Status.ROLLED_BACK]
    assert errors == []  # a working rollback is no error, as in podman
    assert world.log[-3:] == [
        ("restart", "web.service"),
        ("retag", "web"),
        ("restart", "web.service"),
    ]
    assert world.journal_log == [
        ("journal", "web"),
        ("verify", "web.service"),
        ("verify", "web.service"),
        ("finish", "web.service", "False"),
    ]


def test_failed_verification_of_rollback_is_failed_with_both_errors() -> None:
    world = World(verifies=[ServiceError("new died"), ServiceError("old died too")])
    task = make_task("web")
    rows, errors = run([task], world)
    assert statuses(rows) == [Status.FAILED]
    assert [str(e) for e in errors] == [
        f'auto-updating container "{task.container.id}": new died',
        f'auto-updating container "{task.container.id}": during rollback: old died too',
    ]


def test_failed_verification_without_rollback_is_failed() -> None:
    world = World(verifies=[ServiceError("unhealthy")])
    rows, errors = run([make_task("web")], world, rollback=False)
    assert statuses(rows) == [Status.FAILED]
    assert len(errors) == 1
    assert world.journal_log[-1] == ("finish", "web.service", "False")
    assert ("retag", "web") not in world.log


def test_journal_failure_changes_nothing_for_that_task() -> None:
    world = World(journals={"web": EngineError("state file not writable")})
    rows, errors = run([make_task("web")], world)
    assert statuses(rows) == [Status.FAILED]
    assert "state file not writable" in str(errors[0])
    assert world.log == [("check", "web")]  # no pull, no restart


def test_dry_run_journals_nothing() -> None:
    world = World()
    rows, _ = run([make_task("web")], world, dry_run=True)
    assert statuses(rows) == [Status.PENDING]
    assert world.journal_log == []


def test_a_stop_before_the_restart_puts_the_names_back_and_restarts_nothing() -> None:
    web, api = make_task("web"), make_task("api", image="quay.io/app/api:1")
    images = SharedImageState()
    plan = update_unit("web.service", [web, api], dry_run=False, rollback=True, images_done=images)
    assert next(plan) == Check(web)
    assert plan.send(CheckResult(True, DIGEST)) == Journal(web)
    assert plan.send(None) == Pull(web, DIGEST)
    assert plan.send(NEW_IMAGE) == Check(api)
    assert plan.send(CheckResult(True, DIGEST)) == Journal(api)
    assert plan.send(None) == Pull(api, DIGEST)
    assert plan.send(NEW_IMAGE) == Restart("web.service", interruptible=True)
    stopped = Interrupted("stopped by SIGINT: unit web.service not restarted", 130)
    assert plan.send(stopped) == Retag(web)
    assert plan.send(None) == Retag(api)
    assert plan.send(None) == Finish("web.service", (web, api), verified=False)
    with pytest.raises(StopIteration) as stop:
        plan.send(None)
    rows, errors = stop.value.value
    assert statuses(rows) == [Status.FAILED, Status.FAILED]
    assert len(errors) == 1
    assert isinstance(errors[0], Interrupted)
    assert errors[0].exit_code == 130  # kept through the wrapping: the CLI exits 130
    assert "not restarted" in str(errors[0])
    # A later unit of the same name checks again rather than restart onto the unused pull.
    assert images.was_rolled_back(web.image.key)


def test_a_stop_before_the_journal_leaves_the_task_alone() -> None:
    task = make_task("web")
    plan = update_unit(
        "web.service", [task], dry_run=False, rollback=True, images_done=SharedImageState()
    )
    assert next(plan) == Check(task)
    assert plan.send(CheckResult(True, DIGEST)) == Journal(task)
    with pytest.raises(StopIteration) as stop:
        plan.send(Interrupted("stopped by SIGTERM: container web not updated"))
    rows, errors = stop.value.value
    assert statuses(rows) == [Status.FAILED]
    assert [e.exit_code for e in errors] == [143]


def test_an_update_is_verified_on_the_images_it_moved_to_and_a_rollback_on_the_names() -> None:
    """A unit that puts another image under the name as it starts (kube play pulls `latest`
    again) must not pass for updated: verification expects the checked and pulled images."""
    web, local = make_task("web"), make_task("dev", policy=Policy.LOCAL, image="localhost/d:1")
    plan = update_unit(
        "web.service", [web, local], dry_run=False, rollback=True, images_done=SharedImageState()
    )
    assert next(plan) == Check(web)
    assert plan.send(CheckResult(True, DIGEST)) == Journal(web)
    assert plan.send(None) == Pull(web, DIGEST)
    assert plan.send(NEW_IMAGE) == Check(local)
    assert plan.send(CheckResult(True, image_id="e" * 64)) == Journal(local)
    assert plan.send(None) == Restart("web.service", interruptible=True)
    assert plan.send(None) == Verify("web.service", (web, local), (NEW_IMAGE, "e" * 64))
    assert plan.send(VerificationError("runs image 0000")) == Retag(web)
    assert plan.send(None) == Retag(local)
    assert plan.send(None) == Restart("web.service", interruptible=False)
    assert plan.send(None) == Verify("web.service", (web, local))  # the names, tagged again
