"""One auto-update run: the shell that performs what the core's plan decides.

The core (`core.plan.update_unit`) yields actions (check, pull, restart, re-tag) and decides
statuses and rollbacks; this module performs each action with the engine, the registry client and
the service manager, and sends the outcome back. Registry checks are done up front, concurrently,
once per distinct (image name, credentials, platform); the plan then reads their results.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from updock import defaults
from updock.core.model import Apply, Container, Image, Policy, ReportRow, Task
from updock.core.policy import effective_labels, lookup_policy
from updock.core.reference import ImageReference, registry_image_name
from updock.core.tasks import assemble_tasks, unit_groups
from updock.engines import Engine
from updock.errors import EngineError, RegistryError, UpdockError
from updock.options import SafetyOptions

if TYPE_CHECKING:
    from concurrent.futures import Future
    from pathlib import Path

    # The shell's heavier parts (D-Bus, verification, the plan) are imported when a unit must
    # change, so that a run with nothing to do starts fast.
    from updock.actions import HoldBook
    from updock.core.plan import Action, Check, CheckResult, Outcome
    from updock.record import RunRecord, RunRecorder
    from updock.registry import RegistryClient
    from updock.registry.client import RemoteTag
    from updock.state import Hold, JournalEntry, StateStore
    from updock.stopping import StopRequest
    from updock.systemd import ServiceConnection, ServiceManager

log = logging.getLogger(__name__)

#: Registry checks that may run at once in all (they are I/O bound: one HEAD each); each
#: registry also has its own bound, `RegistryClient.concurrency`.
CHECK_CONCURRENCY = 32

#: Groups of units (see `unit_groups`) updated side by side at most. High: a group mostly waits
#: (for its canary's settle time, its wave's verification), and the restarts in flight are
#: bounded on their own (`Options.restart_concurrency`); with fewer, a host with many image
#: names would update them in batches, one settle time after another.
UNIT_CONCURRENCY = 64


@dataclass(frozen=True)
class Options:
    """What the user asked for (the flags of `auto-update`).

    Attributes:
        authfile: credentials file (after `REGISTRY_AUTH_FILE`), or None.
        dry_run: report `pending`, change nothing.
        rollback: roll back a unit whose update fails (to restart or to verify).
        tls_verify: None = as registries.conf says.
        safety: verification and retention of previous images.
        lock_wait: seconds to wait for another run's lock (0: fail at once).
        state_dir: where the journal and the lock live (default: `state.default_state_dir`).
        registry_concurrency: requests in flight per registry.
        podman_timeout: seconds a podman command (but a pull) may take.
        pull_timeout: seconds a pull may take.
        restart_concurrency: units restarting at once at most, in all.
        wave_size: units of one image name restarted and verified side by side at most, once
            a canary verified the name's new image (`core.waves`).
        engines: the engines to update ("podman", "docker"); None: podman when it is
            installed, and Docker when `DOCKER_HOST` is set or its default socket exists.
        watchtower: containers labelled `com.centurylinklabs.watchtower.enable=true` (and no
            auto-update label) get the registry policy.
    """

    authfile: str | None = None
    dry_run: bool = False
    rollback: bool = True
    tls_verify: bool | None = None
    safety: SafetyOptions = field(default_factory=SafetyOptions)
    lock_wait: float = defaults.LOCK_WAIT
    state_dir: Path | None = None
    registry_concurrency: int = defaults.REGISTRY_CONCURRENCY
    podman_timeout: float = defaults.PODMAN_TIMEOUT
    pull_timeout: float = defaults.PULL_TIMEOUT
    restart_concurrency: int = defaults.RESTART_CONCURRENCY
    wave_size: int = defaults.WAVE_SIZE
    engines: tuple[str, ...] | None = None
    watchtower: bool = False


#: The engines `--engine` takes.
ENGINES = ("podman", "docker")


@dataclass
class RunResult:
    """The report rows, sorted by unit and container name, and every error of the run; and
    what happened to each container (`record.RunRecord`, for notifications, history and
    metrics), once the run is over."""

    rows: list[ReportRow] = field(default_factory=list)
    errors: list[UpdockError] = field(default_factory=list)
    record: RunRecord | None = None


_CheckKey = tuple[str, str | None, str, str, str]


_HeadKey = tuple[ImageReference, str | None]  # (image name, auth file)


class _Checks:
    """The registry checks of a run: one `HEAD` per distinct (image name, auth file), started as
    early as the names are known (from `podman ps`, while podman still inspects), then resolved
    per platform once the local images are known (a `GET` only for a changed manifest list).

    Each registry's `HEAD`s form a queue drained by at most `RegistryClient.concurrency`
    workers, so a slow or failing registry holds back its own checks only.
    """

    def __init__(self, registry: RegistryClient, stack: contextlib.ExitStack) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._registry = registry
        self._pool = ThreadPoolExecutor(max_workers=CHECK_CONCURRENCY, thread_name_prefix="check")
        stack.callback(self._pool.shutdown, cancel_futures=True)
        self._heads: dict[_HeadKey, Future[RemoteTag]] = {}
        self._lock = threading.Lock()

    def start(self, keys: Iterable[_HeadKey]) -> None:
        """Start the `HEAD`s of these names (those not started yet)."""
        from concurrent.futures import Future

        queues: dict[str, deque[tuple[_HeadKey, Future[RemoteTag]]]] = {}
        with self._lock:
            for key in keys:
                if key in self._heads:
                    continue
                future: Future[RemoteTag] = Future()
                self._heads[key] = future
                queues.setdefault(self._registry.endpoint(key[0].domain), deque()).append(
                    (key, future)
                )
        for queue in queues.values():
            for _ in range(min(self._registry.concurrency, len(queue))):
                self._pool.submit(self._drain, queue)

    def _drain(self, queue: deque[tuple[_HeadKey, Future[RemoteTag]]]) -> None:
        while True:
            try:
                (ref, authfile), future = queue.popleft()  # atomic across workers
            except IndexError:
                return
            try:
                assert ref.tag is not None  # registry_image_name requires a tag
                future.set_result(
                    self._registry.head(ref.domain, ref.path, ref.tag, authfile=authfile)
                )
            except UpdockError as exc:
                future.set_exception(exc)
            except BaseException as exc:  # never leave a waiter hanging
                future.set_exception(exc)
                raise

    def check(self, task: Task, image: Image, *, fresh: bool = False) -> CheckResult:
        """Whether the registry has another image for the task's name on its platform.

        Args:
            task: the task.
            image: its container's local image (platform, known digests).
            fresh: ask the registry again (the name was rolled back earlier in this run).

        Returns:
            The answer, with the digest to pull: the tag's own digest, which for a multi-arch
            image is the manifest list's. A pull pinned to the list's digest makes podman record
            that digest on the new image (a pull pinned to the platform's entry does not), so
            the next check finds it among the image's digests with one `HEAD` and no `GET`.
        """
        from updock.core.plan import CheckResult

        key = (task.image.reference, task.authfile)
        if fresh:
            with self._lock:
                self._heads.pop(key, None)
        self.start([key])
        remote = self._heads[key].result()
        platform_digest = self._registry.resolve(
            remote,
            os=image.os,
            architecture=image.architecture,
            variant=image.variant,
            known_digests=image.digests,
        )
        return CheckResult(
            update_available=platform_digest not in image.digests, digest=remote.digest
        )


def _head_keys(containers: Iterable[Container], authfile: str | None) -> set[_HeadKey]:
    """The (image name, auth file) of every container with the registry policy."""
    keys = set()
    for container in containers:
        labels = effective_labels(container)
        try:
            policy = lookup_policy(labels.policy or "")
        except UpdockError:
            continue  # reported by assemble_tasks
        if policy is Policy.REGISTRY:
            try:
                ref = registry_image_name(container.raw_image_name).reference
            except UpdockError:
                continue  # reported by assemble_tasks
            keys.add((ref, labels.authfile or authfile))
    return keys


def _make_check(
    engine: Engine, checks: _Checks, images: dict[str, Image]
) -> Callable[[Check], CheckResult]:
    """The `Check` action: the registry's digest (from the checker) or the local image ID."""
    from updock.core.plan import CheckResult

    def check(action: Check) -> CheckResult:
        task = action.task
        if task.container.image_id not in images:
            raise EngineError(f"container image ID {task.container.image_id!r} not found")
        if task.policy is Policy.LOCAL:
            local_id = engine.image_id(task.image.reference)
            if local_id is None:
                raise EngineError(f"{task.image}: image not known")
            return CheckResult(
                update_available=local_id != task.container.image_id, image_id=local_id
            )
        return checks.check(task, images[task.container.image_id], fresh=action.fresh)

    return check


def _connection(services: Callable[[], ServiceManager] | None) -> ServiceConnection:
    """The service manager's connection (made when a unit must restart): systemd by default."""
    if services is None:
        from updock.systemd import connect

        services = connect
    from updock.systemd import ServiceConnection

    return ServiceConnection(services)


def _host_engines(options: Options, stop: StopRequest | None, result: RunResult) -> list[Engine]:
    """The engines of this host a run updates (`Options.engines`).

    A Docker daemon that cannot be reached is an error of the run (naming its socket), not of
    the podman containers: they are updated all the same.
    """
    import shutil

    from updock.engines.docker import docker_configured

    names = options.engines
    if names is None:
        docker = docker_configured()
        podman = shutil.which("podman") is not None or not docker
        names = tuple(n for n, on in (("podman", podman), ("docker", docker)) if on)
    engines: list[Engine] = []
    for name in names:
        if name == "podman":
            from updock.engines.podman import default_engine

            engines.append(default_engine(options.podman_timeout, options.pull_timeout, stop))
            continue
        from updock.engines.docker import Docker

        try:
            docker_engine = Docker(
                timeout=options.podman_timeout, pull_timeout=options.pull_timeout, stop=stop
            )
            if options.engines is None and docker_engine.is_podman():
                log.info("%s is podman's own API: its containers are podman's", docker_engine.host)
                continue
        except EngineError as exc:
            result.errors.append(exc)
            continue
        engines.append(docker_engine)
    return engines


def run_auto_update(
    options: Options,
    *,
    engine: Engine | None = None,
    registry: RegistryClient | None = None,
    services: Callable[[], ServiceManager] | None = None,
    stop: StopRequest | None = None,
) -> RunResult:
    """Run auto-update once: discover, check, update, restart, roll back.

    Args:
        options: the user's flags.
        engine: the container engine; the host's podman when None.
        registry: the registry client; when None, the run makes one (honouring
            `options.tls_verify` and `options.registry_concurrency`) once it knows there is
            something to check, and closes it.
        services: connects to the service manager (called only when a unit must restart);
            systemd over D-Bus when None.
        stop: once requested (a signal), no unit is begun any more; those in flight are
            finished (verified or rolled back) before the run returns, with an `Interrupted`
            error naming what was not done.

    Returns:
        The report rows (of the units begun) and every error; per-container problems never
        abort the run.
    """
    from updock.record import RunRecorder
    from updock.state import StateStore

    result = RunResult()
    engines = [engine] if engine is not None else _host_engines(options, stop, result)
    recorder = RunRecorder(dry_run=options.dry_run, engine=_engines_named(engines))
    connection = _connection(services)
    store = StateStore(options.state_dir)
    blocked: dict[int, frozenset[str]] = {}
    tasks: list[Task] = []
    with contextlib.ExitStack() as stack:
        stack.callback(connection.close)
        if not options.dry_run:
            # One run at a time; and a killed run's unfinished update is repaired first.
            if stack.enter_context(store.locked(options.lock_wait)):
                # Another run updated this host meanwhile: list the containers again.
                from updock.prefetch import take_listing

                take_listing()
            for i, each in enumerate(engines):
                blocked[i] = _recover(each, connection, store, options, result)
        for i, each in enumerate(engines):
            tasks += _update(
                each,
                registry,
                connection,
                store,
                options,
                result,
                stack,
                stop,
                blocked.get(i, frozenset()),
                recorder,
            )
    result.rows.sort(key=ReportRow.sort_key)
    result.record = recorder.finish(result.rows, tasks, result.errors)
    return result


def _engines_named(engines: Sequence[Engine]) -> str:
    """The run's engines as its record names them: "podman", "docker", "podman,docker"."""
    from updock.engines import engine_name
    from updock.record import ENGINE

    return ",".join(dict.fromkeys(engine_name(e) for e in engines)) or ENGINE


def _journal(store: StateStore, result: RunResult) -> dict[str, JournalEntry]:
    """The journal; empty, with the error, when it was unreadable and set aside."""
    from updock.state import StateFileSetAside

    try:
        return store.load()
    except StateFileSetAside as exc:
        result.errors.append(exc)
        return {}


def _recover(
    engine: Engine,
    connection: ServiceConnection,
    store: StateStore,
    options: Options,
    result: RunResult,
) -> frozenset[str]:
    """Repair what a killed run left in the journal; the units whose repair is still pending
    (their containers are not updated in this run)."""
    if not _journal(store, result):
        return frozenset()
    from updock.actions import recover
    from updock.prefetch import take_listing

    recovered = recover(engine, connection, store, options.safety)
    take_listing()  # listed before the repairs restarted units: list again
    for line in recovered.lines:
        # A killed run is a failure to see at the default level, even once repaired.
        log.error("recovery: %s", line)
    result.errors.extend(recovered.errors)
    return frozenset(recovered.pending)


def _holds(store: StateStore, options: Options, result: RunResult) -> tuple[HoldBook, bool]:
    """The holds of `updock rollback`, and whether they could not be read (then the run only
    checks: any image name may have been held back; see `updock.state`)."""
    from updock.actions import HoldBook
    from updock.errors import ConfigError

    try:
        return HoldBook(store, store.load_holds(set_aside=not options.dry_run)), False
    except ConfigError as exc:
        result.errors.append(exc)
        return HoldBook(store, {}), True


def _honour_holds(
    check: Callable[[Check], CheckResult], holds: HoldBook, engine: Engine
) -> Callable[[Check], CheckResult]:
    """`check`, but an update to the image `updock rollback` held a name back from is none."""
    from updock.core.plan import CheckResult

    def held_check(action: Check) -> CheckResult:
        found = check(action)
        name = action.task.image.raw  # as the report shows it, and `updock release` takes it
        hold = holds.get(name) if found.update_available else None
        if hold is None:
            return found
        if action.task.policy is Policy.LOCAL:
            held = hold.covers(image_id=engine.image_id(action.task.image.reference))
        else:
            held = hold.covers(digest=found.digest)
        if not held:
            return found
        log.info(
            "%s: not updated: `updock rollback` of %s held it back from image %s (`updock "
            "release` ends the hold)",
            name,
            ", ".join(hold.units),
            hold.image_id[:12],
        )
        return CheckResult(update_available=False, digest=found.digest)

    return held_check


def _remove_leftovers(engine: Engine, store: StateStore) -> None:
    """Old containers a killed run left aside after a finished update (podman: see
    `Podman.remove_leftovers`), removed under the run's lock once its updates are over."""
    sweep: Callable[[set[str]], list[str]] | None = getattr(engine, "remove_leftovers", None)
    if sweep is None:
        return
    try:
        journal = store.load()
    except UpdockError:
        return  # unreadable: any aside container may be one a repair needs
    journaled = {t.container_id for entry in journal.values() for t in entry.tasks}
    for name in sweep(journaled):
        log.warning("removed container %s, an old container a killed run left aside", name)


def _registry_settings(
    engine: Engine, domains: Iterable[str], stack: contextlib.ExitStack
) -> dict[str, Any]:
    """How the registry client asks for `engine`'s images: podman's registries.conf and
    certs.d by default; for Docker, the daemon's own insecure registries (a registries.conf of
    the run's, written from the daemon's settings) and /etc/docker/certs.d."""
    settings = getattr(engine, "registries_conf_text", None)
    if settings is None:
        return {}
    import tempfile
    from pathlib import Path

    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="updock-docker.")))
    conf = folder / "registries.conf"
    conf.write_text(settings(sorted(set(domains))))
    return {
        "registries_conf": conf,
        "registries_conf_dirs": [],
        "certs_dirs": [Path("/etc/docker/certs.d")],
    }


