"""A real Docker Engine for the tests, in a network namespace of its own, with its own registry.

dockerd makes a `docker0` bridge and iptables rules: it must never run in the machine's own
network namespace (LAB-NOTES.md, "Docker Engine, in the lab's own network namespace"). So:

- `unshare --net --mount` gives it a network namespace (only its own loopback, up) and a mount
  namespace with a tmpfs on /run (containerd's shim sockets), a tmpfs on /sys/fs/cgroup with the
  v1 controllers mounted again (containers' cgroups go under `--cgroup-parent`, a folder of this
  lab's own in each hierarchy) and the lab's folder bound over /etc/docker (dockerd writes
  `key.json` there);
- a distribution registry listens on the namespace's own 127.0.0.1:`REGISTRY_PORT` (dockerd
  takes 127.0.0.0/8 registries as insecure); only processes in the namespace reach it, so updock
  runs there (`DockerLab.updock`, through `nsenter -n`), as it would on a Docker host;
- dockerd keeps its data, its state and its socket in the lab's folder.

`stop()` kills the containers, ends dockerd and the registry by PID, then SIGKILLs whatever is
left in the namespace or in the lab's cgroups, and removes those cgroup folders.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from updock.testing.lab import (
    _COMMANDS,
    ImageKind,
    LabError,
    busybox_image_tar,
    die_with_parent,
)

#: The registry's port on the namespace's own loopback.
REGISTRY_PORT = 5000

#: cgroup v1 hierarchies mounted again inside the namespace (as this machine has them).
CGROUP_V1 = (
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "hugetlb",
    "perf_event",
    "net_cls,net_prio",
)

#: docker.io's client (20.10, like the daemon); else the one on PATH.
DOCKER_CLI = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else "docker"

#: Debian packages of the Docker lab.
APT_PACKAGES = {"docker.io": "dockerd", "docker-compose": "docker-compose"}


def docker_missing() -> list[str]:
    """The Debian packages of `APT_PACKAGES` whose command is not installed."""
    return [pkg for pkg, cmd in APT_PACKAGES.items() if shutil.which(cmd) is None]


class DockerLab:
    """A running dockerd (API 1.41 on Debian 12) private to a folder and a network namespace.

    Args:
        root: the lab's folder; a new one under `$UPDOCK_LAB_BASE` (default /var/tmp) when None,
            removed by `stop()`.
    """

    def __init__(self, root: Path | None = None) -> None:
        self._own_root = root is None
        if root is None:
            base = os.environ.get("UPDOCK_LAB_BASE", "/var/tmp")
            Path(base).mkdir(parents=True, exist_ok=True)
            root = Path(tempfile.mkdtemp(prefix="dk.", dir=base))
        self.root = root
        self.socket = root / "docker.sock"
        self.registry = f"127.0.0.1:{REGISTRY_PORT}"
        self.cgroup_parent = f"updock-{root.name.replace('.', '-')}-{os.getpid()}"
        self.env: dict[str, str] = {
            "DOCKER_HOST": f"unix://{self.socket}",
            "UPDOCK_STATE_DIR": str(root / "updock-state"),
            "DOCKER_CONFIG": str(root / "docker-config"),
            "TMPDIR": str(root / "tmp"),
        }
        self.pid: int | None = None  # dockerd's, in the namespace
        self._proc: subprocess.Popen[bytes] | None = None
        self._netns: int | None = None
        self._versions: dict[str, int] = {}
        self._stopped = False

    # -- life cycle -----------------------------------------------------------------------

    def __enter__(self) -> DockerLab:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the namespace, the registry and dockerd; stop everything on failure."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        missing = docker_missing()
        if missing:
            raise LabError(f"the Docker lab needs {', '.join(missing)} (scripts/setup installs)")
        for sub in ("etc-docker", "data", "x", "tmp", "registry", "docker-config", "logs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "updock-state").mkdir(mode=0o700, exist_ok=True)
        registry_cfg = self.root / "registry.yml"
        registry_cfg.write_text(
            json.dumps(
                {
                    "version": 0.1,
                    "log": {"level": "info", "formatter": "json", "accesslog": {"disabled": True}},
                    "storage": {
                        "filesystem": {"rootdirectory": str(self.root / "registry")},
                        "delete": {"enabled": True},
                    },
                    "http": {"addr": self.registry, "secret": "updock-docker-lab"},
                }
            )
        )
        cgroups = "\n".join(
            f"mkdir -p /sys/fs/cgroup/{c} && mount -t cgroup -o {c} cgroup /sys/fs/cgroup/{c} "
            "|| true"
            for c in CGROUP_V1
        )
        script = f"""set -e
