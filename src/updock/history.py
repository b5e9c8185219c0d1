"""The update history: every update, rollback and failure, as JSON lines in the state folder.

After each real run (not a dry run: it changes nothing) and each `updock rollback`, one line per
container that was updated, rolled back or failed is appended to `history.jsonl`, and one per
error of the run that names no container (a run that could not list containers, say):

    {"time": "2025-05-04T04:00:12Z", "host": "web01", "engine": "podman", "kind": "auto-update",
     "unit": "container-web.service", "container": "web", "image": "registry.example/web:1",
     "old_digest": "sha256:...", "new_digest": "sha256:...", "old_image": "...",
     "new_image": "...", "outcome": "true", "duration": 6.2, "error": ""}

`outcome` is the report's status (`true`, `rolled back`, `failed`). The file is kept under
`MAX_BYTES`: before a write would pass it, it becomes `history.jsonl.1` (the older ones move
up to `.KEEP`, the oldest is dropped). Files are opened and replaced as `updock.statefolder`
does with every file of the state folder (no symbolic link followed, the folder checked); a
lock (`history.lock`) keeps two writers (a timer run and `updock rollback`, or the service) from
interleaving a rotation. `updock history` reads them all, oldest first; a line it cannot read is
skipped with a warning.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from updock.core.model import Status
from updock.errors import ConfigError
from updock.record import RunRecord
from updock.statefolder import StateFolder

log = logging.getLogger(__name__)

FILE = "history.jsonl"
LOCK = "history.lock"
#: Size of `history.jsonl` at most (about 3,000 entries), and how many older files are kept.
MAX_BYTES = 1024 * 1024
KEEP = 3

#: The outcomes recorded (a container that stayed as it was is not history).
RECORDED = (Status.UPDATED, Status.ROLLED_BACK, Status.FAILED)

Entry = dict[str, object]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """Seconds of `90s`, `15m`, `2h`, `7d`, `1w`, `1h30m`, or a plain number of seconds.

    Raises:
        ValueError: anything else (the message gives examples).
    """
    stripped = text.strip()
    try:
        value = float(stripped)
    except ValueError:
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhdw])", stripped)
        if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*([smhdw])", "", stripped).strip():
            raise ValueError(
                f"{text!r} is no duration (such as 90s, 15m, 2h, 7d, 1w, 1h30m)"
            ) from None
        value = sum(float(n) * _UNITS[u] for n, u in parts)
    if not 0 <= value < float("inf"):
        raise ValueError(f"{text!r} is no duration (such as 90s, 15m, 2h, 7d, 1w, 1h30m)")
    return value


def iso_time(seconds: float) -> str:
    """`2025-05-04T04:00:12Z` (UTC)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def parse_time(text: str) -> float:
    """Seconds since the epoch of an `iso_time`.

    Raises:
        ValueError: it is not one.
    """
    import calendar

    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))


def entries_of(record: RunRecord) -> list[Entry]:
    """The history lines of a run: its updates, rollbacks and failures, and its errors that
    name no container of it. None for a dry run."""
    if record.dry_run:
        return []
    out: list[Entry] = []
    for t in record.tasks:
        if t.status not in RECORDED:
            continue
        out.append(
            {
                "time": iso_time(t.finished or record.started + record.duration),
                "host": record.host,
                "engine": t.engine,
                "kind": record.kind,
                "unit": t.unit,
                "container": t.container,
                "image": t.image,
                "old_digest": t.old_digest,
                "new_digest": t.new_digest,
                "old_image": t.old_image,
                "new_image": t.new_image,
                "outcome": str(t.status),
                "duration": round(t.duration, 3),
                "error": t.error,
            }
        )
    out.sort(key=lambda e: str(e["time"]))  # oldest first, as the file is read
    named = [t.container_id for t in record.tasks] + [t.unit for t in record.tasks]
    for error in record.errors:
        if any(n and n in error for n in named):
            continue  # it is the error of a container above
        out.append(
            {
                "time": iso_time(record.started + record.duration),
                "host": record.host,
                "engine": record.engine,
                "kind": record.kind,
                "unit": "",
                "container": "",
                "image": "",
                "old_digest": "",
                "new_digest": "",
                "old_image": "",
                "new_image": "",
                "outcome": str(Status.FAILED),
                "duration": round(record.duration, 3),
                "error": error,
            }
        )
    return out


