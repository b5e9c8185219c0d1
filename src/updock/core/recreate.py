"""The second way of applying an update: updock recreates the container itself.

A Docker container, or a podman container that no systemd unit runs, has no unit to restart:
updock replaces it with a new container on the new image, and never loses the service on the
way (Watchtower removes the old container before it creates the new one, and has no rollback):

1. `Prepare`: build the new container's configuration from the old one's, minus what came from
   the old image (so the new image's defaults apply), before anything changes;
2. `StopOld` (with the container's own stop signal and timeout), `RenameAside` (the old one
   keeps everything, under `aside_name`), `CreateNew` (under the old name), `StartNew`;
3. `Verify`: running, the same container for the settle time, healthy if it has a check;
4. only once every container of the unit verified: `RemoveOld`.

On any failure the old containers come back (`Restore`: the new one removed, the old one renamed
back and started) and are verified (`VerifyImages`). Before each change the step is journaled
(`SetStep`), so that a run killed anywhere is repaired by the next (`core.recovery`).

Containers that join the network namespace of a recreated one (`network_mode: container:<x>`)
and have no update of their own (`Task.followers`; `Task.follower_tasks` whose `Check` finds
none) would be left in a namespace that is gone. They are journaled with the unit before
anything changes (`JournalFollower`); once the unit's containers verified, each is recreated
the same way, on its own image, joining the new container (`PrepareFollower`, the same dance
with `CreateFollower` and `StartFollower`, then `VerifyFollower`); the old ones (the unit's
and the followers') are removed only then. If a follower cannot follow, the unit is rolled
back: its old containers come back first, then the followers' (`Restore` with `rejoin`), which
join the old containers' namespace again. After any rollback of a unit that was touched, every
follower is put back the same way: an untouched one is restarted, since the namespace it ran
in went with the old container's stop. A container with an update of its own that fails once
the one it joins was recreated is put back into the new one (`Restore.joins`).

These are actions in the style of `core.plan`: frozen records the shell performs, with no
engine-specific branch here (the engine's `Recreator` protocol does each step).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from updock.core.model import Container, Status, Step, Task
from updock.core.policy import go_quote
from updock.errors import Interrupted, UpdockError

if TYPE_CHECKING:
    # `core.plan` imports this module's actions: its own names are imported where used.
    from updock.core.plan import Action, Outcome, SharedImageState

#: How the report's Unit column names a recreated container, and a compose-created one.
CONTAINER_UNIT_PREFIX = "container:"
COMPOSE_UNIT_PREFIX = "compose:"


def recreated_unit(unit: str) -> bool:
    """Whether `unit` names recreated containers (`container:<name>`, `compose:<p>/<s>`)
    rather than a systemd unit (whose name always ends in a type suffix such as `.service`)."""
    return unit.startswith((CONTAINER_UNIT_PREFIX, COMPOSE_UNIT_PREFIX))


def aside_name(name: str, old_id: str) -> str:
    """The name the old container is renamed to while its replacement is tried.

    Derived from the name and the old container's ID alone, so that a repair finds it from the
    journal; valid for Docker and podman (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`).
    """
    return f"{name}.updock-old-{old_id[:12]}"


def is_aside(name: str, container_id: str) -> bool:
    """Whether the container is an old one updock renamed aside (`aside_name`): never one to
    update (an update or a repair of the container it replaced deals with it)."""
    base, sep, short = name.rpartition(".updock-old-")
    return bool(sep and base) and len(short) == 12 and container_id.startswith(short)


@dataclass(frozen=True)
class Prepare:
    """Before anything changes: build the new container's configuration from the old one (by
    its ID) and the image now under the task's name, keeping everything the user set and
    dropping what came from the old image. The shell keeps it for `CreateNew`.

    Outcome: None, or an error (then nothing has changed).

    Attributes:
        task: the container's task.
        interruptible: the first step of an update: once the run is asked to stop, the shell
            answers `Interrupted` instead, and nothing changes.
    """

    task: Task
    interruptible: bool = False


@dataclass(frozen=True)
class SetStep:
    """Record durably that the recreate of the container `container` of `unit` is at `step`,
    before the step is taken. Outcome: None, or an error (then the step is not taken)."""

    unit: str
    container: str
    step: Step


@dataclass(frozen=True)
class StopOld:
    """Stop the old container (by ID) with its own stop signal and timeout. Outcome: None or an
    error."""

    unit: str
    container: str
    old_id: str


@dataclass(frozen=True)
class RenameAside:
    """Rename the old container (by ID) to `aside_name(container, old_id)`, freeing its name.
    Outcome: None or an error."""

    unit: str
    container: str
    old_id: str


@dataclass(frozen=True)
class CreateNew:
    """Create the new container, named as the old one, from `Prepare`'s configuration (on the
    image now under the task's name). Outcome: None or an error."""

    task: Task


@dataclass(frozen=True)
class StartNew:
    """Start the new container. Outcome: None or an error."""

    task: Task


@dataclass(frozen=True)
class RemoveOld:
    """Remove the old container (by ID), with its anonymous volumes' references only (the
    volumes stay: the new container uses them). Nothing to do if it is gone. Outcome: None or
    an error."""

    unit: str
    container: str
    old_id: str


@dataclass(frozen=True)
class Restore:
    """Put the old container back, whatever step was reached: a container named `container`
    other than `old_id` is removed, the old one renamed back (from `aside_name`) and started.
    Idempotent. Outcome: None, or an error (the old one is gone, or would not start).

    Attributes:
        rejoin: the container joins another's network namespace (a follower): when the old
            one runs already, it is restarted, so that it joins the namespace of the container
            that runs now (the one it ran with may have been stopped and started since).
        joins: the container whose network namespace it joins, by name (`Container.network_of`),
            or "": when the old one cannot start because that container was recreated since
            (its old one is gone), it is recreated on its own image and configuration, joining
            the container of that name (`Recreator.prepare_follow`).
    """

    unit: str
    container: str
    old_id: str
    rejoin: bool = False
    joins: str = ""


@dataclass(frozen=True)
class JournalFollower:
    """Record durably, with the unit's update and before its first change, that `follower`
    joins the network namespace of the unit's container `joins`: a repair then brings it back
    into whichever container runs. Outcome: None, or an error (then nothing changes)."""

    unit: str
    follower: Container
    joins: str


@dataclass(frozen=True)
class PrepareFollower:
    """Build, from the follower's own configuration (by its ID), the configuration of the
    container that replaces it: the same, on the same image, joining the network namespace of
    the container now named `joins` (the new one). Outcome: None or an error."""

    unit: str
    follower: Container
    joins: str


@dataclass(frozen=True)
class CreateFollower:
    """Create the follower's new container, named as the old one, from `PrepareFollower`'s
    configuration. Outcome: None or an error."""

    unit: str
    follower: Container


@dataclass(frozen=True)
class StartFollower:
    """Start the follower's new container. Outcome: None or an error."""

    unit: str
    follower: Container


@dataclass(frozen=True)
class VerifyFollower:
    """Check that the follower runs (on its own image), as `VerifyImages` does, in the
    namespace of `joins`. Outcome: None, or an error that says what was seen.

    Attributes:
        restored: it was put back after the unit's rollback (else: recreated to follow the
            unit's new container); the shell says which.
    """

    unit: str
    follower: Container
    joins: str
    restored: bool = False


RecreateAction = (
    Prepare | SetStep | StopOld | RenameAside | CreateNew | StartNew | RemoveOld | Restore
    | JournalFollower | PrepareFollower | CreateFollower | StartFollower | VerifyFollower
)  # fmt: skip


@dataclass
class Recreated:
    """What `recreate_and_verify` did.

    Attributes:
        failure: the first failure (None: every container verified on its new image, and the
            old ones were removed).
        changed: whether any container was touched (stopped) before the failure; False when
            the failure came before any change (a `Prepare` that failed, or `Interrupted`).
        failure_changed: whether the container that failed was touched (False: its
            configuration could not be built, or the run was asked to stop: no bad image).
        follower_failed: the unit's containers verified, but a follower could not join them
            (no bad image either: the failure is an error of the run).
        restored: after a failure, whether every container touched is back, verified.
        errors: what went wrong after the failure (restores), or after success (an old
            container that could not be removed).
    """

    failure: UpdockError | None = None
    changed: bool = False
    failure_changed: bool = False
    follower_failed: bool = False
    restored: bool = True
    errors: list[UpdockError] = field(default_factory=list)


def _none(outcome: Outcome) -> UpdockError | None:
    if outcome is None or isinstance(outcome, UpdockError):
        return outcome
    raise TypeError(f"expected None or an UpdockError, got {outcome!r}")


def _quoted(task: Task) -> str:
    return go_quote(task.container.id)


def _followers(task: Task) -> Generator[Action, Outcome, tuple[Container, ...]]:
    """The containers that must follow `task`'s into its new network namespace: those with no
    task of their own, and those whose own task has no update (`Check`: the run's answer,
    asked once; one that cannot be checked follows too). One with an update is recreated by
    its own unit, after this one, in the namespace of whichever runs then."""
    from updock.core.plan import Check, CheckResult

    found = list(task.followers)
    for other in task.follower_tasks:
        outcome = yield Check(other)
        if not (isinstance(outcome, CheckResult) and outcome.update_available):
            found.append(other.container)
    return tuple(found)


def _replace(
    unit: str, task: Task, followers: Sequence[Container], *, interruptible: bool
) -> Generator[Action, Outcome, tuple[UpdockError | None, bool]]:
    """Replace one container by a new one and verify it; the old one stays aside, stopped.
    Its `followers` are journaled before it changes.

    Returns:
        The failure (or None) and whether the container was touched.
    """
    failure = _none((yield Prepare(task, interruptible)))
    if failure is not None:
        return failure, False
    for follower in followers:
        failure = _none((yield JournalFollower(unit, follower, task.container.name)))
        if failure is not None:
            return failure, False
    name, old_id = task.container.name, task.container.id
    failure, touched = yield from _dance(unit, name, old_id, CreateNew(task), StartNew(task))
    if failure is not None:
        return failure, touched
    from updock.core.plan import Verify

    return _none((yield Verify(unit, (task,)))), True


def _dance(
    unit: str, name: str, old_id: str, create: Action, start: Action
) -> Generator[Action, Outcome, tuple[UpdockError | None, bool]]:
    """Stop the old container, rename it aside, create and start the new one: each step
    journaled before it is taken.

    Returns:
        The first failure (or None), and whether the old container was touched.
    """
    steps: tuple[tuple[Step, Action], ...] = (
        (Step.STOPPING, StopOld(unit, name, old_id)),
        (Step.RENAMING, RenameAside(unit, name, old_id)),
        (Step.CREATING, create),
        (Step.STARTING, start),
    )
    for step, action in steps:
        failure = _none((yield SetStep(unit, name, step)))
        if failure is not None:  # not journaled: not taken
            return failure, step is not Step.STOPPING
        failure = _none((yield action))
        if failure is not None:
            return failure, True
    return None, True


def _follow(
    unit: str, joins: str, follower: Container
) -> Generator[Action, Outcome, tuple[UpdockError | None, bool]]:
    """Recreate a follower on its own image, joining the new container `joins`; verify it.

    Returns:
        The failure (or None) and whether the follower was touched.
    """
    failure = _none((yield PrepareFollower(unit, follower, joins)))
    if failure is not None:
        return failure, False
    create, start = CreateFollower(unit, follower), StartFollower(unit, follower)
    failure, touched = yield from _dance(unit, follower.name, follower.id, create, start)
    if failure is None:
        failure = _none((yield VerifyFollower(unit, follower, joins)))
    return failure, touched


def _restore_follower(
    unit: str, joins: str, follower: Container
) -> Generator[Action, Outcome, UpdockError | None]:
    """Put a follower's old container back (restarted if it ran), in the namespace of the
    container that runs now; verify it."""
    _none((yield SetStep(unit, follower.name, Step.RESTORING)))
    failure = _none((yield Restore(unit, follower.name, follower.id, rejoin=True)))
    if failure is None:
        failure = _none((yield VerifyFollower(unit, follower, joins, restored=True)))
    return failure


def _restore(unit: str, task: Task) -> Generator[Action, Outcome, UpdockError | None]:
    """Bring the old container back and verify it on its own image."""
    from updock.core.plan import VerifyImages

    name = task.container.name
    # Not journaled is no reason to stay down: an earlier step in the journal leads a repair
    # to restore it too.
    _none((yield SetStep(unit, name, Step.RESTORING)))
    restore = Restore(unit, name, task.container.id, joins=task.container.network_of)
    failure = _none((yield restore))
    if failure is None:
        failure = _none((yield VerifyImages(unit, ((name, task.container.image_id),))))
    return failure


def recreate_and_verify(
    unit: str, tasks: Sequence[Task], *, interruptible: bool = False, rollback: bool = True
) -> Generator[Action, Outcome, Recreated]:
    """Recreate the unit's containers one after the other, each verified, then their followers
    (`Task.followers`, and `Task.follower_tasks` without an update); then remove the old ones.
    On a failure, restore (unless `rollback` is off) every container touched, the failed one
    first, and then every follower of them.

    Args:
        unit: the unit (`container:<name>` or `compose:<project>/<service>`).
        tasks: its containers to recreate, each onto the image now under its name.
        interruptible: the first `Prepare` may be answered `Interrupted`.
        rollback: restore what was touched when a step fails.
    """
    result = Recreated()
    replaced: list[Task] = []
    touched: list[Task] = []
    followers: dict[str, tuple[Container, ...]] = {}
    for i, task in enumerate(tasks):
        followers[task.container.id] = yield from _followers(task)
        failure, changed = yield from _replace(
            unit, task, followers[task.container.id], interruptible=interruptible and i == 0
        )
        if changed:
            touched.append(task)
        if failure is not None:
            result.failure = failure
            result.failure_changed = changed
            break
        replaced.append(task)
    followed: list[Container] = []
    if result.failure is None:
        for task, follower in ((t, f) for t in replaced for f in followers[t.container.id]):
            joins = task.container.name
            failure, changed = yield from _follow(unit, joins, follower)
            if changed:
                followed.append(follower)
            if failure is not None:
                result.failure = _wrap(
                    failure,
                    f"container {follower.name}, which shares the network namespace of "
                    f"container {joins}, could not join its new container",
                )
                result.failure_changed = result.follower_failed = True
                break
    result.changed = bool(touched)
    if result.failure is None:
        done = [(t.container.name, t.container.id) for t in replaced]
        # The followers' old containers first: podman removes no container that others join.
        for name, old_id in [*((f.name, f.id) for f in followed), *done]:
            # Journaled first: a repair after this point completes the update, never restores.
            failure = _none((yield SetStep(unit, name, Step.VERIFIED)))
            if failure is None:
                failure = _none((yield RemoveOld(unit, name, old_id)))
            if failure is not None:
                kept = aside_name(name, old_id)
                result.errors.append(
                    _wrap(
                        failure, f"container {name} was updated; its old container {kept} is left"
                    )
                )
        return result
    if not rollback:
        return result
    for task in reversed(touched):
        failure = yield from _restore(unit, task)
        if failure is not None:
            result.restored = False
            result.errors.append(
                _wrap(failure, f"auto-updating container {_quoted(task)}: during rollback")
            )
    # Then the followers, into the namespace of the old containers that run again.
    for task, follower in ((t, f) for t in touched for f in followers[t.container.id]):
        failure = yield from _restore_follower(unit, task.container.name, follower)
        if failure is not None:
            result.restored = False
            result.errors.append(
                _wrap(
                    failure,
                    f"putting back container {follower.name}, which shares the network "
                    f"namespace of container {task.container.name}",
                )
            )
    return result


def _wrap(error: UpdockError, message: str) -> UpdockError:
    from updock.core.plan import _wrap as wrap

    return wrap(error, message)


def apply_recreate(
    unit: str,
    updated: Sequence[Task],
    status: dict[str, Status],
    errors: list[UpdockError],
    *,
    rollback: bool,
    images: SharedImageState,
) -> Generator[Action, Outcome, None]:
    """Apply an update by recreating the unit's containers (`core.plan._restart`'s counterpart).

    Statuses: `true` when every container verified; otherwise the image names go back to the
    previous images (as after a unit's rollback) and the containers are restored: `rolled back`
    when that verified. A failure before anything changed (the configuration could not be
    built) is no bad image: its error is reported, the container stays `failed`, as it runs.
    Nor is a follower that could not join the new containers: the unit is `rolled back`, and
    the error is reported.
    """
    from updock.core.plan import Finish, Retag, _containers

    done = yield from recreate_and_verify(unit, updated, interruptible=True, rollback=rollback)
    if done.failure is None:
        for task in updated:
            status[task.container.id] = Status.UPDATED
        errors.extend(done.errors)
        yield Finish(unit, tuple(updated), verified=True)
        return
    what = f"auto-updating {_containers(updated)}"
    if isinstance(done.failure, Interrupted) and not done.failure_changed:
        errors.append(_wrap(done.failure, f"{what}: not recreated"))
    elif not rollback:
        errors.append(_wrap(done.failure, what))  # left as the failure left it
        yield Finish(unit, tuple(updated), verified=False)
        return
    retag_errors: list[UpdockError] = []
    for task in updated:
        images.record_rollback(task.image.key)
        failure = _none((yield Retag(task)))
        if failure is not None:
            retag_errors.append(
                _wrap(failure, f"restoring {go_quote(task.image.raw)} on its previous image")
            )
    if not isinstance(done.failure, Interrupted):
        if done.failure_changed and done.restored:
            for task in updated:
                status[task.container.id] = Status.ROLLED_BACK
            if done.errors or retag_errors or done.follower_failed:
                errors.append(_wrap(done.failure, what))
        else:  # a configuration that cannot be recreated (no bad image), or not restored
            errors.append(_wrap(done.failure, what))
    errors.extend(done.errors)
    errors.extend(retag_errors)
    yield Finish(unit, tuple(updated), verified=False)
