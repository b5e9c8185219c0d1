"""The run's record (`updock.record`): what each container went through, collected from the
actions a plan performs, also from the threads of a wave."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from tests.unit.test_waves import DIGEST, IMAGE, NEW, OLD, task
from updock.core.model import Image, Policy, ReportRow, Status
from updock.core.plan import (
    Action,
    Begin,
    Check,
    CheckResult,
    Finish,
    Journal,
    Outcome,
    Pull,
    Restart,
    Retag,
    SetPhase,
    SharedImageState,
    Tag,
    Together,
    Verify,
    drive,
)
from updock.core.waves import update_group
from updock.errors import EngineError, RegistryError, UpdockError, VerificationError
from updock.record import RunRecord, RunRecorder, short_digest

OLD_DIGEST = "sha256:" + "01" * 32


@dataclass
class Host:
    """Performs actions as scripted; `Together` drives each plan in a thread of its own,
    through the recorder (as the run's `ActionHandler` does with its `wrap`)."""

    recorder: RunRecorder
    verify_fails: dict[str, int] = field(default_factory=dict)  # unit -> failing verifications
    check_fails: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, action: Action) -> Outcome:
        if isinstance(action, Together):
            with ThreadPoolExecutor(max_workers=len(action.plans)) as pool:
                return tuple(pool.map(lambda p: drive(p, self.recorder.watch(self)), action.plans))
        if isinstance(action, Check):
            if action.task.container.name in self.check_fails:
                raise RegistryError(f"checking {IMAGE}: registry quay.io answered 503")
            return CheckResult(True, DIGEST)
        if isinstance(action, Pull):
            return NEW
        if isinstance(action, Verify):
            with self.lock:
                left = self.verify_fails.get(action.unit, 0)
                self.verify_fails[action.unit] = left - 1
            if left > 0:
                return VerificationError(f"verifying unit {action.unit} failed: it died")
            return None
        if isinstance(action, Begin | Journal | Restart | Retag | Tag | SetPhase | Finish):
            return None
        raise TypeError(f"unexpected {action!r}")


def record(
    names: str,
    *,
    verify_fails: dict[str, int] | None = None,
    check_fails: Sequence[str] = (),
    dry_run: bool = False,
) -> RunRecord:
    recorder = RunRecorder(dry_run=dry_run)
    recorder.know_images({OLD: Image(OLD, digests=(OLD_DIGEST,))})
    host = Host(recorder, verify_fails=dict(verify_fails or {}), check_fails=set(check_fails))
    units = {f"{n}.service": [task(n)] for n in names}
    rows, errors = drive(
        update_group(units, dry_run=dry_run, rollback=True, images_done=SharedImageState()),
        recorder.watch(host),
    )
    rows.sort(key=ReportRow.sort_key)
    return recorder.finish(rows, [t for ts in units.values() for t in ts], errors)


def by_name(rec: RunRecord) -> dict[str, dict[str, object]]:
    return {t.container: t.as_dict() for t in rec.tasks}


def test_a_canary_and_its_wave_each_say_what_they_moved_between_and_how_it_ended() -> None:
    # a is the canary (checks and pulls); b and c follow in a wave, c fails to verify.
    rec = record("abc", verify_fails={"c.service": 1})
    seen = by_name(rec)
    assert {n: t["status"] for n, t in seen.items()} == {
        "a": "true",
        "b": "true",
        "c": "rolled back",
    }
    for name in "abc":
        assert seen[name]["old_digest"] == OLD_DIGEST
        assert seen[name]["old_image"] == OLD
        # b and c were not checked themselves: the canary's check found what they moved to.
        assert seen[name]["new_digest"] == DIGEST
        assert seen[name]["new_image"] == NEW
        assert seen[name]["update_available"] is True
        assert seen[name]["engine"] == "podman"
        assert seen[name]["image"] == IMAGE
    assert seen["c"]["error"] == "verifying unit c.service failed: it died"
    assert seen["a"]["error"] == seen["b"]["error"] == ""
    assert (rec.count(Status.UPDATED), rec.count(Status.ROLLED_BACK)) == (2, 1)


def test_a_failed_rollback_adds_what_it_saw_to_the_update_failure() -> None:
    rec = record("a", verify_fails={"a.service": 2})
    (only,) = rec.tasks
    assert only.status is Status.FAILED
    assert only.error == (
        "verifying unit a.service failed: it died\n"
        "during rollback: verifying unit a.service failed: it died"
    )


