"""verify_unit's decisions, driven by a scripted engine, service manager and journal and a fake
clock: no host command runs.

(The same code runs against the real lab in tests/integration/test_safety.py.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from updock.core.model import ContainerState
from updock.errors import VerificationError
from updock.verify import Expectation, verify_unit

IMAGE = "i" * 64


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Host:
    """Engine and service manager in one: states are functions of the fake time."""

    clock: Clock
    unit: Callable[[float], str] = lambda t: "active"
    container: Callable[[float], ContainerState | None] = lambda t: ContainerState(
        "c1", True, 0, IMAGE
    )
    health: Callable[[float], str] = lambda t: "healthy"
    job: Callable[[float], bool] = lambda t: False
    health_runs: list[float] = field(default_factory=list)
    journal: str = ""
    logs_read: list[str] = field(default_factory=list)

    def active_state(self, unit: str) -> str:
        return self.unit(self.clock.now)

    def job_pending(self, unit: str) -> bool:
        return self.job(self.clock.now)

    def describe(self, unit: str) -> str:
        return f"{self.unit(self.clock.now)} (dead), result exit-code, main process exit status 1"

    def container_state(self, name: str) -> ContainerState | None:
        return self.container(self.clock.now)

    def run_healthcheck(self, name: str) -> str:
        self.health_runs.append(self.clock.now)
        return self.health(self.clock.now)

    def read_logs(self, unit: str) -> str:
        self.logs_read.append(unit)
        return self.journal


def verify(
    host: Host, settle: float = 3.0, timeout: float = 20.0, labels: dict[str, str] | None = None
) -> float:
    verify_unit(
        "app.service",
        [Expectation("app", IMAGE, labels or {})],
        host,
        host,  # type: ignore[arg-type]
        settle=settle,
        timeout=timeout,
        read_logs=host.read_logs,
        clock=host.clock,
        sleep=host.clock.sleep,
    )
    return host.clock.now


def test_healthy_unit_is_verified_after_the_settle_time() -> None:
    host = Host(Clock())
    assert 3.0 <= verify(host) < 3.5


def test_activating_then_active_waits() -> None:
    host = Host(Clock(), unit=lambda t: "activating" if t < 2 else "active")
    assert 5.0 <= verify(host) < 5.5


def test_container_that_dies_during_settle_fails_with_its_exit_code() -> None:
    host = Host(Clock(), container=lambda t: ContainerState("c1", t < 2, 0 if t < 2 else 3, IMAGE))
    with pytest.raises(VerificationError, match="exited with code 3"):
        verify(host)


def test_failed_unit_fails_and_says_what_systemd_says() -> None:
    host = Host(Clock(), unit=lambda t: "active" if t < 1 else "failed")
    with pytest.raises(
        VerificationError, match=r"is failed; unit failed \(dead\), result exit-code"
    ):
        verify(host)


def test_a_unit_stopping_under_a_running_job_is_waited_for() -> None:
    # A repair verifies a unit whose restart a killed run began: systemd still stops the old
    # container ("deactivating") with the restart job queued. That is no failure yet.
    host = Host(
        Clock(),
        unit=lambda t: "deactivating" if t < 2 else "active",
        job=lambda t: t < 2,
    )
    assert verify(host) >= 2 + 3.0  # waited for the job, then settled


def test_a_unit_stopping_without_a_job_fails_at_once() -> None:
    host = Host(Clock(), unit=lambda t: "active" if t < 1 else "deactivating")
    with pytest.raises(VerificationError, match="is deactivating"):
        verify(host)


def test_wrong_image_fails() -> None:
    host = Host(Clock(), container=lambda t: ContainerState("c1", True, 0, "o" * 64))
    with pytest.raises(VerificationError, match="runs image oooooooooooo, expected iiiiiiiiiiii"):
        verify(host)


def test_restarted_container_fails() -> None:
    host = Host(
        Clock(), container=lambda t: ContainerState("c1" if t < 1 else "c2", True, 0, IMAGE)
    )
    with pytest.raises(VerificationError, match="was restarted"):
        verify(host)


def _with_check(t: float) -> ContainerState:
    return ContainerState(
        "c1",
        True,
        0,
        IMAGE,
        health="starting",
        health_interval=1,
        health_retries=2,
        health_start_period=6,
    )


def test_health_check_must_pass_and_is_run_at_its_interval() -> None:
    host = Host(Clock(), container=_with_check, health=lambda t: "starting" if t < 5 else "healthy")
    done = verify(host, settle=1)
    assert 5.0 <= done < 6.5
    gaps = [b - a for a, b in zip(host.health_runs, host.health_runs[1:], strict=False)]
    assert all(g >= 1.0 for g in gaps)


def test_unhealthy_fails() -> None:
    host = Host(
        Clock(), container=_with_check, health=lambda t: "starting" if t < 3 else "unhealthy"
    )
    with pytest.raises(VerificationError, match="is unhealthy"):
        verify(host)


def test_never_healthy_times_out_after_the_checks_own_window() -> None:
    host = Host(Clock(), container=_with_check, health=lambda t: "starting")
    with pytest.raises(VerificationError, match=r"not verified within .*not healthy yet"):
        verify(host, settle=1, timeout=2)
    # start period 6 + interval 1 x (retries 2 + 1) + settle 1, not the 2 s asked for.
    assert host.clock.now >= 10


def test_missing_container_times_out() -> None:
    host = Host(Clock(), container=lambda t: None)
    with pytest.raises(VerificationError, match="does not exist"):
        verify(host, timeout=8)


def test_label_raises_settle_time() -> None:
    host = Host(Clock())
    assert verify(host, labels={"io.updock.verify.settle": "7"}) >= 7


def test_bad_label_is_an_error_naming_it() -> None:
    with pytest.raises(VerificationError, match=r"io.updock.verify.settle='soon'"):
        verify(Host(Clock()), labels={"io.updock.verify.settle": "soon"})


def test_a_failure_quotes_the_units_last_log_lines() -> None:
    host = Host(
        Clock(),
        container=lambda t: ContainerState("c1", t < 1, 0 if t < 1 else 2, IMAGE),
        journal="starting app\nfatal: no config",
    )
    with pytest.raises(VerificationError) as caught:
        verify(host)
    assert str(caught.value).endswith(
        "container app exited with code 2; unit active (dead), result exit-code, main process "
        "exit status 1\n  last log lines:\n    starting app\n    fatal: no config"
    )
    assert host.logs_read == ["app.service"]


def test_without_log_lines_the_failure_says_what_was_seen_only() -> None:
    host = Host(Clock(), unit=lambda t: "failed")
    with pytest.raises(VerificationError) as caught:
        verify(host)
    assert "last log lines" not in str(caught.value)
    assert host.logs_read == ["app.service"]


def test_a_verified_unit_reads_no_logs() -> None:
    host = Host(Clock(), journal="something")
    verify(host)
    assert host.logs_read == []
