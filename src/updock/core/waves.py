"""The update of a group of units that share image names: a canary first, then waves.

Units that use one image name cannot all be updated at once blindly: the new image may be
broken, and a rollback moves the name back for every unit. Nor one after the other, each
waiting out its own settle time: a host with many services of one image would pay N settle
times. So, per image name:

1. **Canary.** The first unit (by name) that uses a name is updated alone, as `update_unit`
   does it: check, pull, restart, verify, and roll back if it fails. When it fails, the name is
   rolled back, and the next unit that uses it becomes the canary: it checks and pulls the name
   again (podman's rule that every unit is tried, and the spec's point 6).
2. **Waves.** Once a canary verified every name a unit uses, that unit may go in a wave: up to
   `wave_size` such units are restarted side by side and verified over one shared settle window
   (`Together`). Each that fails is rolled back on its own: the names its containers use are
   tagged on their previous images, the failed units restarted and verified side by side, and
   the names tagged on the verified new images again. The units of the wave that verified stay
   updated.

Everything is decided here, without I/O: the shell only performs the actions, concurrently for
`Together`. With one unit (or a dry run), this is `update_unit`.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field

from updock.core.model import Apply, Phase, Policy, ReportRow, Status, Task
from updock.core.plan import (
    Action,
    Begin,
    Check,
    CheckResult,
    Finish,
    Outcome,
    Retag,
    SetPhase,
    SharedImageState,
    Tag,
    Together,
    UnitPlan,
    _containers,
    _expect_none,
    _journal,
    _policy_prefix,
    _restart_and_verify,
    _rows,
    _wrap,
    update_unit,
)
from updock.core.policy import go_quote
from updock.errors import Interrupted, UpdockError

#: Units restarted and verified side by side in one wave, unless the caller says otherwise.
DEFAULT_WAVE_SIZE = 8


@dataclass
class _Member:
    """One unit of a wave: what its own plan saw (`_wave_member`)."""

    unit: str
    tasks: Sequence[Task]
    status: dict[str, Status]
    errors: list[UpdockError] = field(default_factory=list)
    updated: list[Task] = field(default_factory=list)
    failure: UpdockError | None = None


def update_group(
    units: Mapping[str, Sequence[Task]],
    *,
    dry_run: bool,
    rollback: bool,
    images_done: SharedImageState,
    wave_size: int = DEFAULT_WAVE_SIZE,
) -> UnitPlan:
    """Decide the update of units that share image names: canaries, then waves.

    Args:
        units: unit -> its tasks, in the order the units are tried.
        dry_run: only check (each unit as `update_unit` checks it).
        rollback: roll back what fails to restart or verify.
        images_done: the run's record of pulled and rolled-back image names.
        wave_size: units restarted side by side at most, after their names' canaries.

    Returns:
        The rows of every unit begun, in unit order, and the errors. A unit whose `Begin` was
        answered `Interrupted` has no rows.
    """
    results: dict[str, tuple[list[ReportRow], list[UpdockError]]] = {}
    queue = list(units)
    proven: set[str] = set()  # names a canary verified on their new image in this run
    while queue:
        ready = [] if dry_run else [u for u in queue if _names(units[u]) <= proven]
        # Recreated containers are not restarted in waves: each is replaced and verified alone.
        ready = [u for u in ready if units[u][0].apply is Apply.RESTART]
        if ready:
            wave = ready[:wave_size]
            for unit in wave:
                queue.remove(unit)
            begun = []
            for unit in wave:
                if (yield from _begin(unit)):
                    begun.append(unit)
            if begun:
                outcome = yield from _wave(
                    {u: units[u] for u in begun}, rollback=rollback, images=images_done
                )
                results.update(outcome)
            continue
        unit = queue.pop(0)
        if not (yield from _begin(unit)):
            continue
        rows, errors = yield from update_unit(
            unit, units[unit], dry_run=dry_run, rollback=rollback, images_done=images_done
        )
        results[unit] = (rows, errors)
        for row, task in zip(rows, units[unit], strict=True):
            if row.updated is Status.UPDATED:
                proven.add(task.image.key)
    all_rows = [row for unit in units if unit in results for row in results[unit][0]]
    all_errors = [error for unit in units if unit in results for error in results[unit][1]]
    return all_rows, all_errors


def _begin(unit: str) -> Generator[Action, Outcome, bool]:
    """Yield `Begin(unit)`: whether the unit may begin."""
    outcome = yield Begin(unit)
    if isinstance(outcome, Interrupted):
        return False
    return _expect_none(outcome) is None


def _names(tasks: Sequence[Task]) -> set[str]:
    return {t.image.key for t in tasks}


def _wave(
    units: Mapping[str, Sequence[Task]], *, rollback: bool, images: SharedImageState
) -> Generator[Action, Outcome, dict[str, tuple[list[ReportRow], list[UpdockError]]]]:
    """Restart and verify `units` side by side; roll back each that fails, on its own."""
    outcome = yield Together(tuple(_wave_member(u, tasks, images) for u, tasks in units.items()))
    if not isinstance(outcome, tuple) or not all(isinstance(m, _Member) for m in outcome):
        raise TypeError(f"expected the members' results, got {outcome!r}")
    members: list[_Member] = list(outcome)  # type: ignore[arg-type]  # checked above
    failed = [m for m in members if m.failure is not None]
    stopped = [m for m in failed if isinstance(m.failure, Interrupted)]
    for m in stopped:  # never restarted: they run their previous images, the names are proven
        assert m.failure is not None
        m.errors.append(_wrap(m.failure, f"auto-updating {_containers(m.updated)}: not restarted"))
        yield Finish(m.unit, tuple(m.updated), verified=False)
    broken = [m for m in failed if m not in stopped]
    if broken:
        yield from _roll_back(broken, rollback=rollback, images=images)
    return {m.unit: (_rows(m.unit, m.tasks, m.status), m.errors) for m in members}


def _wave_member(
    unit: str, tasks: Sequence[Task], images: SharedImageState
) -> Generator[Action, Outcome, _Member]:
    """One unit of a wave: check (cached), journal, restart, verify; no rollback here (the wave
    rolls back its failed members together, once every member has been restarted)."""
    m = _Member(unit, tasks, {t.container.id: Status.FAILED for t in tasks})
    new_images: list[str] = []
    for task in tasks:
        if task.policy is Policy.REGISTRY and images.is_pulled(task.image.key):
            # Its canary pulled the name and verified the new image.
            pulled = images.pulled_image(task.image.key)
            if (yield from _journal(task, m.errors, pulled)):
                m.updated.append(task)
                new_images.append(pulled or "")
            continue
        outcome = yield Check(task)
        if isinstance(outcome, UpdockError):
            what = f"image check for {go_quote(task.image.raw)} failed"
            m.errors.append(_wrap(outcome, f"{_policy_prefix(task)}: {what}"))
            continue
        if not isinstance(outcome, CheckResult):
            raise TypeError(f"expected a CheckResult or an UpdockError, got {outcome!r}")
        if not outcome.update_available:
            m.status[task.container.id] = Status.NOT_UPDATED
        elif (yield from _journal(task, m.errors)):
            m.updated.append(task)  # the local policy: nothing to pull
            new_images.append(outcome.image_id or "")
    if not m.updated:
        return m
    m.failure = yield from _restart_and_verify(
        unit, m.updated, interruptible=True, expected=new_images
    )
    if m.failure is None:
        for task in m.updated:
            m.status[task.container.id] = Status.UPDATED
        yield Finish(unit, tuple(m.updated), verified=True)
    return m


def _roll_back(
    broken: Sequence[_Member], *, rollback: bool, images: SharedImageState
) -> Generator[Action, Outcome, None]:
    """Put the failed members of a wave back on their previous images, side by side where they
    had the same ones; then the names back on the new images the other members verified."""
    restart_errors = {
        m.unit: _wrap(m.failure, f"auto-updating {_containers(m.updated)}")
        for m in broken
        if m.failure is not None
    }
    if not rollback:
        for m in broken:
            m.errors.append(restart_errors[m.unit])  # stays FAILED, on the new image
            yield Finish(m.unit, tuple(m.updated), verified=False)
        return
    # Members whose names go back to the same previous images are restarted together.
    batches: dict[frozenset[tuple[str, str]], list[_Member]] = {}
    for m in broken:
        key = frozenset((t.image.key, t.container.image_id) for t in m.updated)
        batches.setdefault(key, []).append(m)
    retagged_names: dict[str, Task] = {}
    for batch in batches.values():
        for m in batch:
            _expect_none((yield SetPhase(m.unit, Phase.ROLLING_BACK)))
        retag_failed: set[str] = set()
        done: set[str] = set()
        for m in batch:
            for task in m.updated:
                if task.image.key in done:
                    continue
                done.add(task.image.key)
                failure = _expect_none((yield Retag(task)))
                retagged_names.setdefault(task.image.key, task)
                if failure is not None:
                    retag_failed.add(task.image.key)
                    m.errors.append(
                        _wrap(
                            failure,
                            f"auto-updating container {go_quote(task.container.id)}: "
                            f"falling back to previous image {go_quote(task.image.raw)} failed",
                        )
                    )
        outcome = yield Together(tuple(_restart_and_verify(m.unit, m.updated) for m in batch))
        if not isinstance(outcome, tuple) or len(outcome) != len(batch):
            raise TypeError(f"expected one result per unit, got {outcome!r}")
        for m, again in zip(batch, outcome, strict=True):
            if again is not None and not isinstance(again, UpdockError):
                raise TypeError(f"expected None or an UpdockError, got {again!r}")
            if again is None:
                for task in m.updated:
                    if task.image.key not in retag_failed:
                        m.status[task.container.id] = Status.ROLLED_BACK
            else:
                m.errors.append(
                    _wrap(again, f"auto-updating {_containers(m.updated)}: during rollback")
                )
            if again is not None or any(t.image.key in retag_failed for t in m.updated):
                m.errors.insert(0, restart_errors[m.unit])
            yield Finish(m.unit, tuple(m.updated), verified=False)
    # The other members (and the canary) verified the new images: the names go back to them.
    for name, task in retagged_names.items():
        new_image = images.pulled_image(name)
        if new_image is not None:
            _expect_none((yield Tag(task, new_image)))
