"""`updock.state`: the journal's store and the run lock, against real files and processes."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from updock.core.model import Phase
from updock.errors import ConfigError
from updock.state import JournalEntry, JournalTask, LockTimeout, StateFileSetAside, StateStore
from updock.statefolder import UnsafeStateFolder

_HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from updock.state import StateStore

    with StateStore(Path(sys.argv[1])).locked(0):
        print("held", flush=True)
        sys.stdin.readline()
    print("released", flush=True)
    sys.stdin.readline()
    """
)


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process that holds the lock of `tmp_path / "state"` until told to let go (a
    line on its standard input), then lives on until a second line."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path / "state")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline() == "held\n"
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


def _tell(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("\n")
    proc.stdin.flush()


def test_a_lock_held_elsewhere_times_out_naming_the_holder(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    store = StateStore(tmp_path / "state")
    started = time.monotonic()
    with pytest.raises(LockTimeout) as caught, store.locked(0.5):
        pass
    assert time.monotonic() - started >= 0.5
    assert f"(pid {holder.pid})" in str(caught.value)
    assert "--lock-wait" in str(caught.value)
    with pytest.raises(LockTimeout), store.locked(0):
        pass


def test_a_second_run_waits_until_the_lock_is_released_on_close(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    store = StateStore(tmp_path / "state")
    threading.Timer(0.5, _tell, (holder,)).start()
    started = time.monotonic()
    with store.locked(30) as waited:
        assert waited
        assert time.monotonic() - started >= 0.4
        assert holder.poll() is None  # still alive: released by closing, not by exiting
        assert (tmp_path / "state" / "lock").read_text() == f"{os.getpid()}\n"
    _tell(holder)
    assert holder.wait(10) == 0
    with store.locked(0) as waited:  # and ours is released on leaving the block
        assert not waited


def test_an_uncontended_lock_does_not_wait(tmp_path: Path) -> None:
    with StateStore(tmp_path / "state").locked(0) as waited:
        assert not waited


def _entry() -> JournalEntry:
    return JournalEntry(
        "web.service",
        phase=Phase.RESTARTING,
        tasks=[JournalTask("web", "c" * 64, "reg.example/web:1", "a" * 64, "b" * 64)],
        pid=42,
        started=1.5,
    )


def test_a_world_writable_state_folder_is_refused_by_name(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    folder.mkdir()
    folder.chmod(0o777)
    store = StateStore(folder)
    for attempt in (lambda: store.locked(0).__enter__(), store.load, lambda: store.save({})):
        with pytest.raises(UnsafeStateFolder) as caught:
            attempt()
        assert f"updock's state folder {folder} is writable by others" in str(caught.value)
    assert list(folder.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_state_folder_of_another_user_is_refused_by_name(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    StateStore(folder).save({"web.service": _entry()})
    os.chown(folder, pwd.getpwnam("nobody").pw_uid, -1)
    store = StateStore(folder)
    with pytest.raises(UnsafeStateFolder) as caught:
        store.load()
    assert str(folder) in str(caught.value)
    with pytest.raises(UnsafeStateFolder), store.locked(0):
        pass


def test_a_symlinked_lock_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    target = tmp_path / "elsewhere"
    target.write_text("keep\n")
    (folder / "lock").symlink_to(target)
    with pytest.raises(ConfigError) as caught, StateStore(folder).locked(0):
        pass
    assert str(folder / "lock") in str(caught.value)
    assert target.read_text() == "keep\n"


def test_the_journal_survives_a_save_and_a_load(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    assert store.load() == {}  # no folder yet
    deferred = _entry()
    deferred.unit = "db.service"
    deferred.phase = Phase.ROLLING_BACK
    deferred.repair_attempts = 2
    deferred.repair_error = "verifying unit db.service failed: container db is unhealthy"
    entries = {"web.service": _entry(), "db.service": deferred}
    store.save(entries)
    assert store.load() == entries
    assert StateStore(tmp_path / "state").load()["db.service"].phase is Phase.ROLLING_BACK
    store.save({})
    assert store.load() == {}


def test_a_journal_of_an_earlier_updock_is_read(tmp_path: Path) -> None:
    # As written before repairs were retried: no repair fields.
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    task = {"container": "web", "container_id": "c" * 64, "raw_image_name": "r/w:1",
            "previous_image": "a" * 64, "new_image": ""}  # fmt: skip
    doc = {"version": 1, "units": {"web.service": {"phase": "pulling", "tasks": [task]}}}
    (folder / "state.json").write_text(json.dumps(doc))
    (entry,) = StateStore(folder).load().values()
    assert (entry.unit, entry.phase, entry.repair_attempts) == ("web.service", Phase.PULLING, 0)
    assert entry.tasks == [JournalTask("web", "c" * 64, "r/w:1", "a" * 64)]


_TASK = {"container": "web", "container_id": "c" * 64, "raw_image_name": "r/w:1",
         "previous_image": "a" * 64}  # fmt: skip


def _doc(**entry: object) -> str:
    return json.dumps({"version": 1, "units": {"web.service": entry}})


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("{broken", "is not one of this updock's (Expecting"),
        (b"\xff\xfe".decode("latin-1"), "is not one of this updock's"),
        ("[]", "not a journal of version 1 (version None)"),
        (json.dumps({"version": 2, "units": {}}), "not a journal of version 1 (version 2)"),
        (json.dumps({"units": {}}), "(version None)"),
        (json.dumps({"version": 1}), "'units'"),
        (_doc(tasks=[_TASK]), "'phase'"),
        (_doc(phase="pulling"), "'tasks'"),
        (_doc(phase="pulling", tasks=[]), "unit web.service has no containers"),
        (_doc(phase="sleeping", tasks=[_TASK]), "'sleeping' is not a valid Phase"),
        (_doc(phase="pulling", tasks=[{**_TASK, "previous_image": ""}]), "previous_image"),
        (_doc(phase="pulling", tasks=[{**_TASK, "raw_image_name": 7}]), "raw_image_name"),
        (_doc(phase="pulling", tasks=[_TASK], repair_attempts="x"), "invalid literal"),
        (_doc(phase="pulling", tasks=["web"]), "is not one of this updock's"),
    ],
)
def test_a_journal_it_cannot_read_is_moved_aside_and_named(
    tmp_path: Path, content: str, why: str
) -> None:
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    (folder / "state.json").write_text(content)
    store = StateStore(folder)
    with pytest.raises(StateFileSetAside) as caught:
        store.load()
    (aside,) = folder.glob("state.json.unreadable-*")
    assert aside.read_text() == content  # kept for inspection
    message = str(caught.value)
    assert f"updock's state file {folder / 'state.json'} " in message
    assert f"moved it to {aside} (kept for inspection)" in message
    assert why in message
    assert "this run goes on with an empty journal" in message
    assert store.load() == {}  # and the next run starts afresh
    store.save({"web.service": _entry()})
    assert list(store.load()) == ["web.service"]


@pytest.mark.parametrize("kind", ["symlink", "fifo", "folder"])
def test_a_journal_that_is_no_regular_file_is_moved_aside_unread(tmp_path: Path, kind: str) -> None:
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    target = tmp_path / "target.json"
    target.write_text(_doc(phase="pulling", tasks=[_TASK]))  # a valid journal: never read
    path = folder / "state.json"
    if kind == "symlink":
        path.symlink_to(target)
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    with pytest.raises(StateFileSetAside) as caught:
        StateStore(folder).load()
    assert "is a symbolic link" in str(caught.value) or "is not a regular file" in str(caught.value)
    assert not os.path.lexists(path)
    assert len(list(folder.glob("state.json.unreadable-*"))) == 1
    assert target.read_text() == _doc(phase="pulling", tasks=[_TASK])


def test_unreadable_holds_are_moved_aside_by_a_real_run_only(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    holds = folder / "holds.json"
    holds.write_text(json.dumps({"version": 1, "holds": {"r/w:1": {"image_id": "a" * 64}}}))
    store = StateStore(folder)
    with pytest.raises(ConfigError) as left:
        store.load_holds(set_aside=False)  # a dry run: no lock, nothing moved
    assert not isinstance(left.value, StateFileSetAside)
    assert holds.exists()
    assert "(a real run moves it aside)" in str(left.value)
    with pytest.raises(StateFileSetAside) as caught:
        store.load_holds()
    (aside,) = folder.glob("holds.json.unreadable-*")
    assert f"updock's state file {holds} is not one of this updock's ('digests')" in str(
        caught.value
    )
    assert f"moved it to {aside}" in str(caught.value)
    assert "this run only checks, as --dry-run" in str(caught.value)
    assert store.load_holds() == {}
