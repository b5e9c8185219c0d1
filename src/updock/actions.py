"""The shell's hands: performs the plan's actions with the engine, systemd and the state file.

Safety rules kept here (issue 5):
- before a unit changes, its previous images get a tag of updock's own (so `podman image prune`
  cannot remove them) and the intent is journaled (`state.StateStore`);
- an update counts only once `verify.verify_unit` saw the unit healthy on the new images;
- `recover` completes or rolls back whatever a killed run left in the journal, before anything
  else happens (what to do is decided by `core.recovery`); a repair that fails stays journaled
  and is tried again by the next run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field

from updock.core.model import Container, Phase, ReportRow, Status, Step, Task
from updock.core.plan import (
    Action,
    Begin,
    Check,
    CheckResult,
    Defer,
    Finish,
    HoldBack,
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
    drive,
)
from updock.core.recovery import recover_unit
from updock.core.recreate import (
    CreateFollower,
    CreateNew,
    JournalFollower,
    Prepare,
    RecreateAction,
    SetStep,
    StopOld,
    VerifyFollower,
    recreated_unit,
)
from updock.core.reference import ImageReference, previous_tag
from updock.engines import Engine, engine_name
from updock.errors import EngineError, UpdockError
from updock.options import SafetyOptions
from updock.pullahead import PullAhead
from updock.state import (
    PULLING,
    RESTARTING,
    ROLLING_BACK,
    Hold,
    JournalEntry,
    JournalTask,
    StateStore,
)
from updock.stopping import StopRequest
from updock.systemd import ServiceConnection
from updock.verify import (
    ContainerProbe,
    Expectation,
    last_log_lines,
    verify_unit,
)

log = logging.getLogger(__name__)

#: Test seam: `UPDOCK_TEST_CRASH_AT=pull|restart|verify|wave` kills this process with SIGKILL at
#: that point (`wave`: a second into a wave of units), so the integration tests can prove that
#: the next run repairs the state. For a recreate, `step-<step>` (`stopping`, `renaming`,
#: `creating`, `starting`, `verified`, `restoring`) kills it right after that step was done,
#: `step-<step>:<container>` only at that container's step.
CRASH_ENV = "UPDOCK_TEST_CRASH_AT"


def _crash_point(name: str, delay: float = 0.0) -> None:
    if os.environ.get(CRASH_ENV) != name:
        return
    if delay <= 0:
        os.kill(os.getpid(), signal.SIGKILL)
    timer = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGKILL))
    timer.daemon = True
    timer.start()


class PreviousKeeper:
    """Tags previous images under updock's names, one podman process for many units.

    The units of a wave (and the canaries of groups that start together) are journaled within
    moments of each other; each would start a `podman tag` of its own. The first caller waits
    `window` seconds for the others, then tags every image once with all the names asked for.
    Each caller returns once its own tag exists (or raises what podman said).
    """

    def __init__(self, engine: Engine, window: float = 0.05) -> None:
        self._engine = engine
        self._window = window
        self._lock = threading.Lock()
        self._pending: list[tuple[str, ImageReference, _Waiter]] = []
        self._leading = False

    def keep(self, image_id: str, name: ImageReference) -> None:
        """Tag `image_id` as `name` (with whatever others ask at about the same time).

        Raises:
            EngineError: podman could not tag it.
        """
        waiter = _Waiter()
        with self._lock:
            self._pending.append((image_id, name, waiter))
            lead = not self._leading
            self._leading = True
        if lead:
            time.sleep(self._window)
            with self._lock:
                batch, self._pending, self._leading = self._pending, [], False
            by_image: dict[str, list[tuple[ImageReference, _Waiter]]] = {}
            for image, ref, w in batch:
                by_image.setdefault(image, []).append((ref, w))
            for image, items in by_image.items():
                refs = list(dict.fromkeys(ref for ref, _ in items))
                error: EngineError | None = None
                try:
                    self._engine.tag(image, *refs)
                except EngineError as exc:
                    error = exc
                for _, w in items:
                    w.error = error
                    w.done.set()
        waiter.done.wait()
        if waiter.error is not None:
            raise waiter.error


@dataclass
class _Waiter:
    done: threading.Event = field(default_factory=threading.Event)
    error: EngineError | None = None


class JournalBook:
    """The run's journal entries, shared by the threads that update units; every change is
    saved (atomically) before the caller goes on to act."""

    def __init__(self, store: StateStore) -> None:
        self._store = store
        self._entries = store.load()
        self._lock = threading.Lock()

    def begin(self, task: Task, new_image: str = "") -> bool:
        """Journal `task`'s container with its current image (and the image it moves to, when
        known already); False if it already was."""
        with self._lock:
            entry = self._entries.setdefault(
                task.unit,
                JournalEntry(task.unit, apply=task.apply, engine=task.container.engine),
            )
            if entry.task(task.container.name) is not None:
                return False
            entry.tasks.append(
                JournalTask(
                    container=task.container.name,
                    container_id=task.container.id,
                    raw_image_name=task.image.raw,
                    previous_image=task.container.image_id,
                    new_image=new_image,
                    network_of=task.container.network_of,
                )
            )
            self._store.save(self._entries)
            return True

    def begin_follower(self, unit: str, follower: Container, joins: str) -> None:
        """Journal, in the unit's entry, a container that joins the network namespace of the
        unit's container `joins` (`core.recreate`'s followers): on its own image, before and
        after."""
        with self._lock:
            entry = self._entries.get(unit)
            if entry is None or entry.task(follower.name) is not None:
                return
            entry.tasks.append(
                JournalTask(
                    container=follower.name,
                    container_id=follower.id,
                    raw_image_name=follower.raw_image_name or follower.image_id,
                    previous_image=follower.image_id,
                    new_image=follower.image_id,
                    follows=joins,
                )
            )
            self._store.save(self._entries)

    def entries(self) -> list[JournalEntry]:
        """The entries now journaled (copies of the list; the entries are shared)."""
        with self._lock:
            return list(self._entries.values())

    def set_phase(self, unit: str, phase: Phase, only_from: Phase | None = None) -> None:
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

    def set_step(self, unit: str, container: str, step: Step, new_container: str = "") -> None:
        """Record that the recreate of `container` is at `step` (the unit's phase moves on from
        pulling: something is about to change)."""
        with self._lock:
            entry = self._entries.get(unit)
            journaled = entry.task(container) if entry else None
            if entry is None or journaled is None:
                return
            if entry.phase == PULLING:
                entry.phase = RESTARTING
            journaled.step = step.value
            if new_container:
                journaled.new_container = new_container
            self._store.save(self._entries)

    def defer(self, unit: str, phase: Phase, error: str) -> None:
        """Keep the unit's entry for the next run's repair, at `phase`, noting the attempt."""
        with self._lock:
            entry = self._entries.get(unit)
            if entry is None:
                return
            entry.phase = phase
            entry.repair_attempts += 1
            entry.repair_error = error
            self._store.save(self._entries)

    def finish(self, unit: str) -> JournalEntry | None:
        """Clear the unit's entry; return it."""
        with self._lock:
            entry = self._entries.pop(unit, None)
            self._store.save(self._entries)
            return entry


