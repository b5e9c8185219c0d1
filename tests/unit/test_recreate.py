"""Recreating containers (`core.recreate`), and repairing an interrupted recreate
(`core.recovery`), driven with plain functions: every path without any I/O."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest

from updock.core.model import Apply, Container, Phase, Policy, Step, Task
from updock.core.plan import (
    Action,
    Check,
    CheckResult,
    Defer,
    Finish,
    Journal,
    Outcome,
    Pull,
    Retag,
    SetPhase,
    SharedImageState,
    TagImage,
    Verify,
    VerifyImages,
    drive,
    update_unit,
)
from updock.core.recovery import (
    COMPLETED,
    ROLLED_BACK,
    UNDONE,
    Interrupted,
    JournaledContainer,
    recover_unit,
)
from updock.core.recreate import (
    CreateNew,
    JournalFollower,
    Prepare,
    PrepareFollower,
    RemoveOld,
    RenameAside,
    Restore,
    SetStep,
    StartNew,
    StopOld,
    VerifyFollower,
    aside_name,
    recreated_unit,
)
from updock.core.reference import registry_image_name
from updock.errors import EngineError, UpdockError, VerificationError
from updock.errors import Interrupted as Stopped

IMAGE = "quay.io/app/web:latest"
OLD_IMAGE = "0" * 64
NEW_IMAGE = "f" * 64


def make_task(name: str, unit: str | None = None) -> Task:
    container = Container(
        id=(name * 64)[:64], name=name, image_id=OLD_IMAGE, raw_image_name=IMAGE, engine="docker"
    )
    return Task(
        unit=unit or f"container:{name}",
        container=container,
        policy=Policy.REGISTRY,
        image=registry_image_name(IMAGE),
        apply=Apply.RECREATE,
    )


@dataclass
class World:
    """Performs actions from a script: `fail` maps (action kind, container name) to the error
    it answers (once); everything else succeeds. `log` has every action, in order."""

    fail: dict[tuple[str, str], UpdockError] = field(default_factory=dict)
    log: list[tuple[str, ...]] = field(default_factory=list)
    up_to_date: set[str] = field(default_factory=set)  # containers whose check finds nothing

    def __call__(self, action: Action) -> Outcome:
        kind = type(action).__name__
        name = _name(action)
        entry: tuple[str, ...] = (kind, name)
        if isinstance(action, SetStep):
            entry = (kind, name, action.step)
        if isinstance(action, Finish):
            entry = (kind, action.unit, str(action.verified))
        if isinstance(action, Restore) and action.rejoin:
            entry = (kind, name, "rejoin")
        if isinstance(action, VerifyFollower | JournalFollower | PrepareFollower):
            entry = (kind, name, action.joins)
        self.log.append(entry)
        failure = self.fail.pop((kind, name), None)
        if failure is not None:
            return failure
        if isinstance(action, Check):
            return CheckResult(name not in self.up_to_date, "sha256:" + "ab" * 32)
        if isinstance(action, Pull):
            return NEW_IMAGE
        return None

    def kinds(self) -> list[str]:
        return [e[0] for e in self.log]


def _name(action: Action) -> str:
    follower = getattr(action, "follower", None)
    if isinstance(follower, Container):
        return follower.name
    task = getattr(action, "task", None)
    if isinstance(task, Task):
        return task.container.name
    if isinstance(action, Verify):
        return ",".join(t.container.name for t in action.tasks)
    if isinstance(action, VerifyImages):
        return ",".join(n for n, _ in action.images)
    container = getattr(action, "container", None)
    return container if isinstance(container, str) else ""


def run(world: World, *tasks: Task, rollback: bool = True) -> tuple[dict[str, str], list[str]]:
    rows, errors = drive(
        update_unit(
            tasks[0].unit,
            tasks,
            dry_run=False,
            rollback=rollback,
            images_done=SharedImageState(),
        ),
        world,
    )
    return {r.container_name: str(r.updated) for r in rows}, [str(e) for e in errors]


def dance(name: str, create: str = "CreateNew", start: str = "StartNew") -> list[tuple[str, ...]]:
    """The steps of a recreate, each journaled first."""
    return [
        ("SetStep", name, Step.STOPPING),
        ("StopOld", name),
        ("SetStep", name, Step.RENAMING),
        ("RenameAside", name),
        ("SetStep", name, Step.CREATING),
        (create, name),
        ("SetStep", name, Step.STARTING),
        (start, name),
    ]


DANCE = [*dance("web"), ("Verify", "web")]


def test_an_update_pulls_before_it_stops_and_removes_the_old_one_only_once_verified() -> None:
    world = World()
    statuses, errors = run(world, make_task("web"))
    assert (statuses, errors) == ({"web": "true"}, [])
    assert world.log == [
        ("Check", "web"),
        ("Journal", "web"),
        ("Pull", "web"),
        ("Prepare", "web"),
        *DANCE,
        ("SetStep", "web", Step.VERIFIED),
        ("RemoveOld", "web"),
        ("Finish", "container:web", "True"),
    ]


RESTORE = [
    ("SetStep", "web", Step.RESTORING),
    ("Restore", "web"),
    ("VerifyImages", "web"),
]


@pytest.mark.parametrize("failing", ["StopOld", "RenameAside", "CreateNew", "StartNew", "Verify"])
def test_any_failure_after_a_change_restores_the_old_container(failing: str) -> None:
    world = World(fail={(failing, "web"): EngineError(f"{failing} went wrong")})
    statuses, errors = run(world, make_task("web"))
    # A rollback that works is no error, as for units.
    assert (statuses, errors) == ({"web": "rolled back"}, [])
    upto = next(i for i, e in enumerate(DANCE) if e[0] == failing) + 1
    assert world.log[4 : 4 + upto] == DANCE[:upto]
    assert world.log[4 + upto :] == [
        *RESTORE,
        ("Retag", "web"),  # the name back on the previous image, as after a unit's rollback
        ("Finish", "container:web", "False"),
    ]
    assert "RemoveOld" not in world.kinds()


def test_a_configuration_that_cannot_be_built_changes_nothing_and_is_an_error() -> None:
    world = World(fail={("Prepare", "web"): EngineError("cannot recreate: no create command")})
    statuses, errors = run(world, make_task("web"))
    assert statuses == {"web": "failed"}
    assert errors == [
        f'auto-updating container "{make_task("web").container.id}": cannot recreate: no '
        "create command"
    ]
    assert not {"StopOld", "Restore", "RemoveOld"} & set(world.kinds())
    assert world.log[-2:] == [("Retag", "web"), ("Finish", "container:web", "False")]


def test_a_restore_that_fails_reports_both_failures() -> None:
    world = World(
        fail={
            ("Verify", "web"): VerificationError("container web exited with code 1"),
            ("Restore", "web"): EngineError("the old container is gone"),
        }
    )
    statuses, errors = run(world, make_task("web"))
    assert statuses == {"web": "failed"}
    assert len(errors) == 2
    assert errors[0].endswith("container web exited with code 1")
    assert "during rollback: the old container is gone" in errors[1]


def test_without_rollback_the_new_container_stays_and_the_old_one_aside() -> None:
    world = World(fail={("Verify", "web"): VerificationError("unhealthy")})
    statuses, errors = run(world, make_task("web"), rollback=False)
    assert statuses == {"web": "failed"}
    assert errors[0].endswith("unhealthy")
    assert not {"Restore", "RemoveOld", "Retag"} & set(world.kinds())


def test_a_step_that_cannot_be_journaled_is_not_taken() -> None:
    world = World(fail={("SetStep", "web"): UpdockError("disk full")})  # the first: STOPPING
    statuses, errors = run(world, make_task("web"))
    assert "StopOld" not in world.kinds()
    assert "Restore" not in world.kinds()  # nothing was touched
    assert statuses == {"web": "failed"}
    assert errors[0].endswith("disk full")


def test_a_stop_request_before_the_first_change_leaves_everything_untouched() -> None:
    world = World(fail={("Prepare", "web"): Stopped("asked to stop")})
    statuses, errors = run(world, make_task("web"))
    assert statuses == {"web": "failed"}
    assert errors == [f'auto-updating container "{make_task("web").container.id}": not '
                      "recreated: asked to stop"]  # fmt: skip
    assert world.log[-2:] == [("Retag", "web"), ("Finish", "container:web", "False")]
    assert "StopOld" not in world.kinds()


def test_the_containers_of_a_unit_go_one_by_one_and_all_come_back_when_one_fails() -> None:
    one, two = make_task("one", "compose:shop/api"), make_task("two", "compose:shop/api")
    world = World(fail={("Verify", "two"): VerificationError("container two exited")})
    statuses, errors = run(world, one, two)
    assert (statuses, errors) == ({"one": "rolled back", "two": "rolled back"}, [])
    # `one` verified first, and was kept aside until `two` verified too: never removed.
    assert "RemoveOld" not in world.kinds()
    restores = [e[1] for e in world.log if e[0] == "Restore"]
    assert restores == ["two", "one"]
    # Only the first container's Prepare may be interrupted by a stop request.
    prepares = [a for a in world.log if a[0] == "Prepare"]
    assert prepares == [("Prepare", "one"), ("Prepare", "two")]


def test_an_old_container_that_cannot_be_removed_is_an_error_of_an_updated_container() -> None:
    world = World(fail={("RemoveOld", "web"): EngineError("device busy")})
    statuses, errors = run(world, make_task("web"))
    assert statuses == {"web": "true"}
    old = aside_name("web", make_task("web").container.id)
    assert errors == [f"container web was updated; its old container {old} is left: device busy"]


def test_names_of_recreated_units() -> None:
    assert recreated_unit("container:web")
    assert recreated_unit("compose:shop/api")
    assert not recreated_unit("container-web.service")
    assert aside_name("web", "abcdef0123456789" * 4) == "web.updock-old-abcdef012345"


# -- repairs ----------------------------------------------------------------------------------


def entry(
    *steps: Step | None, phase: Phase = Phase.RESTARTING, new: str = NEW_IMAGE
) -> Interrupted:
    names = ["one", "two"][: len(steps)]
    return Interrupted(
        unit="compose:shop/api",
        phase=phase,
        containers=tuple(
            JournaledContainer(n, IMAGE, OLD_IMAGE, new, container_id=(n * 64)[:64], step=s)
            for n, s in zip(names, steps, strict=True)
        ),
        apply=Apply.RECREATE,
    )


@dataclass
class RepairWorld:
    """Answers a repair's actions: `verified` are the (container, image) pairs that verify."""

    verified: set[tuple[str, str]] = field(default_factory=set)
    fail: Mapping[str, UpdockError] = field(default_factory=dict)
    log: list[tuple[str, ...]] = field(default_factory=list)

    def __call__(self, action: Action) -> Outcome:
        kind = type(action).__name__
        if isinstance(action, VerifyImages):
            self.log.append((kind, *(f"{n}@{i[:1]}" for n, i in action.images)))
            ok = all(pair in self.verified for pair in action.images)
            return None if ok else VerificationError("not running")
        if isinstance(action, SetStep | RemoveOld | Restore):
            self.log.append((kind, action.container))
        elif isinstance(action, SetPhase | Defer):
            self.log.append((kind, action.phase))
        elif isinstance(action, TagImage):
            self.log.append((kind, action.image_id[:1]))
        elif isinstance(action, Finish):
            self.log.append((kind, str(action.verified)))
        else:
            raise TypeError(f"a repair yielded {action!r}")
        return self.fail.get(kind)


