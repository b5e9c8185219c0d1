"""podman through its command line and JSON output.

The CLI (rather than podman-py and the REST service) is what `podman auto-update` users already
have: no `podman system service` has to run, and the CLI applies the host's containers.conf,
registries.conf, storage.conf and signature policy exactly as podman itself does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from updock.core.model import Container, ContainerState, Image
from updock.errors import EngineError

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
    previous = ""
    for word in create_command[1:]:
        if not word.startswith("-") and previous not in _VALUE_OPTIONS:
            bare = word.removeprefix("docker://")
            if image_name in (
                bare,
                f"localhost/{bare}",
                f"docker.io/{bare}",
                f"docker.io/library/{bare}",
            ):
                return word
        previous = word if word.startswith("-") and "=" not in word else ""
    return image_name


class Podman:
    """An `Engine` that runs the `podman` command.

    Args:
        command: the podman executable and global options (e.g. `["podman", "--root", ...]`).
        env: environment for podman; the caller's when None.
    """

    def __init__(
        self, command: Sequence[str] = ("podman",), env: Mapping[str, str] | None = None
    ) -> None:
        self._command = list(command)
        self._env = dict(env) if env is not None else None

    def _run(self, *args: str, stderr_to_user: bool = False) -> str:
        cmd = [*self._command, *args]
        try:
            res = subprocess.run(
                cmd,
                env=self._env,
                stdout=subprocess.PIPE,
                # Pull progress belongs on the user's stderr, never on stdout.
                stderr=sys.stderr if stderr_to_user else subprocess.PIPE,
                text=True,
                check=False,
            )
        except OSError as exc:
            raise EngineError(f"cannot run {cmd[0]}: {exc}") from exc
        if res.returncode != 0:
            detail = (res.stderr or "").strip().removeprefix("Error: ")
            raise EngineError(f"podman {args[0]} failed: {detail or f'exit {res.returncode}'}")
        return res.stdout

    def _json(self, *args: str) -> Any:
        out = self._run(*args)
        try:
            return json.loads(out) if out.strip() else []
        except json.JSONDecodeError as exc:
            raise EngineError(f"podman {args[0]} printed invalid JSON: {exc}") from exc

    def running_containers(self) -> list[Container]:
        """Every running container, with its raw image name (see `raw_image_name`)."""
        listed = self._json("ps", "--no-trunc", "--format", "json")
        ids = [c["Id"] for c in listed if c.get("State") == "running"]
        if not ids:
            return []
        # ps lacks the creating command (for the raw image name): one inspect of them all.
        try:
            inspected = self._json("container", "inspect", *ids)
        except EngineError:
            # A container ended between ps and inspect: inspect the survivors one by one.
            inspected = []
            for cid in ids:
                try:
                    inspected += self._json("container", "inspect", cid)
                except EngineError:
                    continue
        out = []
        for c in inspected:
            config = c.get("Config") or {}
            state = c.get("State") or {}
            image_name = c.get("ImageName", "")
            out.append(
                Container(
                    id=c["Id"],
                    name=c["Name"],
                    image_id=c["Image"],
                    raw_image_name=raw_image_name(config.get("CreateCommand") or [], image_name),
                    labels=dict(config.get("Labels") or {}),
                    annotations=dict(config.get("Annotations") or {}),
                    running=state.get("Status") == "running" or bool(state.get("Running")),
                    pod_id=c.get("Pod") or "",
                    is_infra=bool(c.get("IsInfra")),
                )
            )
        return out

    def images(self, ids: Iterable[str]) -> dict[str, Image]:
        """The local images with these IDs, by ID."""
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        try:
            inspected = self._json("image", "inspect", *wanted)
        except EngineError:
            inspected = []
            for iid in wanted:
                try:
                    inspected += self._json("image", "inspect", iid)
                except EngineError:
                    continue
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

    def image_id(self, name: str) -> str | None:
        """ID of the local image under `name` (short names resolved as podman does)."""
        try:
            return self._run("image", "inspect", "--format", "{{.Id}}", name).strip() or None
        except EngineError:
            return None

    def pull(self, reference: str, *, authfile: str | None, tls_verify: bool | None) -> str:
        """Pull `reference`; progress goes to stderr. Returns the image ID."""
        args = ["pull"]
        if authfile:
            args.append(f"--authfile={authfile}")
        if tls_verify is not None:
            args.append(f"--tls-verify={str(tls_verify).lower()}")
        out = self._run(*args, reference, stderr_to_user=True)
        lines = out.split()
        if not lines:
            raise EngineError(f"podman pull {reference} printed no image ID")
        return lines[-1]

    def tag(self, image_id: str, name: str) -> None:
        """Tag `image_id` as `name`."""
        self._run("tag", image_id, name.removeprefix("docker://"))

    def untag(self, name: str) -> None:
        """Remove `name` from its image."""
        self._run("untag", self.image_id(name) or name, name)

    def container_state(self, name: str) -> ContainerState | None:
        """State of the container `name`, None when it does not exist."""
        try:
            found = self._json("container", "inspect", name)
        except EngineError:
            return None
        if not found:
            return None
        c = found[0]
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

    def run_healthcheck(self, name: str) -> str:
        """Run the health check of `name` once; return the container's health status after it.

        The status, not the check's own result: podman prints "unhealthy" for one failed run
        even inside the start period or before `retries` failures, which do not count.
        """
        res = subprocess.run(
            [*self._command, "healthcheck", "run", name],
            env=self._env,
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode not in (0, 1):
            raise EngineError(f"podman healthcheck run {name} failed: {res.stderr.strip()}")
        state = self.container_state(name)
        if state is None:
            raise EngineError(f"container {name} disappeared during its health check")
        return state.health or ("healthy" if res.returncode == 0 else "unhealthy")


def default_engine() -> Podman:
    """The podman of this host, with the caller's environment."""
    return Podman(env=os.environ)