class HoldBook:
    """The image names `updock rollback` held back (`state.Hold`), shared by a run's threads;
    every change is saved before the caller goes on."""

    def __init__(self, store: StateStore, holds: dict[str, Hold]) -> None:
        self._store = store
        self._holds = holds
        self._lock = threading.Lock()

    def get(self, name: str) -> Hold | None:
        """The hold on `name`, if any."""
        with self._lock:
            return self._holds.get(name)

    def hold(self, name: str, image_id: str, digests: Sequence[str], unit: str) -> None:
        """Hold `name` back from `image_id` (known by `digests`), for `unit`."""
        with self._lock:
            old = self._holds.get(name)
            units = old.units if old is not None and old.image_id == image_id else ()
            units = units if unit in units else (*units, unit)
            self._holds[name] = Hold(name, image_id, tuple(digests), units, time.time())
            self._store.save_holds(self._holds)

    def release_updated(self, rows: Iterable[ReportRow]) -> None:
        """End the holds on the image names these rows updated (to an image the registry
        offered instead of the held one)."""
        updated = {r.image for r in rows if r.updated is Status.UPDATED}
        with self._lock:
            ended = [name for name in updated if self._holds.pop(name, None) is not None]
            if ended:
                self._store.save_holds(self._holds)
        for name in ended:
            log.info("%s was updated: the hold of `updock rollback` on it ended", name)


