"""`updock.statefolder`: the state folder's owner and mode, no symbolic links, atomic writes."""

from __future__ import annotations

import os
import pwd
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from updock.statefolder import NotARegularFile, StateFolder, UnsafeStateFolder


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.mark.usefixtures("umask")
@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077, 0o277])
def test_a_folder_it_makes_is_0700_and_files_0600_whatever_the_umask(
    tmp_path: Path, mask: int
) -> None:
    os.umask(mask)
    path = tmp_path / "a" / "state"
    with StateFolder(path) as folder:
        folder.write("state.json", b"{}")
        fd = folder.open("lock", os.O_RDWR | os.O_CREAT)
        os.close(fd)
    assert _mode(path) == 0o700
    assert _mode(path / "state.json") == 0o600
    assert _mode(path / "lock") & 0o077 == 0
    assert sorted(p.name for p in path.iterdir()) == ["lock", "state.json"]


@pytest.mark.parametrize(("mode", "what"), [(0o777, "others"), (0o770, "its group")])
def test_a_folder_others_may_write_is_refused_by_name(tmp_path: Path, mode: int, what: str) -> None:
    path = tmp_path / "state"
    path.mkdir()
    path.chmod(mode)
    with pytest.raises(UnsafeStateFolder) as caught:
        StateFolder(path)
    assert str(path) in str(caught.value)
    assert f"writable by {what}" in str(caught.value)
    assert list(path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_folder_of_another_user_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "state"
    path.mkdir(mode=0o700)
    nobody = pwd.getpwnam("nobody").pw_uid
    os.chown(path, nobody, -1)
    with pytest.raises(UnsafeStateFolder) as caught:
        StateFolder(path)
    assert str(path) in str(caught.value)
    assert f"belongs to uid {nobody}" in str(caught.value)


def test_a_file_where_the_folder_should_be_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state"
    path.write_text("")
    with pytest.raises(UnsafeStateFolder) as caught:
        StateFolder(path)
    assert str(path) in str(caught.value)


def test_a_missing_folder_is_not_made_on_request(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        StateFolder(tmp_path / "state", create=False)
    assert not (tmp_path / "state").exists()


def test_a_symbolic_link_is_never_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("not updock's")
    path = tmp_path / "state"
    with StateFolder(path) as folder:
        (path / "state.json").symlink_to(secret)
        with pytest.raises(NotARegularFile) as caught:
            folder.read("state.json")
        assert caught.value.filename == str(path / "state.json")
        (path / "lock").symlink_to(secret)
        with pytest.raises(NotARegularFile):
            folder.open("lock", os.O_RDWR | os.O_CREAT)
        # Writing replaces the link itself, never what it points to.
        folder.write("state.json", b"{}")
    assert secret.read_text() == "not updock's"
    assert not (path / "state.json").is_symlink()
    assert (path / "state.json").read_bytes() == b"{}"


def test_a_fifo_is_no_file_and_does_not_block(tmp_path: Path) -> None:
    path = tmp_path / "state"
    with StateFolder(path) as folder:
        os.mkfifo(path / "state.json")
        with pytest.raises(NotARegularFile):
            folder.read("state.json")


def test_writes_are_atomic_through_unique_temporary_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state"
    seen: set[str] = set()
    real_open = os.open

    def spying_open(name: str, flags: int, *args: int, **kwargs: int) -> int:
        if flags & os.O_CREAT and name.endswith(".tmp"):
            assert flags & os.O_EXCL
            assert flags & os.O_NOFOLLOW
            seen.add(name)
        return real_open(name, flags, *args, **kwargs)

    with StateFolder(path) as folder:
        monkeypatch.setattr(os, "open", spying_open)
        threads = [
            threading.Thread(target=folder.write, args=("f", str(i).encode())) for i in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        monkeypatch.undo()
    assert len(seen) == 8  # a new name each time, none fixed
    assert [p.name for p in path.iterdir()] == ["f"]  # no temporary file left
    assert (path / "f").read_text() in {str(i) for i in range(8)}


def test_move_aside_keeps_the_file_under_a_new_unique_name(tmp_path: Path) -> None:
    path = tmp_path / "state"
    with StateFolder(path) as folder:
        moved = []
        for content in (b"one", b"two"):
            folder.write("state.json", content)
            moved.append(folder.move_aside("state.json", "corrupt"))
    assert not (path / "state.json").exists()
    assert moved[0] != moved[1]
    assert [p.read_bytes() for p in moved] == [b"one", b"two"]
    assert all(p.parent == path and p.name.startswith("state.json.corrupt-") for p in moved)
