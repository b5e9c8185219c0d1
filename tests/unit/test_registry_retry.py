"""The retry schedule and `Retry-After` parsing (pure pieces)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from updock.registry.retry import (
    RETRY_STATUSES,
    RetryPolicy,
    backoff_delay,
    parse_retry_after,
)

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)

# -- backoff ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry", "low", "high"),
    [(1, 0.25, 0.5), (2, 0.5, 1.0), (3, 1.0, 2.0), (4, 2.0, 4.0), (5, 4.0, 8.0), (9, 4.0, 8.0)],
)
def test_backoff_doubles_up_to_the_cap_with_equal_jitter(
    retry: int, low: float, high: float
) -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=8.0)
    assert backoff_delay(retry, policy, rand=lambda: 0.0) == low
    assert backoff_delay(retry, policy, rand=lambda: 0.999999) == pytest.approx(high, rel=1e-5)


@given(retry=st.integers(min_value=1, max_value=60), r=st.floats(0.0, 1.0, exclude_max=True))
def test_default_waits_stay_between_a_quarter_and_eight_seconds(retry: int, r: float) -> None:
    assert 0.25 <= backoff_delay(retry, RetryPolicy(), rand=lambda: r) <= 8.0


@given(retry=st.integers(min_value=1, max_value=60), r=st.floats(0.0, 1.0, exclude_max=True))
def test_each_wait_is_at_least_the_one_before_and_at_most_twice_it(retry: int, r: float) -> None:
    policy = RetryPolicy()
    before = backoff_delay(retry, policy, rand=lambda: r)
    after = backoff_delay(retry + 1, policy, rand=lambda: r)
    assert before <= after <= 2 * before


@given(
    retry=st.integers(min_value=1, max_value=60),
    cap=st.floats(min_value=0.0, max_value=60.0),
    r=st.floats(0.0, 1.0, exclude_max=True),
)
def test_no_wait_exceeds_the_cap(retry: int, cap: float, r: float) -> None:
    assert backoff_delay(retry, RetryPolicy(base_delay=10.0, max_delay=cap), rand=lambda: r) <= cap


def test_a_request_that_fails_three_times_waits_at_most_a_second_and_a_half() -> None:
    policy = RetryPolicy()  # 3 attempts: two waits
    assert policy.attempts == 3
    longest = sum(backoff_delay(retry, policy, rand=lambda: 0.999999) for retry in (1, 2))
    shortest = sum(backoff_delay(retry, policy, rand=lambda: 0.0) for retry in (1, 2))
    assert shortest == 0.75
    assert longest == pytest.approx(1.5, rel=1e-5)


def test_backoff_is_jittered_by_default() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0)
    delays = {backoff_delay(3, policy) for _ in range(50)}
    assert len(delays) > 1
    assert all(2.0 <= d <= 4.0 for d in delays)


@pytest.mark.parametrize(
    "kwargs", [{"attempts": 0}, {"base_delay": -1.0}, {"max_delay": -1.0}, {"max_retry_after": -1}]
)
def test_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (each message differs)
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_retry_counts_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        backoff_delay(0, RetryPolicy())


def test_retry_statuses() -> None:
    assert {500, 502, 503, 504} <= RETRY_STATUSES
    assert not {200, 400, 401, 403, 404, 429, 501, 505} & RETRY_STATUSES


# -- Retry-After --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("0", 0.0),
        ("7", 7.0),
        (" 120 ", 120.0),
        ("-3", None),
        ("1.5", None),
        ("soon", None),
        ("٣", None),  # a digit, but not an ASCII one
        ("Sat, 28 Nov 2026 12:00:30 GMT", 30.0),
        ("Saturday, 28-Nov-26 12:01:00 GMT", 60.0),  # obsolete RFC 850 form, still valid
        ("Sat, 28 Nov 2026 11:59:00 GMT", 0.0),  # in the past: go now
        ("Sat, 28 Nov 2026 12:00:10 -0000", 10.0),
        ("Sat, 28 Nov 2026 13:00:10 +0100", 10.0),
        ("Sat, 99 Nov 2026 12:00:10 GMT", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_parse_retry_after_date_counts_from_the_current_time() -> None:
    later = datetime.now(UTC) + timedelta(seconds=100)
    header = later.strftime("%a, %d %b %Y %H:%M:%S GMT")
    got = parse_retry_after(header)
    assert got is not None
    assert 95 <= got <= 100
