"""Crash recovery (`core.recovery.recover_unit`) driven with plain functions, for every phase."""

from __future__ import annotations

import itertools
from collections.abc import Collection, Sequence

import pytest

from updock.core.model import Container, Phase, Policy, Status, Task
from updock.core.plan import (
    Action,
    Defer,
    Finish,
    Outcome,
    Restart,
    SetPhase,
    TagImage,
    VerifyImages,
    drive,
)
from updock.core.recovery import (
    COMPLETED,
    ROLLED_BACK,
    UNDONE,
    Interrupted,
    JournaledContainer,
    pending_repair_rows,
    recover_unit,
)
from updock.core.reference import parse_reference, registry_image_name
from updock.errors import ConfigError, EngineError, ServiceError, UpdockError, VerificationError

UNIT = "web.service"
OLD_A, NEW_A, OLD_B, NEW_B = "a1" * 32, "a2" * 32, "b1" * 32, "b2" * 32
PREVIOUS = (("web", OLD_A), ("side", OLD_B))
NEW = (("web", NEW_A), ("side", NEW_B))


def entry(phase: Phase, *, new_known: bool = True, attempts: int = 0) -> Interrupted:
    return Interrupted(
        UNIT,
        phase,
        (
            JournaledContainer("web", "reg.example/web:1", OLD_A, NEW_A if new_known else ""),
            JournaledContainer("side", "reg.example/side:1", OLD_B, NEW_B),
        ),
        attempts=attempts,
    )


def short(action: Action) -> tuple[str, ...]:
    """An action as a short tuple, for readable expectations."""
    if isinstance(action, VerifyImages):
        return ("verify", "new" if action.images == NEW else "previous")
    if isinstance(action, TagImage):
        return ("tag", str(action.name), "previous" if action.image_id in (OLD_A, OLD_B) else "new")
    if isinstance(action, SetPhase):
        return ("phase", str(action.phase))
    if isinstance(action, Restart):
        return ("restart",)
    if isinstance(action, Finish):
        return ("finish", "verified" if action.verified else "not verified")
    if isinstance(action, Defer):
        return ("defer", str(action.phase))
    raise AssertionError(f"a repair yielded {action!r}")


class World:
    """Fails the actions whose short form (or its first word) is in `failing`; logs them all."""

    def __init__(self, failing: Collection[tuple[str, ...]] = ()) -> None:
        self.failing = failing
        self.log: list[tuple[str, ...]] = []
        self.deferred: list[Defer] = []

    def __call__(self, action: Action) -> Outcome:
        seen = short(action)
        self.log.append(seen)
        if isinstance(action, Defer):
            self.deferred.append(action)
        if seen in self.failing or seen[:1] in self.failing:
            return _FAILURES[seen[0]]
        return None


_FAILURES: dict[str, UpdockError] = {
    "verify": VerificationError(f"verifying unit {UNIT} failed: container web exited with code 1"),
    "tag": EngineError("podman tag: image not known"),
    "restart": ServiceError(f'restarting systemd unit "{UNIT}" failed: "failed"'),
    "phase": ConfigError("cannot write updock's state file: disk full"),
    "defer": ConfigError("cannot write updock's state file: disk full"),
    "finish": ConfigError("cannot write updock's state file: disk full"),
}

TAGS_BACK = [("tag", "reg.example/web:1", "previous"), ("tag", "reg.example/side:1", "previous")]
ROLLBACK = [("phase", "rolling back"), *TAGS_BACK, ("restart",), ("verify", "previous")]


def repair(
    phase: Phase, *failing: tuple[str, ...], **kwargs: bool
) -> tuple[str | UpdockError, World]:
    world = World(failing)
    return drive(recover_unit(entry(phase, **kwargs)), world), world


# -- pulling: the unit was never restarted ------------------------------------------------------


def test_pulling_running_fine_on_the_previous_images_is_undone_without_a_restart() -> None:
    result, world = repair(Phase.PULLING)
    assert result == UNDONE
    assert world.log == [*TAGS_BACK, ("verify", "previous"), ("finish", "not verified")]


