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

These are actions in the style of `core.plan`: frozen records the shell performs, with no
engine-specific branch here (the engine's `Recreator` protocol does each step).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from updock.core.model import Status, Step, Task
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
    Idempotent. Outcome: None, or an error (the old one is gone, or would not start)."""

    unit: str
    container: str
    old_id: str


RecreateAction = (
    Prepare | SetStep | StopOld | RenameAside | CreateNew | StartNew | RemoveOld | Restore
)


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
        restored: after a failure, whether every container touched is back, verified.
        errors: what went wrong after the failure (restores), or after success (an old
            container that could not be removed).
    """

    failure: UpdockError | None = None
    changed: bool = False
    failure_changed: bool = False
    restored: bool = True
    errors: list[UpdockError] = field(default_factory=list)


def _none(outcome: Outcome) -> UpdockError | None:
    if outcome is None or isinstance(outcome, UpdockError):
        return outcome
    raise TypeError(f"expected None or an UpdockError, got {outcome!r}")


def _quoted(task: Task) -> str:
    return go_quote(task.container.id)


def _replace(
    unit: str, task: Task, *, interruptible: bool
) -> Generator[Action, Outcome, tuple[UpdockError | None, bool]]:
    """Replace one container by a new one and verify it; the old one stays aside, stopped.

    Returns:
        The failure (or None) and whether the container was touched.
    """
    failure = _none((yield Prepare(task, interruptible)))
    if failure is not None:
        return failure, False
    name, old_id = task.container.name, task.container.id
    steps: tuple[tuple[Step, Action], ...] = (
        (Step.STOPPING, StopOld(unit, name, old_id)),
        (Step.RENAMING, RenameAside(unit, name, old_id)),
        (Step.CREATING, CreateNew(task)),
        (Step.STARTING, StartNew(task)),
    )
    for step, action in steps:
        failure = _none((yield SetStep(unit, name, step)))
        if failure is not None:  # not journaled: not taken
            return failure, step is not Step.STOPPING
        failure = _none((yield action))
        if failure is not None:
            return failure, True
    from updock.core.plan import Verify

    return _none((yield Verify(unit, (task,)))), True


def _restore(unit: str, task: Task) -> Generator[Action, Outcome, UpdockError | None]:
    """Bring the old container back and verify it on its own image."""
    from updock.core.plan import VerifyImages

    name = task.container.name
    # Not journaled is no reason to stay down: an earlier step in the journal leads a repair
    # to restore it too.
    _none((yield SetStep(unit, name, Step.RESTORING)))
    failure = _none((yield Restore(unit, name, task.container.id)))
    if failure is None:
        failure = _none((yield VerifyImages(unit, ((name, task.container.image_id),))))
    return failure


def recreate_and_verify(
    unit: str, tasks: Sequence[Task], *, interruptible: bool = False, rollback: bool = True
) -> Generator[Action, Outcome, Recreated]:
    """Recreate the unit's containers one after the other, each verified; then remove the old
    ones. On a failure, restore (unless `rollback` is off) every container touched, the failed
    one first.

    Args:
        unit: the unit (`container:<name>` or `compose:<project>/<service>`).
        tasks: its containers to recreate, each onto the image now under its name.
        interruptible: the first `Prepare` may be answered `Interrupted`.
        rollback: restore what was touched when a step fails.
    """
    result = Recreated()
    replaced: list[Task] = []
    touched: list[Task] = []
    for i, task in enumerate(tasks):
        failure, changed = yield from _replace(unit, task, interruptible=interruptible and i == 0)
        if changed:
            touched.append(task)
        if failure is not None:
            result.failure = failure
            result.failure_changed = changed
            break
        replaced.append(task)
    result.changed = bool(touched)
    if result.failure is None:
        for task in replaced:
            name = task.container.name
            # Journaled first: a repair after this point completes the update, never restores.
            failure = _none((yield SetStep(unit, name, Step.VERIFIED)))
            if failure is None:
                failure = _none((yield RemoveOld(unit, name, task.container.id)))
            if failure is not None:
                kept = aside_name(name, task.container.id)
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
            if done.errors or retag_errors:
                errors.append(_wrap(done.failure, what))
        else:  # a configuration that cannot be recreated (no bad image), or not restored
            errors.append(_wrap(done.failure, what))
    errors.extend(done.errors)
    errors.extend(retag_errors)
    yield Finish(unit, tuple(updated), verified=False)
