"""One request, tried again while that may help: the retry loop, and what the requests to one
host share (their concurrency slots, a 429's pause, and whether the host is out of reach).

When to try again and how long to wait are `retry.py`'s (pure) decisions; this module applies
them to a request, given as a function that makes one attempt (`once`), so that the loop can be
driven by a test double and a fake clock. No requests or ssl here.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from updock.errors import RegistryError
from updock.registry.exchange import Reply, TransientFailure
from updock.registry.retry import (
    RETRY_STATUSES,
    TOO_MANY_REQUESTS,
    RetryPolicy,
    backoff_delay,
    parse_retry_after,
)

log = logging.getLogger(__name__)


class HostPacing:
    """What every request to one host shares; safe to use from many threads.

    Args:
        concurrency: attempts in flight to the host at most.
        clock: seconds of a monotonic clock (for the `Retry-After` pause).

    Attributes:
        slots: taken by each attempt while it is in flight.
        unreachable: why the host could not be reached, once every attempt of a request failed
            to connect (later requests then fail at once); None while it could.
    """

    def __init__(self, concurrency: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.slots = threading.BoundedSemaphore(concurrency)
        self.unreachable: str | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self._not_before = 0.0

    def pause(self, seconds: float) -> None:
        """Hold back every request to the host for `seconds` from now (a 429's Retry-After)."""
        with self._lock:
            self._not_before = max(self._not_before, self._clock() + seconds)

    def wait_turn(self, sleep: Callable[[float], None]) -> None:
        """Return once the host's pause (if any) has passed."""
        while True:
            with self._lock:
                delay = self._not_before - self._clock()
            if delay <= 0:
                return
            sleep(delay)


def with_retries(
    once: Callable[[], Reply],
    host: HostPacing,
    policy: RetryPolicy,
    *,
    image: str,
    sleep: Callable[[float], None] = time.sleep,
    rand: Callable[[], float] = random.random,
) -> Reply:
    """`once()` until it gives an answer worth keeping, at most `policy.attempts` times.

    Connection failures and timeouts (`TransientFailure`) and the statuses of `RETRY_STATUSES`
    are tried again after `backoff_delay`; a 429 after its `Retry-After` (or the backoff when it
    names none), which every request to the host then waits out too, unless it asks for more
    than `policy.max_retry_after`. The last answer is returned whatever its status, with the
    number of attempts it took.

    Args:
        once: makes one attempt; raises `TransientFailure` when it could not connect.
        host: what the requests to that host share.
        policy: how often and after how long.
        image: the image being checked, for messages.
        sleep: waits a number of seconds.
        rand: a uniform random number in [0, 1), the jitter of the waits.

    Raises:
        RegistryError: the host was already found unreachable, or the last attempt could not
            connect either (the host is then marked unreachable).
    """
    if host.unreachable is not None:
        raise RegistryError(f"checking {image}: {host.unreachable}")
    attempt = 1
    while True:
        host.wait_turn(sleep)
        try:
            with host.slots:
                reply = once()
        except TransientFailure as exc:
            if attempt >= policy.attempts:
                reason = exc.message + (f" ({attempt} attempts)" if attempt > 1 else "")
                host.unreachable = reason
                raise RegistryError(f"checking {image}: {reason}") from exc.__cause__
            delay = backoff_delay(attempt, policy, rand)
            log.info("%s; trying again in %.1fs", exc.message, delay)
            sleep(delay)
            attempt += 1
            continue
        reply = replace(reply, attempts=attempt)
        if reply.status == TOO_MANY_REQUESTS:
            asked = parse_retry_after(reply.headers.get("Retry-After"))
            delay = backoff_delay(attempt, policy, rand) if asked is None else asked
            if attempt >= policy.attempts or delay > policy.max_retry_after:
                return reply
            log.info("rate limited (429); trying again in %.1fs", delay)
            host.pause(delay)
            attempt += 1
            continue
        if reply.status in RETRY_STATUSES and attempt < policy.attempts:
            delay = backoff_delay(attempt, policy, rand)
            log.info("answer %d %s; trying again in %.1fs", reply.status, reply.reason, delay)
            sleep(delay)
            attempt += 1
            continue
        return reply
