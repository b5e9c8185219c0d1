"""The lab: a real podman, real distribution registries and a real systemd, private to one folder.

Used by the integration tests (as pytest fixtures) and by the demo. Nothing here is a test
double: every component is the real program, configured so that the machine's own setup is
neither read for these settings nor changed (see ../shared/LAB-NOTES.md):

- podman reads the lab's containers.conf, registries.conf and storage.conf (through
  `CONTAINERS_CONF`, `CONTAINERS_REGISTRIES_CONF`, `CONTAINERS_STORAGE_CONF`) and keeps its images
  and containers under the lab folder;
- systemd runs as PID 1 of private pid and mount namespaces, with its unit path restricted to the
  lab's `units/` folder (without that restriction its boot services would wipe the real /tmp);
  inside that mount namespace the lab's copy of /etc/containers (with a certs.d for the TLS
  registry) is bind-mounted over the real one, which stays untouched outside;
- two registries listen on 127.0.0.1: plain HTTP, and TLS (self-signed CA) with htpasswd auth.

Every process the lab starts is recorded by PID and ended by PID in `stop()`, which also runs
when start-up fails half way. Commands that need podman or systemd run inside the namespaces
through `nsenter` (`Lab.run`).
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TypeVar

from updock.errors import UpdockError

#: Debian packages the lab needs, and a command each package provides.
APT_PACKAGES = {
    "podman": "podman",
    "runc": "runc",
    "docker-registry": "docker-registry",
    "skopeo": "skopeo",
    "busybox-static": "busybox",
    "apache2-utils": "htpasswd",
    "openssl": "openssl",
    "util-linux": "nsenter",
}

# Stub targets so that units with default dependencies pull in nothing of the real machine.
STUB_TARGETS = [
    "sysinit",
    "basic",
    "sockets",
    "timers",
    "paths",
    "slices",
    "network",
    "network-online",
    "network-pre",
    "local-fs",
    "remote-fs",
    "multi-user",
    "default",
    "shutdown",
    "graphical",
    "emergency",
    "rescue",
]

BUSYBOX_APPLETS = [
    "touch",
    "sh",
    "sleep",
    "echo",
    "cat",
    "ls",
    "true",
    "false",
    "wget",
    "test",
    "env",
    "kill",
    "printf",
    "date",
    "mkdir",
    "rm",
]

#: Longest lab folder: podman refuses a runroot (the lab's are the folder + 3) over 50.
MAX_ROOT = 47

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"

LAB_USER = "labuser"
LAB_PASSWORD = "lab-secret-pw"


class LabError(UpdockError):
    """Raised when the lab cannot be set up, or a command run in it fails."""


class ImageKind(Enum):
    """Behaviours of the busybox images the lab builds."""

    HEALTHY = "healthy"
    """Runs until stopped; stops at once on SIGTERM."""
    EXITS_AT_ONCE = "exits-at-once"
    """The command exits 1 right away."""
    MISSING_ENTRYPOINT = "missing-entrypoint"
    """The entrypoint does not exist: the container cannot start."""
    DIES_AFTER_START = "dies-after-start"
    """Starts, then exits 1 after `DIES_AFTER_SECONDS` seconds."""
    SLOW_HEALTHY = "slow-healthy"
    """Runs until stopped; healthy (`HEALTH_ARGS`) only after `SLOW_SECONDS` seconds."""
    UNHEALTHY = "unhealthy"
    """Runs until stopped, but never passes the health check of `HEALTH_ARGS`."""


DIES_AFTER_SECONDS = 2
SLOW_SECONDS = 4

#: `podman run` arguments of a health check that passes once the image's command is ready
#: (every kind but UNHEALTHY and SLOW_HEALTHY gets ready at once).
HEALTH_ARGS = (
    "--health-cmd=test -f /tmp/ready",
    "--health-interval=1s",
    "--health-retries=2",
    "--health-start-period=8s",
)

_LOOP = "while true; do sleep 1 & wait $!; done"

_COMMANDS: dict[ImageKind, list[str]] = {
    ImageKind.HEALTHY: [
        "/bin/sh",
        "-c",
        f'trap "exit 0" TERM INT; touch /tmp/ready; echo "ready $(cat /version)"; {_LOOP}',
    ],
    ImageKind.SLOW_HEALTHY: [
        "/bin/sh",
        "-c",
        f'trap "exit 0" TERM INT; (sleep {SLOW_SECONDS}; touch /tmp/ready) & {_LOOP}',
    ],
    ImageKind.UNHEALTHY: ["/bin/sh", "-c", f'trap "exit 0" TERM INT; {_LOOP}'],
    ImageKind.EXITS_AT_ONCE: ["/bin/sh", "-c", 'echo "broken $(cat /version)"; exit 1'],
    ImageKind.MISSING_ENTRYPOINT: ["/no/such/entrypoint"],
    ImageKind.DIES_AFTER_START: [
        "/bin/sh",
        "-c",
        f'trap "exit 0" TERM INT; echo "dying $(cat /version)"; sleep {DIES_AFTER_SECONDS}; exit 1',
    ],
}


def die_with_parent() -> None:
    """preexec_fn: the kernel sends SIGKILL to the child when the process that started it dies.

    So a lab whose owner is killed with SIGKILL (no teardown possible) does not outlive it.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


