"""`updock.registry.hints`: what a run remembers of registries, read back by the next one."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from updock.registry.hints import MAX_AGE, Hint, load, save

NOW = 1_800_000_000.0


@pytest.mark.parametrize("mask", [0o000, 0o077])
def test_saved_hints_are_loaded(tmp_path: Path, mask: int) -> None:
    path = tmp_path / "state" / "registry-hints.json"  # the folder is made
    learned = {
        "reg.example.com": Hint("https", "bearer", "https://auth.example.com/token", "reg"),
        "127.0.0.1:5000": Hint("http"),
    }
    old = os.umask(mask)
    try:
        save(path, learned, now=NOW)
    finally:
        os.umask(old)
    assert load(path, now=NOW + 60) == learned
    # The same modes whatever the umask: the state folder's own.
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_a_symbolic_link_is_neither_read_nor_written_through(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    hosts = {"a:1": {"scheme": "http", "seen": NOW}}
    target.write_text(json.dumps({"version": 1, "registries": hosts}))
    state = tmp_path / "state"
    state.mkdir()
    path = state / "registry-hints.json"
    path.symlink_to(target)
    assert load(path, now=NOW) == {}
    before = target.read_text()
    save(path, {"b:1": Hint("https")}, now=NOW)
    assert target.read_text() == before
    assert not path.is_symlink()
    assert load(path, now=NOW) == {"b:1": Hint("https")}


def test_an_unsafe_folder_is_neither_read_nor_written(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    path = state / "registry-hints.json"
    save(path, {"a:1": Hint("http")}, now=NOW)
    state.chmod(0o777)
    assert load(path, now=NOW) == {}
    save(path, {"b:1": Hint("http")}, now=NOW)
    state.chmod(0o700)
    assert load(path, now=NOW) == {"a:1": Hint("http")}


def test_a_save_keeps_other_hosts_and_replaces_the_same(tmp_path: Path) -> None:
    path = tmp_path / "hints.json"
    save(path, {"a:1": Hint("http"), "b:2": Hint("https", "basic")}, now=NOW)
    save(path, {"b:2": Hint("https")}, now=NOW + 10)
    assert load(path, now=NOW + 20) == {"a:1": Hint("http"), "b:2": Hint("https")}


def test_old_hints_are_not_used_nor_kept(tmp_path: Path) -> None:
    path = tmp_path / "hints.json"
    save(path, {"old:1": Hint("http")}, now=NOW)
    save(path, {"new:1": Hint("https")}, now=NOW + MAX_AGE - 1)
    later = NOW + MAX_AGE + 1
    assert load(path, now=later) == {"new:1": Hint("https")}
    save(path, {"new:2": Hint("https")}, now=later)
    assert set(json.loads(path.read_text())["registries"]) == {"new:1", "new:2"}


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        '{"version": 2, "registries": {}}',
        '{"version": 1, "registries": []}',
        '{"version": 1}',
    ],
)
def test_a_broken_file_is_no_hint_and_is_replaced(tmp_path: Path, content: str) -> None:
    path = tmp_path / "hints.json"
    path.write_text(content)
    assert load(path, now=NOW) == {}
    save(path, {"a:1": Hint("http")}, now=NOW)
    assert load(path, now=NOW) == {"a:1": Hint("http")}


def test_invalid_entries_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "hints.json"
    hosts = {
        "ok:1": {"scheme": "http", "seen": NOW},
        "ftp:1": {"scheme": "ftp", "seen": NOW},
        "auth:1": {"scheme": "https", "auth": "digest", "seen": NOW},
        "type:1": {"scheme": "https", "realm": 7, "seen": NOW},
        "none:1": "https",
        "noscheme:1": {"seen": NOW},
    }
    path.write_text(json.dumps({"version": 1, "registries": hosts}))
    assert load(path, now=NOW) == {"ok:1": Hint("http")}


def test_a_missing_file_is_no_hint(tmp_path: Path) -> None:
    assert load(tmp_path / "nope.json") == {}


def test_a_folder_that_cannot_be_written_is_no_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    save(blocker / "hints.json", {"a:1": Hint("http")}, now=NOW)  # logged, not raised
    assert not (tmp_path / "file" / "hints.json").exists()
