"""Docker Engine through its API (docker-py 7, `pip install updock[docker]`).

The daemon is reached as the docker CLI reaches it: `DOCKER_HOST`, else the default socket
`/var/run/docker.sock`. Every Docker container is recreated to be updated (`core.recreate`):
the `Recreator` methods below build the new container's configuration from the old one's,
minus what came from the old image (`create_body`), and perform each step.

Credentials for pulls come from the docker CLI's own file, `$DOCKER_CONFIG/config.json` (else
`~/.docker/config.json`: `auths`, `credHelpers`, `credsStore`), as docker-py reads it; an
explicit auth file (`--authfile`, the `io.containers.autoupdate.authfile` label) wins.

docker-py is imported only when a Docker engine is made: a run with nothing to do never pays
for it.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from updock import defaults
from updock.core.model import Container, ContainerState, Image
from updock.core.reference import ImageReference
from updock.errors import EngineError
from updock.stopping import StopRequest

log = logging.getLogger(__name__)

#: The socket the docker CLI uses when `DOCKER_HOST` is not set.
DEFAULT_SOCKET = "/var/run/docker.sock"

#: The image ID docker compose v2 records on its containers (`up` recreates one whose image
#: differs): it follows the new image.
COMPOSE_IMAGE_LABEL = "com.docker.compose.image"

#: The label prefix that makes a container a candidate (`core.model.LABEL_POLICY`).
_CANDIDATE_PREFIX = "io.containers.autoupdate"


def docker_host(environ: Mapping[str, str] | None = None) -> str:
    """Where the daemon is: `DOCKER_HOST`, else `unix://` + the default socket."""
    env = os.environ if environ is None else environ
    return env.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"


def docker_configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this host looks like a Docker host: `DOCKER_HOST` is set or the default socket
    exists (one `stat`: cheap enough for every run)."""
    env = os.environ if environ is None else environ
    return bool(env.get("DOCKER_HOST")) or os.path.exists(DEFAULT_SOCKET)


def docker_config_file(environ: Mapping[str, str] | None = None) -> str | None:
    """The docker CLI's credentials file, if it exists: `$DOCKER_CONFIG/config.json`, else
    `~/.docker/config.json`."""
    env = os.environ if environ is None else environ
    folder = env.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    path = os.path.join(folder, "config.json")
    return path if os.path.isfile(path) else None


# -- the new container's configuration (pure) -------------------------------------------------


def _without_image_items(values: list[str] | None, image: list[str] | None) -> list[str]:
    image_set = set(image or ())
    return [v for v in values or () if v not in image_set]


def _without_image_keys(
    values: Mapping[str, Any] | None, image: Mapping[str, Any] | None
) -> dict[str, Any]:
    image = image or {}
    return {k: v for k, v in (values or {}).items() if k not in image or image[k] != v}


def _link(link: str) -> str:
    """An inspected link (`/db:/web/alias`) as `create` takes it (`db:alias`)."""
    name, _, alias = link.partition(":")
    return f"{name.lstrip('/')}:{alias.rsplit('/', 1)[-1]}"


