"""When to try a registry request again, and how long to wait first (pure; no I/O, no sleeping).

A check runs once a day on every host, against registries that fail now and then and that
rate-limit: a request that failed to connect, or was answered with a 5xx that may pass, is tried
again after an exponentially growing wait with jitter (so that many hosts, or the threads of a
run, do not come back in step); a 429 is tried again only after the wait its `Retry-After` asks
for, and not at all when that wait is longer than the run should stall. Every request is tried
at most `RetryPolicy.attempts` times.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

#: Statuses worth another try: the server or a gateway in front of it may recover.
#: (501 Not Implemented and 505 HTTP Version Not Supported will not.)
RETRY_STATUSES = frozenset({500, 502, 503, 504, 507, 509, 520, 521, 522, 523, 524})

TOO_MANY_REQUESTS = 429


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and after how long, a failed request is tried again.

    Attributes:
        attempts: tries in all, the first included (1: never try again).
        base_delay: seconds before the first retry (before jitter); doubled for each next one.
        max_delay: the longest wait between two tries (before jitter).
        max_retry_after: the longest wait a 429's `Retry-After` may impose; a registry that
            asks for more fails the check at once instead of stalling the run.
    """

    attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise ValueError("delays must not be negative")


def backoff_delay(
    retry: int, policy: RetryPolicy, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait before retry number `retry` (1 for the first retry).

    Exponential (`base_delay * 2**(retry-1)`, at most `max_delay`) with "equal jitter": a
    uniformly random point in the upper half of that, so that a retry never comes sooner than
    half the schedule's wait (no hammering) and clients that failed together spread out.

    Args:
        retry: which retry this is, from 1.
        policy: the schedule.
        rand: a uniform random number in [0, 1) (for tests).
    """
    if retry < 1:
        raise ValueError("retry counts from 1")
    ceiling = min(policy.max_delay, policy.base_delay * 2.0 ** (retry - 1))
    return ceiling / 2 + rand() * ceiling / 2


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """The seconds a `Retry-After` header asks to wait, or None when it says nothing usable.

    Both forms of RFC 9110: a number of seconds (`120`), or an HTTP date (`Wed, 21 Oct 2015
    07:28:00 GMT`), which counts from `now`; a date in the past means 0.

    Args:
        value: the header's value (None when absent).
        now: the current time (for tests); the system's UTC time when None.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        return float(int(value))
    import email.utils  # only for the rare date form (start-up time)

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, as HTTP dates always are
        when = when.replace(tzinfo=UTC)
    if now is None:
        now = datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())