PR_SET_PDEATHSIG = 1


def start_loopback_server(
    handler: type[BaseHTTPRequestHandler], name: str, netns: str | None = None
) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """An HTTP server on 127.0.0.1 (a free port), serving in a daemon thread of its own.

    Args:
        handler: its request handler.
        name: its thread's name.
        netns: a network namespace (`/proc/PID/ns/net`) whose 127.0.0.1 it listens on (the
            Docker lab's, which the machine's loopback cannot reach); the caller's when None.

    The caller stops it with `server.shutdown()`, `server.server_close()` and a join.
    """
    if netns is None:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    else:
        server = in_netns(netns, lambda: ThreadingHTTPServer(("127.0.0.1", 0), handler))
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever,
        args=(0.05,),
        name=f"{name}-{server.server_address[1]}",
        daemon=True,
    )
    thread.start()
    return server, thread


_T = TypeVar("_T")
_CLONE_NEWNET = 0x40000000


def in_netns(netns: str, make: Callable[[], _T]) -> _T:
    """`make()` called in the network namespace `netns` (`/proc/PID/ns/net`): the sockets it
    opens belong there, and serve from any thread.

    A thread of its own enters the namespace (`setns` moves the calling thread only) and ends
    with it: the caller's threads stay in their namespace.
    """
    done: list[_T] = []
    failed: list[BaseException] = []

    def enter_and_make() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(netns, os.O_RDONLY)
            try:
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {netns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            done.append(make())
        except BaseException as exc:  # handed to the caller
            failed.append(exc)

    thread = threading.Thread(target=enter_and_make, name="netns")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return done[0]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def missing_packages() -> list[str]:
    """The Debian packages of `APT_PACKAGES` whose command is not installed."""
    missing = [pkg for pkg, cmd in APT_PACKAGES.items() if shutil.which(cmd) is None]
    if not Path("/lib/systemd/systemd").exists():
        missing.append("systemd")
    return missing


def install_packages() -> None:
    """Install the lab's packages with apt when some are missing (needs root)."""
    missing = missing_packages()
    if not missing:
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True, env=env)


