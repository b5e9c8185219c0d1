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
