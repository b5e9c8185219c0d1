"""Verification of a unit after a restart: the check podman does not make.

systemd's restart job ends `done` as soon as the container has started; a container that dies a
second later, or never becomes healthy, still counts as a success for podman. updock counts an
update as done only when, within a window, the unit is active, every container of the update is
running on the image now tagged under its name, stays running (same container) for the settle
time, and passes its health check when it has one. A check that podman itself already saw pass
in the new container (its state says `healthy`) is not run again: with `--sdnotify=healthy`
(Quadlet's `Notify=healthy`), systemd's restart job waited for exactly that.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NoReturn, Protocol

from updock import defaults
from updock.core.model import LABEL_SETTLE, LABEL_VERIFY_TIMEOUT, ContainerState, label_seconds
from updock.engines import Engine
from updock.errors import EngineError, UpdockError, VerificationError
from updock.systemd import ServiceManager

log = logging.getLogger(__name__)

DEFAULT_SETTLE = defaults.SETTLE
DEFAULT_TIMEOUT = defaults.VERIFY_TIMEOUT
POLL = 0.25
#: Seconds between polls of a unit that is up and settling.
SETTLE_POLL = 1.0


class ContainerProbe(Protocol):
    """What verification asks of the engine: an `Engine`, or `SharedStates` in front of one."""

    def container_state(self, name: str, since: float = float("-inf")) -> ContainerState | None:
        """The state of the container `name`, None when there is none.

        Args:
            name: the container.
            since: a `time.monotonic()` value: the state must have been read after it (a
                verification must not see the container its restart replaced).
        """
        ...

    def run_healthcheck(self, name: str) -> str:
        """Run the container's health check once: "healthy", "unhealthy" or "starting"."""
        ...


class SharedStates:
    """Container states for verifications that run side by side, one podman process per poll.

    Each verification polls its containers every `POLL` seconds. Units verified side by side (a
    wave of units, and groups of units that share no image name) would each start a podman
    process per container and poll, which on a small host competes with the restarts for the
    CPU. Here the first caller after a snapshot grew older than `max_age` inspects every
    container asked for lately in one `podman container inspect`, and the other callers wait
    for that snapshot.

    Args:
        engine: the engine (its `container_states` answers for many containers at once).
        max_age: seconds a snapshot answers for.
        forget_after: seconds after which a container nobody asks for is inspected no more.
        clock: seconds, monotonic (for tests).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        max_age: float = 2 * POLL,
        forget_after: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._max_age = max_age
        self._forget_after = forget_after
        self._clock = clock
        self._cond = threading.Condition()
        self._asked: dict[str, float] = {}
        self._snapshot: dict[str, ContainerState | None] = {}
        self._taken = float("-inf")
        self._refreshing = False

    def container_state(self, name: str, since: float = float("-inf")) -> ContainerState | None:
        """The state of `name`, from a snapshot at most `max_age` old and taken after `since`."""
        with self._cond:
            while True:
                now = self._clock()
                self._asked[name] = now
                fresh = now - self._taken <= self._max_age and self._taken >= since
                if name in self._snapshot and fresh:
                    return self._snapshot[name]
                if not self._refreshing:
                    self._refreshing = True
                    names = [n for n, t in self._asked.items() if now - t <= self._forget_after]
                    break
                self._cond.wait()
        states: dict[str, ContainerState | None] = dict.fromkeys(names)
        taken = self._clock()  # before podman reads anything: what it reads is newer
        try:
            states = self._engine.container_states(names)
        except EngineError as exc:  # as for one container: nothing seen this time
            log.warning("%s", exc)
        finally:
            with self._cond:
                self._snapshot = states
                self._taken = taken
                self._refreshing = False
                self._cond.notify_all()
        return states.get(name)

    def run_healthcheck(self, name: str) -> str:
        """Run the container's health check (not shared: each one runs its own)."""
        return self._engine.run_healthcheck(name)


@dataclass(frozen=True)
class Expectation:
    """One container the unit must run.

    Attributes:
        name: the container's name (stable across restarts of a `--new` unit).
        image_id: the image it must run.
        labels: its labels (for `LABEL_SETTLE` / `LABEL_VERIFY_TIMEOUT`).
    """

    name: str
    image_id: str
    labels: Mapping[str, str]


def _label_seconds(expect: Sequence[Expectation], label: str, default: float) -> float:
    value = default
    for e in expect:
        raw = e.labels.get(label)
        if raw is None:
            continue
        seconds = label_seconds(raw)
        if seconds is None:  # assemble_tasks refuses such a container before any change
            raise VerificationError(
                f"container {e.name}: label {label}={raw!r} is not a number of seconds"
            )
        value = max(value, seconds)
    return value


