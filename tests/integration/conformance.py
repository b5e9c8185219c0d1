"""Helpers to run updock and the real `podman auto-update` on the same lab and compare reports."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from updock.testing.lab import Lab

Row = dict[str, str]


@dataclass(frozen=True)
class Outcome:
    """One run of one tool: exit status, stdout, stderr (and its arguments)."""

    tool: str
    returncode: int
    stdout: str
    stderr: str
    args: tuple[str, ...] = ()

    def rows(self) -> list[Row]:
        """The JSON report (the run must have used `--format json`), sorted like updock's."""
        if not self.stdout.strip():
            return []
        data: list[Row] = json.loads(self.stdout)
        return sorted(data, key=lambda r: (r["Unit"], r["ContainerName"]))

    def statuses(self) -> dict[str, str]:
        """container name -> Updated, from a JSON report."""
        return {r["ContainerName"]: r["Updated"] for r in self.rows()}


#: Every outcome of this session's tests, with the test's ID, for the conformance table
#: (`conformance_table.py`; written when `UPDOCK_CONFORMANCE_TABLE` names a file).
OUTCOMES: list[tuple[str, Outcome]] = []


def record(outcome: Outcome) -> Outcome:
    """Note `outcome` as one of the current test's (pytest names it in the environment)."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]
    if test:
        OUTCOMES.append((test, outcome))
    return outcome


def _outcome(tool: str, res: subprocess.CompletedProcess[str], args: tuple[str, ...]) -> Outcome:
    return record(Outcome(tool, res.returncode, res.stdout, res.stderr, args))


#: The comparisons with podman use healthy or outright broken images: a short settle time keeps
#: them fast (the verification tests set their own).
FAST_VERIFY = {"UPDOCK_SETTLE_TIME": "1"}


def run_updock(lab: Lab, *args: str, env: Mapping[str, str] | None = None) -> Outcome:
    """`updock auto-update ARGS` in the lab."""
    res = lab.updock("auto-update", *args, env={**FAST_VERIFY, **(env or {})})
    return _outcome("updock", res, args)


def run_podman(lab: Lab, *args: str, env: Mapping[str, str] | None = None) -> Outcome:
    """The real `podman auto-update ARGS` in the lab."""
    res = lab.run(["podman", "auto-update", *args], check=False, env=env, timeout=300)
    return _outcome("podman", res, args)


def run_both(lab: Lab, *args: str, env: Mapping[str, str] | None = None) -> tuple[Outcome, Outcome]:
    """updock then podman with the same arguments on the same state (for runs that change
    nothing, such as `--dry-run`)."""
    return run_updock(lab, *args, env=env), run_podman(lab, *args, env=env)


def podman_since(lab: Lab, version: str) -> bool:
    """Whether the lab's podman is `version` ("4.6") or later.

    For the documented changes of later podman (AUTO-UPDATE-SPEC.md, "Later podman"): a test
    asserts what each podman does, and that updock does the newest (right) thing on all.
    """
    return lab.podman_version >= tuple(int(p) for p in version.split("."))


def sorted_table(stdout: str) -> list[str]:
    """A table report with its header first and its rows sorted (podman's order is random)."""
    lines = stdout.splitlines()
    return lines[:1] + sorted(lines[1:])


def without_ids(rows: list[Row]) -> list[dict[str, Any]]:
    """Rows without container IDs, to compare runs on two set-ups of the same scenario."""
    return [
        {k: v for k, v in r.items() if k not in ("ContainerID", "Container")}
        | {"Container": r["Container"][13:]}
        for r in rows
    ]


LabT = TypeVar("LabT", bound=Lab)

#: container name -> (its unit's ActiveState, /version in the running container or "-").
States = dict[str, tuple[str, str]]


def unit_states(lab: Lab, containers: Mapping[str, str]) -> States:
    """What each container's unit and container run now (`containers`: name -> unit)."""
    out = {}
    for name, unit in containers.items():
        res = lab.run(["podman", "exec", name, "/bin/cat", "/version"], check=False)
        out[name] = (lab.unit_state(unit), res.stdout.strip() if res.returncode == 0 else "-")
    return out


def compare_runs(
    lab: LabT,
    setup: Callable[[LabT], Mapping[str, str]],
    *args: str,
    wait_after_podman: float = 0,
) -> tuple[Outcome, Outcome, States, States]:
    """A real run of each tool on the same scenario: set up, run podman; reset, set up again
    (same names, same kinds of images), run updock; both with `--format json ARGS`.

    Args:
        setup: makes the scenario; returns container name -> unit.
        wait_after_podman: seconds before podman's outcome is read (a pod's members start
            after the pod's unit, and podman does not wait for them).

    Returns:
        podman's and updock's outcomes, and the states each left (`unit_states`).
    """
    containers = setup(lab)
    podman = run_podman(lab, "--format", "json", *args)
    time.sleep(wait_after_podman)
    podman_states = unit_states(lab, containers)
    lab.reset()
    setup(lab)
    updock = run_updock(lab, "--format", "json", *args)
    return podman, updock, podman_states, unit_states(lab, containers)
