"""The state folder's files, read and written safely.

updock keeps its journal, lock, rollback holds and registry hints in one folder (`state.py`),
which a root run trusts: what it reads there decides which images run. So:

- the folder must belong to the effective user and be writable by nobody else (neither group
  nor others); anything else is refused with an error naming the folder. A folder updock makes
  is made 0700 (whatever the umask);
- the folder is opened once and checked as opened, and every file is opened relative to that
  open folder with `O_NOFOLLOW` (a symbolic link planted under a file's name is never
  followed) and must be a regular file;
- a file is replaced atomically: written to a new file with a unique name in the same folder
  (`O_CREAT | O_EXCL` with a random name, as `tempfile.mkstemp` does, but relative to the
  checked folder), fsynced, renamed over the old one, and the folder fsynced; never a fixed
  temporary name that another process could race for or plant a link at.

A leaf module (it imports only `updock.errors`), so that `registry/` may use it too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path
from types import TracebackType

from updock.errors import ConfigError

#: Mode of the files updock writes in its state folder, and of the folder it makes.
FILE_MODE = 0o600
FOLDER_MODE = 0o700

_OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafeStateFolder(ConfigError):
    """Raised when the state folder is not a folder of the effective user that only it may
    write (or cannot be made or opened)."""


class NotARegularFile(OSError):
    """Raised when a name in the state folder is a symbolic link, a folder, a FIFO, ... where a
    regular file is expected."""


class StateFolder:
    """The state folder, opened and checked; a context manager that closes it.

    Args:
        path: the folder.
        create: make it (mode 0700, and its parents as usual) when it does not exist.

    Raises:
        UnsafeStateFolder: it is not a folder, belongs to another user, is writable by group or
            others, or cannot be made or opened. `FileNotFoundError` when it does not exist and
            `create` is False.
    """

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        made = create and _make_folder(path)
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            if create:  # removed again at once: say so rather than that it is missing
                raise UnsafeStateFolder(f"updock's state folder {path} vanished") from None
            raise
        except OSError as exc:
            raise UnsafeStateFolder(f"cannot open updock's state folder {path}: {exc}") from exc
        try:
            if made:
                os.fchmod(self._fd, FOLDER_MODE)  # the umask may have narrowed it
            check_folder_stat(path, os.fstat(self._fd))
        except OSError as exc:
            os.close(self._fd)
            raise UnsafeStateFolder(f"cannot use updock's state folder {path}: {exc}") from exc
        except BaseException:
            os.close(self._fd)
            raise

    def __enter__(self) -> StateFolder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the folder (files opened from it stay open)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def open(self, name: str, flags: int, mode: int = FILE_MODE) -> int:
        """`os.open` of `name` in the folder, never through a symbolic link.

        Raises:
            NotARegularFile: `name` is a symbolic link or not a regular file.
            OSError: as `os.open` (`FileNotFoundError` when it is missing).
        """
        try:
            fd = os.open(name, flags | _OPEN_FLAGS | os.O_NONBLOCK, mode, dir_fd=self._fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise NotARegularFile(
                    errno.ELOOP, "is a symbolic link", str(self.path / name)
                ) from exc
            raise
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise NotARegularFile(errno.EINVAL, "is not a regular file", str(self.path / name))
            # O_NONBLOCK only kept a FIFO from blocking the open; reads and locks may block.
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def read(self, name: str) -> bytes | None:
        """The contents of `name`, or None when it does not exist.

        Raises:
            NotARegularFile: it is a symbolic link or not a regular file.
            OSError: it cannot be read.
        """
        try:
            fd = self.open(name, os.O_RDONLY)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as f:
            return f.read()

    def write(self, name: str, data: bytes) -> None:
        """Replace `name` with `data`, atomically and durably (mode 0600).

        Raises:
            OSError: it cannot be written (the old contents then stay).
        """
        tmp, fd = self._new_file(f".{name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), FILE_MODE)  # the umask narrowed the creation mode only
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, name, src_dir_fd=self._fd, dst_dir_fd=self._fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=self._fd)
            raise
        os.fsync(self._fd)

    def rename(self, name: str, new_name: str) -> None:
        """Rename `name` to `new_name` in the folder (replacing it), durably.

        Raises:
            OSError: it cannot be renamed (`FileNotFoundError` when it does not exist).
        """
        os.rename(name, new_name, src_dir_fd=self._fd, dst_dir_fd=self._fd)
        os.fsync(self._fd)

    def move_aside(self, name: str, why: str) -> Path:
        """Rename `name` to a new unique name `<name>.<why>-<random>` in the folder (kept for
        inspection); its new path.

        Raises:
            OSError: it cannot be renamed.
        """
        for _ in range(100):
            aside = f"{name}.{why}-{os.urandom(4).hex()}"
            try:
                # A link fails if the new name exists, where a rename would replace it.
                os.link(
                    name, aside, src_dir_fd=self._fd, dst_dir_fd=self._fd, follow_symlinks=False
                )
            except FileExistsError:
                continue
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                    raise
                # No hard links here: the random name is new in a folder only we write.
                os.rename(name, aside, src_dir_fd=self._fd, dst_dir_fd=self._fd)
            else:
                os.unlink(name, dir_fd=self._fd)
            os.fsync(self._fd)
            return self.path / aside
        raise FileExistsError(errno.EEXIST, "no free name to move it to", str(self.path / name))

    def _new_file(self, prefix: str) -> tuple[str, int]:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        for _ in range(100):
            name = f"{prefix}{os.urandom(6).hex()}.tmp"
            try:
                return name, os.open(name, flags | _OPEN_FLAGS, FILE_MODE, dir_fd=self._fd)
            except FileExistsError:
                continue
        raise FileExistsError(errno.EEXIST, "no free temporary name", str(self.path))


def check_folder_stat(path: Path, st: os.stat_result) -> None:
    """Refuse a state folder that is not a folder of the effective user, writable by it alone.

    Raises:
        UnsafeStateFolder: naming the folder and what is wrong with it.
    """
    euid = os.geteuid()
    problem = ""
    if not stat.S_ISDIR(st.st_mode):
        problem = "is not a folder"
    elif st.st_uid != euid:
        problem = f"belongs to uid {st.st_uid}, not to this user (uid {euid})"
    elif st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem = f"is writable by {'others' if st.st_mode & stat.S_IWOTH else 'its group'} "
        problem += f"(mode {stat.S_IMODE(st.st_mode):04o})"
    if problem:
        raise UnsafeStateFolder(
            f"updock's state folder {path} {problem}: refusing to use it (it must belong to "
            f"uid {euid} and be writable by nobody else, e.g. mode 0700)"
        )


def _make_folder(path: Path) -> bool:
    """Make `path` (mode 0700 once opened) unless it exists; whether it was made."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(path, FOLDER_MODE)
    except FileExistsError:
        return False
    except OSError as exc:
        raise UnsafeStateFolder(f"cannot make updock's state folder {path}: {exc}") from exc
    return True