def test_a_failed_check_is_the_error_and_nothing_was_offered() -> None:
    rec = record("ab", check_fails=["a"])
    seen = by_name(rec)
    assert seen["a"]["status"] == "failed"
    assert seen["a"]["error"] == f"checking {IMAGE}: registry quay.io answered 503"
    assert seen["a"]["new_digest"] == ""
    assert seen["b"]["status"] == "true"
    assert len(rec.errors) == 1
    assert "answered 503" in rec.errors[0]


def test_a_dry_run_records_the_update_available_and_changes_nothing() -> None:
    rec = record("a", dry_run=True)
    (only,) = rec.tasks
    assert (only.status, only.update_available, only.new_digest, only.new_image) == (
        Status.PENDING,
        True,
        DIGEST,
        "",
    )
    assert rec.dry_run is True


def test_errors_are_kept_only_for_failures_and_rollbacks() -> None:
    rec = record("a")
    assert rec.tasks[0].error == ""
    assert isinstance(rec.tasks[0].duration, float)


def test_short_digests() -> None:
    assert short_digest(DIGEST) == "sha256:abababababab"
    assert short_digest(NEW) == "ffffffffffff"
    assert short_digest("") == ""


def test_an_error_of_the_run_names_the_container_it_belongs_to() -> None:
    recorder = RunRecorder()
    t = task("a")
    row = ReportRow("a.service", t.container.id, "a", IMAGE, Policy.REGISTRY, Status.FAILED)
    errors: list[UpdockError] = [
        UpdockError("unit other.service: could not be repaired"),
        UpdockError("unit a.service: repair pending (attempt 2)"),
    ]
    rec = recorder.finish([row], [t], errors)
    assert rec.tasks[0].error == "unit a.service: repair pending (attempt 2)"


def recreate_record(fail: dict[tuple[str, str], UpdockError]) -> RunRecord:
    """A Docker container's update, recreated (`core.recreate`), through the recorder."""
    from tests.unit.test_recreate import OLD_IMAGE, World, make_task

    recorder = RunRecorder(engine="podman,docker")
    recorder.know_images({OLD_IMAGE: Image(OLD_IMAGE, digests=(OLD_DIGEST,))})
    t = make_task("web")
    plan = update_group({t.unit: [t]}, dry_run=False, rollback=True, images_done=SharedImageState())
    rows, errors = drive(plan, recorder.watch(World(fail=dict(fail))))
    return recorder.finish(rows, [t], errors)


@pytest.mark.parametrize("failing", ["StopOld", "RenameAside", "CreateNew", "StartNew", "Verify"])
def test_a_recreated_container_rolled_back_says_what_was_seen(failing: str) -> None:
    rec = recreate_record({(failing, "web"): EngineError(f"{failing}: it went wrong")})
    (only,) = rec.tasks
    assert (only.unit, only.engine, only.status) == ("container:web", "docker", Status.ROLLED_BACK)
    assert only.error == f"{failing}: it went wrong"
    assert (only.old_digest, only.new_image) == (OLD_DIGEST, "f" * 64)
    assert rec.engine == "podman,docker"


def test_a_recreated_container_that_could_not_be_put_back_says_both() -> None:
    rec = recreate_record(
        {
            ("StartNew", "web"): EngineError("exec: /bin/app: not found"),
            ("Restore", "web"): EngineError("the old container is gone"),
        }
    )
    (only,) = rec.tasks
    assert only.status is Status.FAILED
    assert only.error == ("exec: /bin/app: not found\nduring rollback: the old container is gone")


def test_a_recreated_container_updated_has_no_error() -> None:
    (only,) = recreate_record({}).tasks
    assert (only.status, only.engine, only.error) == (Status.UPDATED, "docker", "")


def test_images_and_registry_counts_of_each_engine_add_up() -> None:
    recorder = RunRecorder()
    recorder.know_images({OLD: Image(OLD, digests=(OLD_DIGEST,))})
    recorder.know_images({NEW: Image(NEW)})
    recorder.count_requests(lambda: ({"quay.io": 2}, {"quay.io": 1}))
    recorder.count_requests(lambda: ({"quay.io": 1, "127.0.0.1:5000": 3}, {}))
    t = task("a")
    row = ReportRow("a.service", t.container.id, "a", IMAGE, Policy.REGISTRY, Status.NOT_UPDATED)
    rec = recorder.finish([row], [t], [])
    assert rec.tasks[0].old_digest == OLD_DIGEST  # the first engine's images are still known
    assert rec.registry_requests == {"quay.io": 3, "127.0.0.1:5000": 3}
    assert rec.registry_errors == {"quay.io": 1}
    assert (rec.engine, rec.tasks[0].engine) == ("podman", "podman")
