"""The update of one systemd unit, decided without doing any I/O.

`update_unit` is a generator in the style of httpx's `Auth.auth_flow`: it yields an action
(`Check`, `Pull`, `Restart`, `Retag`), the shell performs it and sends the outcome back (a value,
`None`, or the `UpdockError` the action failed with), and when the unit is done the generator
returns the report rows and errors. Every path, rollbacks included, is then a plain unit test;
`drive` runs a generator with any function that performs actions.

It follows podman's `updateUnit`: check every task, pull what changed, restart the unit once,
and roll back by re-tagging the previous images and restarting again. Two things differ: only
the tasks that were updated change status after a restart (podman marks every task of the unit),
and an image rolled back in this run is checked and pulled again by later containers (podman
meant to, but tests whether the key exists rather than its value).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from updock.core.model import Apply, Phase, Policy, ReportRow, Status, Task
from updock.core.policy import go_quote
from updock.core.recreate import RecreateAction
from updock.core.reference import ImageReference
from updock.errors import Interrupted, UpdockError


@dataclass(frozen=True)
class CheckResult:
    """The outcome of a `Check`.

    Attributes:
        update_available: whether the registry (or the local store, for the local policy) has a
            different image under the raw image name.
        digest: for the registry policy, the manifest digest found, so that the pull fetches
            exactly what was checked; None if unknown or for the local policy.
        image_id: for the local policy, the ID of the image now under the name (the new one).
    """

    update_available: bool
    digest: str | None = None
    image_id: str | None = None


@dataclass(frozen=True)
class Check:
    """Ask whether an update is available for a task. Outcome: `CheckResult` or an error.

    Attributes:
        task: the task to check.
        fresh: the raw image name was rolled back earlier in this run: ask the registry again
            rather than reuse an answer given before the rollback.
    """

    task: Task
    fresh: bool = False


@dataclass(frozen=True)
class Pull:
    """Pull the task's image name, at `digest` if given, and tag the pulled image with the name.

    Outcome: the pulled image's ID, or an error.
    """

    task: Task
    digest: str | None


@dataclass(frozen=True)
class Restart:
    """Restart a systemd unit and wait for its job to end `done`. Outcome: None or an error.

    Attributes:
        unit: the unit.
        interruptible: the restart that applies an update (not one that rolls back or
            repairs): once the run is asked to stop, the shell answers it with `Interrupted`
            instead of restarting, and the plan puts the previous images back untouched.
    """

    unit: str
    interruptible: bool = False


@dataclass(frozen=True)
class Retag:
    """Tag the task's previous image (the container's image ID) with its raw image name again.

    Outcome: None or an error.
    """

    task: Task


@dataclass(frozen=True)
class Journal:
    """Record, durably, that the task's unit is about to change, before anything changes.

    The shell keeps the task's current (previous) image safe and writes the intent to its state
    file, so that a run killed at any later point can be completed or rolled back by the next.
    Outcome: None, or an error (then the task is not updated).

    Attributes:
        task: the task.
        target: the image the task moves to, when known before anything changes (a manual
            rollback, to the kept previous image): journaled as the new image, and the kept
            previous image is left as it is (it is the target).
        new_image: the image an update moves the task to, when known already (another unit
            pulled the name in this run): journaled, so that a repair can complete the update.
    """

    task: Task
    target: str | None = None
    new_image: str | None = None


@dataclass(frozen=True)
class Verify:
    """Check that the unit really runs: active, every task's container running on its expected
    image, stable for the settle time, healthy if it has a health check.

    Outcome: None, or an error that says what was seen.

    Attributes:
        unit: the unit.
        tasks: its tasks that were updated (or rolled back).
        expected: the image ID each task's container must run, in the order of `tasks`: an
            update's new images, as checked and pulled. Where empty (or "", or missing): the
            image tagged under the task's raw name when verified (a rollback's previous image).
            A unit that puts another image under the name as it starts (kube play pulls a
            `latest` tag at every start) does not run the update.
    """

    unit: str
    tasks: tuple[Task, ...]
    expected: tuple[str, ...] = ()


@dataclass(frozen=True)
class Finish:
    """The unit's update is over: clear its journal entry.

    Attributes:
        unit: the unit.
        tasks: the tasks that were updated.
        verified: True when the unit now runs the new images (then the previous images may be
            released as configured); False when it was rolled back or left failed.
    """

    unit: str
    tasks: tuple[Task, ...]
    verified: bool


@dataclass(frozen=True)
class Tag:
    """Tag `image_id` with the task's raw image name (a manual rollback's target).

    Outcome: None or an error.
    """

    task: Task
    image_id: str


@dataclass(frozen=True)
class VerifyImages:
    """Check that the unit really runs, as `Verify` does, on images given by ID: each named
    container on its image (a crash repair, which cannot trust what names the images carry).

    Attributes:
        unit: the unit.
        images: (container name, image ID) pairs.

    Outcome: None, or an error that says what was seen.
    """

    unit: str
    images: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class TagImage:
    """Give the image `image_id` the name `name` (moving it from any other image).

    Outcome: None or an error.
    """

    image_id: str
    name: ImageReference


@dataclass(frozen=True)
class SetPhase:
    """Record durably that the unit's journaled update is now at `phase`, before acting on it:
    a run killed from here on leaves the next one to start from there.

    Outcome: None, or an error (then nothing that depends on it may be done).
    """

    unit: str
    phase: Phase


@dataclass(frozen=True)
class Defer:
    """A crash repair failed: keep the unit's journal entry for the next run, which starts it
    again at `phase`, and note the attempt and what was seen (`error`).

    Outcome: None or an error.
    """

    unit: str
    phase: Phase
    error: str


@dataclass(frozen=True)
class HoldBack:
    """Hold the task's raw image name back from `image_id` (a manual rollback's bad image),
    durably: later runs leave the name on its image while the registry offers only that one.

    Outcome: None, or an error (then the task is not rolled back).
    """

    task: Task
    image_id: str


#: The actions only a crash repair (`core.recovery`) yields.
RepairAction = VerifyImages | TagImage | SetPhase | Defer


@dataclass(frozen=True)
class Begin:
    """A unit's update is about to begin (before its first check).

    Outcome: None; or `Interrupted` when the run was asked to stop: then the unit is not begun
    at all (no rows: the run reports it among the units not begun).
    """

    unit: str


@dataclass(frozen=True)
class Together:
    """Perform these plans side by side, each driven as `drive` does (a unit's restart and
    verification in a wave, `core.waves`). Outcome: their results, in order.

    Attributes:
        plans: generators of actions; each returns its own result.
    """

    plans: tuple[Generator[Action, Outcome, object], ...]


Action = (
    Check | Pull | Restart | Retag | Journal | Verify | Finish | Tag | HoldBack | Begin
    | Together | RepairAction | RecreateAction
)  # fmt: skip
Outcome = CheckResult | str | tuple[object, ...] | UpdockError | None
UnitResult = tuple[list[ReportRow], list[UpdockError]]
UnitPlan = Generator[Action, Outcome, UnitResult]
_R = TypeVar("_R")


class SharedImageState:
    """What the units of one run share about raw image names. Mutable, one per run.

    A name pulled for one container is not checked or pulled again for the next container that
    uses it, unless the image was rolled back since: then the next container must check and pull
    again rather than be restarted on the image that just failed.
    """

    def __init__(self) -> None:
        self._pulled: dict[str, str] = {}
        self._rolled_back: set[str] = set()

    def is_pulled(self, name: str) -> bool:
        """Whether `name` was pulled in this run and not rolled back since."""
        return name in self._pulled

    def pulled_image(self, name: str) -> str | None:
        """The ID of the image `name` was pulled to in this run (and not rolled back since)."""
        return self._pulled.get(name)

    def record_pull(self, name: str, image_id: str) -> None:
        """Remember that `name` was pulled to the image `image_id` (for the local policy: that
        the local store has `image_id` under it, the new image)."""
        self._pulled[name] = image_id
        self._rolled_back.discard(name)

    def record_rollback(self, name: str) -> None:
        """Forget the pull of `name`: its new image failed and was rolled back."""
        self._pulled.pop(name, None)
        self._rolled_back.add(name)

    def was_rolled_back(self, name: str) -> bool:
        """Whether `name` was rolled back in this run (and not pulled again since)."""
        return name in self._rolled_back


def _wrap(error: UpdockError, message: str) -> UpdockError:
    """`message: error`, keeping the error's class (and so its exit status) and its cause."""
    try:
        wrapped = type(error)(f"{message}: {error}")
    except TypeError:  # a subclass with another constructor
        wrapped = UpdockError(f"{message}: {error}")
    wrapped.exit_code = error.exit_code
    wrapped.__cause__ = error
    return wrapped