class History:
    """The history files in a state folder.

    Args:
        folder: the state folder.
        max_bytes: size of the current file at most.
        keep: older files kept (`history.jsonl.1` is the newest of them).
    """

    def __init__(self, folder: Path, *, max_bytes: int = MAX_BYTES, keep: int = KEEP) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.keep = keep

    @contextmanager
    def locked(self) -> Iterator[StateFolder]:
        """The state folder, with the lock of the history (and of the metrics' totals, which
        are updated with it) held.

        Raises:
            ConfigError: the state folder is unsafe, or the lock cannot be taken.
        """
        with StateFolder(self.folder) as folder:
            try:
                fd = folder.open(LOCK, os.O_RDWR | os.O_CREAT)
            except OSError as exc:
                raise ConfigError(f"cannot lock the history in {self.folder}: {exc}") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield folder
            finally:
                os.close(fd)

    def append(self, folder: StateFolder, entries: Sequence[Entry]) -> None:
        """Append `entries` (the folder as `locked` yields it), rotating first when they would
        pass `max_bytes`.

        Raises:
            ConfigError: a file cannot be written.
        """
        if not entries:
            return
        data = "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries).encode()
        try:
            fd = folder.open(FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                size = os.fstat(fd).st_size
                if size and size + len(data) > self.max_bytes:
                    os.close(fd)
                    fd = -1
                    self._rotate(folder)
                    fd = folder.open(FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
                os.write(fd, data)  # one write, in append mode
                os.fsync(fd)
            finally:
                if fd >= 0:
                    os.close(fd)
        except OSError as exc:
            raise ConfigError(f"cannot write the history in {self.folder}: {exc}") from exc

    def _rotate(self, folder: StateFolder) -> None:
        for n in range(self.keep, 0, -1):
            older = f"{FILE}.{n - 1}" if n > 1 else FILE
            try:
                folder.rename(older, f"{FILE}.{n}")
            except FileNotFoundError:
                continue

    def read(self, since: float | None = None) -> list[Entry]:
        """Every entry, oldest first; those at or after `since` (seconds since the epoch) only.

        Raises:
            ConfigError: the state folder is unsafe, or a file cannot be read.
        """
        out: list[Entry] = []
        try:
            folder = StateFolder(self.folder, create=False)
        except FileNotFoundError:
            return out
        names = [f"{FILE}.{n}" for n in range(self.keep, 0, -1)] + [FILE]
        with folder:
            for name in names:
                try:
                    data = folder.read(name)
                except OSError as exc:
                    raise ConfigError(f"cannot read {self.folder / name}: {exc}") from exc
                if data is None:
                    continue
                for number, line in enumerate(data.decode(errors="replace").splitlines(), 1):
                    entry = _parse(line)
                    if entry is None:
                        if line.strip():
                            log.warning("%s:%d: not a history entry, skipped", name, number)
                        continue
                    if since is None or parse_time(str(entry["time"])) >= since:
                        out.append(entry)
        return out


def _parse(line: str) -> Entry | None:
    try:
        entry = json.loads(line)
        if not isinstance(entry, dict):
            return None
        parse_time(str(entry["time"]))
    except (ValueError, KeyError):
        return None
    return entry


def table(entries: Sequence[Entry]) -> str:
    """`updock history`'s table: one line per entry, local times, short digests, the first
    line of each error."""
    from updock.core.report import TAB_MINWIDTH, TAB_PADDING
    from updock.core.tabwriter import tabwrite
    from updock.record import short_digest

    lines = ["TIME\tUNIT\tCONTAINER\tIMAGE\tOLD\tNEW\tOUTCOME\tDURATION\tERROR"]
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(parse_time(str(e["time"]))))
        error = str(e.get("error", "")).partition("\n")[0]
        if len(error) > ERROR_WIDTH:
            error = error[: ERROR_WIDTH - 3] + "..."
        cells = [
            when,
            str(e.get("unit") or "-"),
            str(e.get("container") or "-"),
            str(e.get("image") or "-"),
            short_digest(str(e.get("old_digest", ""))) or "-",
            short_digest(str(e.get("new_digest", ""))) or "-",
            str(e.get("outcome", "")),
            f"{float(str(e.get('duration', 0))):.1f}s",
            error or "-",
        ]
        lines.append("\t".join(c.replace("\t", " ") for c in cells))
    return tabwrite("\n".join(lines) + "\n", minwidth=TAB_MINWIDTH, padding=TAB_PADDING)


#: Characters of an error shown in the table (`--format json` has all of it).
ERROR_WIDTH = 80
