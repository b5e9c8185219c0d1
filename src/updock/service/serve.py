"""The service: a token, a schedule, a runner and the API, until SIGTERM.

`serve` reads the token file (it must be a regular file that others cannot read), starts the
API and the schedule, and waits. On SIGTERM (`systemctl stop`, a shutdown) or SIGINT, no new
run begins, the run in flight finishes the unit being updated (verified or rolled back) and
stops, the API closes, and `serve` returns 0.
"""

from __future__ import annotations

import logging
import os
import signal
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from updock.errors import ConfigError, UpdockError
from updock.history import History, iso_time
from updock.logs import show_warnings
from updock.publish import Publisher
from updock.run import Options
from updock.service.api import ApiServer, Service
from updock.service.runner import Runner
from updock.service.schedule import Schedule
from updock.state import StateStore

log = logging.getLogger("updock.service")

#: Where the API listens unless told otherwise: loopback only.
DEFAULT_LISTEN = "127.0.0.1:8425"


@dataclass(frozen=True)
class ServeSettings:
    """How the service runs.

    Attributes:
        listen: the API's address, `HOST:PORT`.
        token_file: the file that holds the API's bearer token.
        schedule: when runs are due; None: only when the API asks.
        dry_run: scheduled runs (and `POST /v1/update` without `dry_run`) only check.
        state_dir: the state folder (journal, history, metrics' totals).
    """

    listen: str
    token_file: Path
    schedule: Schedule | None
    dry_run: bool
    state_dir: Path


def read_token(path: Path) -> str:
    """The bearer token in `path` (its first line, without surrounding blanks).

    Raises:
        ConfigError: it cannot be read, is no regular file, others may read it, or it is empty.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise ConfigError(f"token file {path}: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"token file {path} is not a regular file")
        if st.st_mode & stat.S_IROTH:
            raise ConfigError(
                f"token file {path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}): "
                "chmod o-r it"
            )
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(4096)
    finally:
        os.close(fd)
    token = data.decode(errors="replace").strip().partition("\n")[0].strip()
    if not token:
        raise ConfigError(f"token file {path} is empty")
    return token


class Scheduler:
    """Begins a run whenever the schedule says (in a thread of its own), until `stop`."""

    def __init__(self, schedule: Schedule | None, runner: Runner, dry_run: bool) -> None:
        self._schedule = schedule
        self._runner = runner
        self._dry_run = dry_run
        self._stopping = threading.Event()
        self.next_run: float | None = None
        self._thread = threading.Thread(target=self._loop, name="schedule", daemon=True)

    def start(self) -> None:
        """Begin (nothing when there is no schedule)."""
        if self._schedule is not None:
            self.next_run = self._schedule.next_after(time.time())
            self._thread.start()

    def _loop(self) -> None:
        assert self._schedule is not None
        while not self._stopping.is_set():
            due = self.next_run if self.next_run is not None else time.time()
            # Waits in short steps against the wall clock: a long wait would miss a clock
            # change (a suspend, a correction).
            left = due - time.time()
            if left > 0:
                self._stopping.wait(min(left, 30.0))
                continue
            if self._runner.trigger(dry_run=self._dry_run, trigger="schedule") is None:
                log.warning("a scheduled run was due while another ran: skipped")
            self.next_run = self._schedule.next_after(time.time())
            log.info("next run at %s", iso_time(self.next_run))

    def stop(self) -> None:
        """Begin no scheduled run any more."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(10)


def journal_state(state_dir: Path) -> dict[str, object]:
    """The journal's entries (interrupted updates, repairs pending), read without changing it."""
    try:
        entries = StateStore(state_dir).load(set_aside=False)
    except UpdockError as exc:
        return {"units": [], "error": str(exc)}
    return {
        "units": [
            {
                "unit": e.unit,
                "phase": str(e.phase),
                "started": iso_time(e.started),
                "containers": [t.container for t in e.tasks],
                "repair_attempts": e.repair_attempts,
                "repair_error": e.repair_error,
            }
            for e in entries.values()
        ],
        "error": None,
    }


def _metrics(state_dir: Path, extra: dict[str, float]) -> bytes:
    from updock.metrics import empty_totals, load_totals, render
    from updock.statefolder import StateFolder

    try:
        with StateFolder(state_dir, create=False) as folder:
            totals = load_totals(folder)
    except FileNotFoundError:
        totals = empty_totals()
    return render(totals, extra)


def serve(settings: ServeSettings, options: Callable[[bool], Options], publisher: Publisher) -> int:
    """Run the service until SIGTERM or SIGINT; its exit status (0 after a clean stop).

    Raises:
        UpdockError: the token file or the address will not do (before anything runs).
    """
    show_warnings(log)
    log.setLevel(min(log.getEffectiveLevel(), logging.INFO))  # the service says what it does
    token = read_token(settings.token_file)
    runner = Runner(options, publisher)
    scheduler = Scheduler(settings.schedule, runner, settings.dry_run)
    history = History(settings.state_dir)

    def status() -> dict[str, object]:
        current = runner.current
        last = runner.last
        return {
            "running": current.summary() if current is not None else None,
            "last_run": last.as_dict() if last is not None else None,
            "next_run": iso_time(scheduler.next_run) if scheduler.next_run else None,
            "schedule": settings.schedule.expression if settings.schedule else None,
            "journal": journal_state(settings.state_dir),
        }

    def update(dry_run: bool | None) -> dict[str, object] | None:
        begun = runner.trigger(
            dry_run=settings.dry_run if dry_run is None else dry_run, trigger="api"
        )
        return begun.summary() if begun is not None else None

    def running() -> dict[str, object] | None:
        current = runner.current
        return current.summary() if current is not None else None

    def metrics() -> bytes:
        extra = {"updock_run_in_progress": 1.0 if runner.current is not None else 0.0}
        if scheduler.next_run:
            extra["updock_next_run_timestamp_seconds"] = scheduler.next_run
        return _metrics(settings.state_dir, extra)

    service = Service(
        token,
        status=status,
        history=history.read,
        metrics=metrics,
        update=update,
        running=running,
    )
    server = ApiServer(settings.listen, service)
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        stopping.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
        scheduler.start()
        log.info(
            "serving the API on %s; %s",
            settings.listen,
            f"next run at {iso_time(scheduler.next_run)}"
            if scheduler.next_run
            else "no schedule: runs begin on POST /v1/update",
        )
        while not stopping.wait(1.0):
            pass
    finally:
        scheduler.stop()
        runner.stop()
        server.close()
        for s, h in previous.items():
            signal.signal(s, h)
    log.info("stopped")
    return 0
