"""updock's state on the host: the journal of unfinished updates, the rollback holds, the lock.

Before a unit changes, its intent (unit, containers, previous and new images, phase) is written
to `state.json` in the state folder, and cleared when the update is verified or rolled back. A
run killed at any point leaves the entry behind; the next run finds it and completes or rolls
back that update before anything else.

`updock rollback UNIT` holds each image name of the unit back (`holds.json`): the name stays on
the image it went back to while the registry still offers the image it was rolled back from.
The hold ends when the name is updated to another image (the registry offers a new one) or
when the user releases it (`updock release`).

The lock (`flock` on `lock` in the same folder) keeps a timer run and a manual run from updating
the same host at once.

A repair that fails (`actions.recover`) stays in the journal, with its attempt and what was
seen, and is tried again by the next run; until it succeeds that unit's containers are not
updated (they are reported `failed`, with the repair's error).

Every file here is read and written through `updock.statefolder`: the folder must belong to the
effective user and be writable by nobody else, files are never opened through a symbolic link,
and each is replaced atomically through a new file with a unique name.

A state file this updock cannot read (not JSON, malformed, another version, a symbolic link or
no regular file) is moved aside, to `<name>.unreadable-<random>` in the same folder, kept for
inspection; the run's error names both paths (exit status 125). What is safe then:
- the journal (`state.json`): the run goes on with an empty journal and updates as usual. Every
  update journals itself afresh before it changes anything, so none is less safe for the lost
  entries; what the run cannot do is repair the units they named (a unit left on an image it
  was never verified on is only checked, and left as it is when the registry offers nothing
  newer), hence the error. A file that cannot be read at all (an I/O error) stops the run.
- the holds (`holds.json`): the run only checks, as `--dry-run` does (rows `pending`, nothing
  changed), since any image name may have been held back by `updock rollback`; the error says
  so, so that the user can roll back again where needed. The next run starts without holds.
  A dry run leaves an unreadable file where it is (it takes no lock), with the same error.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from updock.core.model import Apply, Phase, Step
from updock.core.recovery import Interrupted, JournaledContainer
from updock.errors import ConfigError, UpdockError
from updock.statefolder import NotARegularFile, StateFolder

_T = TypeVar("_T")

#: Phases of a journaled unit, in order (see `core.model.Phase`).
PULLING = Phase.PULLING
RESTARTING = Phase.RESTARTING
ROLLING_BACK = Phase.ROLLING_BACK

#: The journal's and the holds' format; a file of another version is not this updock's to read.
VERSION = 1

HOLDS_FILE = "holds.json"


class LockTimeout(UpdockError):
    """Raised when another updock run holds the lock for longer than the caller waits."""


class StateFileSetAside(ConfigError):
    """Raised when a state file was not one this updock can read (see the module's docstring):
    it is moved aside under a new name in the same folder, and the message names both."""


def default_state_dir() -> Path:
    """`$UPDOCK_STATE_DIR`, else /var/lib/updock for root, else the user's state folder."""
    from updock.prefetch import state_dir

    return Path(state_dir())


@dataclass
class JournalTask:
    """One container of a journaled unit.

    Attributes:
        container: container name (stable across restarts of a `--new` unit).
        container_id: the container's ID when the update began.
        raw_image_name: the name that is re-tagged.
        previous_image: ID of the image it ran before the update.
        new_image: ID of the image pulled for it, once known.
        step: a recreated container's step (`core.model.Step`), "" before the first.
        new_container: a recreated container's new container's ID, once created.
        follows: for a container in the network namespace of one of the unit's (a follower,
            `core.recreate`), that container's name; "" for the unit's own.
        network_of: the container whose network namespace it joins (`Container.network_of`).
    """

    container: str
    container_id: str
    raw_image_name: str
    previous_image: str
    new_image: str = ""
    step: str = ""
    new_container: str = ""
    follows: str = ""
    network_of: str = ""


@dataclass
class JournalEntry:
    """An update of one unit that has begun and not ended.

    Attributes:
        unit: the unit.
        phase: where it stands.
        tasks: its containers.
        pid: the process that began it.
        started: when it began (seconds since the epoch).
        repair_attempts: how many repairs of it (`actions.recover`) failed.
        repair_error: what the last failed repair saw.
        apply: how the update is applied (`core.model.Apply`).
        engine: the engine of its containers ("podman", "docker"), which repairs it.
    """

    unit: str
    phase: Phase = PULLING
    tasks: list[JournalTask] = field(default_factory=list)
    pid: int = field(default_factory=os.getpid)
    started: float = field(default_factory=time.time)
    repair_attempts: int = 0
    repair_error: str = ""
    apply: Apply = Apply.RESTART
    engine: str = "podman"

    def task(self, container: str) -> JournalTask | None:
        """The entry's task for `container`, if any."""
        return next((t for t in self.tasks if t.container == container), None)

    def interrupted(self) -> Interrupted:
        """The entry as the core's crash recovery reads it."""
        return Interrupted(
            self.unit,
            self.phase,
            tuple(
                JournaledContainer(
                    t.container,
                    t.raw_image_name,
                    t.previous_image,
                    t.new_image,
                    container_id=t.container_id,
                    step=Step(t.step) if t.step else None,
                    follows=t.follows,
                    network_of=t.network_of,
                )
                for t in self.tasks
            ),
            attempts=self.repair_attempts,
            apply=self.apply,
        )


@dataclass(frozen=True)
class Hold:
    """An image name held back by `updock rollback`.

    Attributes:
        name: the raw image name.
        image_id: the image it was rolled back from.
        digests: that image's manifest digests: a registry that still offers one of them offers
            nothing new.
        units: the units rolled back.
        since: when (seconds since the epoch).
    """

    name: str
    image_id: str
    digests: tuple[str, ...]
    units: tuple[str, ...]
    since: float

    def covers(self, *, digest: str | None = None, image_id: str | None = None) -> bool:
        """Whether an update to `digest` (registry) or `image_id` (local) is held back."""
        return (digest is not None and digest in self.digests) or image_id == self.image_id


class StateStore:
    """The state folder: journal, holds and lock.

    Args:
        folder: where `state.json`, `holds.json` and `lock` live; made if missing.
    """

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder if folder is not None else default_state_dir()
        self.path = self.folder / "state.json"
        self._lock_fd: int | None = None

    # -- lock -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self, wait: float) -> Iterator[bool]:
        """Hold the run lock; wait up to `wait` seconds for another run to release it.

        Yields whether another run held it first (what was seen before may have changed).

        Raises:
            LockTimeout: another run still holds it after `wait` seconds (0: do not wait).
            ConfigError: the state folder is unsafe (`statefolder.UnsafeStateFolder`) or cannot
                be made, or the lock file cannot be opened.
        """
        with StateFolder(self.folder) as folder:
            try:
                fd = folder.open("lock", os.O_RDWR | os.O_CREAT)
            except OSError as exc:
                raise ConfigError(f"cannot open the lock {self.folder / 'lock'}: {exc}") from exc
        deadline = time.monotonic() + wait
        waited = False
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise ConfigError(f"cannot lock {self.folder}/lock: {exc}") from exc
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                    raise LockTimeout(
                        f"another updock run (pid {holder}) is updating this host; "
                        f"waited {wait:g}s for it (--lock-wait)"
                    )
                time.sleep(0.1)
                waited = True
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield waited
        finally:
            os.close(fd)  # closing releases the flock

    # -- journal --------------------------------------------------------------------------

    def load(self, *, set_aside: bool = True) -> dict[str, JournalEntry]:
        """The unfinished updates, by unit.

        Args:
            set_aside: move an unreadable file aside (only under the lock; `updock serve`'s
                status only looks).

        Raises:
            StateFileSetAside: the state file was not a journal this updock can read; it is
                moved aside now, so the next `load` finds none (see the module's docstring).
            ConfigError: the state folder is unsafe, or the file cannot be read at all, or it
                is unreadable and `set_aside` is False.
        """
        entries = self._read(
            self.path.name,
            _parse_journal,
            consequence="an interrupted update it recorded is not repaired (the file names the "
            "units to look at); this run goes on with an empty journal",
            set_aside=set_aside,
        )
        return entries if entries is not None else {}

    def _read(
        self,
        name: str,
        parse: Callable[[object], _T],
        *,
        consequence: str,
        set_aside: bool = True,
    ) -> _T | None:
        """`parse` of the JSON document in `name`, or None when there is none.

        A file that is no document of this updock's (not JSON, malformed, of another version, a
        symbolic link or no regular file) is moved aside, and `StateFileSetAside` raised with
        `consequence` in its message (without `set_aside`: left, and a `ConfigError` raised).
        """
        path = self.folder / name
        try:
            folder = StateFolder(self.folder, create=False)
        except FileNotFoundError:
            return None
        with folder:
            try:
                data = folder.read(name)
                return None if data is None else parse(json.loads(data))
            except NotARegularFile as exc:
                why = str(exc.strerror)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                why = f"is not one of this updock's ({exc})"
            except OSError as exc:
                raise ConfigError(f"cannot read updock's state file {path}: {exc}") from exc
            if not set_aside:
                raise ConfigError(
                    f"updock's state file {path} {why} (a real run moves it aside); " + consequence
                )
            try:
                aside = folder.move_aside(name, "unreadable")
            except OSError as exc:
                raise ConfigError(
                    f"updock's state file {path} {why}, and moving it aside failed: {exc}"
                ) from exc
        raise StateFileSetAside(
            f"updock's state file {path} {why}: moved it to {aside} (kept for inspection); "
            + consequence
        )

    def load_holds(self, *, set_aside: bool = True) -> dict[str, Hold]:
        """The rollback holds, by image name.

        Args:
            set_aside: move an unreadable file aside (only under the lock).

        Raises:
            StateFileSetAside: the holds file was unreadable (see the module's docstring).
            ConfigError: the state folder is unsafe, or the file cannot be read at all, or it is
                unreadable and `set_aside` is False.
        """
        holds = self._read(
            HOLDS_FILE,
            _parse_holds,
            consequence="the images `updock rollback` held back are not known: this run only "
            "checks, as --dry-run (roll back again where needed); the next one updates as usual",
            set_aside=set_aside,
        )
        return holds if holds is not None else {}

    def save_holds(self, holds: dict[str, Hold]) -> None:
        """Write the holds atomically and durably.

        Raises:
            ConfigError: they cannot be written.
        """
        doc = {
            "version": VERSION,
            "holds": {
                name: {k: v for k, v in asdict(h).items() if k != "name"}
                for name, h in holds.items()
            },
        }
        self._write(HOLDS_FILE, doc)

    def save(self, entries: dict[str, JournalEntry]) -> None:
        """Write the journal atomically (and durably) before the caller acts.

        Raises:
            ConfigError: it cannot be written.
        """
        data: dict[str, Any] = {
            "version": VERSION,
            "units": {
                unit: {k: v for k, v in asdict(e).items() if k != "unit"}
                for unit, e in entries.items()
            },
        }
        self._write(self.path.name, data)

    def _write(self, name: str, doc: dict[str, Any]) -> None:
        try:
            with StateFolder(self.folder) as folder:
                folder.write(name, json.dumps(doc, indent=2).encode())
        except OSError as exc:
            path = self.folder / name
            raise ConfigError(f"cannot write updock's state file {path}: {exc}") from exc


def _parse_journal(doc: object) -> dict[str, JournalEntry]:
    """The entries of a journal file's JSON document, checked field by field.

    Raises:
        ValueError, KeyError, TypeError: it is not a journal of this version.
    """
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        version = doc.get("version") if isinstance(doc, dict) else None
        raise ValueError(f"not a journal of version {VERSION} (version {version!r})")
    units = doc["units"]
    if not isinstance(units, dict):
        raise TypeError("units is not an object")
    entries = {}
    for unit, e in units.items():
        tasks = [
            JournalTask(
                container=_string(t, "container"),
                container_id=_string(t, "container_id"),
                raw_image_name=_string(t, "raw_image_name"),
                previous_image=_string(t, "previous_image"),
                new_image=_string(t, "new_image", ""),
                step=_step(_string(t, "step", "")),
                new_container=_string(t, "new_container", ""),
                follows=_string(t, "follows", ""),
                network_of=_string(t, "network_of", ""),
            )
            for t in e["tasks"]
        ]
        if not tasks:
            raise ValueError(f"unit {unit} has no containers")
        entries[unit] = JournalEntry(
            unit=unit,
            phase=Phase(e["phase"]),
            tasks=tasks,
            pid=int(e.get("pid", 0)),
            started=float(e.get("started", 0)),
            repair_attempts=int(e.get("repair_attempts", 0)),
            repair_error=_string(e, "repair_error", ""),
            apply=Apply(e.get("apply", Apply.RESTART.value)),
            engine=_string(e, "engine", "podman"),
        )
    return entries


def _parse_holds(doc: object) -> dict[str, Hold]:
    """The holds of a holds file's JSON document, checked field by field.

    Raises:
        ValueError, KeyError, TypeError: it is not a holds file of this version.
    """
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        version = doc.get("version") if isinstance(doc, dict) else None
        raise ValueError(f"not a holds file of version {VERSION} (version {version!r})")
    holds = {}
    for name, h in doc["holds"].items():
        digests, units = h["digests"], h["units"]
        if not isinstance(digests, list) or not all(isinstance(d, str) for d in digests):
            raise TypeError(f"digests of {name} are not a list of strings")
        if not isinstance(units, list) or not all(isinstance(u, str) for u in units):
            raise TypeError(f"units of {name} are not a list of strings")
        holds[name] = Hold(
            name, _string(h, "image_id"), tuple(digests), tuple(units), float(h["since"])
        )
    return holds


def _step(text: str) -> str:
    """A journaled step: "" or one of `core.model.Step`'s (ValueError otherwise)."""
    return Step(text).value if text else ""


def _string(obj: dict[str, object], key: str, default: str | None = None) -> str:
    value = obj.get(key, default) if default is not None else obj[key]
    if not isinstance(value, str) or (default is None and not value):
        raise TypeError(f"{key} is not a non-empty string: {value!r}")
    return value
