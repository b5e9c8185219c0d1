"""The runs of `updock serve`: one at a time, each published like a CLI run.

`Runner.trigger` starts a run in a thread of its own, unless one is running (then it returns
None: the API answers 409, and a scheduled run is skipped with a line in the log). A real run
also takes the state folder's lock, as the CLI does, so a timer run or a manual `updock
auto-update` on the same host never overlaps it either (the service's run waits for theirs,
up to `--lock-wait`). `stop` asks the run in flight to stop as SIGTERM does in the CLI: the
unit being updated is finished (verified or rolled back), nothing new is begun.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from updock.core.model import ReportRow
from updock.errors import EXIT_ERROR, Interrupted, UpdockError
from updock.history import iso_time
from updock.publish import Publisher, failed_run
from updock.record import RunRecord
from updock.run import Options, RunResult, run_auto_update
from updock.stopping import StopRequest

log = logging.getLogger(__name__)


@dataclass
class RunInfo:
    """A run of the service: begun, or over.

    Attributes:
        id: its number since the service started (from 1).
        trigger: "schedule" or "api".
        dry_run: whether it only checks.
        started: when it began (seconds since the epoch).
        ended: when it ended; None while it runs.
        exit_status: what `updock auto-update` would have exited with; None while it runs.
        rows: its report.
        errors: its errors, as the CLI prints them.
        record: what happened to each container (`record.RunRecord`).
    """

    id: int
    trigger: str
    dry_run: bool
    started: float
    ended: float | None = None
    exit_status: int | None = None
    rows: list[ReportRow] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    record: RunRecord | None = None

    def summary(self) -> dict[str, object]:
        """Its number, trigger and times, as JSON."""
        return {
            "id": self.id,
            "trigger": self.trigger,
            "dry_run": self.dry_run,
            "started": iso_time(self.started),
            "ended": iso_time(self.ended) if self.ended is not None else None,
            "exit_status": self.exit_status,
        }

    def as_dict(self) -> dict[str, object]:
        """All of it, as JSON (the report's rows with podman's keys)."""
        return self.summary() | {
            "report": [r.as_dict() for r in self.rows],
            "errors": list(self.errors),
            "record": self.record.as_dict() if self.record is not None else None,
        }


class Runner:
    """Runs `updock auto-update` in the service, one run at a time.

    Args:
        options: the run's options for a dry run or not.
        publisher: publishes each run (history, metrics, notifications).
        run: runs once (for tests; `run.run_auto_update` otherwise).
    """

    def __init__(
        self,
        options: Callable[[bool], Options],
        publisher: Publisher,
        run: Callable[..., RunResult] = run_auto_update,
    ) -> None:
        self._options = options
        self._publisher = publisher
        self._run = run
        self._lock = threading.Condition()
        self._ids = itertools.count(1)
        self._current: RunInfo | None = None
        self._stop: StopRequest | None = None
        self._thread: threading.Thread | None = None
        self.last: RunInfo | None = None
        self._stopping = False

    @property
    def current(self) -> RunInfo | None:
        """The run in flight, if any."""
        with self._lock:
            return self._current

    def trigger(self, *, dry_run: bool, trigger: str) -> RunInfo | None:
        """Begin a run now; None when one is running already (or the service is stopping)."""
        with self._lock:
            if self._current is not None or self._stopping:
                return None
            info = RunInfo(next(self._ids), trigger, dry_run, time.time())
            self._current = info
            self._stop = StopRequest()
            thread = threading.Thread(
                target=self._perform, args=(info, self._stop), name=f"run-{info.id}"
            )
            self._thread = thread
            thread.start()
        log.info("run %d (%s%s) began", info.id, trigger, ", dry run" if dry_run else "")
        return info

    def _perform(self, info: RunInfo, stop: StopRequest) -> None:
        result: RunResult | None = None
        errors: list[BaseException] = []
        try:
            result = self._run(self._options(info.dry_run), stop=stop)
            errors = list(result.errors)
        except UpdockError as exc:
            errors = [exc]
        except Exception as exc:  # a bug: say so, and keep the service up for the next run
            log.exception("run %d failed unexpectedly", info.id)
            errors = [exc]
        record = (
            result.record
            if result is not None and result.record is not None
            else failed_run(errors, dry_run=info.dry_run, started=info.started)
        )
        try:
            self._publisher.publish(record)
        except Exception:  # publishing never fails a run (it warns); a bug must not either
            log.exception("run %d: publishing failed", info.id)
        stopped = [e for e in errors if isinstance(e, Interrupted)]
        info.rows = list(result.rows) if result is not None else []
        info.errors = [str(e) for e in errors]
        info.record = record
        info.exit_status = (stopped[0].exit_code if stopped else EXIT_ERROR) if errors else 0
        info.ended = time.time()
        log.info(
            "run %d ended (exit status %d): %d containers, %d errors",
            info.id,
            info.exit_status,
            len(info.rows),
            len(errors),
        )
        for error in info.errors:
            log.error("run %d: %s", info.id, error)
        with self._lock:
            self.last = info
            self._current = None
            self._lock.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until no run is in flight; whether none is."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._current is not None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._lock.wait(left)
            return True

    def stop(self) -> None:
        """Begin no run any more; ask the one in flight to stop (it finishes the unit being
        updated, verified or rolled back) and wait for it."""
        with self._lock:
            self._stopping = True
            stop = self._stop if self._current is not None else None
        if stop is not None:
            log.info("stopping: finishing the run in flight")
            stop.request()
        self.wait()
