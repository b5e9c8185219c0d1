"""Values the core works on, parsed once at the engine boundary.

The strings that must match podman's (policies, statuses) are produced here and only here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from updock.defaults import MAX_VERIFY_SECONDS

if TYPE_CHECKING:
    from updock.core.reference import ImageName

#: Label with the auto-update policy of a container.
LABEL_POLICY = "io.containers.autoupdate"
#: Label with the path of the registry credentials file for a container.
LABEL_AUTHFILE = "io.containers.autoupdate.authfile"
#: Label with the systemd unit that runs the container.
LABEL_UNIT = "PODMAN_SYSTEMD_UNIT"
#: Labels docker-compose (and podman-compose) put on the containers it creates.
LABEL_COMPOSE_PROJECT = "com.docker.compose.project"
LABEL_COMPOSE_SERVICE = "com.docker.compose.service"
#: Watchtower's opt-in label, taken as the registry policy with `--watchtower-labels`.
LABEL_WATCHTOWER = "com.centurylinklabs.watchtower.enable"
#: updock's labels that tune the verification of a container after a restart (seconds).
LABEL_SETTLE = "io.updock.verify.settle"
LABEL_VERIFY_TIMEOUT = "io.updock.verify.timeout"
#: The longest time such a label may ask for: a longer one is a mistake (it would hold the run,
#: and with it the lock every later timer run waits for). `defaults.MAX_VERIFY_SECONDS`.
MAX_LABEL_SECONDS = MAX_VERIFY_SECONDS


def label_seconds(raw: str) -> float | None:
    """The value of a verification label in seconds: finite, >= 0 and at most a day; else None.

    `float()` alone accepts "inf", "nan" and "1e300", each of which would hold a run forever.
    """
    try:
        value = float(raw)
    except ValueError:
        return None
    # `not` catches NaN, which every comparison fails.
    if not 0 <= value <= MAX_LABEL_SECONDS:
        return None
    return value


class Policy(StrEnum):
    """An auto-update policy, as reported in the `Policy` column."""

    DISABLED = "disabled"
    """Never update (also what an empty label means)."""
    REGISTRY = "registry"
    """Update when the registry has a different image for the raw image name (alias `image`)."""
    LOCAL = "local"
    """Update when the local store has a different image under the raw image name."""


class Status(StrEnum):
    """The outcome of one task, as reported in the `Updated` column."""

    UPDATED = "true"
    """The unit was restarted on the new image."""
    NOT_UPDATED = "false"
    """No newer image was found."""
    FAILED = "failed"
    """The check, pull or restart failed (and rollback was off or failed too)."""
    PENDING = "pending"
    """A newer image exists; reported by `--dry-run`, which changes nothing."""
    ROLLED_BACK = "rolled back"
    """The update failed and the previous image is running again."""


class Phase(StrEnum):
    """Where a journaled update of a unit stands (the journal's strings, see `updock.state`)."""

    PULLING = "pulling"
    """The previous images are kept; new ones are pulled and tagged; the unit is untouched."""
    RESTARTING = "restarting"
    """The unit is being restarted on the new images, or verified on them."""
    ROLLING_BACK = "rolling back"
    """The previous images are tagged again and the unit restarted on them."""


class Step(StrEnum):
    """Where the recreate of one container stands: journaled before each change, so that a
    run killed at any point leaves the next one to repair it (`core.recovery`)."""

    STOPPING = "stopping"
    """The old container is being stopped (its name and configuration untouched)."""
    RENAMING = "renaming"
    """The old container is being renamed aside (`core.recreate.aside_name`)."""
    CREATING = "creating"
    """The new container is being created under the old one's name."""
    STARTING = "starting"
    """The new container is being started and verified."""
    VERIFIED = "verified"
    """Every new container of the unit verified: the old ones are being removed."""
    RESTORING = "restoring"
    """Rolling back: the new container removed, the old one renamed back and started."""


class Apply(StrEnum):
    """How an update of a task is applied (`Task.apply`)."""

    RESTART = "restart"
    """Its systemd unit is restarted, and creates a new container on the new image (podman's
    way: `podman generate systemd --new`, Quadlet)."""
    RECREATE = "recreate"
    """updock recreates the container itself (`core.recreate`): a Docker container, or a
    podman container no unit runs."""


@dataclass(frozen=True)
class Container:
    """A container as the engine reports it.

    Attributes:
        id: full container ID (64 hex).
        name: container name.
        image_id: ID of the image the container runs.
        raw_image_name: the image name the container was created from, as the user typed it.
        labels: the container's labels.
        annotations: the container's annotations (kube play keeps per-container policies here).
        running: whether the container is running.
        pod_id: ID of the pod the container belongs to, or "".
        is_infra: whether this is the infra container of its pod.
        engine: the engine that runs it ("podman", "docker").
        depends_on: names of the containers it needs (links, `network_mode: container:<x>`,
            compose's `depends_on`): a recreated container is updated after them.
        network_of: the container whose network namespace it joins (`network_mode:
            container:<x>`), by name (by ID when the engine listed no such container); "" for
            none (and for podman's pod members and containers a systemd unit runs: updock
            never recreates those).
    """

    id: str
    name: str
    image_id: str
    raw_image_name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    running: bool = True
    pod_id: str = ""
    is_infra: bool = False
    engine: str = "podman"
    depends_on: tuple[str, ...] = ()
    network_of: str = ""


@dataclass(frozen=True)
class ContainerState:
    """What verification needs to know of a container right now.

    Attributes:
        id: full container ID (a new one after each restart of a `--new` unit).
        running: whether it is running.
        exit_code: its exit code when it is not running.
        image_id: the image it runs.
        health: "healthy", "unhealthy", "starting", or "" when it has no health check.
        health_interval: seconds between health checks (0 without a health check).
        health_retries: failures in a row that make it unhealthy.
        health_start_period: seconds after start during which failures do not count.
    """

    id: str
    running: bool
    exit_code: int
    image_id: str
    health: str = ""
    health_interval: float = 0.0
    health_retries: int = 0
    health_start_period: float = 0.0

    @property
    def has_healthcheck(self) -> bool:
        """Whether the container defines a health check."""
        return self.health_interval > 0 or self.health_retries > 0


@dataclass(frozen=True)
class Image:
    """An image in the local store.

    Attributes:
        id: image ID (64 hex, no algorithm prefix).
        digests: every manifest digest the image is known by (`sha256:...`).
        os: platform OS, e.g. "linux".
        architecture: platform architecture, e.g. "amd64".
        variant: platform variant, e.g. "v8", or "".
        names: the names (repo:tag) the image carries.
    """

    id: str
    digests: tuple[str, ...] = ()
    os: str = "linux"
    architecture: str = "amd64"
    variant: str = ""
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Task:
    """One container to consider in one unit.

    Attributes:
        unit: the systemd unit that runs the container (or its pod); for a container updock
            recreates, `container:<name>`, or `compose:<project>/<service>` for one that
            docker-compose created (the report's Unit column).
        container: the container.
        policy: its effective policy (never DISABLED).
        image: the container's image name, parsed: what is checked, pulled and tagged.
        authfile: credentials file to use for this container, or None.
        apply: how its update is applied: its unit restarted, or the container recreated.
        followers: running containers that join the network namespace of this one and that
            updock does not update (no auto-update policy): when this one is recreated, they
            are recreated after it (on their own images) to join the new one
            (`core.recreate`).
        follower_tasks: the tasks (of other units) of containers that join its network
            namespace: followers too, unless they have an update of their own (then their own
            unit recreates them, after this one).
    """

    unit: str
    container: Container
    policy: Policy
    image: ImageName
    authfile: str | None = None
    apply: Apply = Apply.RESTART
    followers: tuple[Container, ...] = ()
    follower_tasks: tuple[Task, ...] = ()


@dataclass(frozen=True)
class ReportRow:
    """One row of the report; field names follow podman's JSON keys through `as_dict`."""

    unit: str
    container_id: str
    container_name: str
    image: str
    policy: Policy
    updated: Status

    @property
    def container(self) -> str:
        """`<12-hex id> (<name>)`, podman's `Container` column."""
        return f"{self.container_id[:12]} ({self.container_name})"

    def as_dict(self) -> dict[str, str]:
        """The seven fields with podman's keys, in podman's order."""
        return {
            "Unit": self.unit,
            "Container": self.container,
            "ContainerName": self.container_name,
            "ContainerID": self.container_id,
            "Image": self.image,
            "Policy": str(self.policy),
            "Updated": str(self.updated),
        }

    def sort_key(self) -> tuple[str, str]:
        """Rows are reported by unit, then container name."""
        return (self.unit, self.container_name)