def _expect_none(outcome: Outcome) -> UpdockError | None:
    if outcome is None or isinstance(outcome, UpdockError):
        return outcome
    raise TypeError(f"expected None or an UpdockError, got {outcome!r}")


def _policy_prefix(task: Task) -> str:
    # podman's wording: "registry auto-updating container" / "locally auto-updating container".
    kind = "registry" if task.policy is Policy.REGISTRY else "locally"
    return f"{kind} auto-updating container {go_quote(task.container.id)}"


def _containers(tasks: Sequence[Task]) -> str:
    ids = " ".join(go_quote(t.container.id) for t in tasks)
    return f"container {ids}" if len(tasks) == 1 else f"containers {ids}"


def update_unit(
    unit: str,
    tasks: Sequence[Task],
    *,
    dry_run: bool,
    rollback: bool,
    images_done: SharedImageState,
) -> UnitPlan:
    """Decide the update of one unit, yielding the actions to perform.

    Args:
        unit: the systemd unit.
        tasks: its tasks (all with `task.unit == unit`).
        dry_run: only check; report `pending` for available updates.
        rollback: on a failed restart, re-tag the previous images and restart again.
        images_done: the run's record of pulled and rolled-back image names.

    Yields:
        `Check`, `Pull`, `Restart` and `Retag` actions; send back each one's outcome.

    Returns:
        One report row per task, in the order of `tasks`, and the errors, each naming the
        container (full ID) or the unit.
    """
    status = {t.container.id: Status.FAILED for t in tasks}
    errors: list[UpdockError] = []
    updated: list[Task] = []
    journaled = False

    for task in tasks:
        name = task.image.key
        if task.policy is Policy.REGISTRY and images_done.is_pulled(name):
            # Another container's check found and pulled a newer image under this name already.
            if (yield from _journal(task, errors, images_done.pulled_image(name))):
                updated.append(task)
            continue

        outcome = yield Check(task, fresh=images_done.was_rolled_back(name))
        if isinstance(outcome, UpdockError):
            what = f"image check for {go_quote(task.image.raw)} failed"
            errors.append(_wrap(outcome, f"{_policy_prefix(task)}: {what}"))
            continue
        if not isinstance(outcome, CheckResult):
            raise TypeError(f"expected a CheckResult or an UpdockError, got {outcome!r}")
        if not outcome.update_available:
            status[task.container.id] = Status.NOT_UPDATED
            continue
        if dry_run:
            status[task.container.id] = Status.PENDING
            continue

        if not (yield from _journal(task, errors)):
            continue
        journaled = True
        if task.policy is Policy.REGISTRY:
            pulled = yield Pull(task, outcome.digest)
            if isinstance(pulled, UpdockError):
                what = f"image update for {go_quote(task.image.raw)} failed"
                errors.append(_wrap(pulled, f"{_policy_prefix(task)}: {what}"))
                continue
            if not isinstance(pulled, str):
                raise TypeError(f"expected an image ID or an UpdockError, got {pulled!r}")
            images_done.record_pull(name, pulled)
        elif outcome.image_id is not None:
            images_done.record_pull(name, outcome.image_id)
        updated.append(task)

    if updated and updated[0].apply is Apply.RECREATE:
        from updock.core.recreate import apply_recreate

        yield from apply_recreate(
            unit, updated, status, errors, rollback=rollback, images=images_done
        )
    elif updated:
        yield from _restart(unit, updated, status, errors, rollback=rollback, images=images_done)
    elif journaled:  # every pull failed: the unit was never touched; clear its journal entry
        yield Finish(unit, (), verified=False)

    return _rows(unit, tasks, status), errors


