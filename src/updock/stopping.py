"""Stopping a run cleanly on SIGINT or SIGTERM.

systemd sends SIGTERM on `systemctl stop` and at shutdown; a user presses Ctrl-C. Either way a
run must not unwind in the middle of an update: it stops beginning new work (no unit is
journaled or restarted onto a new image any more), lets what is in flight reach a consistent
point (verified, or rolled back), keeps its lock until then, and ends with the report of what
was done and exit status 130 (SIGINT) or 143 (SIGTERM).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

from updock.errors import EXIT_SIGINT, EXIT_SIGTERM, Interrupted

log = logging.getLogger(__name__)

_EXIT_CODES = {signal.SIGINT: EXIT_SIGINT, signal.SIGTERM: EXIT_SIGTERM}


class StopRequest:
    """Whether the run was asked to stop; set from a signal handler, read by every thread."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._signum = signal.SIGTERM
        self._lock = threading.Lock()
        self._callbacks: dict[int, Callable[[], object]] = {}
        self._next = 0

    def request(self, signum: int = signal.SIGTERM) -> None:
        """Ask the run to stop (the first request's signal decides the exit status), and call
        what `on_request` registered."""
        with self._lock:
            if self._event.is_set():
                return
            self._signum = signal.Signals(signum)
            self._event.set()
            callbacks = list(self._callbacks.values())
        for callback in callbacks:
            callback()

    def on_request(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Call `callback` when a stop is requested (at once if it was); returns a function
        that unregisters it. For work that may be abandoned, such as a pull: nothing changed
        yet, and waiting for it could take long."""
        with self._lock:
            if not self._event.is_set():
                key = self._next
                self._next += 1
                self._callbacks[key] = callback

                def unregister() -> None:
                    with self._lock:
                        self._callbacks.pop(key, None)

                return unregister
        callback()
        return lambda: None

    @property
    def requested(self) -> bool:
        """Whether the run was asked to stop."""
        return self._event.is_set()

    def error(self, what: str) -> Interrupted:
        """The error for a step not begun because of the request: `stopped by SIGTERM: what`."""
        return Interrupted(
            f"stopped by {self._signum.name}: {what}", _EXIT_CODES.get(self._signum, EXIT_SIGTERM)
        )

    @contextlib.contextmanager
    def on_signals(self) -> Iterator[StopRequest]:
        """Turn SIGINT and SIGTERM into stop requests while the block runs (main thread only).

        The first signal asks the run to stop; later ones only say that it is still finishing
        (SIGKILL ends it at once: the journal lets the next run repair what it was doing).
        """

        def handler(signum: int, frame: FrameType | None) -> None:
            if self.requested:
                log.warning("still finishing the updates in flight (SIGKILL ends at once)")
            else:
                log.warning(
                    "%s: finishing the updates in flight, then stopping",
                    signal.Signals(signum).name,
                )
            self.request(signum)

        previous = {s: signal.signal(s, handler) for s in _EXIT_CODES}
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