class ActionHandler:
    """Performs the plan's actions (the `handler` of `core.plan.drive`).

    Thread-safe: the plans of a `Together` and the run's groups of units share one handler, and
    with it one service manager connection, the journal, the holds, the restart slots and the
    container states polled for verification.

    Args:
        restart_slots: held while a unit restarts: bounds the restarts in flight in a run (each
            one a podman stop and run, which compete for the CPU and stretch each other's
            downtime).
        states: where verification reads container states (a `verify.SharedStates`, so that
            the units verified side by side cost one podman process per poll); the engine
            itself when None.
        wrap: wraps the handler of each plan of a `Together` (the run's phase log).
        keeper: tags previous images (one for the run, so that units journaled together share
            a podman process).
        ahead: the run's checks and pulls done ahead (`pullahead.PullAhead`): pulls come from
            it, and no unit restarts (nor a container stops) before it is done.
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
        holds: HoldBook | None = None,
        restart_slots: threading.Semaphore | None = None,
        states: ContainerProbe | None = None,
        wrap: Callable[[Callable[[Action], Outcome]], Callable[[Action], Outcome]] | None = None,
        keeper: PreviousKeeper | None = None,
        ahead: PullAhead | None = None,
    ) -> None:
        self._stop = stop
        self._ahead = ahead
        self._engine = engine
        self._services = services
        self._journal_book = journal
        self._safety = safety
        self._check = check
        self._tls_verify = tls_verify
        self._holds = holds
        self._restart_slots = restart_slots
        self._states: ContainerProbe = states if states is not None else engine
        self._keeper = keeper if keeper is not None else PreviousKeeper(engine)
        self._wrap = wrap
        # The last step of a recreate journaled, per thread (for `_crash_point`).
        self._steps = threading.local()

    def _together(self, action: Together) -> tuple[object, ...]:
        """Drive each plan in a thread of its own (this handler serves them all); their
        results."""
        from concurrent.futures import ThreadPoolExecutor

        def run(plan: Generator[Action, Outcome, object]) -> object:
            return drive(plan, self._wrap(self) if self._wrap else self)

        workers = max(1, len(action.plans))
        if workers > 1:
            _crash_point("wave", delay=1.0)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wave") as pool:
            return tuple(pool.map(run, action.plans))

    def __call__(self, action: Action) -> Outcome:
        if self._stop is not None and self._stop.requested:
            # Asked to stop: begin nothing new; what has begun is finished (see stopping.py).
            if isinstance(action, Journal):
                raise self._stop.error(f"container {action.task.container.name} not updated")
            if isinstance(action, Restart) and action.interruptible:
                raise self._stop.error(f"unit {action.unit} not restarted")
            if isinstance(action, Begin):
                raise self._stop.error(f"unit {action.unit} not begun")
            if isinstance(action, Prepare) and action.interruptible:
                raise self._stop.error(f"container {action.task.container.name} not recreated")
        if isinstance(action, Check):
            return self._check(action)
        if isinstance(action, Pull):
            return self._pull(action)
        if isinstance(action, Together):
            return self._together(action)
        if isinstance(action, Begin):
            return None
        if isinstance(action, Journal):
            self._journal(action)
        elif isinstance(action, Restart):
            self._journal_book.set_phase(action.unit, RESTARTING, only_from=PULLING)
            _crash_point("restart", delay=0.1)
            if self._ahead is not None:
                self._ahead.wait()
            try:
                with self._restart_slots or contextlib.nullcontext():
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
            self.verify(action.unit, action.tasks, action.expected)
        elif isinstance(action, Finish):
            self._finish(action)
        elif isinstance(action, VerifyImages):
            self._verify_images(action)
        elif isinstance(action, TagImage):
            self._engine.tag(action.image_id, action.name)
        elif isinstance(action, SetPhase):
            self._journal_book.set_phase(action.unit, action.phase)
        elif isinstance(action, Defer):
            self._journal_book.defer(action.unit, action.phase, action.error)
        elif isinstance(action, HoldBack):
            self._hold(action)
        elif isinstance(action, RecreateAction):
            self._recreate(action)
        else:
            raise TypeError(f"unknown action {action!r}")
        return None

    def _recreate(self, action: RecreateAction) -> None:
        """A step of a recreate (`core.recreate`), journaled before it is taken."""
        from updock.recreating import perform, recreator

        if isinstance(action, SetStep):
            self._journal_book.set_step(action.unit, action.container, action.step)
            self._steps.last = action.step
            self._steps.container = action.container
            return
        if isinstance(action, JournalFollower):
            self._journal_book.begin_follower(action.unit, action.follower, action.joins)
            return
        if isinstance(action, VerifyFollower):
            from updock.recreating import followed

            c = action.follower
            self._verify_images(VerifyImages(action.unit, ((c.name, c.image_id),)))
            log.warning("%s", followed(action))
            return
        if isinstance(action, StopOld) and self._ahead is not None:
            self._ahead.wait()
        new_id = perform(recreator(self._engine), action)
        if isinstance(action, CreateNew) and new_id:
            task = action.task
            self._journal_book.set_step(task.unit, task.container.name, Step.CREATING, new_id)
        elif isinstance(action, CreateFollower) and new_id:
            name = action.follower.name
            self._journal_book.set_step(action.unit, name, Step.CREATING, new_id)
        if not isinstance(action, Prepare):
            step = f"step-{getattr(self._steps, 'last', '')}"
            _crash_point(step)
            _crash_point(f"{step}:{getattr(self._steps, 'container', '')}")

    # -- journal ----------------------------------------------------------------------------

    def _journal(self, action: Journal) -> None:
        task = action.task
        if action.target is None:
            # Keep the previous image under a name of ours before anything can untag it.
            self._keeper.keep(task.container.image_id, previous_tag(task.container.name))
        self._journal_book.begin(task, new_image=action.target or action.new_image or "")

    def _hold(self, action: HoldBack) -> None:
        if self._holds is None:
            raise UpdockError("this run keeps no holds")
        task = action.task
        image = self._engine.images([action.image_id]).get(action.image_id)
        digests = image.digests if image is not None else ()
        self._holds.hold(task.image.raw, action.image_id, digests, task.unit)

    def _pull(self, action: Pull) -> str:
        task = action.task
        # Pinned to the digest that was checked: the tag may move between check and pull.
        target = task.image.with_digest(action.digest) if action.digest else task.image.reference
        if self._ahead is not None:
            new_id = self._ahead.pull(target, authfile=task.authfile)
        else:
            new_id = self._engine.pull(target, authfile=task.authfile, tls_verify=self._tls_verify)
        self._journal_book.set_new_image(task, new_id)
        self._engine.tag(new_id, task.image.reference)
        _crash_point("pull")
        return new_id

    def _finish(self, action: Finish) -> None:
        entry = self._journal_book.finish(action.unit)
        if action.verified and not self._safety.keep_previous and entry is not None:
            for t in entry.tasks:
                if t.follows:  # on its own image: no previous image kept
                    continue
                try:
                    self._engine.untag(previous_tag(t.container))
                except EngineError as exc:
                    log.warning("%s", exc)

    # -- verification -----------------------------------------------------------------------

    def verify(self, unit: str, tasks: Sequence[Task], expected: Sequence[str] = ()) -> None:
        """Verify `unit` runs each task's container on its `expected` image (by position), or
        where none is given, on the image tagged under its raw name (see `plan.Verify`)."""
        expect = []
        for i, task in enumerate(tasks):
            image_id = expected[i] if i < len(expected) and expected[i] else None
            image_id = image_id or self._engine.image_id(task.image.reference)
            if image_id is None:
                raise EngineError(f"no image is tagged {task.image}")
            expect.append(Expectation(task.container.name, image_id, task.container.labels))
        try:
            self._verify_unit(unit, expect)
        except UpdockError as exc:
            # A rollback that works is no error in the report (as podman), but the update did
            # fail, and what was seen matters: an error at the default level.
            log.error("%s", exc)
            raise

    def _verify_images(self, action: VerifyImages) -> None:
        labels = {c.name: c.labels for c in self._engine.running_containers()}
        expect = [Expectation(name, image, labels.get(name, {})) for name, image in action.images]
        try:
            self._verify_unit(action.unit, expect)
        except UpdockError as exc:
            log.warning("%s", exc)
            raise

    def _verify_unit(self, unit: str, expect: Sequence[Expectation]) -> None:
        if recreated_unit(unit):
            # No unit to ask: the containers alone say whether the update worked.
            from updock.recreating import NoUnit, recreator

            engine = recreator(self._engine)
            names = [e.name for e in expect]

            def read_logs(unit: str) -> str:
                return "\n".join(engine.container_logs(name) for name in names).strip()

            verify_unit(
                unit,
                expect,
                self._states,
                NoUnit(),
                settle=self._safety.settle,
                timeout=self._safety.verify_timeout,
                read_logs=read_logs,
            )
            return
        verify_unit(
            unit,
            expect,
            self._states,
            self._services.get(),
            settle=self._safety.settle,
            timeout=self._safety.verify_timeout,
            read_logs=last_log_lines,
        )


@dataclass
class RecoveryReport:
    """What `recover` did: one line per journaled unit, the errors, and the units whose
    repair failed (still journaled)."""

    lines: list[str] = field(default_factory=list)
    errors: list[UpdockError] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)


def _no_check(action: Check) -> CheckResult:
    raise UpdockError("a repair checks no registry")


def recover(
    engine: Engine, services: ServiceConnection, store: StateStore, safety: SafetyOptions
) -> RecoveryReport:
    """Complete or roll back every update a killed run left in the journal (`core.recovery`).

    A repair that works clears its entry; one that fails leaves it, with the attempt noted, for
    the next run, and is one of the report's errors.
    """
    report = RecoveryReport()
    book = JournalBook(store)
    handler = ActionHandler(engine, services, book, safety, check=_no_check, tls_verify=None)
    for entry in book.entries():
        if entry.engine != engine_name(engine):
            continue  # another engine's run repairs it
        outcome = drive(recover_unit(entry.interrupted()), handler)
        if isinstance(outcome, UpdockError):
            report.errors.append(outcome)
            report.pending.append(entry.unit)
            report.lines.append(f"unit {entry.unit}: could not be repaired")
        else:
            report.lines.append(f"unit {entry.unit}: {outcome}")
    return report
