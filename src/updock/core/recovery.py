"""Crash recovery decided without I/O: what to do with an update a killed run left unfinished.

Before a unit changes, the shell journals it (`updock.state`): its containers, the image each
ran before (`previous_image`) and, once pulled, the new one, and the phase. `recover_unit`
decides, from such an entry alone, how to bring the unit back to a verified state, and yields
the actions of `core.plan` for the shell to perform (as `update_unit` does):

- `pulling` (the unit was never restarted): the image names go back to the previous images;
  if the unit runs on those, verified, nothing more is done; otherwise it is restarted on them;
- `restarting`: if every new image is known and the unit verifies on them, the update is
  complete; otherwise it is rolled back: names back to the previous images, restart, verify;
- `rolling back`: the rollback is done again.

Before a step that changes the unit, the phase the next attempt must start from is journaled
(`SetPhase`): once a rollback has begun, a run killed during it never completes the update.

A recreated container (`core.recreate`) is repaired from the step journaled for it, by name and
by the old container's ID: once every container of the unit verified (a `verified` step), the
old containers are removed; a new container still being verified is verified again and kept if
it passes; anything else is restored (the new container removed, the old one renamed back and
started), verified on its previous image. The unit's followers (containers in the network
namespace of one of its containers) count as its containers for this, and are restored after
them, restarted if they ran (to join the namespace of the old container that runs again).

A repair that fails is not dropped: `Defer` keeps the entry, at the phase to start again from,
with what was seen; the next run tries again, and until then the unit's containers are not
updated (`updock.run`).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass

from updock.core.model import Apply, Phase, ReportRow, Status, Step, Task
from updock.core.plan import (
    Action,
    Defer,
    Finish,
    Outcome,
    Restart,
    SetPhase,
    TagImage,
    VerifyImages,
    _expect_none,
    _rows,
    _wrap,
)
from updock.core.recreate import RemoveOld, Restore, SetStep
from updock.core.reference import parse_image_name
from updock.errors import ImageReferenceError, UpdockError

#: What `recover_unit` says of a unit it repaired (the shell prints "unit U: " before it).
COMPLETED = "the interrupted update was verified and completed"
UNDONE = "the interrupted update was undone before its restart"
ROLLED_BACK = "the interrupted update was rolled back"


@dataclass(frozen=True)
class JournaledContainer:
    """One container of an interrupted update, as journaled.

    Attributes:
        name: the container's name (stable across restarts of a `--new` unit).
        raw_image_name: the name that was being moved to the new image.
        previous_image: ID of the image it ran before the update.
        new_image: ID of the image it was being moved to, or "" if not known yet.
        container_id: the container's ID when the update began (a recreated container's old
            container).
        step: where its recreate stood (None: not begun, or a unit's container).
        follows: for a container that joins the network namespace of one of the unit's
            (`core.recreate`'s followers), that container's name; its image name is none of
            the update's (never tagged).
        network_of: the container whose network namespace it joins (`Restore.joins`).
    """

    name: str
    raw_image_name: str
    previous_image: str
    new_image: str = ""
    container_id: str = ""
    step: Step | None = None
    follows: str = ""
    network_of: str = ""


@dataclass(frozen=True)
class Interrupted:
    """An update of one unit that a run began and did not end.

    Attributes:
        unit: the unit.
        phase: where it stood.
        containers: its containers.
        attempts: how many repairs of it failed already.
        apply: how the update was being applied (a unit restarted, or containers recreated).
    """

    unit: str
    phase: Phase
    containers: tuple[JournaledContainer, ...]
    attempts: int = 0
    apply: Apply = Apply.RESTART


RepairPlan = Generator[Action, Outcome, str | UpdockError]


def recover_unit(entry: Interrupted) -> RepairPlan:
    """Decide the repair of one interrupted update, yielding the actions to perform.

    Yields:
        `VerifyImages`, `SetPhase`, `TagImage`, `Restart`, then `Finish` (repaired: the entry
        is cleared) or `Defer` (failed: the entry stays for the next run).

    Returns:
        What was done (one of `COMPLETED`, `UNDONE`, `ROLLED_BACK`), or the error of a failed
        repair, naming the unit and saying what was seen.
    """
    if entry.apply is Apply.RECREATE:
        return (yield from _recover_recreated(entry))
    unit = entry.unit
    previous = tuple((c.name, c.previous_image) for c in entry.containers)
    phase = entry.phase
    if phase is Phase.RESTARTING and all(c.new_image for c in entry.containers):
        new = tuple((c.name, c.new_image) for c in entry.containers)
        if _expect_none((yield VerifyImages(unit, new))) is None:
            yield Finish(unit, (), verified=True)
            return COMPLETED
    if phase is Phase.RESTARTING:
        # From here on it is a rollback: a run killed during it must not complete the update.
        failure = _expect_none((yield SetPhase(unit, Phase.ROLLING_BACK)))
        if failure is not None:
            return (yield from _defer(entry, phase, failure))
        phase = Phase.ROLLING_BACK
    for c in entry.containers:
        try:
            name = parse_image_name(c.raw_image_name).reference
        except ImageReferenceError as exc:  # journaled from a valid name: not expected
            return (yield from _defer(entry, phase, exc))
        failure = _expect_none((yield TagImage(c.previous_image, name)))
        if failure is not None:
            seen = _wrap(failure, f"tagging {c.raw_image_name} on image {c.previous_image[:12]}")
            return (yield from _defer(entry, phase, seen))
    if phase is Phase.PULLING:
        if _expect_none((yield VerifyImages(unit, previous))) is None:
            yield Finish(unit, (), verified=False)
            return UNDONE
        failure = _expect_none((yield SetPhase(unit, Phase.ROLLING_BACK)))
        if failure is not None:
            return (yield from _defer(entry, phase, failure))
        phase = Phase.ROLLING_BACK
    failure = _expect_none((yield Restart(unit)))
    if failure is None:
        failure = _expect_none((yield VerifyImages(unit, previous)))
    if failure is None:
        yield Finish(unit, (), verified=False)
        return ROLLED_BACK
    return (yield from _defer(entry, phase, failure))


def _retag_previous(entry: Interrupted) -> Generator[Action, Outcome, UpdockError | None]:
    """Tag each image name on its container's previous image again."""
    for c in entry.containers:
        if c.follows:
            continue
        try:
            name = parse_image_name(c.raw_image_name).reference
        except ImageReferenceError as exc:  # journaled from a valid name: not expected
            return exc
        failure = _expect_none((yield TagImage(c.previous_image, name)))
        if failure is not None:
            return _wrap(failure, f"tagging {c.raw_image_name} on image {c.previous_image[:12]}")
    return None


def _complete_recreated(entry: Interrupted) -> Generator[Action, Outcome, UpdockError | None]:
    """Every new container verified: remove the old ones (journaled first)."""
    for c in entry.containers:
        if c.step is None:  # never touched (not expected once one verified): nothing old
            continue
        failure = _expect_none((yield SetStep(entry.unit, c.name, Step.VERIFIED)))
        if failure is None:
            failure = _expect_none((yield RemoveOld(entry.unit, c.name, c.container_id)))
        if failure is not None:
            return failure
    yield Finish(entry.unit, (), verified=True)
    return None


def _recover_recreated(entry: Interrupted) -> RepairPlan:
    """Repair the recreate of a unit's containers from each one's journaled step."""
    unit = entry.unit
    containers = entry.containers
    if any(c.step is Step.VERIFIED for c in containers):
        failure = yield from _complete_recreated(entry)
        return COMPLETED if failure is None else (yield from _defer(entry, entry.phase, failure))
    phase = entry.phase
    if phase is Phase.RESTARTING and all(
        c.step is Step.STARTING and c.new_image for c in containers
    ):
        new = tuple((c.name, c.new_image) for c in containers)
        if _expect_none((yield VerifyImages(unit, new))) is None:
            failure = yield from _complete_recreated(entry)
            if failure is None:
                return COMPLETED
            return (yield from _defer(entry, phase, failure))
    touched = any(c.step is not None for c in containers)
    if touched and phase is not Phase.ROLLING_BACK:
        # From here on it is a rollback: a run killed during it must not complete the update.
        failure = _expect_none((yield SetPhase(unit, Phase.ROLLING_BACK)))
        if failure is not None:
            return (yield from _defer(entry, phase, failure))
        phase = Phase.ROLLING_BACK
    failure = yield from _retag_previous(entry)
    if failure is not None:
        return (yield from _defer(entry, phase, failure))
    previous = tuple((c.name, c.previous_image) for c in containers)
    if not touched and _expect_none((yield VerifyImages(unit, previous))) is None:
        yield Finish(unit, (), verified=False)
        return UNDONE
    # The unit's old containers first; then the followers, which join their namespace (and
    # are restarted if they ran: their namespace went with the old container's stop).
    order = [c for c in reversed(containers) if not c.follows]
    order += [c for c in containers if c.follows]
    for c in order:
        restore = Restore(unit, c.name, c.container_id, rejoin=bool(c.follows), joins=c.network_of)
        failure = _expect_none((yield restore))
        if failure is not None:
            return (yield from _defer(entry, phase, failure))
    failure = _expect_none((yield VerifyImages(unit, previous)))
    if failure is None:
        yield Finish(unit, (), verified=False)
        return ROLLED_BACK
    return (yield from _defer(entry, phase, failure))


def _defer(
    entry: Interrupted, phase: Phase, failure: UpdockError
) -> Generator[Action, Outcome, UpdockError]:
    """Keep the entry for the next run (to start at `phase`); the error that says so."""
    error = _wrap(
        failure,
        f"repairing the interrupted update of unit {entry.unit} failed (attempt "
        f"{entry.attempts + 1}; it is tried again on the next run, and the unit's containers are "
        "not updated until it succeeds)",
    )
    not_kept = _expect_none((yield Defer(entry.unit, phase, str(failure))))
    if not_kept is not None:
        error = _wrap(not_kept, f"{error}; and recording the attempt failed")
    return error


def pending_repair_rows(unit: str, tasks: Sequence[Task]) -> list[ReportRow]:
    """The report of a unit whose repair failed: every task `failed`, none updated.

    Rows rather than silence: the report has one row per container that has a policy, a unit
    left on images it was never verified on is no `false`, and the run's error says why.
    """
    return _rows(unit, tasks, dict.fromkeys((t.container.id for t in tasks), Status.FAILED))