def _update(
    engine: Engine,
    registry: RegistryClient | None,
    connection: ServiceConnection,
    store: StateStore,
    options: Options,
    result: RunResult,
    stack: contextlib.ExitStack,
    stop: StopRequest | None,
    blocked: frozenset[str] = frozenset(),
    recorder: RunRecorder | None = None,
) -> list[Task]:
    """Check and update the containers of one engine; the tasks of the run (for its record)."""
    from updock.engines import engine_name

    authfile = options.authfile
    if engine_name(engine) == "docker" and authfile is None:
        from updock.engines.docker import docker_config_file

        authfile = docker_config_file()  # what the docker CLI reads, and only that
    started: list[_Checks] = []
    domains: set[str] = set()

    def checks() -> _Checks:
        # The registry client (and its HTTP stack) is made only once there are containers to
        # check, and its import runs in the background meanwhile: a run with nothing to do
        # never pays for it.
        if not started:
            client = registry
            if client is None:
                from updock.registry import RegistryClient
                from updock.registry.hints import FILE_NAME

                client = stack.enter_context(
                    RegistryClient(
                        tls_verify=options.tls_verify,
                        concurrency=options.registry_concurrency,
                        hints_file=store.folder / FILE_NAME,
                        **_registry_settings(engine, domains, stack),
                    )
                )
                client.preload()
            if recorder is not None:
                recorder.count_requests(client.counts.snapshot)
            started.append(_Checks(client, stack))
        return started[0]

    def candidates(found: list[Container]) -> None:
        keys = _head_keys(found, authfile)
        domains.update(ref.domain for ref, _ in keys)
        checks().start(keys)

    containers = engine.running_containers(on_candidates=candidates)
    units, errors = assemble_tasks(containers, authfile, watchtower=options.watchtower)
    result.errors.extend(errors)
    if not units:
        return []
    all_tasks = [t for tasks in units.values() for t in tasks]
    images = engine.images({t.container.image_id for t in all_tasks})
    if recorder is not None:
        recorder.know_images(images)
    # Names that only inspect revealed (a raw name other than ps showed) start now.
    checks().start(
        (t.image.reference, t.authfile) for t in all_tasks if t.policy is Policy.REGISTRY
    )
    from updock.actions import ActionHandler, JournalBook, PreviousKeeper
    from updock.core.plan import SharedImageState, drive
    from updock.core.recovery import pending_repair_rows
    from updock.core.waves import update_group
    from updock.phases import PhaseLog
    from updock.verify import SharedStates

    holds, check_only = _holds(store, options, result)
    journal = JournalBook(store)
    check = _honour_holds(_make_check(engine, checks(), images), holds, engine)
    for unit in blocked & units.keys():  # its repair failed: it stays as the repair left it
        result.rows.extend(pending_repair_rows(unit, units.pop(unit)))
    ahead = None
    if not (options.dry_run or check_only):
        from updock.pullahead import PullAhead

        # Every changed image is pulled before any unit restarts (see pullahead).
        ahead = PullAhead(engine, check, tls_verify=options.tls_verify)
        stack.callback(ahead.close)
        ahead.start(t for tasks in units.values() for t in tasks)
    groups = unit_groups(units)
    not_begun: list[str] = []  # units skipped once a stop was requested (list.append is atomic)
    restart_slots = threading.BoundedSemaphore(options.restart_concurrency)
    states = SharedStates(engine)
    keeper = PreviousKeeper(engine)

    def watched(handler: Callable[[Action], Outcome]) -> Callable[[Action], Outcome]:
        # The phase log, and the run's record of what happened (`updock.record`).
        return PhaseLog(recorder.watch(handler) if recorder is not None else handler)

    def run_group(group: list[str]) -> RunResult:
        handler = ActionHandler(
            engine,
            connection,  # one for all threads (see ServiceConnection)
            journal,
            options.safety,
            check=ahead.check if ahead is not None else check,
            tls_verify=options.tls_verify,
            stop=stop,
            holds=holds,
            restart_slots=restart_slots,
            states=states,
            wrap=watched,
            keeper=keeper,
            ahead=ahead,
        )
        plan = update_group(
            {unit: units[unit] for unit in group},
            dry_run=options.dry_run or check_only,
            rollback=options.rollback,
            images_done=SharedImageState(),
            wave_size=options.wave_size,
        )
        rows, errors = drive(plan, watched(handler))
        begun = {r.unit for r in rows}
        not_begun.extend(u for u in group if u not in begun and stop is not None)
        holds.release_updated(rows)
        return RunResult(rows, errors)

    workers = max(1, min(UNIT_CONCURRENCY, len(groups)))
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="unit") as pool:
        futures = [pool.submit(run_group, g) for g in groups]
    for future in futures:  # in group order, so errors come in a stable order
        done = future.result()
        result.rows.extend(done.rows)
        result.errors.extend(done.errors)
    # An engine may have had to leave old containers in place until the end of the run
    # (podman: one that others still joined; see `Podman.remove_container`).
    leftovers: Callable[[], list[EngineError]] | None = getattr(engine, "leftover_removals", None)
    if leftovers is not None:
        result.errors.extend(leftovers())
    if not options.dry_run and any(t.apply is Apply.RECREATE for t in all_tasks):
        _remove_leftovers(engine, store)
    if stop is not None and stop.requested:
        skipped = ", ".join(sorted(not_begun)) or "none"
        result.errors.append(stop.error(f"units not begun: {skipped}"))
    return all_tasks