def _wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LabError(f"process exited with {proc.returncode}: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise LabError(f"nothing listens on 127.0.0.1:{port} after {timeout}s: {log}")


@dataclass
class Registry:
    """A distribution registry of the lab.

    Attributes:
        name: "plain", "secure", or that of a registry a test added (`Lab.add_registry`).
        port: its port on 127.0.0.1.
        log: the file its log (one line per request) is written to.
        tls: whether it speaks HTTPS (with the lab's self-signed CA, unless `certificate`).
        auth: whether it demands basic auth (`LAB_USER`/`LAB_PASSWORD`).
        certificate: for TLS, the (certificate chain, key) files it serves instead of the
            lab's own.
    """

    name: str
    port: int
    log: Path
    tls: bool = False
    auth: bool = False
    certificate: tuple[Path, Path] | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        """`127.0.0.1:PORT`, the registry part of an image name."""
        return f"127.0.0.1:{self.port}"

    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request the registry has logged so far."""
        return [(e.method, e.uri) for e in read_registry_log(self.log)]


@dataclass(frozen=True)
class Exchange:
    """One request in a distribution registry's log."""

    method: str
    uri: str
    status: int
    remote: str


def read_registry_log(log: Path) -> list[Exchange]:
    """Every request a distribution registry logged (JSON log formatter), in order.

    A request refused before a handler ran (no or a bad token) logs "error authorizing
    context" and no "response completed" line: it counts as a 401.
    """
    seen: dict[str, Exchange] = {}
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        rid = entry.get("http.request.id")
        if not rid or "http.request.method" not in entry:
            continue
        status = entry.get("http.response.status")
        if status is None and "authoriz" in entry.get("msg", ""):
            status = 401
        if status is None:
            continue
        seen[rid] = Exchange(
            entry["http.request.method"],
            entry["http.request.uri"],
            int(status),
            entry.get("http.request.remoteaddr", ""),
        )
    return list(seen.values())


@dataclass(frozen=True)
class Service:
    """A systemd unit that runs one container of the lab."""

    name: str
    unit: str
    image: str


class Lab:
    """A running lab on the host's own podman. Use as a context manager, or call `start()` and
    `stop()`.

    This is the "host" flavour; `updock.testing.rootfs.RootfsLab` runs the same lab on the
    podman of a Debian rootfs, overriding the hooks marked "flavour hook" below.

    Args:
        root: folder for everything the lab writes; made under `$UPDOCK_LAB_BASE` (default
            /var/tmp) when None — never /tmp, whose contents the tests must leave unchanged.
            Removed by `stop()` when it made it.
    """

    #: The flavour's name, as test IDs show it.
    flavour = "host"
    #: The OCI runtime the lab configures podman with.
    oci_runtime = "runc"

    def __init__(self, root: Path | None = None) -> None:
        self._own_root = root is None
        if root is None:
            base = os.environ.get("UPDOCK_LAB_BASE", "/var/tmp")
            Path(base).mkdir(parents=True, exist_ok=True)
            root = Path(tempfile.mkdtemp(prefix="updock-lab.", dir=base))
        if len(str(root)) > MAX_ROOT:
            # podman refuses a runroot longer than 50 characters; the lab's are root + 3.
            raise LabError(f"lab folder {root} is longer than {MAX_ROOT} characters")
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.conf = self.root / "conf"
        self.units = self.root / "units"
        self.etc_containers = self.root / "etc-containers"
        self.builder_root = self.root / "builder"
        self.env: dict[str, str] = {
            "CONTAINERS_CONF": str(self.conf / "containers.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(self.conf / "registries.conf"),
            "CONTAINERS_STORAGE_CONF": str(self.conf / "storage.conf"),
            "TMPDIR": str(self.root / "tmp"),
            # updock's journal and lock stay in the lab too.
            "UPDOCK_STATE_DIR": str(self.root / "updock-state"),
        }
        self.authfile = self.root / "auth.json"
        self.ca_cert = self.root / "certs" / "ca.crt"
        self.plain = Registry("plain", free_port(), self.root / "registry-plain.log")
        self.secure = Registry(
            "secure", free_port(), self.root / "registry-secure.log", tls=True, auth=True
        )
        #: Registries a test started with `add_registry` (stopped by `reset` and `stop`).
        self.added_registries: list[Registry] = []
        self.systemd_pid: int | None = None
        self._unshare: subprocess.Popen[bytes] | None = None
        self._versions: dict[str, int] = {}
        self._podman_version: tuple[int, ...] | None = None
        self._stopped = False

    # -- life cycle -----------------------------------------------------------------------

    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Write the configuration, start both registries and systemd; stop all on failure."""
        try:
            self._write_config()
            self._start_registry(self.plain)
            self._start_registry(self.secure)
            self._start_systemd()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop units, remove containers, end every process the lab started, by PID."""
        if self._stopped:
            return
        self._stopped = True
        if self.systemd_pid is not None and _alive(self.systemd_pid):
            with contextlib.suppress(Exception):
                self._stop_units()
            with contextlib.suppress(Exception):
                self.run(["podman", "pod", "rm", "-af", "-t", "0"], check=False, timeout=60)
                self.run(["podman", "rm", "-af", "-t", "0"], check=False, timeout=60)
        self._end_namespace()
        for reg in (self.plain, self.secure, *self.added_registries):
            _stop_registry(reg)
        if self._own_root and not os.environ.get("UPDOCK_LAB_KEEP"):
            shutil.rmtree(self.root, ignore_errors=True)

    def reset(self) -> None:
        """Stop and remove every service and container, and clear updock's journal and holds, so
        the next test starts clean.

        Images and the registries' contents stay: tests use names of their own.
        """
        self._stop_units()
        while self.added_registries:
            _stop_registry(self.added_registries.pop())
        for unit in self.units.glob("container-*.service"):
            unit.unlink()
        # Start counts and output are per unit name: a later test may reuse the name.
        for log in (self.root / "logs").glob("*"):
            log.unlink()
        # updock's journal and holds: a repair left pending would fail every later run.
        state = Path(self.env["UPDOCK_STATE_DIR"])
        for name in ("state.json", "state.json.unreadable-*", "holds.json", "holds.json.*"):
            for path in state.glob(name):
                path.unlink()
        self.systemctl("daemon-reload")
        self.systemctl("reset-failed", check=False)
        self.run(["podman", "pod", "rm", "-af", "-t", "0"], check=False, timeout=60)
        # Twice: podman removes no container that another joins (`--network container:<x>`)
        # while that one is there, and `rm -a` removes them side by side.
        for _ in range(2):
            self.run(["podman", "rm", "-af", "-t", "0"], check=False, timeout=60)

    def _end_namespace(self) -> None:
        """Flavour hook: end every process of the namespaces (after units and containers)."""
        # SIGKILL to PID 1 of the namespace ends every process in it.
        if self.systemd_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.systemd_pid, signal.SIGKILL)
        if self._unshare is not None:
            with contextlib.suppress(ProcessLookupError):
                self._unshare.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._unshare.wait(10)

    #: Flavour hook: services of the lab's own set-up, which `reset()` leaves running.
    infrastructure_units: frozenset[str] = frozenset()

    def _stop_units(self) -> None:
        out = self.systemctl(
            "list-units", "--all", "--plain", "--no-legend", "--type=service", check=False
        ).stdout
        units = [line.split()[0] for line in out.splitlines() if line.strip()]
        units = [u for u in units if u not in self.infrastructure_units]
        if units:
            self.systemctl("stop", *units, check=False, timeout=60)

    # -- configuration --------------------------------------------------------------------

    def _write_config(self) -> None:
        for d in (
            self.conf,
            self.units,
            self.root / "tmp",
            self.root / "run",
            self.root / "certs",
            self.root / "logs",
        ):
            d.mkdir(parents=True, exist_ok=True)
        storage = self.root / "storage"
        (self.conf / "storage.conf").write_text(
            "[storage]\n"
            'driver = "overlay"\n'
            f'graphroot = "{storage}/graph"\n'
            f'runroot = "{self.root}/rs"\n'  # short: podman allows 50 characters
        )
        containers, engine = self._podman_settings()
        (self.conf / "containers.conf").write_text(
            "[containers]\n"
            f"{containers}"
            'log_driver = "k8s-file"\n'
            "[network]\n"
            f'network_config_dir = "{self.root}/net"\n'
            "[engine]\n"
            f"{engine}"
            'events_logger = "file"\n'
            f'events_logfile_path = "{self.root}/events.log"\n'
            f'tmp_dir = "{self.root}/run/libpod"\n'
        )
        (self.conf / "registries.conf").write_text(
            "unqualified-search-registries = []\n"
            "[[registry]]\n"
            f'location = "{self.plain.host}"\n'
            "insecure = true\n"
        )
        self._write_tls_and_auth()
        # A private /etc/containers for the namespace: the machine's files plus certs.d.
        if self.etc_containers.exists():
            shutil.rmtree(self.etc_containers)
        if self._etc_containers_source().is_dir():
            shutil.copytree(self._etc_containers_source(), self.etc_containers, symlinks=True)
        certs_d = self.etc_containers / "certs.d" / self.secure.host
        certs_d.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.ca_cert, certs_d / "ca.crt")
        self._write_units()

    def _podman_settings(self) -> tuple[str, str]:
        """Flavour hook: lines of containers.conf's `[containers]` and `[engine]` tables."""
        # The host's podman 4.3.1 (LAB-NOTES.md): crun refuses the hybrid cgroup layout, and
        # podman's default limits for root are above this machine's hard limits.
        return (
            'default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n',
            'runtime = "runc"\ncgroup_manager = "cgroupfs"\n',
        )

    def _etc_containers_source(self) -> Path:
        """Flavour hook: the /etc/containers the lab's private copy starts from."""
        return Path("/etc/containers")

    def _write_tls_and_auth(self) -> None:
        certs = self.root / "certs"
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-subj", "/CN=updock lab CA", "-keyout", str(certs / "ca.key"),
                "-out", str(self.ca_cert),
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            ],
            check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run(
            [
                "openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                "-keyout", str(certs / "registry.key"), "-out", str(certs / "registry.csr"),
            ],
            check=True, capture_output=True,
        )  # fmt: skip
        ext = certs / "ext.cnf"
        ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n")
        subprocess.run(
            [
                "openssl", "x509", "-req", "-in", str(certs / "registry.csr"),
                "-CA", str(self.ca_cert), "-CAkey", str(certs / "ca.key"), "-CAcreateserial",
                "-days", "2", "-extfile", str(ext), "-out", str(certs / "registry.crt"),
            ],
            check=True, capture_output=True,
        )  # fmt: skip
        htpasswd = subprocess.run(
            ["htpasswd", "-Bbn", LAB_USER, LAB_PASSWORD], check=True, capture_output=True, text=True
        ).stdout
        (self.root / "htpasswd").write_text(htpasswd)
        token = base64.b64encode(f"{LAB_USER}:{LAB_PASSWORD}".encode()).decode()
        self.authfile.write_text(json.dumps({"auths": {self.secure.host: {"auth": token}}}))

    def _write_units(self) -> None:
        for name in STUB_TARGETS:
            (self.units / f"{name}.target").write_text("[Unit]\nDefaultDependencies=no\n")
        (self.units / "lab.target").write_text("[Unit]\nDefaultDependencies=no\n")
        (self.units / "system.slice").write_text("[Unit]\nDefaultDependencies=no\n")
        (self.units / "-.slice").write_text("[Unit]\nDefaultDependencies=no\n")

    # -- processes ------------------------------------------------------------------------

    def _start_registry(self, reg: Registry) -> None:
        config: dict[str, object] = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "json", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.root / f"registry-{reg.name}")},
                "delete": {"enabled": True},
            },
            "http": {"addr": reg.host, "secret": "updock-lab"},
        }
        if reg.tls:
            certs = self.root / "certs"
            cert, key = reg.certificate or (certs / "registry.crt", certs / "registry.key")
            config["http"] = {
                "addr": reg.host,
                "secret": "updock-lab",
                "tls": {"certificate": str(cert), "key": str(key)},
            }
        if reg.auth:
            config["auth"] = {
                "htpasswd": {"realm": "updock-lab", "path": str(self.root / "htpasswd")}
            }
        cfg = self.root / f"registry-{reg.name}.yml"
        cfg.write_text(json.dumps(config))  # JSON is YAML
        with reg.log.open("wb") as log:
            reg.proc = subprocess.Popen(
                ["docker-registry", "serve", str(cfg)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=die_with_parent,  # noqa: PLW1509 (only prctl)
            )  # fmt: skip
        _wait_for_port(reg.port, 20, reg.proc, reg.log)

    def add_registry(self, name: str, *, chain: bytes, key: bytes) -> Registry:
        """Start another registry on 127.0.0.1, over TLS with this certificate chain and key
        (PEM), no authentication; `reset` stops it. Its CA is trusted nowhere until the test
        puts it in a certs.d (`certs.write_certs_d(lab.etc_containers / "certs.d", ...)`).
        """
        folder = self.root / "certs" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "server.crt").write_bytes(chain)
        (folder / "server.key").write_bytes(key)
        reg = Registry(
            name, free_port(), self.root / f"registry-{name}.log", tls=True,
            certificate=(folder / "server.crt", folder / "server.key"),
        )  # fmt: skip
        self.added_registries.append(reg)
        self._start_registry(reg)
        return reg

    def _namespace_command(self) -> list[str]:
        """Flavour hook: the command whose child becomes PID 1 (systemd) of the namespaces."""
        # The shell runs inside the new namespaces: it hides the real /etc/containers behind the
        # lab's copy, then becomes systemd (exec keeps the PID that nsenter targets).
        script = (
            f'mount --bind "{self.etc_containers}" /etc/containers && '
            f'exec env SYSTEMD_UNIT_PATH="{self.units}" /lib/systemd/systemd --system '
            "--unit=lab.target --log-target=console --log-level=notice"
        )
        return [
            "unshare", "--fork", "--kill-child=SIGKILL", "--pid", "--mount", "--mount-proc",
            "--propagation", "private", "sh", "-c", script,
        ]  # fmt: skip

    def _start_systemd(self) -> None:
        log = (self.root / "systemd.log").open("wb")
        self._unshare = subprocess.Popen(
            self._namespace_command(),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=die_with_parent,  # noqa: PLW1509 (only prctl)
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 30
        while self.systemd_pid is None:
            if self._unshare.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"systemd did not start: {(self.root / 'systemd.log').read_text()}")
            children = Path(f"/proc/{self._unshare.pid}/task/{self._unshare.pid}/children")
            with contextlib.suppress(OSError):
                pids = children.read_text().split()
                if pids:
                    self.systemd_pid = int(pids[0])
            time.sleep(0.02)
        while True:
            res = self.run(["systemctl", "is-system-running"], check=False, timeout=10, env={})
            if res.stdout.strip() in ("running", "degraded"):
                break
            if time.monotonic() > deadline:
                raise LabError(f"systemd is {res.stdout.strip()!r}: {res.stderr}")
            time.sleep(0.1)
        self.systemctl("set-environment", *(f"{k}={v}" for k, v in self.env.items()))

    # -- running commands -----------------------------------------------------------------

    def run(
        self,
        args: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 120,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the lab's namespaces with the lab's podman environment.

        Args:
            args: the command.
            check: raise `LabError` when it exits non-zero.
            timeout: seconds before it is killed.
            env: extra environment variables (on top of the caller's and the lab's).
            input: text for its standard input.
        """
        cmd = [*self._enter(), *args]
        try:
            res = subprocess.run(
                cmd,
                env=self._command_env(env),
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

    def _enter(self) -> list[str]:
        """Flavour hook: the command prefix that enters the lab's namespaces."""
        if self.systemd_pid is None:
            raise LabError("the lab is not running")
        return ["nsenter", "-t", str(self.systemd_pid), "-m", "-p", "--"]

    def _command_env(self, env: Mapping[str, str] | None) -> dict[str, str]:
        """Flavour hook: the environment of a command run in the lab."""
        return {**os.environ, **self.env, **(env or {})}

    @property
    def python(self) -> list[str]:
        """Flavour hook: the command of the lab's Python, with updock importable."""
        return [sys.executable]

    def updock_command(self) -> list[str]:
        """Flavour hook: the `updock` command in the lab.

        The `updock` script next to this Python (that of the venv updock is installed in) runs
        it, as users do; `python -m updock` if there is none.
        """
        script = Path(sys.executable).with_name("updock")
        return [str(script)] if script.exists() else [sys.executable, "-m", "updock"]

    @property
    def podman_version(self) -> tuple[int, ...]:
        """The version of the lab's podman, e.g. (4, 3, 1)."""
        if self._podman_version is None:
            out = self.podman("version", "--format", "{{.Client.Version}}").stdout.strip()
            self._podman_version = tuple(int(p) for p in re.findall(r"\d+", out)[:3])
        return self._podman_version

    def podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `podman ARGS` in the lab."""
        return self.run(["podman", *args], check=check)

    def hostname(self) -> str:
        """The host name updock sees in the lab (a rootfs lab has a UTS namespace of its own)."""
        return self.run(["cat", "/proc/sys/kernel/hostname"]).stdout.strip()

    def systemctl(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run `systemctl ARGS` against the lab's systemd."""
        return self.run(["systemctl", *args], check=check, timeout=timeout)

    # -- images ---------------------------------------------------------------------------

    def _rootfs_tar(self, kind: ImageKind, version: str) -> Path:
        return busybox_image_tar(self.root / "tmp", kind, version)

    def build_image(
        self,
        name: str,
        kind: ImageKind = ImageKind.HEALTHY,
        version: str | None = None,
        *,
        local: bool = False,
    ) -> str:
        """Build a busybox image and push it to a lab registry (or import it locally).

        Args:
            name: full image name with tag, e.g. `f"{lab.plain.host}/app:latest"`.
            kind: how the image's command behaves.
            version: written to /version in the image; a new one means a new digest. By default
                a counter per name.
            local: import into the lab's own image store instead of pushing to the registry
                (for the `local` policy). Pushed images stay out of the lab's store until pulled.

        Returns:
            The name.
        """
        if version is None:
            self._versions[name] = self._versions.get(name, 0) + 1
            version = f"v{self._versions[name]}"
        tar = self._rootfs_tar(kind, version)
        changes = [f"CMD {json.dumps(_COMMANDS[kind])}", f"LABEL updock.lab.version={version}"]
        if kind is ImageKind.MISSING_ENTRYPOINT:
            changes = [f"ENTRYPOINT {json.dumps(_COMMANDS[kind])}"]
        change_args = [a for c in changes for a in ("--change", c)]
        if local:
            self.podman("import", *change_args, str(tar), name)
        else:
            builder = ["--root", str(self.builder_root / "graph"),
                       "--runroot", str(self.root / "br")]  # fmt: skip
            self.podman(*builder, "import", *change_args, str(tar), name)
            push = ["push", "--tls-verify=false"]
            if name.startswith(self.secure.host + "/"):
                push += ["--creds", f"{LAB_USER}:{LAB_PASSWORD}"]
            self.podman(*builder, *push, name)
            self.podman(*builder, "rmi", "-f", name, check=False)
        shutil.rmtree(tar.parent, ignore_errors=True)
        return name

    def build_index(
        self, name: str, kind: ImageKind = ImageKind.HEALTHY, version: str | None = None
    ) -> str:
        """Push `name` (on the plain registry) as a multi-arch image: an OCI index of two images.

        Its `linux/amd64` entry is a `build_image` of this machine's busybox (`kind`, `version`);
        its `linux/arm64` entry is another image (a different digest), as registries such as
        Docker Hub serve most images. Each call pushes new images and a new index.

        Returns:
            The name.
        """
        import urllib.request

        base, _, tag = name.rpartition(":")
        host, _, repo = base.partition("/")
        if host != self.plain.host:
            raise LabError(f"build_index pushes to the plain registry only, not {host}")
        if version is None:
            self._versions[name] = self._versions.get(name, 0) + 1
            version = f"v{self._versions[name]}"
        manifests = []
        for arch, entry_kind, entry_version in (
            ("amd64", kind, version),
            ("arm64", ImageKind.HEALTHY, f"{version}-arm64"),
        ):
            self.build_image(f"{base}:{tag}-{arch}", entry_kind, version=entry_version)
            req = urllib.request.Request(
                f"http://{host}/v2/{repo}/manifests/{tag}-{arch}",
                headers={"Accept": OCI_MANIFEST + ", " + DOCKER_MANIFEST},
            )
            with urllib.request.urlopen(req, timeout=30) as got:
                body = got.read()
                manifests.append(
                    {
                        "mediaType": got.headers["Content-Type"],
                        "digest": got.headers["Docker-Content-Digest"],
                        "size": len(body),
                        "platform": {"os": "linux", "architecture": arch},
                    }
                )
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        put = urllib.request.Request(
            f"http://{host}/v2/{repo}/manifests/{tag}",
            data=json.dumps(index).encode(),
            headers={"Content-Type": OCI_INDEX},
            method="PUT",
        )
        with urllib.request.urlopen(put, timeout=30):
            pass
        return name

    def pull(self, name: str) -> None:
        """Pull an image into the lab's store (with the lab's credentials for the secure one)."""
        args = ["pull", "-q", "--tls-verify=false"]
        if name.startswith(self.secure.host + "/"):
            args += ["--authfile", str(self.authfile)]
        self.podman(*args, name)

    def image_id(self, name: str) -> str:
        """ID of the local image under `name`."""
        return self.podman("image", "inspect", "--format", "{{.Id}}", name).stdout.strip()

    # -- services -------------------------------------------------------------------------

    def create_service(
        self,
        name: str,
        image: str,
        labels: Mapping[str, str] | None = None,
        *,
        policy: str | None = "registry",
        run_args: Sequence[str] = (),
        command: Sequence[str] = (),
        start: bool = True,
        pull: bool = True,
        reload: bool = True,
    ) -> Service:
        """Write a unit like `podman generate systemd --new` does and start it.

        Args:
            name: container name; the unit is `container-<name>.service`.
            image: the image name the container is created from (its raw image name).
            labels: extra labels on the container.
            policy: value of `io.containers.autoupdate`, or None for no label.
            run_args: extra `podman run` arguments.
            command: the command to run instead of the image's.
            start: start the unit (and wait until its start job is done).
            pull: pull the image into the lab's store first.
            reload: make systemd read the unit now (else the caller reloads once for many).
        """
        if pull and not image.startswith("localhost/"):
            self.pull(image)
        unit = f"container-{name}.service"
        all_labels = dict(labels or {})
        if policy is not None:
            all_labels.setdefault("io.containers.autoupdate", policy)
        label_args = " ".join(f"--label {_sd_quote(f'{k}={v}')}" for k, v in all_labels.items())
        extra = " ".join(_sd_quote(a) for a in run_args)
        cmd = " ".join(_sd_quote(a) for a in command)
        authfile = ""
        if image.startswith(self.secure.host + "/"):
            authfile = f"--authfile {self.authfile} "
        # The same shape as podman 4.3's `generate systemd --new` output.
        (self.units / unit).write_text(
            f"""# {unit}
[Unit]
Description=Podman {unit}
Wants=network-online.target
After=network-online.target
RequiresMountsFor=%t/containers
# Tests start a unit more than five times in ten seconds (update, rollback, update...): without
# this, systemd's default start limit fails the sixth start ("start-limit-hit").
StartLimitIntervalSec=0

[Service]
Environment=PODMAN_SYSTEMD_UNIT=%n
Restart=no
TimeoutStopSec=70
ExecStartPre=/bin/rm -f %t/%n.ctr-id
ExecStartPre=/bin/sh -c 'echo start $(date +%%s.%%N) >> {self.root}/logs/{unit}.starts'
ExecStart=/usr/bin/podman run \\
\t--cidfile=%t/%n.ctr-id \\
\t--cgroups=no-conmon \\
\t--rm \\
\t--sdnotify=conmon \\
\t--replace \\
\t-d \\
\t--network none \\
\t{authfile}--name {name} {label_args} {extra} {image} {cmd}
ExecStop=/usr/bin/podman stop --ignore -t 10 --cidfile=%t/%n.ctr-id
ExecStopPost=/usr/bin/podman rm -f --ignore -t 10 --cidfile=%t/%n.ctr-id
Type=notify
NotifyAccess=all
# No journald in the lab: the unit's output goes to a file of the lab (`Lab.unit_log`).
StandardOutput=append:{self.root}/logs/{unit}.log
StandardError=inherit

[Install]
WantedBy=default.target
"""
        )
        if reload or start:
            self.systemctl("daemon-reload")
        if start:
            self.systemctl("start", unit)
        return Service(name, unit, image)

    def unit_log(self, unit: str) -> str:
        """Everything the unit's processes printed (podman's errors included)."""
        path = self.root / "logs" / f"{unit}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def unit_starts(self, unit: str) -> int:
        """How many times the unit was started (restarts included)."""
        path = self.root / "logs" / f"{unit}.starts"
        return path.read_text().count("start") if path.exists() else 0

    def unit_start_times(self, unit: str) -> list[float]:
        """When the unit was started (restarts included), in seconds since the epoch."""
        path = self.root / "logs" / f"{unit}.starts"
        if not path.exists():
            return []
        return [float(line.split()[1]) for line in path.read_text().splitlines() if line]

    def unit_state(self, unit: str) -> str:
        """`ActiveState` of a unit: active, failed, inactive, activating..."""
        return self.systemctl("show", "-p", "ActiveState", "--value", unit).stdout.strip()

    def container_image(self, name: str) -> str:
        """ID of the image the container `name` runs."""
        return self.podman("inspect", "--format", "{{.Image}}", name).stdout.strip()

    def container_version(self, name: str) -> str:
        """Contents of /version inside the running container `name`."""
        return self.podman("exec", name, "/bin/cat", "/version").stdout.strip()

    def updock(
        self, *args: str, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`updock ARGS` run in the lab (never raises on its exit status)."""
        return self.run([*self.updock_command(), *args], check=False, env=env)

    def start_updock(
        self, *args: str, env: Mapping[str, str] | None = None
    ) -> tuple[subprocess.Popen[str], int]:
        """`updock ARGS` started in the lab and not waited for (to signal it while it works).

        Returns:
            The process (nsenter, whose exit status is updock's) and updock's own PID: nsenter
            forks to enter the PID namespace, so signals must go to its child, by that PID.
        """
        proc = subprocess.Popen(
            [*self._enter(), *self.updock_command(), *args],
            env=self._command_env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                pids = children.read_text().split()
                if pids:
                    return proc, int(pids[0])
            time.sleep(0.01)
        proc.kill()
        proc.communicate()
        raise LabError("updock did not start in the lab")

    def spawn(
        self, args: Sequence[str], env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[str]:
        """A command started in the lab and not waited for, its output discarded: the caller
        waits for it (and kills it if it must)."""
        return subprocess.Popen(
            [*self._enter(), *args],
            env=self._command_env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def auto_update(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The real `podman auto-update ARGS` in the lab (never raises on its exit status)."""
        return self.run(["podman", "auto-update", *args], check=False)


def busybox_image_tar(folder: Path, kind: ImageKind, version: str) -> Path:
    """A busybox root filesystem as a tar (in a new folder under `folder`), for `import`.

    Its /version holds `version` (a new one means a new digest), /kind the kind, and
    /bin/only-<version> a command that exists in this version of the image only.
    """
    build = Path(tempfile.mkdtemp(prefix="img.", dir=folder))
    rootfs = build / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "tmp").mkdir()
    shutil.copy("/bin/busybox", rootfs / "bin" / "busybox")
    for applet in BUSYBOX_APPLETS:
        (rootfs / "bin" / applet).symlink_to("busybox")
    (rootfs / "version").write_text(f"{version}\n")
    # A command that exists in this version of the image only: a unit that runs it cannot
    # start on any other version (a start failure that systemd reports, for rollbacks).
    only = rootfs / "bin" / f"only-{version}"
    only.write_text("#!/bin/sh\n" + _COMMANDS[ImageKind.HEALTHY][2] + "\n")
    only.chmod(0o755)
    (rootfs / "kind").write_text(f"{kind.value}\n")
    tar = build / "rootfs.tar"
    with tarfile.open(tar, "w") as t:
        for path in sorted(rootfs.rglob("*")):
            t.add(path, arcname=str(path.relative_to(rootfs)), recursive=False)
    return tar


def _stop_registry(reg: Registry) -> None:
    if reg.proc is not None and reg.proc.poll() is None:
        reg.proc.terminate()
        try:
            reg.proc.wait(5)
        except subprocess.TimeoutExpired:
            reg.proc.kill()
            reg.proc.wait(5)


def _sd_quote(s: str) -> str:
    """Quote a word for a systemd ExecStart line."""
    if s and all(c.isalnum() or c in "-_./:=,@+" for c in s):
        return s
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def running_lab(lab: Lab | None = None) -> Iterator[Lab]:
    """Start a lab (by default a host one, installing what is missing), yield it, and stop it
    whatever happens."""
    if lab is None:
        install_packages()
        lab = Lab()
    # SIGTERM (a CI timeout, a kill) must still tear the lab down: turn it into an exception.
    previous = signal.getsignal(signal.SIGTERM)

    def _on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _on_term)
    try:
        lab.start()
        yield lab
    finally:
        lab.stop()
        signal.signal(signal.SIGTERM, previous)
