"""`updock rollback UNIT` as a plan (`core.plan.rollback_unit`), and the holds it leaves."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from updock.actions import HoldBook
from updock.core.model import Container, Policy, ReportRow, Status, Task
from updock.core.plan import (
    Action,
    Finish,
    HoldBack,
    Journal,
    Outcome,
    Restart,
    Retag,
    Tag,
    Verify,
    drive,
    rollback_unit,
)
from updock.core.reference import registry_image_name
from updock.errors import ConfigError, ServiceError
from updock.state import Hold, StateStore

UNIT = "container-web.service"
IMAGE = "reg.example/web:latest"
BAD, GOOD = "b" * 64, "9" * 64


def task(name: str = "web") -> Task:
    container = Container((name[0] * 64), name, BAD, IMAGE)
    return Task(UNIT, container, Policy.REGISTRY, registry_image_name(IMAGE))


def short(action: Action) -> tuple[str, ...]:
    if isinstance(action, Journal):
        return ("journal", action.task.container.name, str(action.target))
    if isinstance(action, HoldBack):
        return ("hold", action.task.image.raw, action.image_id)
    if isinstance(action, Tag):
        return ("tag", action.task.container.name, action.image_id)
    if isinstance(action, Retag):
        return ("retag", action.task.container.name)
    if isinstance(action, Restart):
        return ("restart",)
    if isinstance(action, Verify):
        return ("verify",)
    if isinstance(action, Finish):
        return ("finish", str(action.verified), str(len(action.tasks)))
    raise AssertionError(f"a rollback yielded {action!r}")


def roll_back(
    *failing: str, tasks: Collection[Task] = ()
) -> tuple[list[ReportRow], list[str], list[tuple[str, ...]]]:
    tasks = list(tasks) or [task()]
    log: list[tuple[str, ...]] = []
    failures = list(failing)

    def handler(action: Action) -> Outcome:
        seen = short(action)
        log.append(seen)
        if failures and failures[0] == seen[0]:
            failures.pop(0)
            return ServiceError(f"{seen[0]} failed") if seen[0] != "hold" else ConfigError("full")
        return None

    previous = {t.container.id: GOOD for t in tasks}
    rows, errors = drive(rollback_unit(UNIT, tasks, previous), handler)
    return rows, [str(e) for e in errors], log


def test_a_rollback_journals_its_target_and_holds_the_name_before_anything_changes() -> None:
    rows, errors, log = roll_back()
    assert log == [
        ("journal", "web", GOOD),  # the kept previous image is the target: it stays kept
        ("hold", IMAGE, BAD),
        ("tag", "web", GOOD),
        ("restart",),
        ("verify",),
        ("finish", "True", "1"),
    ]
    assert [r.updated for r in rows] == [Status.ROLLED_BACK]
    assert errors == []


def test_a_hold_that_cannot_be_recorded_changes_nothing() -> None:
    rows, errors, log = roll_back("hold")
    assert log == [("journal", "web", GOOD), ("hold", IMAGE, BAD), ("finish", "False", "0")]
    assert [r.updated for r in rows] == [Status.FAILED]
    assert errors == [f'rolling back container "{"w" * 64}": full']


def test_a_rollback_that_fails_goes_back_to_the_current_images() -> None:
    rows, errors, log = roll_back("verify")
    assert log[-5:] == [
        ("verify",),
        ("retag", "web"),
        ("restart",),
        ("verify",),
        ("finish", "False", "1"),
    ]
    assert [r.updated for r in rows] == [Status.FAILED]
    assert len(errors) == 1


def _book(tmp_path: Path) -> tuple[StateStore, HoldBook]:
    store = StateStore(tmp_path / "state")
    return store, HoldBook(store, store.load_holds())


def test_holds_are_saved_merged_per_unit_and_cover_the_bad_image(tmp_path: Path) -> None:
    store, book = _book(tmp_path)
    book.hold(IMAGE, BAD, ["sha256:bad"], UNIT)
    book.hold(IMAGE, BAD, ["sha256:bad"], "container-api.service")
    book.hold(IMAGE, BAD, ["sha256:bad"], UNIT)
    (hold,) = store.load_holds().values()
    assert (hold.name, hold.image_id, hold.digests) == (IMAGE, BAD, ("sha256:bad",))
    assert hold.units == (UNIT, "container-api.service")
    assert hold.covers(digest="sha256:bad")
    assert hold.covers(image_id=BAD)
    assert not hold.covers(digest="sha256:newer")
    assert not hold.covers(image_id=GOOD)
    assert not hold.covers()


def test_a_hold_ends_when_its_name_is_updated_and_only_then(tmp_path: Path) -> None:
    store, book = _book(tmp_path)
    book.hold(IMAGE, BAD, ["sha256:bad"], UNIT)
    book.hold("reg.example/other:1", BAD, [], UNIT)

    def row(image: str, status: Status) -> ReportRow:
        return ReportRow(UNIT, "c" * 64, "web", image, Policy.REGISTRY, status)

    for status in (Status.NOT_UPDATED, Status.ROLLED_BACK, Status.FAILED, Status.PENDING):
        book.release_updated([row(IMAGE, status)])
        assert set(store.load_holds()) == {IMAGE, "reg.example/other:1"}
    book.release_updated([row(IMAGE, Status.UPDATED)])
    assert set(store.load_holds()) == {"reg.example/other:1"}
    assert book.get(IMAGE) is None
    assert isinstance(book.get("reg.example/other:1"), Hold)
