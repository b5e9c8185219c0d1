"""The start of an `auto-update` run, before the rest of updock is imported.

A run with nothing to do must start about as fast as `podman auto-update` (within twice its time;
about 26 ms on the lab machines), and listing containers is most of such a run. So `updock.entry`
calls `start_listing` first thing: `podman ps` is spawned with `os.posix_spawnp` (the subprocess
module alone costs about 10 ms to import) and runs while the command line is parsed. Then
`nothing_to_do` decides from its output whether the run can end at once; while it waits for
`ps`, the modules a real run needs are imported in a background thread (`warm_up`).

`updock.engines.podman` takes the same listing (`take_listing`), so a run lists containers once.
Only `os`, `sys` and small C modules are imported here: the interpreter has them loaded anyway.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # not typing's: importing typing costs a few milliseconds
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

#: The arguments of the prefetched `podman ps`.
PS_ARGS = ("ps", "--no-trunc", "--format", "json")

#: The label prefix that makes a container a candidate (`core.model.LABEL_POLICY`, repeated here
#: so that this module imports nothing; a unit test holds them equal).
LABEL_POLICY = "io.containers.autoupdate"

#: What a run imports in the background, in the order it needs them: the registry client and
#: its HTTP stack first (the checks start as soon as the labelled containers are known), then
#: the rest of the run (which the main thread imports itself if it gets there first).
WARM_MODULES = (
    "updock.registry.client",
    "updock.registry.transport",
    "updock.run",
    "updock.engines.podman",
    "updock.core.plan",
    "updock.actions",
)


#: Seconds the prefetched `podman ps` may take (`defaults.PODMAN_TIMEOUT`; a unit test holds
#: them equal, as this module imports nothing of updock).
PS_TIMEOUT = 300.0


#: Docker's default socket (`engines.docker.DEFAULT_SOCKET`; a unit test holds them equal).
DOCKER_SOCKET = "/var/run/docker.sock"


#: The flags of `updock` itself that take a value; they may come before the command
#: (`updock --log-level debug auto-update`).
GLOBAL_VALUE_FLAGS = ("--log-level",)


def command_index(args: Sequence[str]) -> int:
    """Where the command is in `updock`'s arguments: after the global flags (`len(args)` when
    there is no command)."""
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 2 if args[i] in GLOBAL_VALUE_FLAGS else 1
    return min(i, len(args))


class Listing:
    """A `podman ps` spawned in the background, with pipes for its output."""

    def __init__(self, pid: int, out_fd: int, err_fd: int) -> None:
        self._pid = pid
        self._fds = {out_fd: bytearray(), err_fd: bytearray()}  # standard output first
        self._result: tuple[int, str, str] | None = None
        self._parsed: list[object] | None = None

    def result(self, timeout: float = PS_TIMEOUT) -> tuple[int, str, str]:
        """Wait for it: its exit status, standard output and standard error.

        A `ps` still running after `timeout` seconds (a storage lock held elsewhere) is killed:
        its status is then -9, and the engine lists again, with a timeout of its own.
        """
        if self._result is None:
            import select
            import time

            poller = select.poll()
            for fd in self._fds:
                poller.register(fd, select.POLLIN | select.POLLHUP)
            open_fds = set(self._fds)
            deadline = time.monotonic() + timeout
            while open_fds:
                left = deadline - time.monotonic()
                if left <= 0:
                    import signal

                    try:  # noqa: SIM105  # contextlib costs start-up time
                        os.kill(self._pid, signal.SIGKILL)  # ours: spawned by start_listing
                    except ProcessLookupError:
                        pass
                    deadline = float("inf")
                    continue
                for fd, _event in poller.poll(min(left, 3600.0) * 1000):
                    chunk = os.read(fd, 65536)
                    if chunk:
                        self._fds[fd] += chunk
                    else:
                        poller.unregister(fd)
                        os.close(fd)
                        open_fds.discard(fd)
            _, status = os.waitpid(self._pid, 0)
            out, err = (bytes(data).decode(errors="replace") for data in self._fds.values())
            self._result = (os.waitstatus_to_exitcode(status), out, err)
        return self._result

    def containers(self, timeout: float = PS_TIMEOUT) -> list[object] | None:
        """The listed containers (JSON objects), or None if `ps` failed or printed nonsense
        (the engine then lists again and reports the error properly)."""
        if self._parsed is None:
            code, out, _err = self.result(timeout)
            if code != 0:
                return None
            import json

            try:
                parsed = json.loads(out) if out.strip() else []
            except ValueError:
                return None
            if not isinstance(parsed, list):
                return None
            self._parsed = parsed
        return self._parsed


_LISTINGS: list[Listing] = []

#: Holds True once `nothing_to_do` has ended the run: there is nothing to clean up.
ENDED_EARLY: list[bool] = []


def start_listing(command: Sequence[str] = ("podman", *PS_ARGS)) -> None:
    """Spawn `podman ps` now, with this process's environment (nothing if podman is missing:
    the engine's own call reports that).

    Args:
        command: what to run instead (for tests).
    """
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        try:
            pid = os.posix_spawnp(
                command[0],
                list(command),
                os.environ,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, null, 0),
                    (os.POSIX_SPAWN_DUP2, out_w, 1),
                    (os.POSIX_SPAWN_DUP2, err_w, 2),
                ],
            )
        finally:
            os.close(null)
    except OSError:
        for fd in (out_r, out_w, err_r, err_w):
            os.close(fd)
        return
    os.close(out_w)
    os.close(err_w)
    _LISTINGS.append(Listing(pid, out_r, err_r))


def take_listing() -> Listing | None:
    """The listing `start_listing` spawned, if any and nobody took it yet."""
    return _LISTINGS.pop() if _LISTINGS else None


def wants_update(labels: Mapping[str, str]) -> bool:
    """Whether a container has an auto-update label (kube-play per-container ones included)."""
    return any(k.startswith(LABEL_POLICY) for k in labels)


def state_dir() -> str:
    """`$UPDOCK_STATE_DIR`, else /var/lib/updock for root, else the user's state folder."""
    env = os.environ.get("UPDOCK_STATE_DIR")
    if env:
        return env
    if os.geteuid() == 0:
        return "/var/lib/updock"
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local/state")
    return os.path.join(base, "updock")