ip link set lo up
mount -t tmpfs tmpfs /run
mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup
{cgroups}
mkdir -p /sys/fs/cgroup/systemd
mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
mkdir -p /sys/fs/cgroup/unified && mount -t cgroup2 none /sys/fs/cgroup/unified
mount --bind {self.root}/etc-docker /etc/docker
docker-registry serve {registry_cfg} > {self.root}/logs/registry.log 2>&1 &
echo $! > {self.root}/registry.pid
exec dockerd --data-root {self.root}/data --exec-root {self.root}/x \\
    -H unix://{self.socket} --pidfile {self.root}/docker.pid --storage-driver overlay2 \\
    --cgroup-parent /{self.cgroup_parent} \\
    --default-ulimit nofile=1024:1024 --default-ulimit nproc=4096:4096 \\
    --insecure-registry {self.registry}
"""
        (self.root / "start.sh").write_text(script)
        with (self.root / "logs" / "dockerd.log").open("wb") as log:
            self._proc = subprocess.Popen(
                ["unshare", "--net", "--mount", "--propagation", "private", "--",
                 "sh", str(self.root / "start.sh")],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=die_with_parent,  # noqa: PLW1509 (only prctl)
            )  # fmt: skip
        self.pid = self._proc.pid  # unshare execs sh, which execs dockerd: one PID
        # Until unshare has made the namespace, the process is still in the machine's: wait
        # for it to differ (the namespace decides what `stop` may kill).
        host = os.stat("/proc/self/ns/net").st_ino
        deadline = time.monotonic() + 10
        while True:
            netns = os.stat(f"/proc/{self.pid}/ns/net").st_ino
            if netns != host:
                self._netns = netns
                break
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"dockerd's network namespace was not made: {self.log()[-2000:]}")
            time.sleep(0.01)
        deadline = time.monotonic() + 60
        while not self._ping():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"dockerd did not start: {self.log()[-3000:]}")
            time.sleep(0.1)
        while self.run(["sh", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{REGISTRY_PORT}"],
                       check=False, netns=True, shell="bash").returncode != 0:  # fmt: skip
            if time.monotonic() > deadline:
                raise LabError("the Docker lab's registry did not start")
            time.sleep(0.1)

    def _ping(self) -> bool:
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(str(self.socket))
            s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return b" 200 " in s.recv(1024)
        return False

    @property
    def netns(self) -> str:
        """The lab's network namespace, as `/proc/PID/ns/net` (for `testing.lab.in_netns`)."""
        if self.pid is None:
            raise LabError("the Docker lab is not running")
        return f"/proc/{self.pid}/ns/net"

    def log(self) -> str:
        """dockerd's log."""
        path = self.root / "logs" / "dockerd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def reset(self) -> None:
        """Remove every container, user network and volume, and updock's state, for the next
        test (images stay: tests use names of their own)."""
        ids = self.docker("ps", "-aq", check=False).stdout.split()
        if ids:
            self.docker("rm", "-f", "-v", *ids, check=False)
        nets = self.docker("network", "ls", "-q", "--filter", "type=custom", check=False)
        if nets.stdout.split():
            self.docker("network", "rm", *nets.stdout.split(), check=False)
        self.docker("volume", "prune", "-f", check=False)
        state = Path(self.env["UPDOCK_STATE_DIR"])
        for path in state.glob("*"):
            if path.name != "lock" and path.is_file():
                path.unlink()

    def stop(self) -> None:
        """Kill the containers, end dockerd and the registry, and anything left, by PID."""
        if self._stopped:
            return
        self._stopped = True
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(Exception):
                ids = self.docker("ps", "-q", check=False, timeout=30).stdout.split()
                if ids:
                    self.docker("kill", *ids, check=False, timeout=30)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((self.root / "registry.pid").read_text()), signal.SIGTERM)
        self._kill_leftovers()
        if self._own_root and not os.environ.get("UPDOCK_LAB_KEEP"):
            for _ in range(3):  # a shim that just died may still hold a mount
                shutil.rmtree(self.root, ignore_errors=True)
                if not self.root.exists():
                    break
                time.sleep(0.5)

    def _kill_leftovers(self) -> None:
        """SIGKILL every process still in the namespace or in the lab's cgroups; remove those
        cgroup folders."""
        pids: set[int] = set()
        # Never the machine's own namespace (whose processes are everyone's).
        if self._netns is not None and self._netns != os.stat("/proc/self/ns/net").st_ino:
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    with contextlib.suppress(OSError):
                        if os.stat(entry / "ns" / "net").st_ino == self._netns:
                            pids.add(int(entry.name))
        folders = [
            Path("/sys/fs/cgroup") / c / self.cgroup_parent
            for c in (*CGROUP_V1, "systemd", "unified")
        ]
        for folder in folders:
            for procs in folder.rglob("cgroup.procs") if folder.is_dir() else ():
                with contextlib.suppress(OSError, ValueError):
                    pids.update(int(p) for p in procs.read_text().split())
        pids.discard(os.getpid())
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        for folder in folders:
            if not folder.is_dir():
                continue
            for sub in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if sub.is_dir():
                    self._rmdir(sub, deadline)
            self._rmdir(folder, deadline)

    @staticmethod
    def _rmdir(folder: Path, deadline: float) -> None:
        while True:
            try:
                folder.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.1)

    # -- running commands -----------------------------------------------------------------

    def run(
        self,
        args: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 120,
        env: Mapping[str, str] | None = None,
        netns: bool = False,
        shell: str = "",
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command with the lab's environment (`DOCKER_HOST`, updock's state folder).

        Args:
            args: the command.
            check: raise `LabError` when it exits non-zero.
            timeout: seconds before it is killed.
            env: extra environment variables.
            netns: run it in the lab's network namespace (where the registry is).
            shell: run `args` with this shell instead (`bash` for /dev/tcp).
            input: text for its standard input.
        """
        if self.pid is None:
            raise LabError("the Docker lab is not running")
        cmd = list(args)
        if shell:
            cmd = [shell, *cmd[1:]]
        if netns:
            cmd = ["nsenter", "-t", str(self.pid), "-n", "--", *cmd]
        try:
            res = subprocess.run(
                cmd,
                env={**os.environ, **self.env, **(env or {})},
                capture_output=True,
                text=True,
                timeout=timeout,
                input=input,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"{' '.join(args)} timed out after {timeout}s") from exc
        if check and res.returncode != 0:
            raise LabError(f"{' '.join(args)} exited {res.returncode}: {res.stderr.strip()}")
        return res

    def docker(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """`docker ARGS` against the lab's dockerd, with docker.io's own client (of the daemon's
        version: a newer one refuses some options on API 1.41, such as `--mac-address`)."""
        return self.run([DOCKER_CLI, *args], check=check, timeout=timeout)

    def inspect(self, name: str) -> dict[str, object]:
        """`docker inspect NAME`'s object (the daemon's own JSON)."""
        found: list[dict[str, object]] = json.loads(self.docker("inspect", name).stdout)
        return found[0]

    def updock_command(self) -> list[str]:
        """The `updock` command (the venv's script, as users run it)."""
        import sys

        script = Path(sys.executable).with_name("updock")
        return [str(script)] if script.exists() else [sys.executable, "-m", "updock"]

    def updock(
        self, *args: str, env: Mapping[str, str] | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """`updock ARGS` in the lab's network namespace (never raises on its exit status)."""
        return self.run(
            [*self.updock_command(), *args], check=False, netns=True, env=env, timeout=timeout
        )

    # -- images ---------------------------------------------------------------------------

    def build_image(
        self, name: str, kind: ImageKind = ImageKind.HEALTHY, version: str | None = None,
        *, changes: Sequence[str] = (), keep: bool = False,
    ) -> str:  # fmt: skip
        """Build a busybox image (`docker import`) and push it to the lab's registry.

        Args:
            name: the image name with tag, e.g. `f"{lab.registry}/app:latest"`.
            kind: how its command behaves.
            version: its /version (a new one means a new digest); a counter per name if None.
            changes: more Dockerfile instructions for `docker import --change` (ENV, LABEL...).
            keep: leave the image in dockerd's store too (else only the registry has it).

        Returns:
            The name.
        """
        if version is None:
            self._versions[name] = self._versions.get(name, 0) + 1
            version = f"v{self._versions[name]}"
        tar = busybox_image_tar(self.root / "tmp", kind, version)
        instructions = [f"CMD {json.dumps(_COMMANDS[kind])}", f"LABEL updock.lab.version={version}"]
        if kind is ImageKind.MISSING_ENTRYPOINT:
            instructions = [f"ENTRYPOINT {json.dumps(_COMMANDS[kind])}"]
        instructions += changes
        self.docker("import", *(a for c in instructions for a in ("--change", c)), str(tar), name)
        shutil.rmtree(tar.parent, ignore_errors=True)
        self.docker("push", name)
        if not keep:
            self.docker("rmi", name, check=False)
        return name

    def image_id(self, name: str) -> str:
        """ID (`sha256:...`) of the local image under `name`."""
        return self.docker("image", "inspect", "--format", "{{.Id}}", name).stdout.strip()

    def container_version(self, name: str) -> str:
        """Contents of /version inside the running container `name`."""
        return self.docker("exec", name, "/bin/cat", "/version").stdout.strip()
