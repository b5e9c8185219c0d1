"""`updock.prefetch.nothing_to_do`: when a run may end at once, from a listing (printed here by
`sh` in place of `podman ps`) and the state folder."""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from updock import prefetch


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("UPDOCK_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(prefetch, "warm_up", lambda modules: None)  # no background imports
    yield
    while prefetch.take_listing() is not None:
        pass
    prefetch.ENDED_EARLY.clear()


def _listing(containers: object, *, exit_code: int = 0, raw: str | None = None) -> None:
    text = raw if raw is not None else json.dumps(containers)
    prefetch.start_listing(["sh", "-c", f"printf '%s' {shlex.quote(text)}; exit {exit_code}"])


def _ps(name: str, labels: dict[str, str], state: str = "running") -> dict[str, object]:
    return {"Id": name * 8, "Names": [name], "State": state, "Labels": labels}


def test_no_labelled_container_means_nothing_to_do() -> None:
    _listing([_ps("web", {"app": "web"}), _ps("db", {})])
    assert prefetch.nothing_to_do(dry_run=True)
    assert prefetch.ENDED_EARLY == [True]


def test_an_empty_listing_means_nothing_to_do() -> None:
    _listing(None, raw="")
    assert prefetch.nothing_to_do(dry_run=False)


@pytest.mark.parametrize(
    "label",
    ["io.containers.autoupdate", "io.containers.autoupdate/ctr", "io.containers.autoupdate.x"],
)
def test_any_auto_update_label_means_a_full_run(label: str) -> None:
    _listing([_ps("web", {}), _ps("app", {label: "registry"})])
    assert not prefetch.nothing_to_do(dry_run=True)
    assert prefetch.ENDED_EARLY == []
    # The engine takes the same listing, parsed once.
    listing = prefetch.take_listing()
    assert listing is not None
    containers = listing.containers()
    assert containers is not None
    assert [c["Names"] for c in containers if isinstance(c, dict)] == [["web"], ["app"]]


def test_a_labelled_container_that_is_not_running_is_no_candidate() -> None:
    _listing([_ps("app", {"io.containers.autoupdate": "registry"}, state="exited")])
    assert prefetch.nothing_to_do(dry_run=True)


@pytest.mark.parametrize(
    ("raw", "exit_code"),
    [("[]", 1), ("not json", 0), ('{"a": 1}', 0), ("[1, 2]", 0)],
)
def test_a_failing_or_strange_listing_means_a_full_run(raw: str, exit_code: int) -> None:
    _listing(None, raw=raw, exit_code=exit_code)
    assert not prefetch.nothing_to_do(dry_run=True)


def test_no_listing_means_a_full_run() -> None:
    assert not prefetch.nothing_to_do(dry_run=True)


def test_a_missing_command_starts_no_listing() -> None:
    prefetch.start_listing(["/no/such/podman", "ps"])
    assert prefetch.take_listing() is None


def _state(tmp_path: Path) -> Path:
    folder = tmp_path / "state"
    folder.mkdir(exist_ok=True)
    return folder


def test_a_real_run_defers_to_another_run_holding_the_lock(tmp_path: Path) -> None:
    _listing([])
    fd = os.open(_state(tmp_path) / "lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert not prefetch.nothing_to_do(dry_run=False)
        assert prefetch.nothing_to_do(dry_run=True)  # a dry run takes no lock
    finally:
        os.close(fd)


def test_a_real_run_defers_to_an_unfinished_update(tmp_path: Path) -> None:
    state = _state(tmp_path) / "state.json"
    state.write_text(json.dumps({"version": 1, "units": {"a.service": {"phase": "pulling"}}}))
    _listing([])
    assert not prefetch.nothing_to_do(dry_run=False)


def test_an_empty_journal_and_a_free_lock_mean_nothing_to_do(tmp_path: Path) -> None:
    folder = _state(tmp_path)
    (folder / "state.json").write_text(json.dumps({"version": 1, "units": {}}))
    (folder / "lock").write_text("123\n")
    _listing([])
    assert prefetch.nothing_to_do(dry_run=False)


def test_an_unreadable_journal_means_a_full_run(tmp_path: Path) -> None:
    (_state(tmp_path) / "state.json").write_text("{broken")
    _listing([])
    assert not prefetch.nothing_to_do(dry_run=False)


def test_the_listing_reads_both_pipes_to_the_end() -> None:
    # More than a pipe holds, standard error first: reading standard output alone would hang.
    script = (
        "head -c 100000 /dev/zero | tr '\\0' e >&2; head -c 300000 /dev/zero | tr '\\0' x; exit 3"
    )
    prefetch.start_listing(["sh", "-c", script])
    listing = prefetch.take_listing()
    assert listing is not None
    code, out, err = listing.result()
    assert (code, len(out), len(err)) == (3, 300000, 100000)
    assert set(out) == {"x"}
    assert set(err) == {"e"}
    assert listing.containers() is None  # failed: the engine lists again and says why


def test_a_listing_that_hangs_is_killed_after_its_timeout() -> None:
    # `podman ps` blocked on a storage lock: the run must go on (and fail properly) anyway.
    prefetch.start_listing(["sh", "-c", "exec sleep 60"])
    listing = prefetch.take_listing()
    assert listing is not None
    started = time.monotonic()
    code, _out, _err = listing.result(timeout=0.3)
    assert time.monotonic() - started < 5
    assert code == -9
    assert listing.containers() is None  # the engine lists again, with its own timeout


def test_a_hanging_listing_is_no_reason_to_end_early() -> None:
    prefetch.start_listing(["sh", "-c", "exec sleep 60"])
    assert not prefetch.nothing_to_do(dry_run=True, timeout=0.3)


def test_an_unsafe_state_folder_means_a_full_run(tmp_path: Path) -> None:
    # The full run refuses it with an error naming the folder: no silent early end.
    _state(tmp_path).chmod(0o777)
    _listing([])
    assert not prefetch.nothing_to_do(dry_run=False)


def test_a_symlinked_journal_means_a_full_run(tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"version": 1, "units": {}}))
    (_state(tmp_path) / "state.json").symlink_to(empty)
    _listing([])
    assert not prefetch.nothing_to_do(dry_run=False)


def test_a_journal_of_another_version_means_a_full_run(tmp_path: Path) -> None:
    (_state(tmp_path) / "state.json").write_text(json.dumps({"version": 7, "units": {}}))
    _listing([])
    assert not prefetch.nothing_to_do(dry_run=False)
