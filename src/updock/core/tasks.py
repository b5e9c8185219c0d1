"""Which containers a run updates, grouped by the systemd unit that runs them.

This is podman's `assembleTasks`. A problem with one container becomes an error for that
container, never an abort: one misconfigured container must not keep the others on an image with
a known vulnerability.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from updock.core.model import (
    LABEL_COMPOSE_PROJECT,
    LABEL_COMPOSE_SERVICE,
    LABEL_SETTLE,
    LABEL_UNIT,
    LABEL_VERIFY_TIMEOUT,
    LABEL_WATCHTOWER,
    MAX_LABEL_SECONDS,
    Apply,
    Container,
    Policy,
    Task,
    label_seconds,
)
from updock.core.policy import effective_labels, go_quote, lookup_policy
from updock.core.recreate import COMPOSE_UNIT_PREFIX, CONTAINER_UNIT_PREFIX, is_aside
from updock.errors import (
    ContainerConfigError,
    ImageReferenceError,
    PolicyError,
    UpdockError,
)


def _unit_for(container: Container, containers: Sequence[Container]) -> tuple[str, Apply]:
    """The unit that runs `container` (its own label, or its pod's infra container's label),
    and how its update is applied: a unit is restarted.

    A container outside pods that no unit runs (any Docker container, a podman container
    started by hand, a script or podman-compose) is recreated by updock itself; its "unit" is
    `compose:<project>/<service>` when compose created it, else `container:<name>`.

    Raises:
        ContainerConfigError: no (non-empty) unit label on a pod's infra container.
    """
    cid = go_quote(container.id)
    if container.pod_id:
        infra = next(
            (c for c in containers if c.pod_id == container.pod_id and c.is_infra),
            None,
        )
        if infra is None:
            raise ContainerConfigError(
                f"auto-updating container {cid}: looking up pod's systemd unit: "
                f"no infra container found for pod {go_quote(container.pod_id)}"
            )
        labels = infra.labels
    else:
        labels = container.labels
        if not labels.get(LABEL_UNIT):
            return _recreated_unit(container), Apply.RECREATE
    unit = labels.get(LABEL_UNIT)
    # An empty label cannot be restarted either; podman only finds out at restart time.
    if not unit:
        raise ContainerConfigError(f"auto-updating container {cid}: no {LABEL_UNIT} label found")
    return unit, Apply.RESTART


def _recreated_unit(container: Container) -> str:
    """`compose:<project>/<service>` for a container compose created, else `container:<name>`."""
    project = container.labels.get(LABEL_COMPOSE_PROJECT)
    service = container.labels.get(LABEL_COMPOSE_SERVICE)
    if project and service:
        return f"{COMPOSE_UNIT_PREFIX}{project}/{service}"
    return f"{CONTAINER_UNIT_PREFIX}{container.name}"


def _check_tuning_labels(container: Container) -> None:
    """updock's verification labels must be numbers of seconds: found now, not after a restart.

    Raises:
        ContainerConfigError: a label is not a number of seconds from 0 to a day (`inf`, `nan`
            and negative values included); it names the container and the label.
    """
    for label in (LABEL_SETTLE, LABEL_VERIFY_TIMEOUT):
        raw = container.labels.get(label)
        if raw is not None and label_seconds(raw) is None:
            raise ContainerConfigError(
                f"auto-updating container {go_quote(container.id)} ({container.name}): "
                f"label {label}={go_quote(raw)} is not a number of seconds from 0 to "
                f"{MAX_LABEL_SECONDS:g}"
            )


def _task_for(
    container: Container,
    containers: Sequence[Container],
    authfile: str | None,
    watchtower: bool = False,
) -> Task | None:
    """The task for one container, None if it is not set up for updates.

    Raises:
        UpdockError: the container is set up for updates but cannot be updated.
    """
    labels = effective_labels(container)
    raw_policy = labels.policy
    if raw_policy is None and watchtower and _watchtower_enabled(container):
        raw_policy = Policy.REGISTRY.value
    if raw_policy is None:
        return None
    cid = go_quote(container.id)
    try:
        policy = lookup_policy(raw_policy)
    except PolicyError as exc:
        raise PolicyError(f"auto-updating container {cid}: {exc}") from exc
    if policy is Policy.DISABLED:
        return None
    _check_tuning_labels(container)
    unit, apply = _unit_for(container, containers)
    raw_name = container.raw_image_name
    if not raw_name:
        raise ContainerConfigError(f"auto-updating container {cid}: raw-image name is empty")
    # Imported here: a run with nothing to update never parses a reference.
    from updock.core.reference import parse_image_name, registry_image_name

    try:
        if policy is Policy.REGISTRY:
            image = registry_image_name(raw_name)
        else:
            image = parse_image_name(raw_name)
    except ImageReferenceError as exc:
        kind = "registry" if policy is Policy.REGISTRY else "locally"
        raise ImageReferenceError(f"{kind} auto-updating container {cid}: {exc}") from exc
    return Task(
        unit=unit,
        container=container,
        policy=policy,
        image=image,
        authfile=labels.authfile if labels.authfile is not None else authfile,
        apply=apply,
    )


def _watchtower_enabled(container: Container) -> bool:
    """Watchtower's opt-in label, as Watchtower reads it (a Go boolean: `true`, `1`, `T`...)."""
    return container.labels.get(LABEL_WATCHTOWER, "") in ("1", "t", "T", "true", "TRUE", "True")


