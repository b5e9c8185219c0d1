"""The retry loop (`attempts.with_retries`): how many attempts, how long between them, a 429's
`Retry-After`, and giving up. Driven by a scripted attempt function and a fake clock whose
`sleep` only moves time on; what real sockets do is in tests/integration/test_registry_faults.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from updock.errors import RegistryError
from updock.registry.attempts import HostPacing, with_retries
from updock.registry.exchange import Reply, TransientFailure
from updock.registry.retry import RetryPolicy

IMAGE = "reg.example/app:latest"


class Clock:
    """A monotonic clock that only `sleep` moves."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _reply(status: int, **headers: str) -> Reply:
    return Reply(status, "", headers, b"")


def _refused() -> TransientFailure:
    return TransientFailure("cannot connect to reg.example: refused", "refused")


class Script:
    """Attempts that give the scripted outcomes in turn; records when each was made."""

    def __init__(self, clock: Clock, outcomes: Sequence[Reply | TransientFailure]) -> None:
        self._clock = clock
        self._outcomes = list(outcomes)
        self.times: list[float] = []

    def __call__(self) -> Reply:
        self.times.append(self._clock.now)
        outcome = self._outcomes.pop(0)
        if isinstance(outcome, TransientFailure):
            raise outcome
        return outcome


def _run(
    outcomes: Sequence[Reply | TransientFailure],
    policy: RetryPolicy | None = None,
    *,
    clock: Clock | None = None,
    host: HostPacing | None = None,
    jitter: float = 0.0,
) -> tuple[Reply, Script, Clock]:
    clock = clock or Clock()
    script = Script(clock, outcomes)
    reply = with_retries(
        script,
        host or HostPacing(4, clock),
        policy or RetryPolicy(),
        image=IMAGE,
        sleep=clock.sleep,
        rand=lambda: jitter,
    )
    return reply, script, clock


def test_an_answer_at_the_first_attempt_is_not_tried_again() -> None:
    reply, _script, clock = _run([_reply(200)])
    assert (reply.status, reply.attempts) == (200, 1)
    assert clock.slept == []


@pytest.mark.parametrize("status", [400, 401, 403, 404, 501, 505])
def test_answers_that_another_attempt_would_not_change_are_returned_at_once(status: int) -> None:
    reply, _script, clock = _run([_reply(status), _reply(200)])
    assert (reply.status, reply.attempts) == (status, 1)
    assert clock.slept == []


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_5xx_is_tried_again_after_a_growing_wait(status: int) -> None:
    reply, script, clock = _run([_reply(status), _reply(status), _reply(200)])
    assert (reply.status, reply.attempts) == (200, 3)
    assert clock.slept == [0.25, 0.5]  # the default policy's waits, with no jitter
    assert script.times == [100.0, 100.25, 100.75]


def test_waits_are_jittered_up_to_twice_their_least() -> None:
    _, _, clock = _run([_reply(503), _reply(503), _reply(200)], jitter=0.999999)
    assert clock.slept == pytest.approx([0.5, 1.0], rel=1e-5)


def test_a_5xx_to_the_last_attempt_is_returned() -> None:
    reply, script, clock = _run([_reply(503)] * 3)
    assert (reply.status, reply.attempts) == (503, 3)
    assert len(script.times) == 3
    assert clock.slept == [0.25, 0.5]  # no wait after the last attempt


def test_one_attempt_in_all_is_never_tried_again() -> None:
    reply, _script, clock = _run([_reply(503), _reply(200)], RetryPolicy(attempts=1))
    assert (reply.status, reply.attempts) == (503, 1)
    assert clock.slept == []


def test_a_failed_connection_is_tried_again() -> None:
    reply, _, clock = _run([_refused(), _refused(), _reply(200)])
    assert (reply.status, reply.attempts) == (200, 3)
    assert clock.slept == [0.25, 0.5]


