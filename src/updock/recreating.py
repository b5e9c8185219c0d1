"""The shell's hands for `core.recreate`: each step of a recreate, done with the engine's
`Recreator` methods, journaled by the caller (`actions.ActionHandler`).

A recreated container has no systemd unit: its verification asks `NoUnit` (always "active")
for the unit's state and reads the container's own output for the error.
"""

from __future__ import annotations

import logging
from typing import cast

from updock.core.recreate import (
    CreateFollower,
    CreateNew,
    Prepare,
    PrepareFollower,
    RecreateAction,
    RemoveOld,
    RenameAside,
    Restore,
    StartFollower,
    StartNew,
    StopOld,
    VerifyFollower,
    aside_name,
)
from updock.engines import Recreator
from updock.errors import EngineError, UpdockError

log = logging.getLogger(__name__)


class NoUnit:
    """The service manager of recreated containers: there is no unit to watch, only the
    containers (which `verify.verify_unit` checks)."""

    def restart(self, unit: str) -> None:
        raise EngineError(f"{unit} is no systemd unit: its containers are recreated")

    def active_state(self, unit: str) -> str:
        return "active"

    def job_pending(self, unit: str) -> bool:
        return False

    def describe(self, unit: str) -> str:
        return "(containers recreated by updock, no systemd unit)"

    def close(self) -> None:
        return None


def recreator(engine: object) -> Recreator:
    """`engine` as a `Recreator`.

    Raises:
        EngineError: it cannot recreate containers.
    """
    if not callable(getattr(engine, "prepare_recreate", None)):
        name = getattr(engine, "name", type(engine).__name__)
        raise EngineError(f"the {name} engine cannot recreate containers")
    return cast(Recreator, engine)


def perform(engine: Recreator, action: RecreateAction) -> str | None:
    """Do one step of a recreate (not `SetStep`, which the journal does).

    Returns:
        The new container's ID for `CreateNew`, else None.

    Raises:
        EngineError: the step failed; the message names the container.
    """
    if isinstance(action, Prepare):
        task = action.task
        try:
            engine.prepare_recreate(task.container.id, task.image.reference)
        except EngineError as exc:
            raise EngineError(f"preparing the new container {task.container.name}: {exc}") from exc
    elif isinstance(action, StopOld):
        engine.stop_container(action.old_id)
    elif isinstance(action, RenameAside):
        engine.rename_container(action.old_id, aside_name(action.container, action.old_id))
    elif isinstance(action, CreateNew):
        task = action.task
        return engine.create_container(task.container.id, task.container.name)
    elif isinstance(action, StartNew):
        engine.start_container(action.task.container.name)
    elif isinstance(action, RemoveOld):
        engine.remove_container(action.old_id)
    elif isinstance(action, Restore):
        restore(engine, action.container, action.old_id, rejoin=action.rejoin, joins=action.joins)
    elif isinstance(action, PrepareFollower):
        follower = action.follower
        try:
            engine.prepare_follow(follower.id, action.joins)
        except EngineError as exc:
            raise EngineError(
                f"preparing the new container {follower.name} (in the network namespace of "
                f"{action.joins}): {exc}"
            ) from exc
    elif isinstance(action, CreateFollower):
        return engine.create_container(action.follower.id, action.follower.name)
    elif isinstance(action, StartFollower):
        engine.start_container(action.follower.name)
    else:
        raise TypeError(f"not a recreate step: {action!r}")
    return None


def restore(
    engine: Recreator, name: str, old_id: str, *, rejoin: bool = False, joins: str = ""
) -> None:
    """Put the old container `old_id` back as `name`, running, whatever step was reached.

    Args:
        engine: the container's engine.
        name: its name.
        old_id: the old container's ID.
        rejoin: it joins another container's network namespace: if it runs already, restart
            it, so that it joins the namespace of the container that runs now.
        joins: the container whose network namespace it joins, by name, or "": when it cannot
            start (that container was recreated: the one it joined is gone), it is recreated
            on its own image and configuration, joining the container of that name.

    Raises:
        EngineError: the old container is gone, or cannot be renamed back or started.
    """
    old = engine.find_container(old_id)
    if old is None and joins and engine.find_container(name) is not None:
        # Replaced already by one that joins `joins` (a repair after `_rejoin_by_recreating`):
        # the verification that follows tells whether it runs the old container's image.
        log.info("container %s was recreated to join %s already", name, joins)
        return
    if old is None:
        raise EngineError(
            f"the old container {aside_name(name, old_id)} ({old_id[:12]}) is gone: "
            f"{name} cannot be restored"
        )
    current = engine.find_container(name)
    if current is not None and current[0] != old[0]:
        log.info("removing the new container %s (%s)", name, current[0][:12])
        engine.remove_container(current[0], joiners=True)
    if old[1] != name:
        engine.rename_container(old_id, name)
    if old[2] and rejoin:
        engine.stop_container(old_id)
    if not old[2] or rejoin:
        try:
            engine.start_container(old_id)
        except EngineError as exc:
            if not joins:
                raise
            _rejoin_by_recreating(engine, name, old_id, joins, exc)


def _rejoin_by_recreating(
    engine: Recreator, name: str, old_id: str, joins: str, error: EngineError
) -> None:
    """The old container `old_id` (named `name`, stopped) cannot start: the container whose
    namespace it joined was recreated since. Replace it by a container of its own image and
    configuration that joins `joins` (as a follower is); on a failure, leave it as it was.

    Raises:
        EngineError: that failed too (naming both failures).
    """
    log.warning(
        "container %s cannot start in the network namespace it joined (%s): recreating it on "
        "its own image to join %s",
        name,
        error,
        joins,
    )
    engine.rename_container(old_id, aside_name(name, old_id))
    try:
        # Its image name back on its image (as the rollback does next): created by its name.
        engine.prepare_follow(old_id, joins, retag=True)
        new_id = engine.create_container(old_id, name)
        try:
            engine.start_container(new_id)
        except EngineError:
            engine.remove_container(new_id)
            raise
    except UpdockError as exc:
        engine.rename_container(old_id, name)  # as it was: the old one, stopped
        raise EngineError(f"{error}; and recreating it to join {joins}: {exc}") from exc
    engine.remove_container(old_id)


def followed(action: VerifyFollower) -> str:
    """What happened to a follower, for the log (a container updock changed without an update
    of its own: the user should know)."""
    c = action.follower
    if action.restored:
        return (
            f"container {c.name} shares the network namespace of container {action.joins}, "
            f"which was rolled back: {c.name} was put back and restarted in it"
        )
    return (
        f"container {c.name} shares the network namespace of container {action.joins}, which "
        f"was recreated: {c.name} was recreated on its own image ({c.image_id[:19]}) to join "
        f"the new {action.joins}"
    )
