"""The shell's hands: performs the plan's actions with the engine, systemd and the state file.

Safety rules kept here (issue 5):
- before a unit changes, its previous images get a tag of updock's own (so `podman image prune`
  cannot remove them) and the intent is journaled (`state.StateStore`);
- an update counts only once `verify.verify_unit` saw the unit healthy on the new images;
- `recover` completes or rolls back whatever a killed run left in the journal, before anything
  else happens.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from updock.core.model import Task
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
    Tag,
    Verify,
)
from updock.core.reference import parse_image_name, previous_tag
from updock.engines import Engine
from updock.errors import EngineError, UpdockError
from updock.options import SafetyOptions
from updock.state import (
    PULLING,
    RESTARTING,
    ROLLING_BACK,
    JournalEntry,
    JournalTask,
    StateStore,
)
from updock.stopping import StopRequest
from updock.systemd import ServiceConnection
from updock.verify import (
    Expectation,
    last_log_lines,
    verify_unit,
)

log = logging.getLogger(__name__)

#: Test seam: `UPDOCK_TEST_CRASH_AT=pull|restart|verify` kills this process with SIGKILL at that
#: point, so the integration tests can prove that the next run repairs the state.
CRASH_ENV = "UPDOCK_TEST_CRASH_AT"


def _crash_point(name: str, delay: float = 0.0) -> None:
    if os.environ.get(CRASH_ENV) != name:
        return
    if delay <= 0:
        os.kill(os.getpid(), signal.SIGKILL)
    timer = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGKILL))
    timer.daemon = True
    timer.start()


class JournalBook:
    """The run's journal entries, shared by the threads that update units; every change is
    saved (atomically) before the caller goes on to act."""

    def __init__(self, store: StateStore) -> None:
        self._store = store
        self._entries = store.load()
        self._lock = threading.Lock()

    def begin(self, task: Task) -> bool:
        """Journal `task`'s container with its current image; False if it already was."""
        with self._lock:
            entry = self._entries.setdefault(task.unit, JournalEntry(task.unit))
            if entry.task(task.container.name) is not None:
                return False
            entry.tasks.append(
                JournalTask(
                    container=task.container.name,
                    container_id=task.container.id,
                    raw_image_name=task.image.raw,
                    previous_image=task.container.image_id,
                )
            )
            self._store.save(self._entries)
            return True

    def set_phase(self, unit: str, phase: str, only_from: str | None = None) -> None:
        """Move the unit's entry to `phase` (only from `only_from`, if given)."""
        with self._lock:
            entry = self._entries.get(unit)
            if entry is None or (only_from is not None and entry.phase != only_from):
                return
            entry.phase = phase
            self._store.save(self._entries)

    def set_new_image(self, task: Task, image_id: str) -> None:
        """Record the image pulled for `task`."""
        with self._lock:
            entry = self._entries.get(task.unit)
            journaled = entry.task(task.container.name) if entry else None
            if journaled is not None:
                journaled.new_image = image_id
                self._store.save(self._entries)

    def finish(self, unit: str) -> JournalEntry | None:
        """Clear the unit's entry; return it."""
        with self._lock:
            entry = self._entries.pop(unit, None)
            self._store.save(self._entries)
            return entry


