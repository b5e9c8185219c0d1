"""The info-level log of a unit's update: each phase, and how long it took.

`PhaseLog` wraps the function that performs a plan's actions (the handler of `core.plan.drive`)
and logs each action's outcome with its duration once it is done, for one unit:

    unit container-web.service: container web: checked 127.0.0.1:5000/web:latest in 0.02s:
        update available
    unit container-web.service: container web: pulled 127.0.0.1:5000/web@sha256:... in 1.20s
    unit container-web.service: restarted in 0.41s
    unit container-web.service: verified in 5.03s
    unit container-web.service: updated in 6.70s

After a failed restart or verification, the steps of the rollback say so ("on the previous
images"), and the last line says how the unit ended. The errors themselves are logged where they
happen (and reported), not here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import ClassVar

from updock.core.model import Task
from updock.core.plan import (
    Action,
    Begin,
    Check,
    CheckResult,
    Defer,
    Finish,
    Journal,
    Outcome,
    Pull,
    Restart,
    Retag,
    SetPhase,
    Tag,
    TagImage,
    Together,
    Verify,
    VerifyImages,
)
from updock.core.recreate import (
    CreateFollower,
    CreateNew,
    JournalFollower,
    Prepare,
    PrepareFollower,
    RemoveOld,
    RenameAside,
    Restore,
    SetStep,
    StartFollower,
    StartNew,
    StopOld,
    VerifyFollower,
)
from updock.errors import UpdockError

log = logging.getLogger(__name__)

#: The steps of a recreate that the info log shows.
RecreateStep = Prepare | StopOld | RenameAside | CreateNew | StartNew | RemoveOld | Restore
#: The steps of a follower's recreate (a container in the namespace of a recreated one).
FollowerStep = JournalFollower | PrepareFollower | CreateFollower | StartFollower | VerifyFollower

Handler = Callable[[Action], Outcome]


def _unit_of(action: Action) -> str:
    if isinstance(action, Restart | Verify | Finish | VerifyImages | SetPhase | Defer | Begin):
        return action.unit
    if isinstance(action, SetStep | StopOld | RenameAside | RemoveOld | Restore | FollowerStep):
        return action.unit
    if isinstance(action, TagImage | Together):
        return ""
    return action.task.unit


def _container(task: Task) -> str:
    return f"unit {task.unit}: container {task.container.name}"


class PhaseLog:
    """Performs actions with `handler`, and logs each one's outcome and duration at info level.

    It remembers, per unit, when the unit's update began and whether a rollback has started (a
    plan may act on several units: a group's canaries and waves, `core.waves`).

    Args:
        handler: performs one action.
        clock: seconds, monotonic (for tests).
    """

    def __init__(self, handler: Handler, clock: Callable[[], float] = time.monotonic) -> None:
        self._handler = handler
        self._clock = clock
        self._began: dict[str, float] = {}
        self._rollback_began: dict[str, float] = {}
        self._manual: set[str] = set()  # a `Tag` without a rollback: `updock rollback`
        self._failed: dict[str, bool] = {}  # the unit's last restart or verification failed

    def __call__(self, action: Action) -> Outcome:
        if not log.isEnabledFor(logging.INFO) or isinstance(action, Together):
            return self._handler(action)
        start = self._clock()
        unit = _unit_of(action)
        self._began.setdefault(unit, start)
        if isinstance(action, Retag | SetPhase) and unit not in self._rollback_began:
            self._rollback_began[unit] = start
        if isinstance(action, Tag) and unit not in self._rollback_began:
            self._manual.add(unit)
        try:
            outcome = self._handler(action)
        except UpdockError:
            self._log(action, self._clock() - start, failed=True, outcome=None)
            raise
        self._log(
            action, self._clock() - start, failed=isinstance(outcome, UpdockError), outcome=outcome
        )
        return outcome

    def _log(self, action: Action, took: float, *, failed: bool, outcome: Outcome) -> None:
        seconds = f"{took:.2f}s"
        previous = " on the previous images" if _unit_of(action) in self._rollback_began else ""
        unit = f"unit {_unit_of(action)}"
        if isinstance(action, Restart | Verify):
            self._failed[action.unit] = failed
            done = "restarted" if isinstance(action, Restart) else "verified"
            if failed:
                what = "restart" if isinstance(action, Restart) else "verification"
                log.info("%s: %s%s failed after %s", unit, what, previous, seconds)
            else:
                log.info("%s: %s%s in %s", unit, done, previous, seconds)
        elif isinstance(action, Check):
            name = action.task.image.raw
            if failed:
                log.info("%s: check of %s failed after %s", _container(action.task), name, seconds)
            else:
                found = (
                    "update available"
                    if isinstance(outcome, CheckResult) and outcome.update_available
                    else "up to date"
                )
                log.info("%s: checked %s in %s: %s", _container(action.task), name, seconds, found)
        elif isinstance(action, Pull):
            target = action.task.image.raw + (f" ({action.digest})" if action.digest else "")
            if failed:
                log.info("%s: pull of %s failed after %s", _container(action.task), target, seconds)
            else:
                log.info("%s: pulled %s in %s", _container(action.task), target, seconds)
        elif isinstance(action, Journal):
            outcome_text = "could not be journaled" if failed else "journaled"
            log.debug("%s: %s in %s", _container(action.task), outcome_text, seconds)
        elif isinstance(action, Retag | Tag):
            if isinstance(action, Retag):
                what = f"previous image tagged {action.task.image.raw} again"
            else:
                what = f"image {action.image_id[:12]} tagged {action.task.image.raw}"
            log.info(
                "%s: %s%s %s",
                _container(action.task),
                what,
                " failed after" if failed else " in",
                seconds,
            )
        elif isinstance(action, Finish):
            self._finish(action, unit)
        elif isinstance(action, RecreateStep):
            self._recreate_step(action, unit, seconds, failed=failed)
        elif isinstance(action, FollowerStep):
            self._follower_step(action, unit, seconds, failed=failed)

    #: What the info log says of each step of a recreate.
    _RECREATE_WORDS: ClassVar[dict[type, str]] = {
        Prepare: "new configuration prepared",
        StopOld: "old container stopped",
        RenameAside: "old container renamed aside",
        CreateNew: "new container created",
        StartNew: "new container started",
        RemoveOld: "old container removed",
        Restore: "old container restored",
    }

    def _recreate_step(
        self,
        action: RecreateStep,
        unit: str,
        seconds: str,
        *,
        failed: bool,
    ) -> None:
        if isinstance(action, Restore):
            self._rollback_began.setdefault(action.unit, self._clock())
        what = self._RECREATE_WORDS[type(action)]
        log.info("%s: %s%s %s", unit, what, " failed after" if failed else " in", seconds)

    #: What the info log says of each step of a follower's recreate.
    _FOLLOWER_WORDS: ClassVar[dict[type, str]] = {
        JournalFollower: "journaled",
        PrepareFollower: "new configuration prepared",
        CreateFollower: "new container created",
        StartFollower: "new container started",
        VerifyFollower: "verified",
    }

    def _follower_step(
        self, action: FollowerStep, unit: str, seconds: str, *, failed: bool
    ) -> None:
        where = f"{unit}: container {action.follower.name} (in the network namespace)"
        what = self._FOLLOWER_WORDS[type(action)]
        log.info("%s: %s%s %s", where, what, " failed after" if failed else " in", seconds)

    def _finish(self, action: Finish, unit: str) -> None:
        now = self._clock()
        total = f"{now - self._began.get(action.unit, now):.2f}s"
        manual = action.unit in self._manual
        rollback_began = self._rollback_began.get(action.unit)
        if action.verified:
            log.info("%s: %s in %s", unit, "rolled back" if manual else "updated", total)
        elif manual:
            log.info("%s: rollback failed after %s", unit, total)
        elif rollback_began is None:
            log.info("%s: update failed after %s, left as it is (no rollback)", unit, total)
        else:
            log.info(
                "%s: %s after %s (the rollback took %.2fs)",
                unit,
                "rollback failed" if self._failed.get(action.unit) else "rolled back",
                total,
                now - rollback_began,
            )
