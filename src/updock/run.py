"""One auto-update run: the shell that performs what the core's plan decides.

The core (`core.plan.update_unit`) yields actions (check, pull, restart, re-tag) and decides
statuses and rollbacks; this module performs each action with the engine, the registry client and
the service manager, and sends the outcome back. Registry checks are done up front, concurrently,
once per distinct (image name, credentials, platform); the plan then reads their results.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from updock.core.model import Image, Policy, ReportRow, Task
from updock.core.plan import (
    Action,
    Check,
    CheckResult,
    Outcome,
    Pull,
    Restart,
    Retag,
    SharedImageState,
    drive,
    update_unit,
)
from updock.core.reference import validate_auto_update_reference
from updock.core.tasks import assemble_tasks
from updock.engines import Engine
from updock.errors import EngineError, RegistryError, UpdockError
from updock.registry import RegistryClient
from updock.systemd import ServiceManager

#: Registry checks that may run at once (they are I/O bound: one HEAD each).
CHECK_CONCURRENCY = 8


@dataclass(frozen=True)
class Options:
    """What the user asked for (the flags of `auto-update`)."""

    authfile: str | None = None
    dry_run: bool = False
    rollback: bool = True
    tls_verify: bool | None = None


@dataclass
class RunResult:
    """The report rows, sorted by unit and container name, and every error of the run."""

    rows: list[ReportRow] = field(default_factory=list)
    errors: list[UpdockError] = field(default_factory=list)


_CheckKey = tuple[str, str | None, str, str, str]


class _Checker:
    """Registry checks for a run, each distinct one done once (concurrently, up front)."""

    def __init__(self, registry: RegistryClient, images: dict[str, Image]) -> None:
        self._registry = registry
        self._images = images
        self._results: dict[_CheckKey, str | UpdockError] = {}
        self._lock = threading.Lock()

    def _key(self, task: Task) -> _CheckKey:
        image = self._images[task.container.image_id]
        return (task.raw_image_name, task.authfile, image.os, image.architecture, image.variant)

    def _fetch(self, key: _CheckKey, known: Iterable[str]) -> str | UpdockError:
        name, authfile, os_, arch, variant = key
        try:
            ref = validate_auto_update_reference(name)
            assert ref.tag is not None  # validation requires a tag
            return self._registry.manifest_digest(
                ref.domain,
                ref.path,
                ref.tag,
                os=os_,
                architecture=arch,
                variant=variant,
                authfile=authfile,
                known_digests=tuple(known),
            )
        except UpdockError as exc:
            return exc

    def prefetch(self, tasks: Iterable[Task]) -> None:
        """Check every distinct image of `tasks` concurrently."""
        todo: dict[_CheckKey, set[str]] = {}
        for task in tasks:
            if task.policy is Policy.REGISTRY and task.container.image_id in self._images:
                image = self._images[task.container.image_id]
                todo.setdefault(self._key(task), set()).update(image.digests)
        if not todo:
            return
        workers = min(CHECK_CONCURRENCY, len(todo))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="check") as pool:
            futures = {key: pool.submit(self._fetch, key, known) for key, known in todo.items()}
        for key, future in futures.items():
            self._results[key] = future.result()

    def digest(self, task: Task, fresh: bool) -> str:
        """The registry's digest for the task's image; `fresh` ignores earlier results."""
        key = self._key(task)
        with self._lock:
            result = None if fresh else self._results.get(key)
        if result is None:
            image = self._images[task.container.image_id]
            result = self._fetch(key, image.digests)
            with self._lock:
                self._results[key] = result
        if isinstance(result, UpdockError):
            raise result
        return result


class _Handler:
    """Performs the plan's actions for one run."""

    def __init__(
        self,
        engine: Engine,
        checker: _Checker,
        images: dict[str, Image],
        services: Callable[[], ServiceManager],
        options: Options,
    ) -> None:
        self._engine = engine
        self._checker = checker
        self._images = images
        self._connect = services
        self._services: ServiceManager | None = None
        self._options = options

    def close(self) -> None:
        if self._services is not None:
            self._services.close()

    def __call__(self, action: Action) -> Outcome:
        if isinstance(action, Check):
            return self._check(action)
        if isinstance(action, Pull):
            task = action.task
            ref = validate_auto_update_reference(task.raw_image_name)
            # Pinned to the digest that was checked: the tag may move between check and pull.
            new_id = self._engine.pull(
                f"{ref.domain}/{ref.path}@{action.digest}",
                authfile=task.authfile,
                tls_verify=self._options.tls_verify,
            )
            self._engine.tag(new_id, task.raw_image_name)
            return None
        if isinstance(action, Restart):
            if self._services is None:
                self._services = self._connect()
            self._services.restart(action.unit)
            return None
        if isinstance(action, Retag):
            self._engine.tag(action.task.container.image_id, action.task.raw_image_name)
            return None
        raise TypeError(f"unknown action {action!r}")

    def _check(self, action: Check) -> CheckResult:
        task = action.task
        if task.container.image_id not in self._images:
            raise EngineError(f"container image ID {task.container.image_id!r} not found")
        if task.policy is Policy.LOCAL:
            local_id = self._engine.image_id(task.raw_image_name)
            if local_id is None:
                raise EngineError(f"{task.raw_image_name}: image not known")
            return CheckResult(update_available=local_id != task.container.image_id, digest=None)
        digest = self._checker.digest(task, fresh=action.fresh)
        image = self._images[task.container.image_id]
        return CheckResult(update_available=digest not in image.digests, digest=digest)


def run_auto_update(
    options: Options,
    *,
    engine: Engine | None = None,
    registry: RegistryClient | None = None,
    services: Callable[[], ServiceManager] | None = None,
) -> RunResult:
    """Run auto-update once: discover, check, update, restart, roll back.

    Args:
        options: the user's flags.
        engine: the container engine; the host's podman when None.
        registry: the registry client; a new one honouring `options.tls_verify` when None.
        services: connects to the service manager (called only when a unit must restart);
            systemd over D-Bus when None.

    Returns:
        The report rows and every error; per-container problems never abort the run.
    """
    if engine is None:
        from updock.engines.podman import default_engine

        engine = default_engine()
    if registry is None:
        registry = RegistryClient(tls_verify=options.tls_verify)
    if services is None:
        from updock.systemd import connect

        services = connect

    containers = engine.running_containers()
    units, errors = assemble_tasks(containers, options.authfile)
    result = RunResult(errors=list(errors))
    if not units:
        return result
    all_tasks = [t for tasks in units.values() for t in tasks]
    images = engine.images({t.container.image_id for t in all_tasks})
    checker = _Checker(registry, images)
    checker.prefetch(all_tasks)
    handler = _Handler(engine, checker, images, services, options)
    state = SharedImageState()
    try:
        for unit, tasks in units.items():
            plan = update_unit(
                unit, tasks, dry_run=options.dry_run, rollback=options.rollback, images_done=state
            )
            rows, errs = drive(plan, handler)
            result.rows.extend(rows)
            result.errors.extend(errs)
    finally:
        handler.close()
    result.rows.sort(key=ReportRow.sort_key)
    return result


__all__ = ["Options", "RegistryError", "RunResult", "run_auto_update"]