def test_a_repair_after_every_new_container_verified_removes_the_old_ones() -> None:
    world = RepairWorld()
    assert drive(recover_unit(entry(Step.VERIFIED, Step.STARTING)), world) == COMPLETED
    assert world.log == [
        ("SetStep", "one"),
        ("RemoveOld", "one"),
        ("SetStep", "two"),
        ("RemoveOld", "two"),
        ("Finish", "True"),
    ]


def test_a_repair_keeps_new_containers_that_verify() -> None:
    world = RepairWorld(verified={("one", NEW_IMAGE), ("two", NEW_IMAGE)})
    assert drive(recover_unit(entry(Step.STARTING, Step.STARTING)), world) == COMPLETED
    assert world.log[0] == ("VerifyImages", "one@f", "two@f")
    assert ("RemoveOld", "two") in world.log


@pytest.mark.parametrize(
    "steps",
    [
        (Step.STOPPING,),
        (Step.RENAMING,),
        (Step.CREATING,),
        (Step.STARTING,),  # a new container that does not verify
        (Step.RESTORING,),
        (Step.STARTING, Step.CREATING),
        (Step.STARTING, None),
    ],
)
def test_a_repair_at_any_other_step_restores_every_old_container(
    steps: tuple[Step | None, ...],
) -> None:
    world = RepairWorld(verified={("one", OLD_IMAGE), ("two", OLD_IMAGE)})
    assert drive(recover_unit(entry(*steps)), world) == ROLLED_BACK
    restores = [e[1] for e in world.log if e[0] == "Restore"]
    assert restores == ["two", "one"][-len(steps) :]
    assert ("SetPhase", Phase.ROLLING_BACK) in world.log
    assert world.log.index(("SetPhase", Phase.ROLLING_BACK)) < world.log.index(
        ("Restore", restores[0])
    )
    assert ("TagImage", "0") in world.log  # names back on the previous images
    assert world.log[-1] == ("Finish", "False")
    assert "RemoveOld" not in [e[0] for e in world.log]


