"""The update history (`updock.history`): what a run appends, rotation at the size cap, reading
back with `--since`, and durations."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import pytest

from tests.unit.test_notify_message import RUN, task
from updock.core.model import Status
from updock.history import History, entries_of, parse_duration, table
from updock.record import RunRecord
from updock.statefolder import NotARegularFile


def test_a_run_appends_its_updates_rollbacks_and_failures_only(tmp_path: Path) -> None:
    history = History(tmp_path / "state")
    with history.locked() as folder:
        history.append(folder, entries_of(RUN))
    entries = history.read()
    assert [(e["container"], e["outcome"]) for e in entries] == [
        ("api", "rolled back"),
        ("web", "true"),
    ]
    api = entries[0]
    assert api["host"] == "web01"
    assert api["engine"] == "podman"
    assert api["error"] == "verifying unit container-api.service failed: died\n  x"
    assert api["old_digest"] == "sha256:" + "11" * 32
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "state" / "history.jsonl").stat().st_mode & 0o777 == 0o600


def test_a_dry_run_is_no_history_and_an_error_of_no_container_is() -> None:
    assert entries_of(RunRecord(dry_run=True, tasks=(task("w", Status.FAILED),))) == []
    failed = RunRecord(
        host="h",
        tasks=(task("w", Status.FAILED),),
        errors=(f"auto-updating container {'w' * 12}: failed", "cannot take the lock"),
    )
    assert [(e["container"], e["error"]) for e in entries_of(failed)] == [
        ("w", ""),
        ("", "cannot take the lock"),
    ]


def test_the_file_is_rotated_at_its_size_and_the_oldest_dropped(tmp_path: Path) -> None:
    history = History(tmp_path, max_bytes=2000, keep=2)
    one = entries_of(RUN)[:1]
    size = len(json.dumps(one[0], sort_keys=True)) + 1
    for _ in range(20):
        with history.locked() as folder:
            history.append(folder, one)
    files = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("history.jsonl"))
    assert files == ["history.jsonl", "history.jsonl.1", "history.jsonl.2"]
    for name in files:
        assert (tmp_path / name).stat().st_size <= 2000
    per_file = 2000 // size
    # The current file and two full ones: the oldest entries were dropped with the third.
    assert len(history.read()) == 2 * per_file + (20 - 1) % per_file + 1


def test_since_and_unreadable_lines(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    history = History(tmp_path)
    old = dict(entries_of(RUN)[0], time="2020-01-01T00:00:00Z")
    (tmp_path / "history.jsonl").write_text(json.dumps(old) + "\nnot json\n")
    os.chmod(tmp_path, 0o700)
    with history.locked() as folder:
        history.append(folder, entries_of(dataclasses.replace(RUN, started=time.time())))
    assert len(history.read()) == 3
    assert len(history.read(since=time.time() - 3600)) == 2
    assert "history.jsonl:2: not a history entry, skipped" in caplog.text


def test_a_symbolic_link_is_never_followed(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o700)
    (tmp_path / "elsewhere").write_text("")
    (tmp_path / "history.jsonl").symlink_to(tmp_path / "elsewhere")
    history = History(tmp_path)
    with pytest.raises(NotARegularFile), history.locked() as folder:
        folder.open("history.jsonl", os.O_RDONLY)
    with pytest.raises(Exception, match="symbolic link"):
        history.read()
    with history.locked() as folder, pytest.raises(Exception, match="symbolic link"):
        history.append(folder, entries_of(RUN))
    assert (tmp_path / "elsewhere").read_text() == ""


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("90s", 90),
        ("15m", 900),
        ("2h", 7200),
        ("7d", 604800),
        ("1w", 604800),
        ("1h30m", 5400),
        ("1.5h", 5400),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5x", "-5", "inf", "1h and", "h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="is no duration"):
        parse_duration(text)


def test_table() -> None:
    out = table(entries_of(RUN)).splitlines()
    assert out[0].split() == [
        "TIME",
        "UNIT",
        "CONTAINER",
        "IMAGE",
        "OLD",
        "NEW",
        "OUTCOME",
        "DURATION",
        "ERROR",
    ]
    assert "sha256:111111111111" in out[1]
    assert "rolled back" in out[1]
    assert out[1].rstrip().endswith("verifying unit container-api.service failed: died")
