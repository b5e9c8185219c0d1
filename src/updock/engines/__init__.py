"""Container engines: what updock needs of podman (and later Docker), behind one narrow protocol."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from updock.core.model import Container, ContainerState, Image
from updock.core.reference import ImageReference


class Engine(Protocol):
    """The operations an auto-update run needs from a container engine."""

    def running_containers(
        self, on_candidates: Callable[[list[Container]], object] | None = None
    ) -> list[Container]:
        """Every running container, infra containers of pods included.

        Args:
            on_candidates: called once with the containers that have auto-update labels, as
                soon as the engine sees them and before it inspects them, so that the caller can
                start work that overlaps with the inspection (registry checks). Their
                `raw_image_name` is the resolved name there, and the final list may differ.
        """
        ...

    def images(self, ids: Iterable[str]) -> dict[str, Image]:
        """The local images with these IDs, by ID (missing ones are left out)."""
        ...

    def image_id(self, name: ImageReference) -> str | None:
        """ID of the local image under `name`, or None when there is none."""
        ...

    def pull(
        self, reference: ImageReference, *, authfile: str | None, tls_verify: bool | None
    ) -> str:
        """Pull `reference` (name@digest) and return the pulled image's ID."""
        ...

    def tag(self, image_id: str, name: ImageReference, *more: ImageReference) -> None:
        """Give the image `image_id` the name `name` and each of `more` (moving them from any
        other image)."""
        ...

    def untag(self, name: ImageReference) -> None:
        """Remove the name `name` from its image (the image stays if it has other names)."""
        ...

    def container_state(self, name: str, since: float = float("-inf")) -> ContainerState | None:
        """The state of the container `name`, or None when there is no such container."""
        ...

    def container_states(self, names: Iterable[str]) -> dict[str, ContainerState | None]:
        """The states of these containers by name (None for those that do not exist), in one
        call of the engine."""
        ...

    def run_healthcheck(self, name: str) -> str:
        """Run the container's health check once: "healthy", "unhealthy" or "starting"."""
        ...


class Recreator(Protocol):
    """What recreating a container needs of its engine (the steps of `core.recreate`)."""

    def prepare_recreate(self, container_id: str, image: ImageReference) -> None:
        """Build, and keep for `create_container`, the configuration of the container that
        replaces `container_id`: the old one's, minus what came from its image, on the image
        now under `image`. Changes nothing."""
        ...

    def prepare_follow(self, container_id: str, joins: str, *, retag: bool = False) -> None:
        """Build, and keep for `create_container`, the configuration of a container that
        replaces `container_id` on the same image, joining the network namespace of the
        container now named `joins` (`core.recreate`'s followers). Changes nothing, unless
        `retag`: then the container's image name is given back to its image first."""
        ...

    def stop_container(self, container_id: str) -> None:
        """Stop the container with its own stop signal and timeout."""
        ...

    def rename_container(self, container_id: str, name: str) -> None:
        """Rename the container."""
        ...

    def create_container(self, container_id: str, name: str) -> str:
        """Create `name` from what `prepare_recreate(container_id)` kept; its new ID."""
        ...

    def start_container(self, container_id: str) -> None:
        """Start the container (by ID or name)."""
        ...

    def remove_container(self, container_id: str, *, joiners: bool = False) -> None:
        """Remove the container, keeping its volumes; nothing to do when it is gone.

        Args:
            joiners: it is a new container a rollback removes: containers that join its
                network namespace (followers' new containers, made after it) go first.
        """
        ...

    def find_container(self, name_or_id: str) -> tuple[str, str, bool] | None:
        """(ID, name, running) of the container, or None when there is none."""
        ...

    def container_logs(self, name: str, lines: int = 10) -> str:
        """The container's last lines of output ("" when there are none)."""
        ...


def engine_name(engine: object) -> str:
    """The name of an engine ("podman", "docker"): what the journal records per update."""
    return str(getattr(engine, "name", "podman"))
