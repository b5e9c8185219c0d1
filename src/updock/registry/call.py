"""One check of an image at one place: everything the requests it makes need.

A check asks a registry (or a mirror, or a remapped location: `registries_conf.py`) for one tag;
every request of it (the manifest `HEAD` or `GET`, a token request) carries the same image name
for messages, the same credentials and the same TLS settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from updock.registry.auth import Credentials
from updock.registry.tls import TLSSettings


@dataclass(frozen=True)
class Call:
    """One check at one place.

    Attributes:
        image: the image name as the container has it, for messages.
        domain: the registry asked (`host[:port]`), as in image names.
        endpoint: the host that serves its API (`registry-1.docker.io` for `docker.io`).
        repository: the path there.
        creds: the credentials for that place, or None.
        tls: how to connect there.
    """

    image: str
    domain: str
    endpoint: str
    repository: str
    creds: Credentials | None
    tls: TLSSettings

    @property
    def scope(self) -> str:
        """The token scope of pulling from the repository."""
        return f"repository:{self.repository}:pull"