def test_a_repair_before_any_change_only_puts_the_names_back() -> None:
    world = RepairWorld(verified={("one", OLD_IMAGE)})
    assert drive(recover_unit(entry(None, phase=Phase.PULLING, new="")), world) == UNDONE
    assert [e[0] for e in world.log] == ["TagImage", "VerifyImages", "Finish"]


def test_a_failed_repair_is_deferred_at_rolling_back() -> None:
    world = RepairWorld(fail={"Restore": EngineError("no such container")})
    outcome = drive(recover_unit(entry(Step.CREATING)), world)
    assert isinstance(outcome, UpdockError)
    assert "no such container" in str(outcome)
    assert world.log[-1] == ("Defer", Phase.ROLLING_BACK)


def test_journal_actions_of_a_recreate_carry_their_unit() -> None:
    task = make_task("web")
    for action in (
        Prepare(task),
        StopOld("container:web", "web", task.container.id),
        RenameAside("container:web", "web", task.container.id),
        CreateNew(task),
        StartNew(task),
        RemoveOld("container:web", "web", task.container.id),
        Restore("container:web", "web", task.container.id),
        Journal(task),
        Retag(task),
    ):
        unit = getattr(action, "unit", None) or action.task.unit  # type: ignore[union-attr]
        assert unit == "container:web"