def assemble_tasks(
    containers: Sequence[Container], authfile: str | None, *, watchtower: bool = False
) -> tuple[dict[str, list[Task]], list[UpdockError]]:
    """Build the tasks of a run from every container the engine knows.

    Only running containers with a policy label other than `disabled` become tasks; infra
    containers never do (they carry a pod's unit, not a workload).

    Args:
        containers: all containers, including stopped and infra ones (pod units are looked up
            on the infra containers).
        authfile: credentials file from `--authfile` or `REGISTRY_AUTH_FILE`, or None; a
            container's authfile label wins over it.
        watchtower: a container without an auto-update label but with Watchtower's
            `com.centurylinklabs.watchtower.enable=true` gets the registry policy.

    Returns:
        `unit -> tasks`, ordered by unit name, each list ordered by container name; and one
        error per container that is set up for updates but cannot be updated, each naming the
        container's full ID.
    """
    by_unit: dict[str, list[Task]] = {}
    errors: list[UpdockError] = []
    for container in containers:
        if not container.running or container.is_infra or is_aside(container.name, container.id):
            continue
        try:
            task = _task_for(container, containers, authfile, watchtower)
        except UpdockError as exc:
            errors.append(exc)
            continue
        if task is not None:
            by_unit.setdefault(task.unit, []).append(task)
    every = [t for tasks in by_unit.values() for t in tasks]
    for tasks in by_unit.values():
        tasks[:] = [_with_followers(t, containers, every) for t in tasks]
    return (
        {
            unit: sorted(tasks, key=lambda t: (t.container.name, t.container.id))
            for unit, tasks in sorted(by_unit.items())
        },
        errors,
    )


def _with_followers(task: Task, containers: Sequence[Container], every: Sequence[Task]) -> Task:
    """`task` with the running containers that join its container's network namespace: those
    with no task of their own (`Task.followers`), and the tasks of the others, in other units
    (`Task.follower_tasks`). Recreating it would leave them in a namespace that is gone."""
    if task.apply is not Apply.RECREATE:
        return task
    own = task.container

    def joins(c: Container) -> bool:
        # A pod's members share the infra container's namespace; they are updated as the pod.
        return (
            bool(c.network_of)
            and c.network_of in (own.name, own.id)
            and c.engine == own.engine
            and not c.pod_id
        )

    updated = {t.container.id for t in every}
    followers = tuple(
        sorted(
            (
                c
                for c in containers
                if joins(c) and c.running and not c.is_infra and c.id not in updated
            ),
            key=lambda c: c.name,
        )
    )
    tasks = tuple(
        sorted(
            (t for t in every if joins(t.container) and t.unit != task.unit),
            key=lambda t: t.container.name,
        )
    )
    return replace(task, followers=followers, follower_tasks=tasks) if followers or tasks else task


def unit_groups(units: dict[str, list[Task]]) -> list[list[str]]:
    """Units that share no image name, directly or through other units, in separate groups.

    Groups are updated concurrently (podman restarts and waits for one unit at a time); the
    units of one group in order, so that an image name is pulled once and, after a rollback,
    checked and pulled again by the next unit that uses it (the spec's point 6).

    A unit whose containers depend on another unit's (`Container.depends_on`) is in that unit's
    group, after it: the container others need is recreated and verified before they are.
    """
    parent = {unit: unit for unit in units}

    def root(unit: str) -> str:
        while parent[unit] != unit:
            parent[unit] = parent[parent[unit]]
            unit = parent[unit]
        return unit

    first_with: dict[str, str] = {}
    unit_of = {t.container.name: u for u, tasks in units.items() for t in tasks}
    needs: dict[str, set[str]] = {unit: set() for unit in units}
    for unit, tasks in units.items():
        for task in tasks:
            other = first_with.setdefault(task.image.key, unit)
            parent[root(unit)] = root(other)
            for name in task.container.depends_on:
                needed = unit_of.get(name)
                if needed is not None and needed != unit:
                    needs[unit].add(needed)
                    parent[root(unit)] = root(needed)
    groups: dict[str, list[str]] = {}
    for unit in units:  # units are sorted: so are the groups and their members
        groups.setdefault(root(unit), []).append(unit)
    return [_dependencies_first(members, needs) for members in groups.values()]


def _dependencies_first(members: list[str], needs: dict[str, set[str]]) -> list[str]:
    """`members` in their order, but each after the units it needs (a cycle keeps the order)."""
    done: list[str] = []
    visiting: set[str] = set()

    def visit(unit: str) -> None:
        if unit in done or unit in visiting:
            return
        visiting.add(unit)
        for needed in sorted(needs[unit]):
            if needed in members:
                visit(needed)
        visiting.discard(unit)
        done.append(unit)

    for unit in members:
        visit(unit)
    return done