def create_body(
    container: Mapping[str, Any],
    old_image: Mapping[str, Any],
    new_image: Mapping[str, Any],
) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """The `POST /containers/create` body of a container that replaces `container`.

    Everything the user set is kept; what the container has only because the old image defined
    it (env, labels, volumes, exposed ports, entrypoint and cmd, working dir, user, stop signal,
    health check: each equal to the old image's) is left out, so that the new image's own apply.
    The generated hostname (the short ID) and the old short ID among the network aliases are
    dropped; anonymous volumes are bound again by name (so their data stays); inspected links
    are turned back into `name:alias`.

    Args:
        container: the old container's inspect object.
        old_image: its image's inspect object.
        new_image: the new image's inspect object (its ID is what the new container runs).

    Returns:
        The body, and the networks to connect after `create` with their endpoint settings
        (API 1.41 takes one network at create).
    """
    config: dict[str, Any] = copy.deepcopy(dict(container.get("Config") or {}))
    host: dict[str, Any] = copy.deepcopy(dict(container.get("HostConfig") or {}))
    image_config: Mapping[str, Any] = old_image.get("Config") or {}
    short_id = str(container["Id"])[:12]
    network_mode = str(host.get("NetworkMode") or "default")
    shares_namespace = network_mode.startswith("container:") or network_mode == "host"

    body: dict[str, Any] = {}
    body["Image"] = config.get("Image") or new_image["Id"]
    hostname = config.get("Hostname") or ""
    if hostname and hostname != short_id and not shares_namespace:
        body["Hostname"] = hostname
    for key in ("Domainname", "MacAddress", "StopTimeout", "Tty", "OpenStdin", "StdinOnce"):
        if config.get(key):
            body[key] = config[key]
    if shares_namespace:
        body.pop("MacAddress", None)
        body.pop("Domainname", None)
    for key in ("AttachStdin", "AttachStdout", "AttachStderr", "NetworkDisabled"):
        if config.get(key):
            body[key] = config[key]
    env = _without_image_items(config.get("Env"), image_config.get("Env"))
    if env:
        body["Env"] = env
    labels = _without_image_keys(config.get("Labels"), image_config.get("Labels"))
    if COMPOSE_IMAGE_LABEL in labels:  # compose v2 compares it with the service's image
        labels[COMPOSE_IMAGE_LABEL] = str(new_image["Id"])
    if labels:
        body["Labels"] = labels
    ports = _without_image_keys(config.get("ExposedPorts"), image_config.get("ExposedPorts"))
    if ports:
        body["ExposedPorts"] = ports
    volumes = _without_image_keys(config.get("Volumes"), image_config.get("Volumes"))
    if volumes:
        body["Volumes"] = volumes
    own_entrypoint = config.get("Entrypoint") != image_config.get("Entrypoint")
    if own_entrypoint:
        # The user's entrypoint: docker then ignores the image's cmd; keep the container's.
        body["Entrypoint"] = config.get("Entrypoint") or [""]
        if config.get("Cmd"):
            body["Cmd"] = config["Cmd"]
    elif config.get("Cmd") != image_config.get("Cmd"):
        body["Cmd"] = config.get("Cmd")
    for key in ("WorkingDir", "User", "StopSignal", "Healthcheck", "Shell"):
        value = config.get(key)
        if value and value != image_config.get(key):
            body[key] = value

    # Anonymous volumes (the image's VOLUMEs and `-v /path`) are bound again by name: a new
    # container would otherwise get new, empty ones.
    binds: list[str] = list(host.get("Binds") or [])
    covered = {b.split(":")[1] for b in binds if ":" in b}
    covered |= {str(m.get("Target")) for m in host.get("Mounts") or []}
    for mount in container.get("Mounts") or []:
        if mount.get("Type") != "volume" or mount.get("Destination") in covered:
            continue
        mode = "" if mount.get("RW", True) else ":ro"
        binds.append(f"{mount['Name']}:{mount['Destination']}{mode}")
    if binds:
        host["Binds"] = binds
    if host.get("Links"):
        host["Links"] = [_link(link) for link in host["Links"]]
    body["HostConfig"] = host

    networks: Mapping[str, Any] = (container.get("NetworkSettings") or {}).get("Networks") or {}
    endpoints: list[tuple[str, dict[str, Any]]] = []
    if not shares_namespace and network_mode not in ("none",):
        for name, settings in networks.items():
            if name in ("bridge", "host", "none") and not settings.get("IPAMConfig"):
                continue  # the default network: nothing of the user's to carry over
            endpoint: dict[str, Any] = {}
            aliases = [a for a in settings.get("Aliases") or [] if a != short_id]
            if aliases:
                endpoint["Aliases"] = aliases
            if settings.get("IPAMConfig"):
                endpoint["IPAMConfig"] = settings["IPAMConfig"]
            if settings.get("Links"):
                endpoint["Links"] = [_link(link) for link in settings["Links"]]
            endpoints.append((name, endpoint))
    # The network named by the mode goes with `create`, the others are connected after.
    endpoints.sort(key=lambda item: item[0] != network_mode)
    if endpoints and endpoints[0][0] == network_mode:
        first, rest = endpoints[0], endpoints[1:]
        body["NetworkingConfig"] = {"EndpointsConfig": {first[0]: first[1]}}
    else:
        rest = endpoints
    return body, rest