def test_pulling_not_running_as_it_should_is_restarted_on_the_previous_images() -> None:
    world = World()
    failed_once = iter([True])

    def handler(action: Action) -> Outcome:
        outcome = world(action)
        if isinstance(action, VerifyImages) and next(failed_once, False):
            return _FAILURES["verify"]
        return outcome

    result = drive(recover_unit(entry(Phase.PULLING)), handler)
    assert result == ROLLED_BACK
    assert world.log == [
        *TAGS_BACK,
        ("verify", "previous"),
        ("phase", "rolling back"),
        ("restart",),
        ("verify", "previous"),
        ("finish", "not verified"),
    ]


def test_pulling_whose_restart_fails_is_deferred_as_a_rollback() -> None:
    result, world = repair(Phase.PULLING, ("verify",), ("restart",))
    assert isinstance(result, ServiceError)  # the class of what failed: its exit status
    assert world.log[-2:] == [("restart",), ("defer", "rolling back")]
    assert world.deferred[0].error == str(_FAILURES["restart"])


def test_pulling_whose_retag_fails_is_deferred_untouched() -> None:
    result, world = repair(Phase.PULLING, ("tag",))
    assert isinstance(result, EngineError)
    assert world.log == [TAGS_BACK[0], ("defer", "pulling")]
    assert "tagging reg.example/web:1 on image a1a1a1a1a1a1" in str(result)


# -- restarting: the unit was restarted on the new images ---------------------------------------


def test_restarting_that_verifies_on_the_new_images_is_completed() -> None:
    result, world = repair(Phase.RESTARTING)
    assert result == COMPLETED
    assert world.log == [("verify", "new"), ("finish", "verified")]


def test_restarting_that_fails_verification_is_rolled_back() -> None:
    world = World()

    def handler(action: Action) -> Outcome:
        world(action)
        if isinstance(action, VerifyImages) and action.images == NEW:
            return _FAILURES["verify"]
        return None

    result = drive(recover_unit(entry(Phase.RESTARTING)), handler)
    assert result == ROLLED_BACK
    assert world.log == [("verify", "new"), *ROLLBACK, ("finish", "not verified")]


def test_restarting_before_every_new_image_was_known_is_rolled_back_at_once() -> None:
    result, world = repair(Phase.RESTARTING, new_known=False)
    assert result == ROLLED_BACK
    assert world.log == [*ROLLBACK, ("finish", "not verified")]


@pytest.mark.parametrize("failing", [("tag",), ("restart",), ("verify", "previous")])
def test_restarting_whose_rollback_fails_is_deferred_as_a_rollback(
    failing: tuple[str, ...],
) -> None:
    result, world = repair(Phase.RESTARTING, ("verify", "new"), failing)
    assert isinstance(result, type(_FAILURES[failing[0]]))
    assert world.log[-1] == ("defer", "rolling back")
    assert ("finish", "verified") not in world.log
    assert ("finish", "not verified") not in world.log


def test_restarting_whose_phase_cannot_be_journaled_changes_nothing() -> None:
    result, world = repair(Phase.RESTARTING, ("verify",), ("phase",))
    assert isinstance(result, ConfigError)
    assert world.log == [("verify", "new"), ("phase", "rolling back"), ("defer", "restarting")]


# -- rolling back: a rollback was under way -----------------------------------------------------


def test_rolling_back_is_done_again() -> None:
    result, world = repair(Phase.ROLLING_BACK)
    assert result == ROLLED_BACK
    assert world.log == [
        *TAGS_BACK,
        ("restart",),
        ("verify", "previous"),
        ("finish", "not verified"),
    ]


@pytest.mark.parametrize(
    ("failing", "last"),
    [(("tag",), ("tag", "reg.example/web:1", "previous")), (("restart",), ("restart",)),
     (("verify",), ("verify", "previous"))],
)  # fmt: skip
def test_rolling_back_that_fails_again_is_deferred(
    failing: tuple[str], last: tuple[str, ...]
) -> None:
    result, world = repair(Phase.ROLLING_BACK, failing)
    assert isinstance(result, UpdockError)
    assert world.log[-2:] == [last, ("defer", "rolling back")]