__all__ = ["Options", "RegistryError", "RunResult", "run_auto_update"]


def run_rollback(
    unit: str,
    options: Options,
    *,
    engine: Engine | None = None,
    services: Callable[[], ServiceManager] | None = None,
    stop: StopRequest | None = None,
) -> RunResult:
    """`updock rollback UNIT`: put the unit's containers back on their kept previous images.

    The previous image of each container is the one updock tagged
    `localhost/updock-previous/<container>` before its last update. The rollback is journaled,
    the unit restarted and verified like an update.

    Raises:
        UpdockError: the unit runs no auto-updated container, or one has no kept previous image.
    """
    from updock.actions import ActionHandler, JournalBook
    from updock.core.plan import drive, rollback_unit
    from updock.core.reference import previous_tag
    from updock.phases import PhaseLog
    from updock.record import RunRecorder
    from updock.state import StateStore

    result = RunResult()
    unreachable = RunResult()  # engine errors matter only if no engine has the unit
    engines = [engine] if engine is not None else _host_engines(options, stop, unreachable)
    connection = _connection(services)
    store = StateStore(options.state_dir)
    with contextlib.ExitStack() as stack:
        stack.callback(connection.close)
        stack.enter_context(store.locked(options.lock_wait))
        tasks: list[Task] = []
        for each in engines:
            units, _ = assemble_tasks(each.running_containers(), options.authfile)
            # A recreated container may be named by its container name, too.
            named = [t for ts in units.values() for t in ts if t.container.name == unit]
            tasks = units.get(unit) or (named if named and named[0].unit != unit else [])
            if tasks:
                engine = each
                unit = tasks[0].unit
                break
        pending = _journal(store, result).get(unit)
        if pending is not None:
            raise UpdockError(
                f"unit {unit} has an interrupted update to repair first (run `updock "
                f"auto-update`; its last repair saw: {pending.repair_error or 'none yet'})"
            )
        if not tasks or engine is None:
            if unreachable.errors:
                raise unreachable.errors[0]
            raise UpdockError(f"unit {unit} runs no container with an auto-update policy")
        previous = {}
        for task in tasks:
            kept = engine.image_id(previous_tag(task.container.name))
            if kept is None:
                raise UpdockError(
                    f"container {task.container.name} of unit {unit}: no previous image kept "
                    f"({previous_tag(task.container.name)} does not exist)"
                )
            if kept == task.container.image_id:
                # Rolled back already: going "back" again would return to the bad image.
                raise UpdockError(
                    f"container {task.container.name} of unit {unit} runs its kept previous "
                    f"image {kept[:12]} already: nothing to roll back to"
                )
            previous[task.container.id] = kept
        holds, _ = _holds(store, options, result)
        handler = ActionHandler(
            engine,
            connection,
            JournalBook(store),
            options.safety,
            check=_no_check,
            tls_verify=options.tls_verify,
            stop=stop,
            holds=holds,
        )
        plan = rollback_unit(unit, tasks, previous)
        recorder = RunRecorder("rollback", engine=_engines_named([engine]))
        recorder.know_images(engine.images({t.container.image_id for t in tasks}))
        rows, errs = drive(plan, PhaseLog(recorder.watch(handler)))
        result.rows.extend(rows)
        result.errors.extend(errs)
        result.record = recorder.finish(result.rows, tasks, result.errors)
    return result


