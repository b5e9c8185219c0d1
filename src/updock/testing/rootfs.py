"""Debian root filesystems for the lab's flavours: a given podman, whatever the host runs.

`ensure_rootfs(suite)` debootstraps Debian `suite` (bookworm: podman 4.3.1, trixie: podman
5.4.2) with systemd, podman and Python, once: the result is cached under
`/var/tmp/updock-rootfs/<suite>-<hash of the recipe>` and shared, read-only, by every lab (each
mounts it as the lower layer of an overlayfs of its own). See LAB-NOTES.md, "podman 5.4 in a
Debian 13 rootfs".
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

import updock
from updock.testing.lab import Lab, LabError

#: Debian packages of every rootfs (debootstrap --variant=minbase adds the required ones).
PACKAGES = (
    "podman",
    "crun",
    "conmon",
    # The init of pods' infra containers (podman builds its pause image with it).
    "catatonit",
    # podman's `container-network-stack`: debootstrap does not resolve virtual packages.
    "netavark",
    "systemd",
    "dbus",
    "busybox-static",
    "uidmap",
    "fuse-overlayfs",
    "slirp4netns",
    "passt",
    "iproute2",
    "procps",
    "python3",
    "skopeo",
)

#: Packages of one suite only. bookworm's crun 1.8.1 raises RLIMIT_MEMLOCK to load its
#: cgroup v2 device filter, which this machine refuses ("setrlimit (RLIM_MEMLOCK): Operation not
#: permitted"): podman runs runc there.
SUITE_PACKAGES = {"bookworm": ("runc",)}

#: The OCI runtime of each suite's podman.
RUNTIMES = {"bookworm": "runc"}


#: The extras of updock the rootfs gets too: the tests use them in both flavours.
ROOTFS_EXTRAS = ("notify",)


def python_deps() -> list[str]:
    """updock's own dependencies (pyproject.toml's, as installed), for the rootfs's Python.

    Those of ROOTFS_EXTRAS included. pip installs them there: Debian's are too old in bookworm
    (python3-requests 2.28).
    """
    deps = []
    for requirement in importlib.metadata.requires("updock") or []:
        spec, _, marker = requirement.partition(";")
        marker = marker.replace("'", '"').replace(" ", "")
        if not marker or any(f'extra=="{extra}"' == marker for extra in ROOTFS_EXTRAS):
            deps.append(spec.strip())
    return sorted(deps)


#: Where they go inside the rootfs.
PYTHON_DEPS_DIR = "/opt/updock-deps"

#: The non-root user of the rootfs, for rootless podman (subuid/subgid ranges of its own).
LAB_USER_NAME = "u1"
#: Its UID.
LAB_USER_UID = 1000
#: Its home folder.
USER_HOME = f"/home/{LAB_USER_NAME}"
#: The system unit that runs its systemd user manager (the lab's stand-in for user@.service).
USER_MANAGER = f"lab-user@{LAB_USER_UID}.service"

#: Bumped whenever the steps after debootstrap change, so that old caches are not reused.
RECIPE = 1

CACHE = Path("/var/tmp/updock-rootfs")

log = logging.getLogger(__name__)


def packages(suite: str) -> list[str]:
    """The Debian packages asked for in the rootfs of `suite`."""
    return [*PACKAGES, *SUITE_PACKAGES.get(suite, ())]


def cache_dir(suite: str) -> Path:
    """The cached rootfs of `suite` for the current recipe (it may not exist yet)."""
    recipe = repr((suite, sorted(packages(suite)), python_deps(), LAB_USER_NAME, RECIPE))
    digest = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    return Path(os.environ.get("UPDOCK_ROOTFS_CACHE", CACHE)) / f"{suite}-{digest}"


def debian_mirror() -> str:
    """The Debian mirror apt already uses (`$UPDOCK_DEBIAN_MIRROR` wins)."""
    if os.environ.get("UPDOCK_DEBIAN_MIRROR"):
        return os.environ["UPDOCK_DEBIAN_MIRROR"]
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                for url in re.findall(r"https?://\S+", line.split("#", 1)[0]):
                    if url.rstrip("/").endswith("/debian"):
                        return str(url)
    return "http://deb.debian.org/debian"


def python_version(rootfs: Path) -> str:
    """`X.Y` of the rootfs's `python3`."""
    target = os.readlink(rootfs / "usr/bin/python3")
    match = re.fullmatch(r"python(\d+\.\d+)", Path(target).name)
    if match is None:
        raise LabError(f"cannot tell the Python version of {rootfs}: python3 -> {target}")
    return str(match.group(1))


