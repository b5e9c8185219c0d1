"""Shared fixtures: the lab of real components (podman, registries, systemd) for integration tests.

One lab serves the whole session (it starts in about two seconds); `lab` resets it after each
test so that every test starts with no services and no containers.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from updock.testing.lab import Lab, install_packages


def _on_sigterm(signum: int, frame: object) -> None:
    # pytest runs fixture teardown on KeyboardInterrupt, not on SIGTERM: convert it.
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def lab_session() -> Iterator[Lab]:
    """The lab, started once for the session and always stopped."""
    if os.geteuid() != 0:
        if os.environ.get("UPDOCK_REQUIRE_LAB"):
            pytest.fail("the lab needs root (systemd as PID 1 of a namespace, podman as root)")
        pytest.skip("the lab needs root")
    install_packages()
    signal.signal(signal.SIGTERM, _on_sigterm)
    lab = Lab()
    lab.start()
    try:
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