#: The environment variable that names the configuration file (`updock.config`).
CONFIG_VARIABLE = "UPDOCK_CONFIG"


def config_path() -> tuple[str, bool] | None:
    """The configuration file to read (`updock.config`), and whether the user named it
    (`$UPDOCK_CONFIG`); None when there is none. Here, with nothing imported, so that the
    CLI can look for it at start-up for nothing more than a `stat`."""
    named = os.environ.get(CONFIG_VARIABLE)
    if named:
        return named, True
    if os.geteuid() == 0:
        default = "/etc/updock/updock.toml"
    else:
        base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
        default = os.path.join(base, "updock", "updock.toml")
    return (default, False) if os.path.exists(default) else None


def _other_run_or_journal(folder: str) -> bool:
    """Whether another run holds the lock, or an unfinished update is journaled, or the state
    folder or its files are not as `updock.statefolder` accepts them (the full run reports it).

    The same rules as the full run's, with less: the folder must belong to this user and be
    writable by nobody else, files are opened without following symbolic links, and a journal
    this version cannot read counts as one to repair.
    """
    import fcntl
    import stat

    try:
        st = os.stat(folder)
    except FileNotFoundError:
        return False  # no folder: no lock held, nothing journaled
    except OSError:
        return True
    if (
        not stat.S_ISDIR(st.st_mode)
        or st.st_uid != os.geteuid()
        or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    ):
        return True
    nofollow = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(os.path.join(folder, "lock"), nofollow)
    except FileNotFoundError:
        pass
    except OSError:
        return True
    else:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)  # and the probe's shared lock with it
    try:
        fd = os.open(os.path.join(folder, "state.json"), nofollow)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return True
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read()
    except OSError:
        return True
    finally:
        os.close(fd)
    import json

    try:
        doc = json.loads(raw)
        return doc["version"] != 1 or bool(doc["units"])
    except (ValueError, KeyError, TypeError):
        return True


def docker_in_play(engines: Sequence[str] | None) -> bool:
    """Whether the run looks at Docker too (`--engine`; for `auto`, when `DOCKER_HOST` is set
    or Docker's default socket exists: one `stat`), so that `podman ps` alone cannot say that
    there is nothing to do."""
    if engines is not None:
        return "docker" in engines
    return bool(os.environ.get("DOCKER_HOST")) or os.path.exists(DOCKER_SOCKET)


def nothing_to_do(*, dry_run: bool, timeout: float = PS_TIMEOUT) -> bool:
    """Whether this run can end at once with an empty report, as the full run would.

    True when the listing shows no running container with an auto-update label and, for a real
    run, no other run holds the lock and no unfinished update is journaled (the full run would
    wait for the one, and repair the other). Anything unexpected means False: the full run
    decides, and reports what went wrong.

    While `ps` runs, the modules a full run needs are imported in the background (`warm_up`).
    """
    listing = _LISTINGS[0] if _LISTINGS else None
    if listing is None:
        return False
    if not dry_run and _other_run_or_journal(state_dir()):
        return False
    # A run with something to do needs the HTTP stack as soon as `ps` has ended: its import
    # starts now, while the main thread waits (a run with nothing to do loses 1-2 ms to it).
    warm_up(WARM_MODULES)
    containers = listing.containers(timeout)
    if containers is None:
        return False
    for c in containers:
        if not isinstance(c, dict):
            return False
        if c.get("State") == "running" and wants_update(c.get("Labels") or {}):
            return False
    ENDED_EARLY.append(True)
    return True


def warm_up(modules: Iterable[str]) -> None:
    """Import `modules` in a daemon thread, now (each import waits for the GIL like any code;
    the point is to use the time the main thread spends waiting for podman)."""
    import importlib
    import threading

    def run() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:
                continue

    threading.Thread(target=run, name="warm-up", daemon=True).start()
