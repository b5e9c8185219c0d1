"""What happened in a run, per container: the record that notifications, history and metrics read.

The report's rows (podman's seven fields) say only how each container ended. A `RunRecord` says
more: per container (`TaskRecord`) its image, the digests it moved between, how long its unit
took, and for a failure what was seen. `RunRecorder` collects it while the run's plans are
performed: it wraps the function that performs actions (the handler of `core.plan.drive`), as
`phases.PhaseLog` does, and notes each action's outcome. Units of a wave are performed in
threads of their own (`Together`), each through its own wrapper of one shared recorder, so the
recorder keeps its notes per unit under a lock.

The outcome of each container is the report's (`finish` takes the run's rows): the record never
says something the report does not.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

from updock.core.model import Image, ReportRow, Status, Task
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
    Tag,
    Together,
    Verify,
    VerifyImages,
)
from updock.core.recreate import (
    CreateFollower,
    CreateNew,
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

Handler = Callable[[Action], Outcome]
_FollowerStep = PrepareFollower | CreateFollower | StartFollower | VerifyFollower

#: The engine a record names when it knows of no other.
ENGINE = "podman"


def short_digest(digest: str) -> str:
    """`sha256:0123456789ab` from a full digest (an image ID: its first 12 hex); "" stays ""."""
    algorithm, sep, hexpart = digest.partition(":")
    if not sep:
        return digest[:12]
    return f"{algorithm}:{hexpart[:12]}"


@dataclass(frozen=True)
class TaskRecord:
    """What happened to one container in a run.

    Attributes:
        unit: the systemd unit (for a recreated container: `container:<name>` or
            `compose:<project>/<service>`, as the report's Unit column).
        container: the container's name.
        container_id: its full ID when the run began.
        engine: the container engine that runs it ("podman", "docker").
        image: its image name as created (the report's Image column).
        policy: its auto-update policy.
        status: the report's status (`true`, `false`, `failed`, `pending`, `rolled back`).
        old_digest: a manifest digest of the image it ran ("" when the image has none, as for
            an image built locally).
        new_digest: the digest the registry offered (for the local policy: the new image's ID),
            "" when no update was found or the check failed.
        old_image: the ID of the image it ran.
        new_image: the ID of the image it was moved to (pulled), "" when none.
        update_available: whether the check found another image than the one it ran.
        duration: seconds its unit took in this run (check to verified, or rolled back).
        error: for a failure, what was seen (the check's, pull's, restart's or verification's
            error; a failed rollback's after it); "" otherwise.
        finished: when its unit was done (seconds since the epoch).
    """

    unit: str
    container: str
    container_id: str
    engine: str
    image: str
    policy: str
    status: Status
    old_digest: str = ""
    new_digest: str = ""
    old_image: str = ""
    new_image: str = ""
    update_available: bool = False
    duration: float = 0.0
    error: str = ""
    finished: float = 0.0

    def as_dict(self) -> dict[str, object]:
        """The fields as JSON values (the status as the report's string)."""
        doc = asdict(self)
        doc["status"] = str(self.status)
        return doc


@dataclass(frozen=True)
class RunRecord:
    """What happened in one run.

    Attributes:
        kind: "auto-update" or "rollback" (`updock rollback UNIT`).
        host: this host's name.
        engine: the run's container engines ("podman", "docker", "podman,docker").
        dry_run: whether the run only checked.
        started: when it began (seconds since the epoch).
        duration: seconds it took.
        tasks: one record per container of the report, in the report's order.
        errors: the run's errors, as the report's error output shows each.
        registry_requests: requests sent, per registry host (token servers included).
        registry_errors: requests that failed or got an error answer, per host.
    """

    kind: str = "auto-update"
    host: str = ""
    engine: str = ENGINE
    dry_run: bool = False
    started: float = 0.0
    duration: float = 0.0
    tasks: tuple[TaskRecord, ...] = ()
    errors: tuple[str, ...] = ()
    registry_requests: Mapping[str, int] = field(default_factory=dict)
    registry_errors: Mapping[str, int] = field(default_factory=dict)

    def count(self, status: Status) -> int:
        """How many containers ended with `status`."""
        return sum(1 for t in self.tasks if t.status is status)

    def as_dict(self) -> dict[str, object]:
        """The record as a JSON document."""
        return {
            "kind": self.kind,
            "host": self.host,
            "engine": self.engine,
            "dry_run": self.dry_run,
            "started": self.started,
            "duration": self.duration,
            "tasks": [t.as_dict() for t in self.tasks],
            "errors": list(self.errors),
            "registry_requests": dict(self.registry_requests),
            "registry_errors": dict(self.registry_errors),
        }


@dataclass
class _Seen:
    """What the recorder saw of one container."""

    new_digest: str = ""
    new_image: str = ""
    update_available: bool = False
    error: str = ""


@dataclass
class _Unit:
    """What the recorder saw of one unit."""

    began: float
    ended: float
    finished_at: float = 0.0
    rolling_back: bool = False
    updated: list[str] = field(default_factory=list)  # container IDs journaled for the update
    tasks: dict[str, _Seen] = field(default_factory=dict)

    def seen(self, task: Task) -> _Seen:
        return self.tasks.setdefault(task.container.id, _Seen())


class RunRecorder:
    """Collects a `RunRecord` from the actions a run performs; shared by the run's threads.

    Args:
        kind: the record's kind ("auto-update", "rollback").
        dry_run: whether the run only checks.
        engine: the run's engines, as `RunRecord.engine`.
        clock: seconds, monotonic (for tests).
        wall: seconds since the epoch (for tests).
    """

    def __init__(
        self,
        kind: str = "auto-update",
        *,
        dry_run: bool = False,
        engine: str = ENGINE,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._kind = kind
        self._dry_run = dry_run
        self._engine = engine
        self._clock = clock
        self._wall = wall
        self._started_wall = wall()
        self._started = clock()
        self._lock = threading.Lock()
        self._units: dict[str, _Unit] = {}
        self._digests: dict[str, str] = {}  # image name key -> digest its check found
        self._images: dict[str, Image] = {}
        self._registry: list[Callable[[], tuple[Mapping[str, int], Mapping[str, int]]]] = []

    def know_images(self, images: Mapping[str, Image]) -> None:
        """The local images of the run's containers, by ID (their digests are the old ones);
        each engine's are added to the others'."""
        self._images.update(images)

    def count_requests(
        self, counts: Callable[[], tuple[Mapping[str, int], Mapping[str, int]]]
    ) -> None:
        """Where the registry requests of the run are counted: returns (requests, errors) per
        host, read when the record is made (each engine's registry client adds its own)."""
        self._registry.append(counts)

    def watch(self, handler: Handler) -> Handler:
        """`handler`, noting each action's outcome in this recorder."""

        def recorded(action: Action) -> Outcome:
            if isinstance(action, Together):
                return handler(action)
            start = self._clock()
            try:
                outcome = handler(action)
            except UpdockError as exc:
                self._note(action, exc, start)
                raise
            self._note(action, outcome, start)
            return outcome

        return recorded

    def _note(self, action: Action, outcome: Outcome, start: float) -> None:
        now = self._clock()
        unit_name = _unit_of(action)
        if unit_name is None:
            return
        with self._lock:
            unit = self._units.get(unit_name)
            if unit is None:
                unit = self._units[unit_name] = _Unit(began=start, ended=now)
            unit.ended = max(unit.ended, now)
            failure = outcome if isinstance(outcome, UpdockError) else None
            if isinstance(action, Check):
                seen = unit.seen(action.task)
                if isinstance(outcome, CheckResult):
                    seen.update_available = outcome.update_available
                    digest = outcome.digest or outcome.image_id or ""
                    if outcome.update_available:
                        seen.new_digest = digest
                        self._digests[action.task.image.key] = digest
                elif failure is not None:
                    seen.error = seen.error or str(failure)
            elif isinstance(action, Journal):
                seen = unit.seen(action.task)
                if failure is not None:
                    seen.error = seen.error or str(failure)
                elif action.target is None:  # an update (a manual rollback has a target)
                    unit.updated.append(action.task.container.id)
                    if action.new_image:  # pulled for another unit in this run
                        seen.update_available = True
                        seen.new_image = action.new_image
                        seen.new_digest = seen.new_digest or self._digests.get(
                            action.task.image.key, ""
                        )
            elif isinstance(action, Pull):
                seen = unit.seen(action.task)
                if isinstance(outcome, str):
                    seen.new_image = outcome
                elif failure is not None:
                    seen.error = seen.error or str(failure)
            elif isinstance(action, Tag) and not unit.rolling_back:
                unit.seen(action.task).new_image = action.image_id  # a manual rollback's target
            elif isinstance(action, Retag | SetPhase):
                unit.rolling_back = True
            elif isinstance(action, Restart | Verify) and failure is not None:
                self._unit_failed(unit, str(failure))
            elif isinstance(action, Prepare | CreateNew | StartNew) and failure is not None:
                # A step of a recreate failed: what was seen (the new container would not
                # start, ...), as a unit's failed restart.
                self._container_failed(unit, action.task.container.id, str(failure))
            elif (
                isinstance(
                    action, PrepareFollower | CreateFollower | StartFollower | VerifyFollower
                )
                and failure is not None
            ):
                # A container in the namespace of the unit's could not follow it: what was
                # seen, for the unit's containers (which are rolled back for it).
                self._unit_failed(unit, f"container {action.follower.name}: {failure}")
            elif isinstance(action, StopOld | RenameAside | RemoveOld) and failure is not None:
                self._container_failed(unit, action.old_id, str(failure))
            elif isinstance(action, Restore | VerifyImages):
                # Putting a recreated container back (and verifying it on its old image) is its
                # rollback.
                unit.rolling_back = True
                if failure is not None:
                    if isinstance(action, Restore):
                        self._container_failed(unit, action.old_id, str(failure))
                    else:
                        self._unit_failed(unit, str(failure))
            elif isinstance(action, Finish):
                unit.finished_at = self._wall()

    @classmethod
    def _unit_failed(cls, unit: _Unit, error: str) -> None:
        """A restart or verification of the unit failed: what was seen, for each container
        being updated (a failure during the rollback is added to the update's)."""
        for container_id in unit.updated or list(unit.tasks):
            cls._container_failed(unit, container_id, error)

    @staticmethod
    def _container_failed(unit: _Unit, container_id: str, error: str) -> None:
        """What was seen of one container (a failure during the rollback is added to the
        update's)."""
        seen = unit.tasks.setdefault(container_id, _Seen())
        if not seen.error:
            seen.error = error
        elif unit.rolling_back:
            seen.error += f"\nduring rollback: {error}"

    def finish(
        self, rows: Iterable[ReportRow], tasks: Iterable[Task], errors: Sequence[UpdockError]
    ) -> RunRecord:
        """The record: one `TaskRecord` per report row, with what was seen of its container.

        Args:
            rows: the report's rows, in the report's order.
            tasks: the run's tasks (for the containers' images).
            errors: the run's errors.
        """
        by_id = {t.container.id: t for t in tasks}
        records = []
        with self._lock:
            for row in rows:
                unit = self._units.get(row.unit)
                seen = unit.tasks.get(row.container_id) if unit is not None else None
                seen = seen if seen is not None else _Seen()
                task = by_id.get(row.container_id)
                old_image = task.container.image_id if task is not None else ""
                image = self._images.get(old_image)
                error = seen.error
                if row.updated is Status.FAILED and not error:
                    error = _error_naming(errors, row)
                records.append(
                    TaskRecord(
                        unit=row.unit,
                        container=row.container_name,
                        container_id=row.container_id,
                        engine=task.container.engine if task is not None else self._engine,
                        image=row.image,
                        policy=str(row.policy),
                        status=row.updated,
                        old_digest=image.digests[0] if image is not None and image.digests else "",
                        new_digest=seen.new_digest,
                        old_image=old_image,
                        new_image=seen.new_image,
                        update_available=seen.update_available,
                        duration=(unit.ended - unit.began) if unit is not None else 0.0,
                        error=error if row.updated in (Status.FAILED, Status.ROLLED_BACK) else "",
                        finished=(unit.finished_at if unit and unit.finished_at else self._wall()),
                    )
                )
        requests: dict[str, int] = {}
        failures: dict[str, int] = {}
        for counts in self._registry:
            sent, failed = counts()
            for total, more in ((requests, sent), (failures, failed)):
                for host, n in more.items():
                    total[host] = total.get(host, 0) + n
        return RunRecord(
            kind=self._kind,
            host=socket.gethostname(),
            engine=self._engine,
            dry_run=self._dry_run,
            started=self._started_wall,
            duration=self._clock() - self._started,
            tasks=tuple(records),
            errors=tuple(str(e) for e in errors),
            registry_requests=requests,
            registry_errors=failures,
        )


def _error_naming(errors: Sequence[UpdockError], row: ReportRow) -> str:
    """The first of the run's errors that names the row's container (by ID), else its unit."""
    texts = [str(e) for e in errors]
    for needle in (row.container_id, row.unit):
        found = next((t for t in texts if needle in t), None)
        if found is not None:
            return found
    return ""


def _unit_of(action: Action) -> str | None:
    """The unit an action concerns (None for one that concerns no unit of the record)."""
    if isinstance(action, Begin | Restart | Verify | Finish | SetPhase):
        return action.unit
    if isinstance(action, Check | Journal | Pull | Tag | Retag | Prepare | CreateNew | StartNew):
        return action.task.unit
    if isinstance(action, VerifyImages | SetStep | StopOld | RenameAside | RemoveOld | Restore):
        return action.unit
    if isinstance(action, _FollowerStep):
        return action.unit
    return None