def test_giving_up_names_the_cause_and_marks_the_host_unreachable() -> None:
    clock = Clock()
    host = HostPacing(4, clock)
    with pytest.raises(RegistryError) as info:
        _run([_refused()] * 3, clock=clock, host=host)
    assert str(info.value) == (
        f"checking {IMAGE}: cannot connect to reg.example: refused (3 attempts)"
    )
    assert clock.slept == [0.25, 0.5]
    # Every later request to the host fails at once, without an attempt or a wait.
    script = Script(clock, [_reply(200)])
    with pytest.raises(RegistryError, match=r"refused \(3 attempts\)"):
        with_retries(script, host, RetryPolicy(), image=IMAGE, sleep=clock.sleep)
    assert script.times == []
    assert clock.slept == [0.25, 0.5]


def test_giving_up_after_a_single_attempt_does_not_count_attempts() -> None:
    with pytest.raises(RegistryError) as info:
        _run([_refused()], RetryPolicy(attempts=1))
    assert str(info.value) == f"checking {IMAGE}: cannot connect to reg.example: refused"


# -- 429 Too Many Requests ----------------------------------------------------------------------


def test_a_429_waits_what_retry_after_asks() -> None:
    reply, script, _ = _run([_reply(429, **{"Retry-After": "7"}), _reply(200)])
    assert (reply.status, reply.attempts) == (200, 2)
    assert script.times == [100.0, 107.0]


def test_a_429_without_retry_after_waits_the_backoff() -> None:
    reply, script, _ = _run([_reply(429), _reply(200)])
    assert (reply.status, reply.attempts) == (200, 2)
    assert script.times == [100.0, 100.25]


def test_a_429_asking_for_more_than_the_policy_allows_is_returned_at_once() -> None:
    policy = RetryPolicy(max_retry_after=30.0)
    reply, _, clock = _run([_reply(429, **{"Retry-After": "31"}), _reply(200)], policy)
    assert (reply.status, reply.attempts) == (429, 1)
    assert clock.slept == []
    # As much as allowed is still waited for.
    _, script, _ = _run([_reply(429, **{"Retry-After": "30"}), _reply(200)], policy)
    assert script.times == [100.0, 130.0]


def test_a_429_to_the_last_attempt_is_returned() -> None:
    ask = _reply(429, **{"Retry-After": "1"})
    reply, script, _ = _run([ask, ask, ask, _reply(200)])
    assert (reply.status, reply.attempts) == (429, 3)
    assert script.times == [100.0, 101.0, 102.0]


def test_a_429_holds_back_every_request_to_the_host() -> None:
    clock = Clock()
    host = HostPacing(4, clock)
    later: list[Script] = []

    def first() -> Reply:
        # While this request is being rate limited, another one to the same host starts.
        if not later:
            later.append(Script(clock, [_reply(200)]))
            return _reply(429, **{"Retry-After": "5"})
        return _reply(200)

    with_retries(first, host, RetryPolicy(), image=IMAGE, sleep=clock.sleep)
    assert clock.now == 105.0
    clock.now = 102.0  # the other request starts 3 s before the pause ends
    with_retries(later[0], host, RetryPolicy(), image=IMAGE, sleep=clock.sleep)
    assert later[0].times == [105.0]


def test_a_shorter_pause_does_not_cut_a_longer_one() -> None:
    clock = Clock()
    host = HostPacing(1, clock)
    host.pause(10)
    host.pause(2)
    host.wait_turn(clock.sleep)
    assert clock.now == 110.0


def test_each_attempt_holds_one_of_the_hosts_slots() -> None:
    clock = Clock()
    host = HostPacing(1, clock)
    free: list[bool] = []

    def attempt() -> Reply:
        free.append(host.slots.acquire(blocking=False))
        return _reply(200)

    with_retries(attempt, host, RetryPolicy(), image=IMAGE, sleep=clock.sleep)
    assert free == [False]  # taken by the attempt itself
    assert host.slots.acquire(blocking=False)  # and given back after it
