"""Counting a client's registry requests per host (`registry.counts`), for metrics."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from updock.registry.counts import RequestCounts
from updock.registry.exchange import Reply, TransientFailure


def test_requests_and_failures_are_counted_per_host_and_401_is_no_failure() -> None:
    counts = RequestCounts()

    def answer(status: int) -> Callable[[], Reply]:
        return lambda: Reply(status, "", {}, b"")

    for status in (200, 401, 404, 503):
        counts.counted("reg:5000", answer(status))
    counts.counted("auth:443", answer(200))

    def refused() -> Reply:
        raise TransientFailure("cannot connect to reg:5000: refused")

    with pytest.raises(TransientFailure):
        counts.counted("reg:5000", refused)
    assert counts.snapshot() == ({"reg:5000": 5, "auth:443": 1}, {"reg:5000": 3})