def _journal(
    task: Task, errors: list[UpdockError], new_image: str | None = None
) -> Generator[Action, Outcome, bool]:
    """Yield `Journal(task)`; False (and an error) when the intent could not be recorded."""
    failure = _expect_none((yield Journal(task, new_image=new_image)))
    if failure is None:
        return True
    errors.append(
        _wrap(failure, f"auto-updating container {go_quote(task.container.id)}: not updated")
    )
    return False


def _restart_and_verify(
    unit: str,
    updated: Sequence[Task],
    *,
    interruptible: bool = False,
    expected: Sequence[str] = (),
) -> Generator[Action, Outcome, UpdockError | None]:
    """Restart the unit, then verify it (on the `expected` images, see `Verify`); the first
    failure, or None."""
    failure = _expect_none((yield Restart(unit, interruptible)))
    if failure is None:
        failure = _expect_none((yield Verify(unit, tuple(updated), tuple(expected))))
    return failure


def _restart(
    unit: str,
    updated: Sequence[Task],
    status: dict[str, Status],
    errors: list[UpdockError],
    *,
    rollback: bool,
    images: SharedImageState,
) -> Generator[Action, Outcome, None]:
    """Restart the unit on its new images, rolling back if that fails and rollback is on.

    A rollback that works is no error, as in podman (exit status 0, rows `rolled back`); when it
    fails, the original restart failure is reported along with the rollback's.
    """
    new_images = [images.pulled_image(t.image.key) or "" for t in updated]
    failure = yield from _restart_and_verify(unit, updated, interruptible=True, expected=new_images)
    if failure is None:
        for task in updated:
            status[task.container.id] = Status.UPDATED
        yield Finish(unit, tuple(updated), verified=True)
        return
    if isinstance(failure, Interrupted):
        # The run was asked to stop before the unit was restarted: it still runs the previous
        # images; give their names back and leave it alone.
        for task in updated:
            images.record_rollback(task.image.key)
            retag_failure = _expect_none((yield Retag(task)))
            if retag_failure is not None:
                errors.append(_wrap(retag_failure, f"restoring {go_quote(task.image.raw)}"))
        errors.append(_wrap(failure, f"auto-updating {_containers(updated)}: not restarted"))
        yield Finish(unit, tuple(updated), verified=False)
        return

    # The service manager's errors already say `restarting systemd unit "U" failed: ...`.
    restart_error = _wrap(failure, f"auto-updating {_containers(updated)}")
    if not rollback:
        errors.append(restart_error)  # the tasks stay FAILED, on the new image
        yield Finish(unit, tuple(updated), verified=False)
        return

    rollback_errors: list[UpdockError] = []
    retagged: list[Task] = []
    for task in updated:
        retag_failure = _expect_none((yield Retag(task)))
        # The new image failed: whatever happens next, later containers must not take the
        # "already pulled" shortcut to it.
        images.record_rollback(task.image.key)
        if retag_failure is None:
            retagged.append(task)
        else:
            rollback_errors.append(
                _wrap(
                    retag_failure,
                    f"auto-updating container {go_quote(task.container.id)}: "
                    f"falling back to previous image {go_quote(task.image.raw)} failed",
                )
            )

    failure = yield from _restart_and_verify(unit, updated)
    if failure is not None:
        rollback_errors.append(
            _wrap(failure, f"auto-updating {_containers(updated)}: during rollback")
        )
        retagged = []
    if rollback_errors:
        errors.append(restart_error)
        errors.extend(rollback_errors)
    # A task whose re-tag failed was restarted on the new image again: it stays FAILED.
    for task in retagged:
        status[task.container.id] = Status.ROLLED_BACK
    yield Finish(unit, tuple(updated), verified=False)