class ActionHandler:
    """Performs the plan's actions (the `handler` of `core.plan.drive`).

    One handler per thread: each has its own service manager connection; the journal is
    shared.
    """

    def __init__(
        self,
        engine: Engine,
        services: ServiceConnection,
        journal: JournalBook,
        safety: SafetyOptions,
        *,
        check: Callable[[Check], CheckResult],
        tls_verify: bool | None,
        stop: StopRequest | None = None,
    ) -> None:
        self._stop = stop
        self._engine = engine
        self._services = services
        self._journal_book = journal
        self._safety = safety
        self._check = check
        self._tls_verify = tls_verify

    def __call__(self, action: Action) -> Outcome:
        if self._stop is not None and self._stop.requested:
            # Asked to stop: begin nothing new; what has begun is finished (see stopping.py).
            if isinstance(action, Journal):
                raise self._stop.error(f"container {action.task.container.name} not updated")
            if isinstance(action, Restart) and action.interruptible:
                raise self._stop.error(f"unit {action.unit} not restarted")
        if isinstance(action, Check):
            return self._check(action)
        if isinstance(action, Journal):
            self._journal(action.task)
        elif isinstance(action, Pull):
            self._pull(action)
        elif isinstance(action, Restart):
            self._journal_book.set_phase(action.unit, RESTARTING, only_from=PULLING)
            _crash_point("restart", delay=0.1)
            try:
                self._services.get().restart(action.unit)
            except UpdockError as exc:
                logs = last_log_lines(action.unit)
                log.error("%s%s", exc, f"\n  last log lines:\n    {logs}" if logs else "")
                raise
        elif isinstance(action, Retag):
            self._journal_book.set_phase(action.task.unit, ROLLING_BACK)
            self._engine.tag(action.task.container.image_id, action.task.image.reference)
        elif isinstance(action, Tag):
            self._engine.tag(action.image_id, action.task.image.reference)
        elif isinstance(action, Verify):
            _crash_point("verify", delay=1.0)
            self.verify(action.unit, action.tasks)
        elif isinstance(action, Finish):
            self._finish(action)
        else:
            raise TypeError(f"unknown action {action!r}")
        return None

    # -- journal ----------------------------------------------------------------------------

    def _journal(self, task: Task) -> None:
        # Keep the previous image under a name of ours before anything can untag it.
        self._engine.tag(task.container.image_id, previous_tag(task.container.name))
        self._journal_book.begin(task)

    def _pull(self, action: Pull) -> None:
        task = action.task
        # Pinned to the digest that was checked: the tag may move between check and pull.
        target = task.image.with_digest(action.digest) if action.digest else task.image.reference
        new_id = self._engine.pull(target, authfile=task.authfile, tls_verify=self._tls_verify)
        self._journal_book.set_new_image(task, new_id)
        self._engine.tag(new_id, task.image.reference)
        _crash_point("pull")

    def _finish(self, action: Finish) -> None:
        entry = self._journal_book.finish(action.unit)
        if action.verified and not self._safety.keep_previous and entry is not None:
            for t in entry.tasks:
                try:
                    self._engine.untag(previous_tag(t.container))
                except EngineError as exc:
                    log.warning("%s", exc)

    # -- verification -----------------------------------------------------------------------

    def verify(self, unit: str, tasks: Sequence[Task]) -> None:
        """Verify `unit` runs each task's container on the image tagged under its raw name."""
        expect = []
        for task in tasks:
            image_id = self._engine.image_id(task.image.reference)
            if image_id is None:
                raise EngineError(f"no image is tagged {task.image}")
            expect.append(Expectation(task.container.name, image_id, task.container.labels))
        try:
            verify_unit(
                unit,
                expect,
                self._engine,
                self._services.get(),
                settle=self._safety.settle,
                timeout=self._safety.verify_timeout,
                read_logs=last_log_lines,
            )
        except UpdockError as exc:
            # A rollback that works is no error in the report (as podman), but the update did
            # fail, and what was seen matters: an error at the default level.
            log.error("%s", exc)
            raise


@dataclass
class RecoveryReport:
    """What `recover` did: one line per journaled unit, and the errors."""

    lines: list[str] = field(default_factory=list)
    errors: list[UpdockError] = field(default_factory=list)


def recover(
    engine: Engine, services: ServiceConnection, store: StateStore, safety: SafetyOptions
) -> RecoveryReport:
    """Complete or roll back every update a killed run left in the journal.

    - phase `pulling` (the unit was not restarted): the previous images get their names back;
    - phase `restarting`: if the unit verifies on the new images, the update is complete;
      otherwise it is rolled back;
    - phase `rolling back`: the rollback is done again.
    Either way no container is left on an unverified image and no unit stopped.
    """
    report = RecoveryReport()
    entries = store.load()
    for unit, entry in list(entries.items()):
        outcome = _recover_unit(engine, services, entry, safety)
        if isinstance(outcome, UpdockError):
            report.errors.append(outcome)
            report.lines.append(f"unit {unit}: could not be repaired")
        else:
            report.lines.append(f"unit {unit}: {outcome}")
        del entries[unit]
        store.save(entries)
    return report


def _recover_unit(
    engine: Engine, services: ServiceConnection, entry: JournalEntry, safety: SafetyOptions
) -> str | UpdockError:
    manager = services.get()

    def verify_on(images: dict[str, str]) -> None:
        labels = {c.name: c.labels for c in engine.running_containers()}
        expect = [
            Expectation(t.container, images[t.container], labels.get(t.container, {}))
            for t in entry.tasks
        ]
        verify_unit(
            entry.unit,
            expect,
            engine,
            manager,
            settle=safety.settle,
            timeout=safety.verify_timeout,
            read_logs=last_log_lines,
        )

    previous = {t.container: t.previous_image for t in entry.tasks}
    try:
        if entry.phase == RESTARTING and all(t.new_image for t in entry.tasks):
            try:
                verify_on({t.container: t.new_image for t in entry.tasks})
            except UpdockError as exc:
                log.error("%s", exc)  # then rolled back, below
            else:
                return "the interrupted update was verified and completed"
        for t in entry.tasks:
            engine.tag(t.previous_image, parse_image_name(t.raw_image_name).reference)
        if entry.phase == PULLING and manager.active_state(entry.unit) == "active":
            try:
                verify_on(previous)
                return "the interrupted update was undone before its restart"
            except UpdockError:
                pass  # not running as it should: restart it on the previous images below
        manager.restart(entry.unit)
        verify_on(previous)
        return "the interrupted update was rolled back"
    except UpdockError as exc:
        return UpdockError(f"repairing the interrupted update of unit {entry.unit}: {exc}")
