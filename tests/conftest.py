"""Shared fixtures: the lab of real components (podman, registries, systemd) for integration tests.

The lab comes in flavours, one per podman (`updock.testing.flavours`): `host` (the machine's own
podman), `bookworm` (4.3.1) and `trixie` (5.4.2), chosen with `UPDOCK_LAB_FLAVOURS` (comma
separated). Every test that uses `lab` runs once per flavour, with the flavour in its ID
(`test_x[trixie]`); pytest groups the tests by flavour, so one lab runs at a time, started once
for its tests. `lab` resets it after each test so that every test starts with no services and no
containers. Modules marked `one_flavour` (the registry client, which runs in the test process
and not in the lab) run on the first flavour only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from updock.testing.docker_lab import DockerLab, docker_missing
from updock.testing.flavours import lab_flavours, make_lab, prepare
from updock.testing.lab import Lab

#: Modules whose tests the summary lists by name.
NAMED_MODULES = ("test_quadlet", "test_rootless")

#: podman version of each flavour whose lab started in this session.
_STARTED: dict[str, str] = {}


def _on_sigterm(signum: int, frame: object) -> None:
    # pytest runs fixture teardown on KeyboardInterrupt, not on SIGTERM: convert it.
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    first = lab_flavours()[0]
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        flavour = callspec.params.get("lab_session") if callspec else None
        if item.get_closest_marker("one_flavour") and flavour not in (None, first):
            drop.append(item)
            continue
        keep.append(item)
        # With pytest-xdist (`-n 2 --dist loadgroup`, as scripts/test runs it), each lab's tests
        # go to one worker: a lab starts once, and the labs of two flavours run side by side.
        if flavour is not None:
            item.add_marker(pytest.mark.xdist_group(f"lab-{flavour}"))
        elif "docker_lab_session" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("docker-lab"))
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_sessionfinish(session: pytest.Session) -> None:
    # An xdist worker hands what the summary needs to the controller (`pytest_testnodedown`).
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["updock"] = json.dumps({"started": _STARTED, "outcomes": _outcomes()})


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """On xdist's controller: a worker's labs and outcomes join this session's."""
    data = json.loads(getattr(node, "workeroutput", {}).get("updock", "{}") or "{}")
    _STARTED.update(data.get("started", {}))
    if data.get("outcomes"):
        from tests.integration.conformance import OUTCOMES, Outcome

        for test, fields in data["outcomes"]:
            OUTCOMES.append((test, Outcome(**{**fields, "args": tuple(fields["args"])})))


def _outcomes() -> list[tuple[str, dict[str, Any]]]:
    """This process's conformance outcomes, as JSON-able pairs (none if no lab test ran)."""
    module = sys.modules.get("tests.integration.conformance")
    if module is None:
        return []
    return [(test, dataclasses.asdict(outcome)) for test, outcome in module.OUTCOMES]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _STARTED:
        versions = sorted(set(_STARTED.values()), key=lambda v: [int(p) for p in v.split(".")])
        terminalreporter.write_line(f"podman versions tested: {', '.join(versions)}")
    # CI shows these by name (issue 10): what podman 5's users run, and whether it ran here.
    shown = [
        (report.nodeid, report.outcome)
        for reports in terminalreporter.stats.values()
        for report in reports
        if isinstance(report, pytest.TestReport)
        and (report.when == "call" or report.outcome == "skipped")
        and any(f"/{m}.py::" in report.nodeid for m in NAMED_MODULES)
    ]
    if shown:
        terminalreporter.write_line("Quadlet, Notify=healthy and rootless tests:")
        for nodeid, outcome in sorted(shown):
            terminalreporter.write_line(f"  {outcome:8} {nodeid}")
    path = os.environ.get("UPDOCK_CONFORMANCE_TABLE")
    if path and _STARTED:
        # Imported here: the unit tests' sessions need none of the lab's modules.
        from tests.integration.conformance import OUTCOMES
        from tests.integration.conformance_table import table

        Path(path).write_text(table(OUTCOMES, _STARTED))
        terminalreporter.write_line(f"conformance table written to {path}")


@pytest.fixture(scope="session", params=lab_flavours())
def lab_session(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """The lab of one flavour, started once for the session and always stopped."""
    if os.geteuid() != 0:
        if os.environ.get("UPDOCK_REQUIRE_LAB"):
            pytest.fail("the lab needs root (systemd as PID 1 of a namespace, podman as root)")
        pytest.skip("the lab needs root")
    flavour: str = request.param
    prepare([flavour])
    signal.signal(signal.SIGTERM, _on_sigterm)
    lab = make_lab(flavour)
    lab.start()
    try:
        _STARTED[flavour] = ".".join(map(str, lab.podman_version))
        yield lab
    finally:
        lab.stop()


@pytest.fixture
def lab(lab_session: Lab) -> Iterator[Lab]:
    """The lab, emptied of services and containers after the test."""
    try:
        yield lab_session
    finally:
        lab_session.reset()


@pytest.fixture(scope="session")
def docker_lab_session() -> Iterator[DockerLab]:
    """One dockerd (in a network namespace of its own, with its own registry) for the session."""
    if os.geteuid() != 0:
        if os.environ.get("UPDOCK_REQUIRE_LAB"):
            pytest.fail("the Docker lab needs root")
        pytest.skip("the Docker lab needs root")
    missing = docker_missing()
    if missing:
        if os.environ.get("UPDOCK_REQUIRE_LAB"):
            pytest.fail(f"the Docker lab needs {', '.join(missing)} (./scripts/setup installs)")
        pytest.skip(f"the Docker lab needs {', '.join(missing)}")
    signal.signal(signal.SIGTERM, _on_sigterm)
    lab = DockerLab()
    lab.start()
    try:
        yield lab
    finally:
        lab.stop()


@pytest.fixture
def docker_lab(docker_lab_session: DockerLab) -> Iterator[DockerLab]:
    """The Docker lab, emptied of containers, networks, volumes and updock's state after the
    test."""
    try:
        yield docker_lab_session
    finally:
        docker_lab_session.reset()