def rollback_unit(unit: str, tasks: Sequence[Task], previous: Mapping[str, str]) -> UnitPlan:
    """`updock rollback UNIT`: put each task back on its kept previous image, verified.

    Each image name is held back from the image it leaves (`HoldBack`), before anything changes, so
    that the next run does not apply the same update again.

    Args:
        unit: the unit.
        tasks: its tasks.
        previous: container ID -> the image ID to go back to.

    Returns:
        Rows `rolled back` when the unit verified on the previous images; otherwise the current
        images are tagged and restarted again and the rows are `failed`, with the errors.
    """
    errors: list[UpdockError] = []
    status = dict.fromkeys((t.container.id for t in tasks), Status.FAILED)
    moved: list[Task] = []
    journaled = False
    for task in tasks:
        target = previous[task.container.id]
        failure = _expect_none((yield Journal(task, target=target)))
        if failure is None:
            journaled = True
            failure = _expect_none((yield HoldBack(task, task.container.image_id)))
        if failure is None:
            failure = _expect_none((yield Tag(task, target)))
        if failure is not None:
            errors.append(_wrap(failure, f"rolling back container {go_quote(task.container.id)}"))
            continue
        moved.append(task)
    if moved and moved[0].apply is Apply.RECREATE:
        from updock.core.recreate import recreate_and_verify

        done = yield from recreate_and_verify(unit, moved)
        if done.failure is None:
            for task in moved:
                status[task.container.id] = Status.ROLLED_BACK
        else:  # the containers were restored on their current images: names back to them
            errors.append(_wrap(done.failure, f"rolling back {_containers(moved)}"))
            for task in moved:
                _expect_none((yield Retag(task)))
        errors.extend(done.errors)
        yield Finish(unit, tuple(moved), verified=done.failure is None)
    elif moved:
        failure = yield from _restart_and_verify(unit, moved)
        if failure is None:
            for task in moved:
                status[task.container.id] = Status.ROLLED_BACK
        else:
            errors.append(_wrap(failure, f"rolling back {_containers(moved)}"))
            for task in moved:
                _expect_none((yield Retag(task)))
            again = yield from _restart_and_verify(unit, moved)
            if again is not None:
                errors.append(_wrap(again, f"restoring {_containers(moved)}"))
        yield Finish(unit, tuple(moved), verified=failure is None)
    elif journaled:  # nothing changed after all: no repair to leave for the next run
        yield Finish(unit, (), verified=False)
    return _rows(unit, tasks, status), errors


def _rows(unit: str, tasks: Sequence[Task], status: Mapping[str, Status]) -> list[ReportRow]:
    return [
        ReportRow(
            unit=unit,
            container_id=t.container.id,
            container_name=t.container.name,
            image=t.image.raw,
            policy=t.policy,
            updated=status[t.container.id],
        )
        for t in tasks
    ]


def drive(plan: Generator[Action, Outcome, _R], handler: Callable[[Action], Outcome]) -> _R:
    """Run a plan to completion, performing each action with `handler`.

    Args:
        plan: a generator such as `update_unit(...)`.
        handler: performs one action and returns its outcome; an `UpdockError` it raises is
            sent to the plan as the action's failure.

    Returns:
        What the plan returns (for `update_unit`, the report rows and errors).
    """
    try:
        action = next(plan)
        while True:
            try:
                outcome = handler(action)
            except UpdockError as exc:
                outcome = exc
            action = plan.send(outcome)
    except StopIteration as stop:
        result: _R = stop.value
        return result
