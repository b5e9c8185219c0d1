"""podman through its command line and JSON output.

The CLI (rather than podman-py and the REST service) is what `podman auto-update` users already
have: no `podman system service` has to run, and the CLI applies the host's containers.conf,
registries.conf, storage.conf and signature policy exactly as podman itself does.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from updock import defaults
from updock.core.model import LABEL_UNIT, Container, ContainerState, Image
from updock.core.recreate import is_aside
from updock.core.reference import ImageReference, parse_image_name
from updock.errors import EngineError
from updock.prefetch import PS_ARGS, take_listing, wants_update
from updock.stopping import StopRequest

log = logging.getLogger(__name__)

# Options of `podman run/create` whose value is a separate word that could look like an image.
_VALUE_OPTIONS = frozenset(
    (
        "--label",
        "-l",
        "--annotation",
        "--name",
        "--env",
        "-e",
        "--hostname",
        "-h",
        "--entrypoint",
        "--workdir",
        "-w",
        "--user",
        "-u",
        "--volume",
        "-v",
        "--mount",
        "--pod",
        "--network",
        "--net",
        "--authfile",
        "--cidfile",
        "--sdnotify",
        "--health-cmd",
        "--stop-signal",
        "--restart",
        "--pull",
        "--log-driver",
        "--log-opt",
        "--secret",
        "--tmpfs",
        "--device",
        "--publish",
        "-p",
        "--expose",
        "--add-host",
        "--dns",
        "--ulimit",
        "--cgroups",
        "--arch",
        "--os",
        "--variant",
        "--platform",
    )
)


def raw_image_name(create_command: Sequence[str], image_name: str) -> str:
    """The image name as the user typed it when the container was created.

    podman's report shows the container's raw image name (`foo:bar`, `docker://host/app:1`),
    which no podman command prints: `inspect` and `ps` show the resolved name
    (`localhost/foo:bar`). The creating command line is kept, though, so the raw name is the
    first argument of it that resolves to the resolved name.

    Args:
        create_command: the container's `Config.CreateCommand`.
        image_name: its resolved image name (`ImageName`).
    """
    at = _image_index(create_command[1:], image_name)
    return image_name if at is None else create_command[1 + at]


def _image_index(words: Sequence[str], image_name: str) -> int | None:
    """Where the image is in `words` (options, the image, the container's command): the first
    word that is no option or option value and resolves to `image_name`; None if none does."""
    previous = ""
    for i, word in enumerate(words):
        if not word.startswith("-") and previous not in _VALUE_OPTIONS:
            bare = word.removeprefix("docker://")
            if image_name in (
                bare,
                f"localhost/{bare}",
                f"docker.io/{bare}",
                f"docker.io/library/{bare}",
            ):
                return i
        previous = word if word.startswith("-") and "=" not in word else ""
    return None


def _container(
    inspected: Mapping[str, Any] | None,
    listed: Mapping[str, Any],
    names: Mapping[str, str] | None = None,
) -> Container:
    """A container from its `inspect` (labelled ones, and those that may join their network
    namespace) or from its `ps` entry (the others). `names`: container names by ID."""
    if inspected is None:
        return Container(
            id=listed["Id"],
            name=(listed.get("Names") or [""])[0],
            image_id=listed.get("ImageID", ""),
            raw_image_name=listed.get("Image", ""),
            labels=dict(listed.get("Labels") or {}),
            running=True,
            pod_id=listed.get("Pod") or "",
            is_infra=bool(listed.get("IsInfra")),
        )
    config = inspected.get("Config") or {}
    state = inspected.get("State") or {}
    network_of = _network_of(inspected, names or {})
    return Container(
        id=inspected["Id"],
        name=inspected["Name"],
        image_id=inspected["Image"],
        raw_image_name=raw_image_name(
            config.get("CreateCommand") or [], inspected.get("ImageName", "")
        ),
        labels=dict(config.get("Labels") or {}),
        annotations=dict(config.get("Annotations") or {}),
        running=state.get("Status") == "running" or bool(state.get("Running")),
        pod_id=inspected.get("Pod") or "",
        is_infra=bool(inspected.get("IsInfra")),
        depends_on=(network_of,) if network_of else (),
        network_of=network_of,
    )


def _joined(inspected: Mapping[str, Any]) -> str:
    """The container (ID or name, as podman shows it) whose network namespace the inspected one
    joins (`--network container:<x>`), or ""."""
    mode = str((inspected.get("HostConfig") or {}).get("NetworkMode") or "")
    return mode.removeprefix("container:") if mode.startswith("container:") else ""


def _network_of(inspected: Mapping[str, Any], names: Mapping[str, str]) -> str:
    """The container whose network namespace the inspected one joins (`--network
    container:<x>`), by name (by ID when no such container is listed), or "".

    Never for a pod's member (podman shows the pod's infra container there: the pod is updated
    as a pod) nor for a container a systemd unit runs (its unit, not updock, recreates it).
    """
    if inspected.get("Pod") or ((inspected.get("Config") or {}).get("Labels") or {}).get(
        LABEL_UNIT
    ):
        return ""
    target = _joined(inspected)
    return names.get(target, target)


def net_namespace(listed: Mapping[str, Any]) -> str:
    """The network namespace (`net:[<inode>]`) of a running container of a `ps` listing, read
    where podman's `ps --ns` reads it (`/proc/<Pid>/ns/net`); "" when it cannot be read.

    Read here rather than asked of podman: `--ns` makes every listing about 10 % slower (5 ms
    for 40 containers, measured on podman 4.3.1), and a run with nothing to do is mostly its
    listing; a few `readlink`s take microseconds, and only runs with a container to recreate
    make them.
    """
    pid = listed.get("Pid") or 0
    if not isinstance(pid, int) or pid <= 0:
        return ""
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return ""


def _recreated(listed: Mapping[str, Any]) -> bool:
    """Whether a `ps` entry is a container updock recreates when it updates it (no pod, no
    unit); whether it has an auto-update label is not asked."""
    labels = listed.get("Labels") or {}
    return not (listed.get("Pod") or listed.get("IsInfra") or labels.get(LABEL_UNIT))


def joining_candidates(
    listed: Iterable[Mapping[str, Any]],
    labelled: Iterable[Mapping[str, Any]],
    net: Callable[[Mapping[str, Any]], str] = net_namespace,
) -> list[Mapping[str, Any]]:
    """The unlabelled containers of a `ps` listing that may join the network namespace of a
    labelled container that updock would recreate: those that run in the same namespace
    (`net`), outside pods and units. Only these are inspected, to tell which do (`--network
    container:<x>`) from those that share it otherwise (`--network host`).
    """
    labelled = list(labelled)
    spaces = {net(c) for c in labelled if _recreated(c)} - {""}
    if not spaces:
        return []
    ids = {c["Id"] for c in labelled}
    return [c for c in listed if c["Id"] not in ids and _recreated(c) and net(c) in spaces]


def parse_listing(
    listing: Iterable[Mapping[str, Any]], inspected: Iterable[Mapping[str, Any]]
) -> list[Container]:
    """The running containers of a `podman ps --format json` listing.

    Args:
        listing: `ps` entries.
        inspected: `container inspect` entries of some of them (those with an auto-update
            label, for their creating command, and those that may join their network
            namespace); the others are read from their `ps` entry.
    """
    listing = list(listing)
    by_id = {c["Id"]: c for c in inspected}
    names = {c["Id"]: (c.get("Names") or [""])[0] for c in listing}
    return [
        _container(by_id.get(c["Id"]), c, names) for c in listing if c.get("State") == "running"
    ]


def parse_container_state(c: Mapping[str, Any]) -> ContainerState:
    """The state of a container from its `podman container inspect` entry.

    The health status is `State.Health` in podman 4.3.1 and 5.x (`Healthcheck` is read too,
    for older podman); podman 5 omits it when the container has no check. `podman ps` has no
    health field in podman 5: it is never read from there.
    """
    state = c.get("State") or {}
    config = (c.get("Config") or {}).get("Healthcheck") or {}
    health = state.get("Health") or state.get("Healthcheck") or {}
    has_check = bool(config.get("Test")) and config.get("Test") != ["NONE"]
    return ContainerState(
        id=c["Id"],
        running=bool(state.get("Running")),
        exit_code=int(state.get("ExitCode") or 0),
        image_id=c.get("Image", ""),
        health=(health.get("Status") or "starting") if has_check else "",
        health_interval=(config.get("Interval") or 30_000_000_000) / 1e9 if has_check else 0.0,
        health_retries=int(config.get("Retries") or 3) if has_check else 0,
        health_start_period=(config.get("StartPeriod") or 0) / 1e9 if has_check else 0.0,
    )


def parse_images(inspected: Iterable[Mapping[str, Any]]) -> dict[str, Image]:
    out = {}
    for i in inspected:
        digests = [i.get("Digest", "")]
        digests += [d.rsplit("@", 1)[-1] for d in i.get("RepoDigests") or []]
        out[i["Id"]] = Image(
            id=i["Id"],
            digests=tuple(dict.fromkeys(d for d in digests if d)),
            os=i.get("Os") or "linux",
            architecture=i.get("Architecture") or "amd64",
            variant=i.get("Variant") or "",
            names=tuple(i.get("RepoTags") or ()),
        )
    return out


#: Listings taken in a row when labelled containers vanish before they are inspected.
LIST_ATTEMPTS = 3


class _Vanished(Exception):
    """Internal: labelled containers of a listing were gone when inspected, and a container of
    the same name is listed again (`listing`): replaced, not removed."""

    def __init__(self, names: list[str], listing: list[Any]) -> None:
        super().__init__(", ".join(names))
        self.names = names
        self.listing = listing


# -- recreating a container that no unit runs ---------------------------------------------------

#: `podman run` options that make no sense for `podman create` (or would change the image).
_DROPPED_FLAGS = frozenset(("-d", "--detach", "-i", "--interactive", "-t", "--tty", "-it", "-dt"))
_ANONYMOUS_VOLUME = re.compile(r"[0-9a-f]{64}")


def create_args(inspected: Mapping[str, Any]) -> list[str]:
    """The `podman create` arguments of a container that replaces the inspected one.

    podman records the command line that created a container (`Config.CreateCommand`): it holds
    what the user set and nothing that came from the image, which is exactly what the new
    container must get (the new image's own defaults apply). So it is run again as `create`,
    with `--pull=never` (the image checked and pulled is the one under the name), without its
    `--name` (`create_container` gives the name), and with the anonymous volumes bound again by
    name (a new container would get empty ones).

    Raises:
        EngineError: no create command was recorded (a container made through the API), or the
            container is removed when it stops (`--rm`: nothing would be left to roll back to).
    """
    name = str(inspected.get("Name", "")).lstrip("/")
    command = list((inspected.get("Config") or {}).get("CreateCommand") or [])
    at = next((i for i, w in enumerate(command) if w in ("run", "create")), None)
    if at is None:
        raise EngineError(
            f"container {name} was not created by the podman command line (no create command "
            "recorded): updock cannot recreate it"
        )
    if (inspected.get("HostConfig") or {}).get("AutoRemove"):
        raise EngineError(
            f"container {name} is removed when it stops (--rm): updock could not put it back "
            "if its update failed; create it without --rm"
        )
    anonymous = {
        str(m["Destination"]): str(m["Name"])
        for m in inspected.get("Mounts") or []
        if m.get("Type") == "volume" and _ANONYMOUS_VOLUME.fullmatch(str(m.get("Name", "")))
    }
    args: list[str] = []
    words = command[at + 1 :]
    i = 0
    while i < len(words):
        word = words[i]
        flag, eq, value = word.partition("=")
        if word in _DROPPED_FLAGS or flag in ("--detach", "--pull", "--cidfile"):
            takes = flag in ("--pull", "--cidfile") and not eq
            i += 2 if takes else 1
            continue
        if flag in ("-v", "--volume") and not eq and i + 1 < len(words):
            target = words[i + 1]
            if ":" not in target and target in anonymous:  # `-v /path`: bound again below
                i += 2
                continue
        if flag == "--name":  # given by `create_container`
            i += 1 if eq else 2
            continue
        if flag in ("-v", "--volume") and eq and ":" not in value and value in anonymous:
            i += 1
            continue
        args.append(word)
        if flag in _VALUE_OPTIONS and not eq and i + 1 < len(words):
            args.append(words[i + 1])
            i += 1
        i += 1
    extra = ["--pull=never"]
    extra += [f"--volume={vol}:{dest}" for dest, vol in sorted(anonymous.items())]
    return [*extra, *args]


#: The `podman create` options that set a container's network.
_NETWORK_OPTIONS = ("--network", "--net")


def _joining(args: Sequence[str], image_at: int, joins: str) -> list[str]:
    """`create_args` whose network options (those before the image, at `image_at`) are
    replaced by one that joins the network namespace of the container named `joins`."""
    options: list[str] = []
    i = 0
    while i < image_at:
        flag, eq, _value = args[i].partition("=")
        if flag in _NETWORK_OPTIONS:
            i += 1 if eq else 2
            continue
        options.append(args[i])
        i += 1
    return [f"--network=container:{joins}", *options, *args[image_at:]]


class Podman:
    """An `Engine` that runs the `podman` command.

    Every podman process gets a timeout: one that hangs (on a storage lock held by another
    podman, say) is killed and its call fails, instead of holding the run, and with it the lock
    every later timer run waits for, for ever.

    Args:
        command: the podman executable and global options (e.g. `["podman", "--root", ...]`).
        env: environment for podman; the caller's when None.
        timeout: seconds any podman command but a pull may take.
        pull_timeout: seconds a pull may take.
        stop: when the run is asked to stop, pulls in flight are stopped (nothing has changed
            yet; they could take long); other commands run to their end.
    """

    name = "podman"

    def __init__(
        self,
        command: Sequence[str] = ("podman",),
        env: Mapping[str, str] | None = None,
        *,
        timeout: float = defaults.PODMAN_TIMEOUT,
        pull_timeout: float = defaults.PULL_TIMEOUT,
        stop: StopRequest | None = None,
    ) -> None:
        self._stop = stop
        self._command = list(command)
        self._env = dict(env) if env is not None else None
        self._timeout = timeout
        self._pull_timeout = pull_timeout
        self._images: dict[str, Image] = {}
        self._blueprints: dict[str, list[str]] = {}
        # Old containers whose removal waits for containers that still join them (see
        # `remove_container`).
        self._deferred: set[str] = set()
        # Names this engine tagged in this run, and on which image: a verification asks for
        # them right after, once per unit, and need not start a podman process for each.
        self._tagged: dict[str, str] = {}

    def _timed_out(self, args: Sequence[str], timeout: float) -> EngineError:
        return EngineError(
            f"podman {' '.join(args[:2])} did not end within {timeout:g}s and was stopped "
            "(is another podman holding the storage lock?)"
        )

    def _exec(
        self,
        *args: str,
        stderr_to_user: bool = False,
        timeout: float | None = None,
        abandon_on_stop: bool = False,
    ) -> tuple[int, str, str]:
        """Run podman with `args`: its exit status, standard output and standard error.

        Raises:
            EngineError: podman could not be run, or did not end within the timeout.
            Interrupted: `abandon_on_stop` and the run was asked to stop meanwhile.
        """
        cmd = [*self._command, *args]
        limit = self._timeout if timeout is None else timeout
        try:
            proc = subprocess.Popen(
                cmd,
                env=self._env,
                stdout=subprocess.PIPE,
                # Pull progress belongs on the user's stderr, never on stdout.
                stderr=sys.stderr if stderr_to_user else subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
                # Its own process group: Ctrl-C in a terminal reaches updock only, which
                # finishes what is in flight (stopping.py) rather than lose it half-done.
                process_group=0,
            )
        except OSError as exc:
            raise EngineError(f"cannot run {cmd[0]}: {exc}") from exc
        unregister = (
            self._stop.on_request(proc.kill)
            if abandon_on_stop and self._stop is not None
            else lambda: None
        )
        try:
            out, err = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            proc.communicate()
            raise self._timed_out(args, limit) from exc
        finally:
            unregister()
        if proc.returncode != 0 and abandon_on_stop and self._stop and self._stop.requested:
            raise self._stop.error(f"podman {args[0]} stopped")
        return proc.returncode, out, err or ""

    def _run(
        self,
        *args: str,
        stderr_to_user: bool = False,
        timeout: float | None = None,
        abandon_on_stop: bool = False,
    ) -> str:
        code, out, err = self._exec(
            *args, stderr_to_user=stderr_to_user, timeout=timeout, abandon_on_stop=abandon_on_stop
        )
        if code != 0:
            detail = err.strip().removeprefix("Error: ")
            raise EngineError(f"podman {args[0]} failed: {detail or f'exit {code}'}")
        return out

    def _json(self, *args: str) -> Any:
        out = self._run(*args)
        try:
            return json.loads(out) if out.strip() else []
        except json.JSONDecodeError as exc:
            raise EngineError(f"podman {args[0]} printed invalid JSON: {exc}") from exc

    def _listing(self) -> Any:
        prefetched = take_listing()  # what `updock.prefetch` started, with the same environment
        if (
            prefetched is not None
            and self._command == ["podman"]
            and self._env in (None, os.environ)
        ):
            listing = prefetched.containers(self._timeout)
            if listing is not None:
                return listing
        return self._json(*PS_ARGS)  # again: this one reports a failure properly

    def running_containers(
        self, on_candidates: Callable[[list[Container]], object] | None = None
    ) -> list[Container]:
        """Every running container; those with an auto-update label with their raw image name.

        `ps` has all a run needs but the creating command (for the raw image name), so only the
        labelled containers are inspected, and their images are inspected at the same time (for
        `images`, which the run asks next): two podman processes side by side.

        A labelled container that is gone by the time it is inspected was removed or replaced
        (its unit restarted, by another run that held the lock meanwhile, or by systemd). A new
        listing tells which: a container of the same name in it replaced it, and that listing
        is used instead, rather than the new container missed; a removed one is left out (as
        podman >= 5.2 ignores containers removed during a run), however many short-lived
        containers come and go meanwhile.

        Raises:
            EngineError: labelled containers were replaced between listing and inspection
                `LIST_ATTEMPTS` times in a row (faster than a run can list them); the error
                names them. Never an empty listing instead.
        """
        listing = self._listing()
        vanished: list[str] = []
        for attempt in range(LIST_ATTEMPTS):
            try:
                return self._containers(listing, on_candidates if attempt == 0 else None)
            except _Vanished as exc:
                vanished, listing = exc.names, exc.listing
                log.info(
                    "containers replaced while being inspected: %s; listing again",
                    ", ".join(vanished),
                )
        raise EngineError(
            "containers vanished between `podman ps` and `podman inspect` "
            f"{LIST_ATTEMPTS} times in a row (replaced while listed?): {', '.join(vanished)}"
        )

    def _containers(
        self,
        listing: list[Any],
        on_candidates: Callable[[list[Container]], object] | None,
    ) -> list[Container]:
        """The containers of one `ps` listing.

        Raises:
            _Vanished: a labelled container was gone when it was inspected, and another of
                its name is listed now.
        """
        listed = [c for c in listing if c.get("State") == "running"]
        labelled = [c for c in listed if wants_update(c.get("Labels") or {})]
        # In the same podman process: those that may join a labelled one's network namespace.
        inspect = [*labelled, *joining_candidates(listed, labelled)]
        inspecting = self._start("container", "inspect", *(c["Id"] for c in inspect))
        image_ids = sorted({c["ImageID"] for c in labelled if c.get("ImageID")})
        images = self._start("image", "inspect", *image_ids) if image_ids else None
        if labelled and on_candidates is not None:
            on_candidates([_container(None, c) for c in labelled])
        inspected = {c["Id"]: c for c in self._finish(inspecting, "container", inspect)}
        if images is not None:
            self._images.update(parse_images(self._finish(images, "image", image_ids)))
        gone = [c for c in labelled if c["Id"] not in inspected]
        if gone:
            now = self._json(*PS_ARGS)
            names_now = {n for c in now for n in c.get("Names") or ()}
            replaced = [c for c in gone if names_now.intersection(c.get("Names") or ())]
            if replaced:
                raise _Vanished(
                    [f"{(c.get('Names') or ['?'])[0]} ({c['Id'][:12]})" for c in replaced], now
                )
            removed = {c["Id"] for c in gone}
            listed = [c for c in listed if c["Id"] not in removed]
        return parse_listing(listed, inspected.values())

    def _start(self, *args: str) -> subprocess.Popen[str] | None:
        if len(args) <= 2:
            return None
        try:
            return subprocess.Popen(
                [*self._command, *args],
                env=self._env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
                process_group=0,  # see _run
            )
        except OSError as exc:
            raise EngineError(f"cannot run {self._command[0]}: {exc}") from exc

    def _finish(
        self, proc: subprocess.Popen[str] | None, kind: str, items: Sequence[Any]
    ) -> list[Any]:
        """The JSON list of an inspect started by `_start`; if one of `items` vanished in the
        meantime (the whole inspect fails), the survivors one by one."""
        if proc is None:
            return []
        try:
            out, _err = proc.communicate(timeout=self._timeout)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            proc.communicate()
            raise self._timed_out((kind, "inspect"), self._timeout) from exc
        if proc.returncode == 0:
            try:
                found: list[Any] = json.loads(out) if out.strip() else []
                return found
            except json.JSONDecodeError as exc:
                raise EngineError(f"podman {kind} inspect printed invalid JSON: {exc}") from exc
        survivors: list[Any] = []
        for item in items:
            ident = item["Id"] if isinstance(item, dict) else item
            try:
                survivors += self._json(kind, "inspect", ident)
            except EngineError:
                continue
        return survivors

    def images(self, ids: Iterable[str]) -> dict[str, Image]:
        """The local images with these IDs, by ID (those inspected already are not again)."""
        wanted = sorted(set(ids))
        missing = [i for i in wanted if i not in self._images]
        if missing:
            found = self._finish(self._start("image", "inspect", *missing), "image", missing)
            self._images.update(parse_images(found))
        return {i: self._images[i] for i in wanted if i in self._images}

    def image_id(self, name: ImageReference) -> str | None:
        """ID of the local image under `name` (short names resolved as podman does)."""
        tagged = self._tagged.get(str(name))
        if tagged is not None:
            return tagged
        try:
            return self._run("image", "inspect", "--format", "{{.Id}}", str(name)).strip() or None
        except EngineError:
            return None

    def pull(
        self, reference: ImageReference, *, authfile: str | None, tls_verify: bool | None
    ) -> str:
        """Pull `reference`; progress goes to stderr. Returns the image ID."""
        args = ["pull"]
        if authfile:
            args.append(f"--authfile={authfile}")
        if tls_verify is not None:
            args.append(f"--tls-verify={str(tls_verify).lower()}")
        out = self._run(
            *args,
            str(reference),
            stderr_to_user=True,
            timeout=self._pull_timeout,
            abandon_on_stop=True,
        )
        lines = out.split()
        if not lines:
            raise EngineError(f"podman pull {reference} printed no image ID")
        return lines[-1]

    def tag(self, image_id: str, name: ImageReference, *more: ImageReference) -> None:
        """Tag `image_id` as `name` (and as each of `more`), with one podman process."""
        names = [str(n) for n in (name, *more)]
        for n in names:
            self._tagged.pop(n, None)
        self._run("tag", image_id, *names)
        for n in names:
            self._tagged[n] = image_id
        self._images.pop(image_id, None)  # its names changed

    def untag(self, name: ImageReference) -> None:
        """Remove `name` from its image."""
        image_id = self.image_id(name)
        self._tagged.pop(str(name), None)
        self._run("untag", image_id or str(name), str(name))

    def container_state(self, name: str, since: float = float("-inf")) -> ContainerState | None:
        """State of the container `name`, None when it does not exist (or podman failed: a
        verification waits for it then, within its own timeout). Always read now (`since` is
        for callers that cache)."""
        try:
            return self.container_states([name]).get(name)
        except EngineError as exc:
            log.warning("%s", exc)
            return None

    def container_states(self, names: Iterable[str]) -> dict[str, ContainerState | None]:
        """The states of these containers, by name (None for those that do not exist), from one
        `podman container inspect` for all of them.

        Raises:
            EngineError: podman failed otherwise than on missing containers (or timed out).
        """
        wanted = sorted(set(names))
        if not wanted:
            return {}
        code, out, err = self._exec("container", "inspect", *wanted)
        # A missing container makes podman exit 125, but it still prints the others.
        try:
            found = json.loads(out) if out.strip() else []
        except json.JSONDecodeError as exc:
            raise EngineError(f"podman container inspect printed invalid JSON: {exc}") from exc
        if code != 0 and not found and "no such" not in err:
            raise EngineError(f"podman container inspect failed: {err.strip() or code}")
        states: dict[str, ContainerState | None] = dict.fromkeys(wanted)
        for c in found:
            states[str(c.get("Name", "")).lstrip("/")] = parse_container_state(c)
        return states

    def run_healthcheck(self, name: str) -> str:
        """Run the health check of `name` once; return the container's health status after it.

        The status, not the check's own result: podman prints "unhealthy" for one failed run
        even inside the start period or before `retries` failures, which do not count.
        """
        args = ("healthcheck", "run", name)
        try:
            res = subprocess.run(
                [*self._command, *args],
                env=self._env,
                capture_output=True,
                stdin=subprocess.DEVNULL,
                text=True,
                check=False,
                timeout=self._timeout,
                process_group=0,  # see _run
            )
        except subprocess.TimeoutExpired as exc:
            raise self._timed_out(args, self._timeout) from exc
        if res.returncode not in (0, 1):
            raise EngineError(f"podman healthcheck run {name} failed: {res.stderr.strip()}")
        state = self.container_state(name)
        if state is None:
            raise EngineError(f"container {name} disappeared during its health check")
        return state.health or ("healthy" if res.returncode == 0 else "unhealthy")

    # -- Recreator: containers no unit runs ----------------------------------------------

    def _inspect_one(self, container_id: str) -> Any:
        inspected = self._json("container", "inspect", container_id)
        if not inspected:
            raise EngineError(f"container {container_id[:12]} does not exist")
        return inspected[0]

    def prepare_recreate(self, container_id: str, image: ImageReference) -> None:
        self._blueprints[container_id] = create_args(self._inspect_one(container_id))

    def prepare_follow(self, container_id: str, joins: str, *, retag: bool = False) -> None:
        """Build, and keep for `create_container`, the `podman create` arguments of a container
        that replaces `container_id`: its own create command, on its own image, with its
        network option replaced by `--network container:<joins>`. The image is named as before
        when that name still means the container's image, else given by its ID; with `retag`,
        the name is given back to the container's image first (a rollback, which does so
        anyway)."""
        inspected = self._inspect_one(container_id)
        args = create_args(inspected)
        name = str(inspected.get("ImageName") or "")
        at = _image_index(args, name) if name else None
        if at is None:
            raise EngineError(
                f"container {str(inspected.get('Name', container_id[:12])).lstrip('/')}: its "
                f"image {name or '(none)'} is not found in its create command"
            )
        image_id = str(inspected["Image"])
        reference = parse_image_name(name).reference
        named = self.image_id(reference)
        if retag and named != image_id:
            self.tag(image_id, reference)
            named = image_id
        if named != image_id:
            args[at] = image_id  # the name moved on to another image: the follower must not
        self._blueprints[container_id] = _joining(args, at, joins)

    def stop_container(self, container_id: str) -> None:
        self._run("stop", container_id)

    def rename_container(self, container_id: str, name: str) -> None:
        self._run("rename", container_id, name)

    def create_container(self, container_id: str, name: str) -> str:
        args = self._blueprints[container_id]
        return self._run("create", f"--name={name}", *args).strip().split()[-1]

    def start_container(self, container_id: str) -> None:
        """Start it. One that joins another's network namespace starts only while that one
        runs, as Docker does: podman would start that one first, and an old container renamed
        aside (`core.recreate.aside_name`) must not run again behind updock's back."""
        joined = _joined(self._inspect_one(container_id))
        if joined:
            owner = self.find_container(joined)
            if owner is None or not owner[2]:
                what = owner[1] if owner is not None else joined[:12]
                raise EngineError(
                    f"container {container_id[:12]} joins the network namespace of container "
                    f"{what}, which does not run"
                )
        self._run("start", container_id)

    def remove_container(self, container_id: str, *, joiners: bool = False) -> None:
        """Remove it; nothing to do when it is gone.

        podman refuses to remove a container that others join (`--network container:<it>`).
        With `joiners` (a rollback removes a new container), those that join it go first: the
        followers' new containers, made after it, which the rollback removes anyway. Without,
        no other container is ever removed: the removal waits (see below).
        """
        code, _out, err = self._exec("rm", "--force", "--ignore", container_id)
        if code != 0 and "dependent containers" in err:
            # podman names them: "has dependent containers which must be removed before it: <id>"
            candidates = set(re.findall(r"\b[0-9a-f]{64}\b", err)) if joiners else set()
            for dependent in sorted(candidates - {container_id}):
                if self._joins(dependent, container_id):
                    self._run("rm", "--force", "--ignore", dependent)
            code, _out, err = self._exec("rm", "--force", "--ignore", container_id)
            if code != 0 and "dependent containers" in err and not joiners:
                # Another container still joins it: one with an update of its own, which its
                # own unit recreates later in this run (after this one); its old container's
                # removal then lets this one go too. What is left at the end of the run is an
                # error then (`leftover_removals`).
                log.info("container %s: removed once no container joins it", container_id[:12])
                self._deferred.add(container_id)
                return
        if code != 0:
            detail = err.strip().removeprefix("Error: ")
            raise EngineError(f"podman rm failed: {detail or f'exit {code}'}")
        self._remove_deferred()

    def _remove_deferred(self) -> list[str]:
        """Remove the old containers whose removal waited, where nothing joins them any more;
        the errors of those still left."""
        left = []
        for container_id in sorted(self._deferred):
            code, _out, err = self._exec("rm", "--force", "--ignore", container_id)
            if code == 0:
                self._deferred.discard(container_id)
            else:
                left.append(err.strip().removeprefix("Error: ") or f"exit {code}")
        return left

    def leftover_removals(self) -> list[EngineError]:
        """At the end of a run: old containers that could not be removed, because containers
        that were not updated still join them (each an error naming it)."""
        return [
            EngineError(f"an old container was left: podman rm failed: {detail}")
            for detail in self._remove_deferred()
        ]

    def remove_leftovers(self, journaled: Collection[str]) -> list[str]:
        """Remove updock's own old containers that an update left aside: stopped, named
        `<name>.updock-old-<the first 12 digits of its ID>` (`core.recreate.aside_name`), and
        named by no journal entry (`journaled`: the IDs of the containers of unfinished
        updates, which a repair needs). Such a one is left when a run was killed while it
        waited for a container that joined it (see `remove_container`). One that others still
        join stays (podman refuses: a later run removes it). Returns the names removed."""
        code, out, _err = self._exec(
            "ps", "-a", "--no-trunc", "--filter", "name=updock-old-", "--format", "json"
        )
        try:
            listed = json.loads(out) if code == 0 and out.strip() else []
        except json.JSONDecodeError:
            return []
        removed = []
        for c in listed:
            names = c.get("Names") or []
            name, cid = (str(names[0]) if names else ""), str(c.get("Id", ""))
            if not is_aside(name, cid) or cid in journaled or c.get("State") == "running":
                continue
            # Not --force: a container that started meanwhile is never removed.
            if self._exec("rm", "--ignore", cid)[0] == 0:
                removed.append(name)
        return removed

    def _joins(self, container_id: str, owner_id: str) -> bool:
        """Whether the container `container_id` joins the network namespace of `owner_id`."""
        try:
            return _joined(self._inspect_one(container_id)) == owner_id
        except EngineError:
            return False

    def find_container(self, name_or_id: str) -> tuple[str, str, bool] | None:
        try:
            found = self._json("container", "inspect", name_or_id)
        except EngineError:
            return None
        if not found:
            return None
        c = found[0]
        running = bool((c.get("State") or {}).get("Running"))
        return str(c["Id"]), str(c["Name"]).lstrip("/"), running

    def container_logs(self, name: str, lines: int = 10) -> str:
        try:
            return self._run("logs", "--tail", str(lines), name).strip()
        except EngineError:
            return ""


def default_engine(
    timeout: float = defaults.PODMAN_TIMEOUT,
    pull_timeout: float = defaults.PULL_TIMEOUT,
    stop: StopRequest | None = None,
) -> Podman:
    """The podman of this host, with the caller's environment."""
    return Podman(env=os.environ, timeout=timeout, pull_timeout=pull_timeout, stop=stop)
