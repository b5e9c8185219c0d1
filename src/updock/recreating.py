"""The shell's hands for `core.recreate`: each step of a recreate, done with the engine's
`Recreator` methods, journaled by the caller (`actions.ActionHandler`).

A recreated container has no systemd unit: its verification asks `NoUnit` (always "active")
for the unit's state and reads the container's own output for the error.
"""

from __future__ import annotations

import logging
from typing import cast

from updock.core.recreate import (
    CreateNew,
    Prepare,
    RecreateAction,
    RemoveOld,
    RenameAside,
    Restore,
    StartNew,
    StopOld,
    aside_name,
)
from updock.engines import Recreator
from updock.errors import EngineError

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
        restore(engine, action.container, action.old_id)
    else:
        raise TypeError(f"not a recreate step: {action!r}")
    return None


def restore(engine: Recreator, name: str, old_id: str) -> None:
    """Put the old container `old_id` back as `name`, running, whatever step was reached.

    Raises:
        EngineError: the old container is gone, or cannot be renamed back or started.
    """
    old = engine.find_container(old_id)
    if old is None:
        raise EngineError(
            f"the old container {aside_name(name, old_id)} ({old_id[:12]}) is gone: "
            f"{name} cannot be restored"
        )
    current = engine.find_container(name)
    if current is not None and current[0] != old[0]:
        log.info("removing the new container %s (%s)", name, current[0][:12])
        engine.remove_container(current[0])
    if old[1] != name:
        engine.rename_container(old_id, name)
    if not old[2]:
        engine.start_container(old_id)