# -- the error of a failed repair ---------------------------------------------------------------


def test_a_failed_repair_names_the_unit_the_attempt_and_what_was_seen() -> None:
    world = World([("verify",)])
    result = drive(recover_unit(entry(Phase.ROLLING_BACK, attempts=2)), world)
    assert isinstance(result, VerificationError)
    message = str(result)
    assert message.startswith(f"repairing the interrupted update of unit {UNIT} failed (attempt 3;")
    assert "not updated until it succeeds" in message
    assert message.endswith("container web exited with code 1")
    assert world.deferred == [Defer(UNIT, Phase.ROLLING_BACK, str(_FAILURES["verify"]))]


def test_a_repair_whose_attempt_cannot_be_recorded_says_both() -> None:
    result, _ = repair(Phase.ROLLING_BACK, ("restart",), ("defer",))
    assert isinstance(result, UpdockError)
    assert str(_FAILURES["restart"]) in str(result)
    assert str(result).endswith("and recording the attempt failed: " + str(_FAILURES["defer"]))


# -- every combination of outcomes --------------------------------------------------------------


@pytest.mark.parametrize("phase", list(Phase))
@pytest.mark.parametrize("new_known", [True, False])
def test_every_repair_ends_once_and_never_trusts_an_unverified_image(
    phase: Phase, new_known: bool
) -> None:
    for fails in itertools.product([False, True], repeat=9):
        log, result = _scripted(entry(phase, new_known=new_known), fails)
        actions = [a for a, _ in log]
        assert [a for a in actions if isinstance(a, Finish | Defer)] == actions[-1:], log
        assert isinstance(result, UpdockError) == isinstance(actions[-1], Defer)
        journaled = phase
        for i, (action, failed) in enumerate(log):
            if isinstance(action, SetPhase) and not failed:
                journaled = action.phase
            if isinstance(action, Restart):
                # A restart only ever goes back to the previous images, journaled as a rollback.
                assert journaled is Phase.ROLLING_BACK, log
            if isinstance(action, VerifyImages) and action.images == NEW:
                assert i == 0, log  # the new images are only verified as the crash left them
            if isinstance(action, Finish) and action.verified:
                assert log[i - 1] == (VerifyImages(UNIT, NEW), False), log
            if isinstance(action, Defer):
                assert action.phase is journaled, log  # the next run starts where this stopped
        if isinstance(actions[-1], Finish) and not actions[-1].verified:
            # Undone or rolled back: the names went back first, and the unit verified on them.
            assert [a for a in actions if isinstance(a, TagImage)] == [
                TagImage(OLD_A, parse_reference("reg.example/web:1")),
                TagImage(OLD_B, parse_reference("reg.example/side:1")),
            ]
            assert log[-2] == (VerifyImages(UNIT, PREVIOUS), False)


def _scripted(
    interrupted: Interrupted, fails: Sequence[bool]
) -> tuple[list[tuple[Action, bool]], str | UpdockError]:
    """Drive the repair; the n-th action fails when `fails[n]` is true. Returns each action and
    whether it failed, and the result."""
    outcomes = iter(fails)
    log: list[tuple[Action, bool]] = []

    def handler(action: Action) -> Outcome:
        failed = next(outcomes, False)
        log.append((action, failed))
        return _FAILURES[short(action)[0]] if failed else None

    return log, drive(recover_unit(interrupted), handler)


def test_a_unit_whose_repair_is_pending_is_reported_failed() -> None:
    tasks = [
        Task(UNIT, Container(c * 64, name, "0" * 64, f"reg.example/{name}:1"), Policy.REGISTRY,
             registry_image_name(f"reg.example/{name}:1"))
        for c, name in (("1", "web"), ("2", "side"))
    ]  # fmt: skip
    rows = pending_repair_rows(UNIT, tasks)
    assert [(r.unit, r.container_name, r.updated) for r in rows] == [
        (UNIT, "web", Status.FAILED),
        (UNIT, "side", Status.FAILED),
    ]
