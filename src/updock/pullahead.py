"""Every changed image pulled before any unit restarts, several at once.

The plan pulls an image name when its first unit (the canary) updates (`core.plan.Pull`). Left
at that, the pulls of some names would run while the units of other names restart: a pull and a
restart compete for podman's locks and the CPU, and stretch that restart's downtime. So once the
run knows its tasks, `PullAhead` checks each registry name and pulls what changed (pinned to the
checked digest), several at once, and a restart waits until those pulls are over (`wait`).

Nothing is decided here: the plan still yields every `Check` and `Pull`, in the same order, and
gets the same answers; they come from what was done ahead (each once), or, when nothing was (a
name the run checks again after a rollback, a pull that failed ahead), from the engine then.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait

from updock.core.model import Policy, Task
from updock.core.plan import Check, CheckResult
from updock.core.reference import ImageReference
from updock.engines import Engine
from updock.errors import UpdockError

log = logging.getLogger(__name__)

#: Pulls at once. A pull is mostly I/O (the registry) and some CPU (decompressing layers).
PULL_CONCURRENCY = 4

_PullKey = tuple[ImageReference, str | None]  # (pinned reference, auth file)


class PullAhead:
    """The checks and pulls of a run's registry names, done before any unit restarts.

    Thread-safe: the run's groups of units share one.

    Args:
        engine: pulls the images.
        check: the run's check (honouring `updock rollback`'s holds).
        tls_verify: as for the plan's pulls.
        workers: pulls (and checks) at once.
    """

    def __init__(
        self,
        engine: Engine,
        check: Callable[[Check], CheckResult],
        *,
        tls_verify: bool | None,
        workers: int = PULL_CONCURRENCY,
    ) -> None:
        self._engine = engine
        self._check = check
        self._tls_verify = tls_verify
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pull")
        self._lock = threading.Lock()
        self._checks: dict[str, Future[CheckResult]] = {}  # container ID -> its check
        self._pulls: dict[_PullKey, Future[str]] = {}
        self._all: list[Future[CheckResult]] = []  # each check's future ends after its pull

    def start(self, tasks: Iterable[Task]) -> None:
        """Check the registry names of `tasks`, and pull those that changed.

        One check per distinct (name, auth file, local image): containers of one name on one
        image get one answer; the plan asks for each, and gets it from here.
        """
        seen: set[tuple[str, str | None, str]] = set()
        for task in tasks:
            if task.policy is not Policy.REGISTRY:
                continue
            key = (task.image.key, task.authfile, task.container.image_id)
            if key in seen:
                continue
            seen.add(key)
            future = self._pool.submit(self._ahead, task)
            with self._lock:
                self._checks[task.container.id] = future
                self._all.append(future)

    def _ahead(self, task: Task) -> CheckResult:
        found = self._check(Check(task))
        if found.update_available:
            target = task.image.with_digest(found.digest) if found.digest else task.image.reference
            key = (target, task.authfile)
            with self._lock:
                if key in self._pulls:
                    return found
                future: Future[str] = Future()
                self._pulls[key] = future
            try:
                future.set_result(
                    self._engine.pull(target, authfile=task.authfile, tls_verify=self._tls_verify)
                )
            except UpdockError as exc:
                log.info("pulling %s ahead failed: %s", target, exc)
                future.set_exception(exc)
            except BaseException as exc:  # never leave a waiter hanging
                future.set_exception(exc)
                raise
        return found

    def check(self, action: Check) -> CheckResult:
        """The plan's `Check`: the answer found ahead for this container (once), else a check.

        A `fresh` check (the name was rolled back in this run) always asks the registry again.
        """
        with self._lock:
            future = None if action.fresh else self._checks.pop(action.task.container.id, None)
        if future is None:
            return self._check(action)
        return future.result()

    def pull(self, target: ImageReference, *, authfile: str | None) -> str:
        """The plan's `Pull` of `target`: the image pulled ahead (once), else a pull now.

        Raises:
            UpdockError: the pull failed (ahead, or now).
        """
        with self._lock:
            future = self._pulls.pop((target, authfile), None)
        if future is None:
            return self._engine.pull(target, authfile=authfile, tls_verify=self._tls_verify)
        return future.result()

    def wait(self) -> None:
        """Return once every check and pull started ahead is over (whatever its outcome)."""
        with self._lock:
            pending = list(self._all)
        wait(pending)

    def close(self) -> None:
        """Abandon what has not started (a stop was requested); wait for what has."""
        self._pool.shutdown(cancel_futures=True)