# -- followers: containers in the network namespace of a recreated one -------------------------


def with_follower(name: str = "web", follower: str = "side") -> Task:
    side = Container(
        id=(follower * 64)[:64],
        name=follower,
        image_id="5" * 64,
        raw_image_name="busybox",
        engine="docker",
        network_of=name,
    )
    return dataclasses.replace(make_task(name), followers=(side,))


FOLLOW = [
    ("PrepareFollower", "side", "web"),
    *dance("side", "CreateFollower", "StartFollower"),
    ("VerifyFollower", "side", "web"),
]

PUT_BACK = [
    ("SetStep", "side", Step.RESTORING),
    ("Restore", "side", "rejoin"),
    ("VerifyFollower", "side", "web"),
]


def test_a_follower_is_journaled_before_anything_changes_and_follows_once_verified() -> None:
    world = World()
    statuses, errors = run(world, with_follower())
    assert (statuses, errors) == ({"web": "true"}, [])
    assert world.log == [
        *world.log[:4],  # checked, journaled, pulled, prepared, as without a follower
        ("JournalFollower", "side", "web"),
        *DANCE,
        *FOLLOW,
        # The old containers go only once the follower verified too; the follower's first
        # (podman removes no container that another joins).
        ("SetStep", "side", Step.VERIFIED),
        ("RemoveOld", "side"),
        ("SetStep", "web", Step.VERIFIED),
        ("RemoveOld", "web"),
        ("Finish", "container:web", "True"),
    ]


