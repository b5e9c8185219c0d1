"""verify_unit's decisions, driven by a scripted engine, service manager and journal and a fake
clock: no host command runs.

(The same code runs against the real lab in tests/integration/test_safety.py.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from updock.core.model import ContainerState
from updock.errors import EngineError, VerificationError
from updock.verify import Expectation, SharedStates, verify_unit

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

    def container_state(self, name: str, since: float = float("-inf")) -> ContainerState | None:
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


def test_healthy_in_podmans_own_state_runs_no_check_and_waits_only_the_settle_time() -> None:
    # `--sdnotify=healthy`: the restart job ended once podman saw the container healthy.
    def marked_healthy(t: float) -> ContainerState:
        return ContainerState(
            "c1", True, 0, IMAGE, "healthy", health_interval=30, health_retries=3,
            health_start_period=60,
        )  # fmt: skip

    host = Host(Clock(), container=marked_healthy, health=lambda t: "unhealthy")
    assert 1.0 <= verify(host, settle=1) < 1.5
    assert host.health_runs == []


def test_a_check_still_starting_in_podmans_state_is_run_by_updock() -> None:
    host = Host(Clock(), container=_with_check, health=lambda t: "unhealthy")
    with pytest.raises(VerificationError, match="is unhealthy"):
        verify(host, settle=1)
    assert host.health_runs == [0.0]


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


# -- SharedStates: one podman process per poll for every verification ---------------------------


class CountingEngine:
    """`container_states` that records each call; states per name from a dict."""

    def __init__(self, states: dict[str, ContainerState | None]) -> None:
        self.states = states
        self.calls: list[list[str]] = []
        self.fail = False

    def container_states(self, names: list[str]) -> dict[str, ContainerState | None]:
        self.calls.append(sorted(names))
        if self.fail:
            raise EngineError("podman container inspect failed: storage is locked")
        return {n: self.states.get(n) for n in names}

    def run_healthcheck(self, name: str) -> str:
        return "healthy"


def _shared(engine: CountingEngine, clock: Clock) -> SharedStates:
    return SharedStates(engine, max_age=0.5, clock=lambda: clock.now)  # type: ignore[arg-type]


def test_shared_states_answer_every_asker_from_one_inspect() -> None:
    a, b = ContainerState("a1", True, 0, IMAGE), ContainerState("b1", True, 0, IMAGE)
    engine, clock = CountingEngine({"a": a, "b": b}), Clock()
    states = _shared(engine, clock)
    assert states.container_state("a") == a
    assert states.container_state("b") == b  # b was not known yet: one more inspect, of both
    clock.now += 0.2
    assert states.container_state("a") == a  # fresh enough: no podman process
    assert engine.calls == [["a"], ["a", "b"]]
    clock.now += 0.6
    assert states.container_state("b") == b
    assert engine.calls[-1] == ["a", "b"]  # both asked lately: both inspected again


def test_a_snapshot_from_before_a_verification_began_is_not_used() -> None:
    # The container a restart replaced must not be seen by the verification that follows.
    engine, clock = CountingEngine({"a": ContainerState("old", False, 1, IMAGE)}), Clock()
    states = _shared(engine, clock)
    assert states.container_state("a") is not None
    clock.now += 0.1
    engine.states["a"] = ContainerState("new", True, 0, IMAGE)
    state = states.container_state("a", since=clock.now)
    assert state is not None
    assert state.id == "new"
    assert len(engine.calls) == 2


def test_containers_nobody_asks_for_are_forgotten() -> None:
    engine, clock = CountingEngine({}), Clock()
    states = _shared(engine, clock)
    states.container_state("a")
    clock.now += 10
    states.container_state("b")
    assert engine.calls[-1] == ["b"]


def test_a_failed_inspect_is_no_state_this_time() -> None:
    engine, clock = CountingEngine({"a": ContainerState("a1", True, 0, IMAGE)}), Clock()
    engine.fail = True
    states = _shared(engine, clock)
    assert states.container_state("a") is None  # verification waits, within its timeout
    engine.fail = False
    clock.now += 1
    assert states.container_state("a") is not None


def test_concurrent_askers_share_one_inspect() -> None:
    import threading

    gate = threading.Event()

    class SlowEngine(CountingEngine):
        def container_states(self, names: list[str]) -> dict[str, ContainerState | None]:
            gate.wait(5)
            return super().container_states(names)

    engine = SlowEngine({n: ContainerState(n, True, 0, IMAGE) for n in "abc"})
    states = SharedStates(engine, max_age=60)  # type: ignore[arg-type]
    states.container_state("a")  # knows a
    engine.calls.clear()
    results: dict[str, ContainerState | None] = {}
    threads = [
        threading.Thread(target=lambda n=n: results.__setitem__(n, states.container_state(n)))
        for n in "abc"
    ]
    gate.clear()
    for t in threads:
        t.start()
    time.sleep(0.2)
    gate.set()
    for t in threads:
        t.join(5)
    assert set(results) == set("abc")
    assert len(engine.calls) <= 2  # one leader's inspect, and at most one more for late askers