@dataclass(frozen=True)
class KeptImage:
    """A container's kept previous image, as `updock previous` lists it.

    Attributes:
        unit: the unit that runs the container.
        container_name: the container.
        image: its image name, as created (the report's Image column).
        previous: the name its previous image is kept under.
        previous_image_id: the kept image's ID, "" when none is kept.
        engine: the engine that runs the container ("podman", "docker").
    """

    unit: str
    container_name: str
    image: str
    previous: str
    previous_image_id: str
    engine: str = "podman"

    def as_dict(self) -> dict[str, str]:
        """The fields with the keys of `--format json`."""
        return {
            "Unit": self.unit,
            "ContainerName": self.container_name,
            "Image": self.image,
            "Previous": self.previous,
            "PreviousImageID": self.previous_image_id,
            "Engine": self.engine,
        }


def list_previous(
    options: Options, *, engine: Engine | None = None
) -> tuple[list[KeptImage], list[UpdockError]]:
    """Every auto-updated container of the host's engines (as `auto-update` finds them), with
    the name its previous image is kept under; and the errors of engines that could not be
    asked (the others are listed all the same)."""
    from updock.core.reference import previous_tag
    from updock.engines import engine_name

    result = RunResult()
    engines = [engine] if engine is not None else _host_engines(options, None, result)
    out = []
    for each in engines:
        try:
            containers = each.running_containers()
        except UpdockError as exc:
            result.errors.append(exc)
            continue
        units, _ = assemble_tasks(containers, options.authfile, watchtower=options.watchtower)
        for unit, tasks in units.items():
            for task in tasks:
                kept = previous_tag(task.container.name)
                out.append(
                    KeptImage(
                        unit,
                        task.container.name,
                        task.image.raw,
                        str(kept),
                        each.image_id(kept) or "",
                        engine_name(each),
                    )
                )
    return out, result.errors


def _no_check(action: Check) -> CheckResult:
    raise UpdockError("a rollback checks no registry")


def run_release(targets: Sequence[str], options: Options) -> list[Hold]:
    """`updock release [UNIT|IMAGE]...`: end holds of `updock rollback`.

    Args:
        targets: image names (as the report's Image column shows them), or units whose
            rollback held names back; none: release nothing.
        options: the state folder and how long to wait for the lock.

    Returns:
        The holds released; with no target, every hold (none released).

    Raises:
        UpdockError: a target matches no hold (then none is released).
    """
    from updock.state import StateStore

    store = StateStore(options.state_dir)
    with store.locked(options.lock_wait):
        holds = store.load_holds()
        if not targets:
            return sorted(holds.values(), key=lambda h: h.name)
        released: dict[str, Hold] = {}
        for target in targets:
            found = [h for h in holds.values() if target in (h.name, *h.units)]
            if not found:
                held = ", ".join(sorted(holds)) or "nothing"
                raise UpdockError(f"no image is held back for {target} (held: {held})")
            released.update((h.name, h) for h in found)
        for name in released:
            del holds[name]
        store.save_holds(holds)
    return sorted(released.values(), key=lambda h: h.name)