def test_a_rolled_back_container_takes_its_followers_back_into_its_namespace() -> None:
    """The follower was never touched, but its namespace went with the old container's stop:
    it is restarted (`rejoin`) once the old container runs again."""
    world = World(fail={("Verify", "web"): VerificationError("container web exited")})
    statuses, errors = run(world, with_follower())
    assert (statuses, errors) == ({"web": "rolled back"}, [])
    assert world.log[5 : 5 + len(DANCE)] == DANCE
    restored = world.log[5 + len(DANCE) :]
    assert restored == [*RESTORE, *PUT_BACK, ("Retag", "web"), ("Finish", "container:web", "False")]
    assert "PrepareFollower" not in world.kinds()


@pytest.mark.parametrize(
    "failing", ["PrepareFollower", "StopOld", "CreateFollower", "StartFollower", "VerifyFollower"]
)
def test_a_follower_that_cannot_follow_rolls_the_unit_back_old_container_first(
    failing: str,
) -> None:
    world = World(fail={(failing, "side"): EngineError(f"{failing} went wrong")})
    statuses, errors = run(world, with_follower())
    assert statuses == {"web": "rolled back"}
    task = make_task("web")
    assert errors == [
        f'auto-updating container "{task.container.id}": container side, which shares the '
        f"network namespace of container web, could not join its new container: {failing} "
        "went wrong"
    ]
    after = world.log[world.log.index(("Verify", "web")) + 1 :]
    upto = next(i for i, e in enumerate(FOLLOW) if e[0] == failing) + 1
    assert after[:upto] == FOLLOW[:upto]
    # web's old container runs again before side's is put back into its namespace.
    assert after[upto:] == [
        *RESTORE,
        *PUT_BACK,
        ("Retag", "web"),
        ("Finish", "container:web", "False"),
    ]
    assert "RemoveOld" not in world.kinds()


def test_followers_are_untouched_when_nothing_changed_or_without_rollback() -> None:
    world = World(fail={("Prepare", "web"): EngineError("cannot recreate")})
    statuses, _ = run(world, with_follower())
    assert statuses == {"web": "failed"}
    assert not {"JournalFollower", "StopOld", "Restore"} & set(world.kinds())
    world = World(fail={("Verify", "web"): VerificationError("unhealthy")})
    statuses, _ = run(world, with_follower(), rollback=False)
    assert statuses == {"web": "failed"}
    assert not {"PrepareFollower", "Restore"} & set(world.kinds())


def test_a_dry_run_touches_no_follower() -> None:
    world = World()
    task = with_follower()
    rows, errors = drive(
        update_unit(task.unit, [task], dry_run=True, rollback=True, images_done=SharedImageState()),
        world,
    )
    assert ([str(r.updated) for r in rows], errors) == (["pending"], [])
    assert world.kinds() == ["Check"]