# -- the engine -------------------------------------------------------------------------------


def _parse_state(c: Mapping[str, Any]) -> ContainerState:
    state = c.get("State") or {}
    health = state.get("Health") or {}
    check = (c.get("Config") or {}).get("Healthcheck") or {}
    has_check = bool(health) and check.get("Test") != ["NONE"]
    return ContainerState(
        # A restart policy restarts a dying container in place (the same ID): its start time
        # tells one run of it from the next, which verification must see as a restart.
        id=f"{c['Id']}@{state.get('StartedAt', '')}",
        running=bool(state.get("Running")) and not state.get("Restarting"),
        exit_code=int(state.get("ExitCode") or 0),
        image_id=c.get("Image", ""),
        health=(health.get("Status") or "starting") if has_check else "",
        health_interval=(check.get("Interval") or 30_000_000_000) / 1e9 if has_check else 0.0,
        health_retries=int(check.get("Retries") or 3) if has_check else 0,
        health_start_period=(check.get("StartPeriod") or 0) / 1e9 if has_check else 0.0,
    )


def _image(i: Mapping[str, Any]) -> Image:
    digests = [d.rsplit("@", 1)[-1] for d in i.get("RepoDigests") or []]
    return Image(
        id=i["Id"],
        digests=tuple(dict.fromkeys(digests)),
        os=i.get("Os") or "linux",
        architecture=i.get("Architecture") or "amd64",
        variant=i.get("Variant") or "",
        names=tuple(i.get("RepoTags") or ()),
    )