def _lock_file(cache: Path) -> Path:
    return cache.with_name(f".{cache.name}.lock")


def acquire_rootfs(suite: str) -> tuple[Path, TextIO]:
    """The cached rootfs of `suite`, built first if it is missing (needs root and debootstrap),
    and a shared lock on it: while the returned file stays open, no other process removes it.

    The build goes to a temporary folder that is renamed when complete, so a build that is
    interrupted never leaves a rootfs that looks ready. After a build, the caches of older
    recipes of the suite that no lab uses are removed.
    """
    final = cache_dir(suite)
    final.parent.mkdir(parents=True, exist_ok=True)
    lock = _lock_file(final).open("a")
    try:
        while True:
            fcntl.flock(lock, fcntl.LOCK_SH)
            if final.is_dir():
                return final, lock
            fcntl.flock(lock, fcntl.LOCK_UN)
            fcntl.flock(lock, fcntl.LOCK_EX)  # one build; the others wait for it
            if not final.is_dir():
                _build(suite, final)
                _remove_unused(suite, keep=final)
            fcntl.flock(lock, fcntl.LOCK_UN)
    except BaseException:
        lock.close()
        raise


def ensure_rootfs(suite: str) -> Path:
    """The cached rootfs of `suite`, built first if it is missing (see `acquire_rootfs`)."""
    path, lock = acquire_rootfs(suite)
    lock.close()
    return path


def _build(suite: str, final: Path) -> None:
    if shutil.which("debootstrap") is None:
        raise LabError("debootstrap is missing: apt-get install debootstrap")
    build = final.with_name(f".build-{final.name}-{os.getpid()}")
    shutil.rmtree(build, ignore_errors=True)
    started = time.monotonic()
    log.info("building the %s rootfs in %s", suite, build)
    try:
        _debootstrap(suite, build)
        _configure(build)
        _install_python_deps(build)
        build.rename(final)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    log.info("rootfs %s built in %.0fs", final, time.monotonic() - started)