@pytest.mark.parametrize(
    ("up_to_date", "check_fails", "follows"),
    [(True, False, True), (False, True, True), (False, False, False)],
)
def test_a_follower_with_its_own_task_follows_unless_it_has_an_update(
    up_to_date: bool, check_fails: bool, follows: bool
) -> None:
    """A labelled container in the namespace: checked before anything changes; with an update
    of its own, its own unit recreates it (later), else it follows as any other."""
    own = dataclasses.replace(make_task("side"), container=with_follower().followers[0])
    task = dataclasses.replace(make_task("web"), follower_tasks=(own,))
    world = World(
        up_to_date={"side"} if up_to_date else set(),
        fail={("Check", "side"): EngineError("registry down")} if check_fails else {},
    )
    statuses, errors = run(world, task)
    assert (statuses, errors) == ({"web": "true"}, [])
    assert world.log[: world.log.index(("Prepare", "web")) + 1] == [
        ("Check", "web"),
        ("Journal", "web"),
        ("Pull", "web"),
        ("Check", "side"),
        ("Prepare", "web"),
    ]
    assert (("JournalFollower", "side", "web") in world.log) is follows
    assert (("StartFollower", "side") in world.log) is follows


def follower_entry(*steps: Step | None) -> Interrupted:
    """A journaled unit `web` and its follower `side` (which joins web's namespace)."""
    web, side = steps
    return Interrupted(
        unit="container:web",
        phase=Phase.RESTARTING,
        containers=(
            JournaledContainer("web", IMAGE, OLD_IMAGE, NEW_IMAGE, ("w" * 64), step=web),
            JournaledContainer(
                "side", "busybox", "5" * 64, "5" * 64, ("s" * 64), step=side, follows="web"
            ),
        ),
        apply=Apply.RECREATE,
    )


@pytest.mark.parametrize(
    "steps",
    [
        (Step.STOPPING, None),
        (Step.STARTING, None),  # web's new container verified, side not moved yet
        (Step.STARTING, Step.CREATING),
        (Step.RESTORING, Step.RESTORING),
    ],
)
def test_a_repair_puts_the_old_container_back_then_its_followers(
    steps: tuple[Step | None, Step | None],
) -> None:
    world = RepairWorld(verified={("web", OLD_IMAGE), ("side", "5" * 64)})
    assert drive(recover_unit(follower_entry(*steps)), world) == ROLLED_BACK
    restores = [e[1] for e in world.log if e[0] == "Restore"]
    assert restores == ["web", "side"]
    assert [e for e in world.log if e[0] == "TagImage"] == [("TagImage", "0")]  # web's only


def test_a_repair_completes_an_update_whose_follower_verified_too() -> None:
    world = RepairWorld(verified={("web", NEW_IMAGE), ("side", "5" * 64)})
    outcome = drive(recover_unit(follower_entry(Step.STARTING, Step.STARTING)), world)
    assert outcome == COMPLETED
    assert [e for e in world.log if e[0] == "RemoveOld"] == [
        ("RemoveOld", "web"),
        ("RemoveOld", "side"),
    ]


def test_a_container_in_anothers_namespace_is_restored_knowing_which() -> None:
    """Its old container may not start once the other was recreated: the restore is told the
    other's name (`Restore.joins`), in a run and in a repair."""
    task = make_task("app")
    task = dataclasses.replace(
        task, container=dataclasses.replace(task.container, network_of="vpn")
    )
    seen: list[Restore] = []

    def world(action: Action) -> Outcome:
        if isinstance(action, Restore):
            seen.append(action)
        if isinstance(action, Verify):
            return VerificationError("app exited")
        return World()(action)

    drive(
        update_unit(
            task.unit, [task], dry_run=False, rollback=True, images_done=SharedImageState()
        ),
        world,
    )
    assert [(r.container, r.joins, r.rejoin) for r in seen] == [("app", "vpn", False)]

    journaled = dataclasses.replace(entry(Step.STARTING).containers[0], network_of="vpn")
    repair = dataclasses.replace(entry(Step.STARTING), containers=(journaled,))
    repair_world = RepairWorld(verified={("one", OLD_IMAGE)})
    seen.clear()

    def repairing(action: Action) -> Outcome:
        if isinstance(action, Restore):
            seen.append(action)
        return repair_world(action)

    assert drive(recover_unit(repair), repairing) == ROLLED_BACK
    assert [(r.container, r.joins, r.rejoin) for r in seen] == [("one", "vpn", False)]