class Docker:
    """An `Engine` and `Recreator` that talks to dockerd's API.

    Args:
        host: `DOCKER_HOST`'s form (`unix:///path`, `tcp://...`); `docker_host()` when None.
        timeout: seconds any API call but a pull may take.
        pull_timeout: seconds a pull may take (the time between two progress messages).
        stop: when the run is asked to stop, a pull in flight is abandoned.

    Raises:
        EngineError: the daemon cannot be reached; the message names its socket.
    """

    name = "docker"

    def __init__(
        self,
        host: str | None = None,
        *,
        timeout: float = defaults.PODMAN_TIMEOUT,
        pull_timeout: float = defaults.PULL_TIMEOUT,
        stop: StopRequest | None = None,
    ) -> None:
        try:
            import docker
            import docker.errors
        except ImportError as exc:
            raise EngineError(
                "Docker support needs the docker package: pip install 'updock[docker]'"
            ) from exc
        self._errors = docker.errors
        self.host = host or docker_host()
        self._stop = stop
        self._pull_timeout = pull_timeout
        try:
            self._api = docker.APIClient(base_url=self.host, version="auto", timeout=int(timeout))
        except docker.errors.DockerException as exc:
            raise EngineError(f"cannot reach the Docker daemon at {self.host}: {exc}") from exc
        self._blueprints: dict[str, tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]] = {}
        self._images: dict[str, Image] = {}
        self._names: dict[str, str] = {}  # container ID -> name, as listed in this run

    def is_podman(self) -> bool:
        """Whether the socket is podman's Docker-compatible API (then the podman engine owns
        those containers)."""
        version = self._call("version", self._api.version)
        return any(
            "podman" in str(c.get("Name", "")).lower() for c in version.get("Components") or ()
        )

    def _call(self, what: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`func(*args, **kwargs)`, its errors translated (the one boundary)."""
        import requests

        try:
            return func(*args, **kwargs)
        except self._errors.APIError as exc:
            detail = exc.explanation or str(exc)
            raise EngineError(f"docker {what} failed: {detail}") from exc
        except (self._errors.DockerException, requests.RequestException, OSError) as exc:
            raise EngineError(f"docker {what} failed: {self.host}: {exc}") from exc

    def _missing(self, exc: EngineError) -> bool:
        return isinstance(exc.__cause__, self._errors.NotFound)

    # -- Engine -------------------------------------------------------------------------------

    def running_containers(
        self, on_candidates: Callable[[list[Container]], object] | None = None
    ) -> list[Container]:
        """Every running container; labelled ones inspected (for their exact image name)."""
        listing = self._call("ps", self._api.containers)
        self._names.update({c["Id"]: (c.get("Names") or ["/"])[0].lstrip("/") for c in listing})
        out = []
        for c in listing:
            # The listing says which containers join another's network namespace (by its ID):
            # those with no label of their own are found without an inspect.
            mode = str((c.get("HostConfig") or {}).get("NetworkMode") or "")
            target = mode.removeprefix("container:") if mode.startswith("container:") else ""
            labels = dict(c.get("Labels") or {})
            name = (c.get("Names") or ["/"])[0].lstrip("/")
            raw = c.get("Image", "")
            needs: tuple[str, ...] = ()
            if any(k.startswith(_CANDIDATE_PREFIX) for k in labels) or labels.get(
                "com.centurylinklabs.watchtower.enable"
            ):
                try:
                    inspected = self._call("inspect", self._api.inspect_container, c["Id"])
                except EngineError as exc:
                    if self._missing(exc):
                        continue  # removed meanwhile
                    raise
                raw = (inspected.get("Config") or {}).get("Image") or raw
                name = str(inspected.get("Name", name)).lstrip("/")
                needs = self._depends_on(inspected, listing)
            out.append(
                Container(
                    id=c["Id"],
                    name=name,
                    image_id=c.get("ImageID", ""),
                    raw_image_name=raw,
                    labels=labels,
                    running=c.get("State") == "running",
                    engine=self.name,
                    depends_on=needs,
                    network_of=self._names.get(target, target),
                )
            )
        if on_candidates is not None:
            candidates = [c for c in out if any(k.startswith(_CANDIDATE_PREFIX) for k in c.labels)]
            if candidates:
                on_candidates(candidates)
        return out

    def _depends_on(
        self, inspected: Mapping[str, Any], listing: Iterable[Mapping[str, Any]]
    ) -> tuple[str, ...]:
        """The containers `inspected` needs: its links, the container whose network namespace
        it shares, and the containers of the compose services it `depends_on`."""
        host = inspected.get("HostConfig") or {}
        needs = [link.split(":", 1)[0].lstrip("/") for link in host.get("Links") or []]
        mode = str(host.get("NetworkMode") or "")
        if mode.startswith("container:"):
            target = mode.removeprefix("container:")
            needs.append(self._names.get(target, target))
        labels = (inspected.get("Config") or {}).get("Labels") or {}
        project = labels.get("com.docker.compose.project")
        for item in (labels.get("com.docker.compose.depends_on") or "").split(","):
            service = item.split(":", 1)[0]
            for c in listing if service and project else ():
                other = c.get("Labels") or {}
                if (
                    other.get("com.docker.compose.project") == project
                    and other.get("com.docker.compose.service") == service
                ):
                    needs.append((c.get("Names") or ["/"])[0].lstrip("/"))
        return tuple(dict.fromkeys(needs))

    def images(self, ids: Iterable[str]) -> dict[str, Image]:
        out = {}
        for image_id in sorted(set(ids)):
            if image_id not in self._images:
                try:
                    found = self._call("image inspect", self._api.inspect_image, image_id)
                except EngineError as exc:
                    if self._missing(exc):
                        continue
                    raise
                self._images[image_id] = _image(found)
            out[image_id] = self._images[image_id]
        return out

    def image_id(self, name: ImageReference) -> str | None:
        try:
            found = self._call("image inspect", self._api.inspect_image, str(name))
        except EngineError as exc:
            if self._missing(exc):
                return None
            raise
        return str(found["Id"])

    def pull(
        self, reference: ImageReference, *, authfile: str | None, tls_verify: bool | None
    ) -> str:
        """Pull `reference` (by digest, or by tag); dockerd's own registry settings apply
        (`tls_verify` cannot change them). Returns the image ID."""
        auth = self._auth_config(reference, authfile)
        tag = reference.digest or reference.tag or "latest"
        stream = self._call(
            "pull",
            self._api.pull,
            reference.name,
            tag=tag,
            stream=True,
            decode=True,
            auth_config=auth,
        )
        try:
            for message in stream:
                if self._stop is not None and self._stop.requested:
                    raise self._stop.error(f"docker pull {reference} stopped")
                if isinstance(message, dict) and message.get("error"):
                    raise EngineError(f"docker pull {reference} failed: {message['error']}")
        except self._errors.DockerException as exc:
            raise EngineError(f"docker pull {reference} failed: {exc}") from exc
        image_id = self.image_id(reference)
        if image_id is None:
            raise EngineError(f"docker pull {reference}: no image after the pull")
        return image_id

    def _auth_config(
        self, reference: ImageReference, authfile: str | None
    ) -> dict[str, str] | None:
        """Credentials from an explicit file; None lets docker-py read the CLI's own."""
        if not authfile or authfile == docker_config_file():
            return None
        from updock.registry.auth import find_credentials

        creds = find_credentials(reference.domain, reference.path, authfile)
        if creds is None:
            return None
        if creds.identity_token:
            return {"identitytoken": creds.identity_token}
        return {"username": creds.username, "password": creds.password}

    def tag(self, image_id: str, name: ImageReference, *more: ImageReference) -> None:
        for ref in (name, *more):
            self._call("tag", self._api.tag, image_id, ref.name, ref.tag or "latest", force=True)
        self._images.pop(image_id, None)

    def untag(self, name: ImageReference) -> None:
        self._call("rmi", self._api.remove_image, str(name), noprune=True)

    def container_state(self, name: str, since: float = float("-inf")) -> ContainerState | None:
        try:
            return self.container_states([name]).get(name)
        except EngineError as exc:
            log.warning("%s", exc)
            return None

    def container_states(self, names: Iterable[str]) -> dict[str, ContainerState | None]:
        states: dict[str, ContainerState | None] = {}
        for name in sorted(set(names)):
            try:
                states[name] = _parse_state(
                    self._call("inspect", self._api.inspect_container, name)
                )
            except EngineError as exc:
                if not self._missing(exc):
                    raise
                states[name] = None
        return states

    def run_healthcheck(self, name: str) -> str:
        """dockerd runs health checks on its own schedule: the container's status now."""
        state = self.container_state(name)
        if state is None:
            raise EngineError(f"container {name} disappeared during its health check")
        return state.health or "healthy"

    def registries_conf_text(self, domains: Iterable[str]) -> str:
        """A registries.conf that marks insecure those of `domains` dockerd takes as insecure
        (its `--insecure-registry` list and CIDRs, 127.0.0.0/8 by default), so that a check
        asks the registry as dockerd's pull will."""
        import ipaddress

        info = self._call("info", self._api.info)
        registry = info.get("RegistryConfig") or {}
        insecure = {
            name for name, c in (registry.get("IndexConfigs") or {}).items() if not c.get("Secure")
        }
        cidrs = []
        for cidr in registry.get("InsecureRegistryCIDRs") or ():
            try:
                cidrs.append(ipaddress.ip_network(cidr))
            except ValueError:
                continue
        lines = ["unqualified-search-registries = []"]
        for domain in domains:
            host = (
                domain.rsplit(":", 1)[0].strip("[]")
                if domain.count(":") <= 1 or "]" in domain
                else domain
            )
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                address = None
            if domain in insecure or (address is not None and any(address in c for c in cidrs)):
                lines += ["[[registry]]", f'location = "{domain}"', "insecure = true"]
        return "\n".join(lines) + "\n"

    # -- Recreator ----------------------------------------------------------------------------

    def _inspect_for_recreate(self, container_id: str) -> Any:
        """The container's inspect object.

        Raises:
            EngineError: it is removed when it stops (nothing to put back on a failure).
        """
        container = self._call("inspect", self._api.inspect_container, container_id)
        if (container.get("HostConfig") or {}).get("AutoRemove"):
            name = str(container.get("Name", "")).lstrip("/")
            raise EngineError(
                f"container {name} is removed when it stops (--rm): updock could not put it "
                "back if its update failed; create it without --rm"
            )
        return container

    def prepare_recreate(self, container_id: str, image: ImageReference) -> None:
        """Build, and keep for `create_container`, the configuration of the container that
        replaces `container_id`, on the image now under `image`."""
        container = self._inspect_for_recreate(container_id)
        old = self._call("image inspect", self._api.inspect_image, container["Image"])
        new = self._call("image inspect", self._api.inspect_image, str(image))
        body, more = create_body(container, old, new)
        mode = str(body["HostConfig"].get("NetworkMode") or "")
        if mode.startswith("container:"):
            # By name: the container it shares a namespace with may have been recreated (a new
            # ID) earlier in this run.
            target = mode.removeprefix("container:")
            body["HostConfig"]["NetworkMode"] = f"container:{self._names.get(target, target)}"
        self._blueprints[container_id] = (body, more)

    def prepare_follow(self, container_id: str, joins: str, *, retag: bool = False) -> None:
        """Build, and keep for `create_container`, the configuration of a container that
        replaces `container_id` on its own image, joining the network namespace of the
        container now named `joins`. The image is named as before when that name still means
        the container's image, else given by its ID (the name moved on: the container must
        not); with `retag`, the name is given back to the container's image first (a rollback,
        which does so anyway)."""
        container = self._inspect_for_recreate(container_id)
        image_id = str(container["Image"])
        image = self._call("image inspect", self._api.inspect_image, image_id)
        body, more = create_body(container, image, image)
        name = str((container.get("Config") or {}).get("Image") or "")
        try:
            named = self._call("image inspect", self._api.inspect_image, name) if name else {}
        except EngineError as exc:
            if not self._missing(exc):
                raise
            named = {}
        if retag and name and named.get("Id") != image_id:
            from updock.core.reference import parse_image_name

            self.tag(image_id, parse_image_name(name).reference)
            named = {"Id": image_id}
        body["Image"] = name if named.get("Id") == image_id else image_id
        body["HostConfig"]["NetworkMode"] = f"container:{joins}"
        self._blueprints[container_id] = (body, more)

    def stop_container(self, container_id: str) -> None:
        """Stop it with its own stop signal and timeout (dockerd applies both)."""
        self._call("stop", self._api.stop, container_id)

    def rename_container(self, container_id: str, name: str) -> None:
        self._call("rename", self._api.rename, container_id, name)

    def create_container(self, container_id: str, name: str) -> str:
        """Create `name` from the configuration `prepare_recreate` kept for `container_id`;
        connect its other networks. Returns the new container's ID."""
        body, more = self._blueprints[container_id]
        created = self._call("create", self._api.create_container_from_config, body, name=name)
        new_id = str(created["Id"])
        for network, endpoint in more:
            self._call(
                "network connect",
                self._api.connect_container_to_network,
                new_id,
                network,
                aliases=endpoint.get("Aliases"),
                links=endpoint.get("Links"),
                ipv4_address=(endpoint.get("IPAMConfig") or {}).get("IPv4Address"),
                ipv6_address=(endpoint.get("IPAMConfig") or {}).get("IPv6Address"),
            )
        return new_id

    def start_container(self, container_id: str) -> None:
        self._call("start", self._api.start, container_id)

    def remove_container(self, container_id: str, *, joiners: bool = False) -> None:
        """Remove it (its volumes stay); nothing to do when it is gone. (Docker removes a
        container that others join: `joiners` needs nothing more.)"""
        try:
            self._call("rm", self._api.remove_container, container_id, v=False, force=True)
        except EngineError as exc:
            if not self._missing(exc):
                raise

    def find_container(self, name_or_id: str) -> tuple[str, str, bool] | None:
        """(ID, name, running) of a container, None when there is none."""
        try:
            c = self._call("inspect", self._api.inspect_container, name_or_id)
        except EngineError as exc:
            if self._missing(exc):
                return None
            raise
        return str(c["Id"]), str(c["Name"]).lstrip("/"), bool((c.get("State") or {}).get("Running"))

    def container_logs(self, name: str, lines: int = 10) -> str:
        """The container's last output lines ("" when there are none)."""
        try:
            out = self._call("logs", self._api.logs, name, tail=lines)
        except EngineError:
            return ""
        return out.decode(errors="replace").strip() if isinstance(out, bytes) else str(out)