def _remove_unused(suite: str, keep: Path) -> None:
    """Remove the suite's caches of other recipes that no lab holds (`acquire_rootfs`)."""
    for old in keep.parent.glob(f"{suite}-*"):
        if old == keep:
            continue
        with _lock_file(old).open("a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a running lab's lower layer
            log.info("removing the unused rootfs %s", old)
            shutil.rmtree(old, ignore_errors=True)
            _lock_file(old).unlink()
    # Builds whose process was killed.
    for build in keep.parent.glob(f".build-{suite}-*"):
        pid = build.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(build, ignore_errors=True)


def _run(args: list[str], what: str) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", TMPDIR="/var/tmp")
    res = subprocess.run(args, capture_output=True, text=True, check=False, env=env)
    if res.returncode != 0:
        out = (res.stdout + res.stderr)[-3000:]
        raise LabError(f"{what} failed ({res.returncode}): {out}")


def _debootstrap(suite: str, build: Path) -> None:
    _run(
        [
            "debootstrap", "--variant=minbase", f"--include={','.join(packages(suite))}",
            suite, str(build), debian_mirror(),
        ],
        f"debootstrap {suite}",
    )  # fmt: skip


def _configure(build: Path) -> None:
    (build / "etc/hostname").write_text("updock-lab\n")
    (build / "etc/hosts").write_text("127.0.0.1 localhost updock-lab\n::1 localhost\n")
    _run(
        ["useradd", "--root", str(build), "-m", "-s", "/bin/sh", "-u", str(LAB_USER_UID),
         LAB_USER_NAME],
        "useradd",
    )  # fmt: skip
    # Packages are installed: their downloads only cost space.
    for deb in (build / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()


def _install_python_deps(build: Path) -> None:
    version = python_version(build)
    target = build / PYTHON_DEPS_DIR.lstrip("/")
    _run(
        [
            sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
            "--target", str(target), "--python-version", version, "--only-binary=:all:",
            "--implementation", "cp", *python_deps(),
        ],
        f"pip install for Python {version}",
    )  # fmt: skip


#: PATH of commands run in the rootfs.
ROOTFS_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Where the host's `updock` package is bind-mounted (read-only) in the rootfs.
UPDOCK_SRC_DIR = "/opt/updock-src"

#: Units of the rootfs that the lab's systemd needs, copied unmodified: journald (so that
#: `journalctl -u` works), the system bus (crun with the systemd cgroup manager needs it) and
#: what `systemctl exit` needs.
ROOTFS_UNITS = (
    "systemd-journald.service",
    "systemd-journald.socket",
    "systemd-journald-dev-log.socket",
    "dbus.service",
    "dbus.socket",
    "exit.target",
    "systemd-exit.service",
)

#: Device nodes of the lab's /dev: name, major, minor.
DEVICES = (
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
    ("fuse", 10, 229),
    ("net/tun", 10, 200),
)

_CGROUP_PREFIX = "updock-lab."


class RootfsLab(Lab):
    """The lab on the podman, systemd and Python of a Debian rootfs (`suite`).

    systemd runs as PID 1 of private pid, mount, cgroup, UTS and IPC namespaces whose root is
    an overlayfs of the cached rootfs (entered with pivot_root: with chroot, `podman exec`
    would run its command on the host). The host's /var/tmp is bind-mounted at the same path,
    so the lab's folder and the tests' temporary files (TMPDIR=/var/tmp) are seen alike inside
    and out; other host paths are not. The registries (on the host's 127.0.0.1: the network is
    shared) and every public method are those of `Lab`; updock runs inside with the rootfs's
    own `python3` and this checkout's `updock` package (read-only).

    Args:
        suite: the Debian suite, "bookworm" (podman 4.3.1) or "trixie" (podman 5.4.2).
        root: as for `Lab`.
    """

    infrastructure_units = frozenset(
        unit for unit in ROOTFS_UNITS if unit.endswith(".service") and "exit" not in unit
    )

    def __init__(self, suite: str = "trixie", root: Path | None = None) -> None:
        super().__init__(root)
        self.suite = suite
        self.flavour = suite
        self.oci_runtime = RUNTIMES.get(suite, "crun")
        self.rootfs: Path | None = None
        self._rootfs_lock: TextIO | None = None
        self.mountpoint = self.root / "rootfs"
        self._cgroup: Path | None = None

    # -- configuration --------------------------------------------------------------------

    def _write_config(self) -> None:
        # Held until `stop`: the cache is the lower layer of this lab's root.
        self.rootfs, self._rootfs_lock = acquire_rootfs(self.suite)
        self._write_overlay()
        super()._write_config()

    def _start_systemd(self) -> None:
        super()._start_systemd()
        self._write_users_podman_config()

    def _write_users_podman_config(self) -> None:
        """The lab user's own podman settings, in its `~/.config/containers`.

        Not in the lab's `/etc/containers`: root's podman reads the lab's own containers.conf
        and registries.conf (`CONTAINERS_CONF`, ...) but still `registries.conf.d` there.
        """
        containers, engine = self._podman_settings()
        files = {
            "containers.conf": f'[containers]\n{containers}log_driver = "k8s-file"\n'
            f'[engine]\n{engine}events_logger = "file"\n',
            "registries.conf": "unqualified-search-registries = []\n"
            f'[[registry]]\nlocation = "{self.plain.host}"\ninsecure = true\n',
        }
        write = 'mkdir -p "$HOME/.config/containers" && cat > "$HOME/.config/containers/$0"'
        for name, text in files.items():
            self.run([*self.as_user(), "sh", "-c", write, name], input=text)

    def _podman_settings(self) -> tuple[str, str]:
        # No pids controller in the lab's cgroup: the runtime fails to set a pids limit.
        return "pids_limit = 0\n", f'runtime = "{self.oci_runtime}"\n'

    def _etc_containers_source(self) -> Path:
        assert self.rootfs is not None
        return self.rootfs / "etc/containers"

    def _write_units(self) -> None:
        super()._write_units()
        assert self.rootfs is not None
        for name in ("umount", "final"):
            (self.units / f"{name}.target").write_text("[Unit]\nDefaultDependencies=no\n")
        for unit in ROOTFS_UNITS:
            shutil.copy(self.rootfs / "usr/lib/systemd/system" / unit, self.units / unit)
        sockets = " ".join(u for u in ROOTFS_UNITS if u.endswith(".socket"))
        (self.units / "lab.target").write_text(
            f"[Unit]\nDefaultDependencies=no\nWants={sockets}\nAfter={sockets}\n"
        )
        # The Quadlet generator, and no other: `daemon-reload` runs it (podman 4.4 and later).
        generators = self.root / "generators"
        generators.mkdir(exist_ok=True)
        quadlet = Path("/usr/lib/systemd/system-generators/podman-system-generator")
        if (self.rootfs / quadlet.relative_to("/")).exists():
            (generators / quadlet.name).symlink_to(quadlet)
        (self.root / "envgen").mkdir(exist_ok=True)
        self._write_user_manager()

    def _write_user_manager(self) -> None:
        """`lab-user@UID.service`: a user's own systemd (no logind here), for rootless podman.

        Written, not started (`lab-user@1000.service` is `LAB_USER_NAME`'s: see `as_user`).
        Its unit path is restricted as the system's is, to the lab's user units, the user's own
        `~/.config/systemd/user` (where `updock install-units --user` writes) and the
        generator's output; its session bus is a dbus-daemon of its own; its only generator is
        Quadlet's user generator (`~/.config/containers/systemd/`).
        """
        assert self.rootfs is not None
        # In the rootfs (the lab's own layer): the lab's folder is root's only.
        inside = Path("/etc/lab-user")
        user_units = self.root / "upper" / inside.relative_to("/") / "units"
        user_generators = user_units.with_name("generators")
        user_units.mkdir(parents=True)
        user_generators.mkdir()
        for name in ("basic", "sockets", "timers", "paths", "shutdown"):
            (user_units / f"{name}.target").write_text("[Unit]\nDefaultDependencies=no\n")
        for unit in ("exit.target", "systemd-exit.service"):
            shutil.copy(self.rootfs / "usr/lib/systemd/user" / unit, user_units / unit)
        (user_units / "dbus.socket").write_text(
            "[Unit]\nDefaultDependencies=no\n[Socket]\nListenStream=%t/bus\n"
        )
        (user_units / "dbus.service").write_text(
            "[Unit]\nRequires=dbus.socket\n[Service]\nExecStart=/usr/bin/dbus-daemon --session "
            "--address=systemd: --nofork --nopidfile --systemd-activation\n"
        )
        (user_units / "default.target").write_text(
            "[Unit]\nDefaultDependencies=no\nWants=dbus.socket\n"
        )
        quadlet = Path("/usr/lib/systemd/user-generators/podman-user-generator")
        if (self.rootfs / quadlet.relative_to("/")).exists():
            (user_generators / quadlet.name).symlink_to(quadlet)
        run = "/run/user/%i"
        unit_path = f"{inside}/units:$$HOME/.config/systemd/user:{run}/systemd/generator"
        (self.units / "lab-user@.service").write_text(
            f"""[Unit]
Description=systemd user manager of %i (the lab's stand-in for user@.service)
[Service]
User=%i
Type=notify
NotifyAccess=all
Delegate=yes
KillMode=mixed
TimeoutStopSec=20
ExecStartPre=+install -d -o %i -g %i -m 700 {run}
Environment=XDG_RUNTIME_DIR={run} DBUS_SESSION_BUS_ADDRESS=unix:path={run}/bus
Environment=SYSTEMD_GENERATOR_PATH={inside}/generators
# The system manager's environment holds root's podman settings (the lab's storage, which
# the user may not read): the user's podman uses its own (`_write_users_podman_config`).
UnsetEnvironment={" ".join(sorted(self.env))}
# $HOME is the user's (User=): the unit path has the user's own unit folder.
ExecStart=/bin/sh -c 'SYSTEMD_UNIT_PATH={unit_path} exec /usr/lib/systemd/systemd --user'
"""
        )

    def _write_overlay(self) -> None:
        """The lab's own upper layer: mount points and the `updock` commands."""
        upper = self.root / "upper"
        for d in (upper, self.root / "work", self.mountpoint):
            d.mkdir(exist_ok=True)
        (upper / UPDOCK_SRC_DIR.lstrip("/") / "updock").mkdir(parents=True)
        bindir = upper / "usr/local/bin"
        bindir.mkdir(parents=True)
        path = [UPDOCK_SRC_DIR, PYTHON_DEPS_DIR]
        # Byte code goes to the lab's layer: the sources are mounted read-only.
        pycache = "/var/cache/updock-pyc"
        (bindir / "updock").write_text(
            "#!/usr/bin/python3\n"
            "import sys\n"
            f"sys.pycache_prefix = {pycache!r}\n"
            f"sys.path[1:1] = {path!r}\n"
            "from updock.entry import main\n"
            "main()\n"
        )
        (bindir / "updock-python").write_text(
            "#!/bin/sh\n"
            f"export PYTHONPATH={':'.join(path)} PYTHONPYCACHEPREFIX={pycache}\n"
            'exec python3 "$@"\n'
        )
        for script in bindir.iterdir():
            script.chmod(0o755)

    # -- processes ------------------------------------------------------------------------

    def _namespace_command(self) -> list[str]:
        self._cgroup = _make_cgroup()
        # The shell moves itself into the lab's cgroup, which becomes the root of the new
        # cgroup namespace; its child (PID 1 of the new pid namespace) runs the inner script.
        enter_cgroup = 'echo $$ > "$0/cgroup.procs" && exec "$@"'
        return [
            "sh", "-c", enter_cgroup, str(self._cgroup),
            "unshare", "--fork", "--kill-child=SIGKILL", "--pid", "--mount", "--cgroup", "--uts",
            "--ipc", "--propagation", "private", "sh", "-c", self._inner_script(),
        ]  # fmt: skip

    def _inner_script(self) -> str:
        """The shell script that builds the lab's root and becomes its systemd."""
        assert self.rootfs is not None
        r = shlex.quote(str(self.mountpoint))
        upper, work = self.root / "upper", self.root / "work"
        lines = [
            "set -e",
            f"mount -t overlay overlay -o lowerdir={self.rootfs},upperdir={upper},"
            f"workdir={work} {r}",
            f"mount -t proc proc {r}/proc",
            f"mount -t sysfs sysfs {r}/sys",
            f"mount -t cgroup2 cgroup2 {r}/sys/fs/cgroup",
            f"mount -t tmpfs -o mode=755,size=16m tmpfs {r}/dev",
            f"mkdir {r}/dev/pts {r}/dev/shm {r}/dev/mqueue {r}/dev/net",
            *(f"mknod -m 666 {r}/dev/{name} c {major} {minor}" for name, major, minor in DEVICES),
            f"mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts {r}/dev/pts",
            f"ln -s pts/ptmx {r}/dev/ptmx",
            f"ln -s /proc/self/fd {r}/dev/fd",
            *(f"ln -s /proc/self/fd/{n} {r}/dev/{name}"
              for n, name in enumerate(("stdin", "stdout", "stderr"))),
            f"mount -t tmpfs -o mode=1777 tmpfs {r}/dev/shm",
            f"mount -t mqueue mqueue {r}/dev/mqueue",
            # The rootfs's own /run and /tmp: the host's /tmp stays untouched.
            f"mount -t tmpfs -o mode=755 tmpfs {r}/run",
            f"mount -t tmpfs -o mode=1777 tmpfs {r}/tmp",
            # The host's /var/tmp (the lab's folder, tests' temporary files) at the same path.
            f"mount --bind /var/tmp {r}/var/tmp",
        ]  # fmt: skip
        if not self.root.is_relative_to("/var/tmp"):
            lines += [f"mkdir -p {r}{self.root}", f"mount --bind {self.root} {r}{self.root}"]
        src = Path(updock.__file__).parent
        lines += [
            f"mount --bind {self.etc_containers} {r}/etc/containers",
            f"mount --bind {src} {r}{UPDOCK_SRC_DIR}/updock",
            f"mount -o remount,bind,ro {r}{UPDOCK_SRC_DIR}/updock",
            f"cd {r}",
            "mkdir -p .oldroot",
            "pivot_root . .oldroot",
            "cd /",
            "umount -l /.oldroot",
            # Rootless podman wants a shared root.
            "mount --make-rshared /",
            "exec env -i container=updock-lab"
            f" PATH={ROOTFS_PATH}"
            f" SYSTEMD_UNIT_PATH={self.units}:/run/systemd/generator"
            f" SYSTEMD_GENERATOR_PATH={self.root / 'generators'}"
            f" SYSTEMD_ENVIRONMENT_GENERATOR_PATH={self.root / 'envgen'}"
            " /lib/systemd/systemd --system --unit=lab.target --log-target=console"
            " --log-level=notice",
        ]
        return "\n".join(lines)

    def _end_namespace(self) -> None:
        if self.systemd_pid is not None and self._unshare is not None:
            # A clean exit first: systemd stops its units, then PID 1 ends.
            with contextlib.suppress(Exception):
                self.run(["systemctl", "exit", "0"], check=False, timeout=10)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._unshare.wait(10)
        super()._end_namespace()
        if self._cgroup is not None:
            _remove_cgroup(self._cgroup)
        if self._rootfs_lock is not None:
            self._rootfs_lock.close()

    # -- running commands -----------------------------------------------------------------

    def _enter(self) -> list[str]:
        if self.systemd_pid is None:
            raise LabError("the lab is not running")
        return ["nsenter", "-t", str(self.systemd_pid), "-m", "-p", "-C", "-u", "-i", "--"]

    def _command_env(self, env: Mapping[str, str] | None) -> dict[str, str]:
        # Nothing of the host's environment: its PATH and Python variables mean nothing here.
        return {"PATH": ROOTFS_PATH, "HOME": "/root", "LANG": "C.UTF-8", **self.env, **(env or {})}

    @property
    def python(self) -> list[str]:
        return ["/usr/local/bin/updock-python"]

    def as_user(self, env: Mapping[str, str] | None = None) -> list[str]:
        """The command prefix that runs a command as `LAB_USER_NAME`, with the environment of
        its `lab-user@UID.service` (which must be started for its bus and systemd to exist)
        and `env`."""
        run = f"/run/user/{LAB_USER_UID}"
        return [
            "runuser", "-u", LAB_USER_NAME, "--", "env", "-i", f"PATH={ROOTFS_PATH}",
            f"HOME={USER_HOME}", f"USER={LAB_USER_NAME}", f"LOGNAME={LAB_USER_NAME}",
            "LANG=C.UTF-8", f"XDG_RUNTIME_DIR={run}",
            f"DBUS_SESSION_BUS_ADDRESS=unix:path={run}/bus",
            *(f"{k}={v}" for k, v in (env or {}).items()),
        ]  # fmt: skip

    def user_run(
        self,
        args: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 120,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command as `LAB_USER_NAME` (as `Lab.run` does for root), its user manager
        started first; `env` is all of the command's environment beyond the user's session."""
        if self.unit_state(USER_MANAGER) != "active":
            self.systemctl("start", USER_MANAGER)
        return self.run([*self.as_user(env), *args], check=check, timeout=timeout, input=input)

    def user_systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`systemctl --user ARGS` against the lab user's own systemd."""
        return self.user_run(["systemctl", "--user", *args], check=check)

    def write_quadlet(self, name: str, text: str, *, user: bool = False) -> str:
        """Write a Quadlet file and run the generator (`daemon-reload`); its unit's name.

        Args:
            name: the file's name: `x.container`, `x.kube` (unit `x.service`), `x.pod` (unit
                `x-pod.service`).
            text: its contents.
            user: the lab user's (`~/.config/containers/systemd/`, its user manager) instead
                of the system's (`/etc/containers/systemd/`).
        """
        stem, kind = name.rsplit(".", 1)
        unit = f"{stem}.service" if kind in ("container", "kube") else f"{stem}-{kind}.service"
        if user:
            folder = f"{USER_HOME}/.config/containers/systemd"
            self.user_run(["sh", "-c", f'mkdir -p {folder} && cat > "{folder}/{name}"'], input=text)
            self.user_systemctl("daemon-reload")
        else:
            folder_path = self.etc_containers / "systemd"
            folder_path.mkdir(exist_ok=True)
            (folder_path / name).write_text(text)
            self.systemctl("daemon-reload")
        return unit

    def reset(self) -> None:
        """As `Lab.reset`, and also the system's Quadlet files and all the lab user left: its
        services and timers, containers, Quadlet files, installed units and updock state."""
        for quadlet in (self.etc_containers / "systemd").glob("*.*"):
            quadlet.unlink()
        if self.unit_state(USER_MANAGER) == "active":
            # The user's units first, while its manager runs: stopping the manager with
            # podman units still up waits for them, and they for the manager.
            listed = self.user_systemctl(
                "list-units", "--plain", "--no-legend", "--type=service,timer", check=False
            ).stdout
            units = [line.split()[0] for line in listed.splitlines() if line.strip()]
            units = [u for u in units if u != "dbus.service"]
            if units:
                self.user_systemctl("stop", *units, check=False)
            self.user_run(["podman", "rm", "-af", "-t", "0"], check=False, timeout=60)
            self.user_run([
                "rm", "-rf", f"{USER_HOME}/.config/containers/systemd",
                f"{USER_HOME}/.config/systemd", f"{USER_HOME}/.local/state/updock",
            ], check=False)  # fmt: skip
        self.systemctl("stop", USER_MANAGER, check=False)
        super().reset()

    def updock_command(self) -> list[str]:
        return ["/usr/local/bin/updock"]


def _cgroup_base() -> Path:
    """The cgroup2 hierarchy of the host: all of /sys/fs/cgroup, or its `unified` part."""
    for base in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        if (base / "cgroup.controllers").exists():
            return base
    raise LabError("the host has no cgroup2 hierarchy")


def _make_cgroup() -> Path:
    """A new cgroup for one lab; those of labs whose process is gone are removed first."""
    base = _cgroup_base()
    for old in base.glob(f"{_CGROUP_PREFIX}*"):
        owner = old.name.split(".")[1]
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            _remove_cgroup(old)
    cgroup = Path(tempfile.mkdtemp(prefix=f"{_CGROUP_PREFIX}{os.getpid()}.", dir=base))
    cgroup.chmod(0o755)  # the lab's cgroup root: users' delegated cgroups are below it
    return cgroup


def _remove_cgroup(cgroup: Path, timeout: float = 10) -> None:
    """Remove a cgroup and its descendants once their processes are gone."""
    deadline = time.monotonic() + timeout
    while cgroup.exists():
        folders = sorted((p for p in cgroup.rglob("*") if p.is_dir()), reverse=True)
        for folder in [*folders, cgroup]:
            with contextlib.suppress(OSError):
                folder.rmdir()
        if time.monotonic() > deadline:
            return
        time.sleep(0.05)