def last_log_lines(unit: str, lines: int = 10) -> str:
    """The unit's last journal lines, or "" where there is no journal."""
    journalctl = shutil.which("journalctl")
    if journalctl is None:
        return ""
    try:
        res = subprocess.run(
            [journalctl, "-u", unit, "-n", str(lines), "--no-pager", "-o", "cat"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    out = res.stdout.strip()
    return "" if res.returncode != 0 or out.startswith("-- No entries --") else out


def verify_unit(
    unit: str,
    expect: Sequence[Expectation],
    engine: ContainerProbe,
    services: ServiceManager,
    *,
    settle: float = DEFAULT_SETTLE,
    timeout: float = DEFAULT_TIMEOUT,
    read_logs: Callable[[str], str],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Wait until the unit is verified, or raise what was seen.

    Args:
        unit: the restarted unit.
        expect: the containers it must run, and on which images.
        engine: to inspect containers and run health checks.
        services: to read the unit's state.
        settle: seconds the containers must stay up (labels may raise it per container).
        timeout: seconds to reach that state (raised by labels, and by health checks' own
            start period, interval and retries).
        read_logs: the unit's last log lines, for the error ("" if none); `last_log_lines`
            reads the host's journal.
        clock: seconds, monotonic.
        sleep: waits that many seconds.

    Raises:
        VerificationError: the unit failed, a container exited, runs another image, is
            unhealthy, or the state was not reached in time; the message says what was seen.
    """

    def fail(seen: str) -> NoReturn:
        _fail(unit, seen, services, read_logs)

    settle = _label_seconds(expect, LABEL_SETTLE, settle)
    timeout = max(_label_seconds(expect, LABEL_VERIFY_TIMEOUT, timeout), settle + 5)
    start = clock()
    deadline = start + timeout
    stable_since: float | None = None
    seen_ids: dict[str, str] = {}
    healthy: set[str] = set()
    last_check: dict[str, float] = {}
    extended = False
    while True:
        now = clock()
        waiting = ""
        state = services.active_state(unit)
        if state in ("failed", "inactive", "deactivating"):
            # Not yet a verdict while a job of the unit runs: a restart that a killed run began
            # (its repair verifies while systemd still stops the old container).
            if not services.job_pending(unit):
                fail(f"unit {unit} is {state}")
            waiting = f"unit {unit} is {state}, a job of it is running"
        elif state != "active":
            waiting = f"unit {unit} is {state}"
        for e in expect if not waiting else ():
            cs = engine.container_state(e.name, since=start)
            if cs is None:
                waiting = f"container {e.name} does not exist"
                break
            if not cs.running:
                fail(f"container {e.name} exited with code {cs.exit_code}")
            if cs.image_id != e.image_id:
                fail(
                    f"container {e.name} runs image {cs.image_id[:12]}, expected {e.image_id[:12]}"
                )
            if seen_ids.setdefault(e.name, cs.id) != cs.id:
                fail(f"container {e.name} was restarted ({cs.id[:12]})")
            if cs.has_healthcheck and e.name not in healthy and cs.health == "healthy":
                # podman's own checks of this new container passed already. With
                # `--sdnotify=healthy` (Quadlet's Notify=healthy) that is what systemd's restart
                # job waited for: neither the check nor its window again.
                healthy.add(e.name)
            if cs.has_healthcheck and e.name not in healthy:
                if not extended:
                    # Give the health check the time its own settings need.
                    window = cs.health_start_period + cs.health_interval * (cs.health_retries + 1)
                    deadline = max(deadline, start + window + settle)
                    extended = True
                if now - last_check.get(e.name, -1e9) >= max(cs.health_interval, POLL):
                    last_check[e.name] = now
                    health = engine.run_healthcheck(e.name)
                    if health == "unhealthy":
                        fail(f"container {e.name} is unhealthy")
                    if health == "healthy":
                        healthy.add(e.name)
                if e.name not in healthy:
                    waiting = f"container {e.name} is not healthy yet"
        if waiting:
            stable_since = None
        else:
            stable_since = now if stable_since is None else stable_since
            if now - stable_since >= settle:
                return
        if now >= deadline:
            fail(f"not verified within {deadline - start:.0f}s: {waiting or 'still settling'}")
        # Once up, a unit is only watched for a container that dies or is replaced: once a
        # second is enough, and keeps the polls of many units side by side cheap. The settle
        # window's end is still met on time.
        if stable_since is None:
            sleep(POLL)
        else:
            sleep(max(POLL, min(SETTLE_POLL, stable_since + settle - now)))


def _fail(
    unit: str, seen: str, services: ServiceManager, read_logs: Callable[[str], str]
) -> NoReturn:
    detail = f"verifying unit {unit} failed: {seen}"
    with contextlib.suppress(UpdockError):  # the message is useful without it
        detail += f"; unit {services.describe(unit)}"
    logs = read_logs(unit)
    if logs:
        detail += "\n  last log lines:\n    " + "\n    ".join(logs.splitlines())
    raise VerificationError(detail)


__all__ = ["Expectation", "last_log_lines", "verify_unit"]
