"""The pure parts of `updock serve`: the schedule, the API's address and update requests."""

from __future__ import annotations

import socket
import time
from datetime import datetime

import pytest

from updock.service.api import ApiError, _update_request, parse_listen
from updock.service.schedule import Schedule


def _local(text: str) -> float:
    return time.mktime(time.strptime(text, "%Y-%m-%d %H:%M:%S"))


def test_the_next_run_is_the_cron_time_in_local_time_plus_jitter() -> None:
    now = _local("2025-05-04 03:10:00")
    assert Schedule("0 4 * * *").next_after(now) == _local("2025-05-04 04:00:00")
    assert Schedule("0 4 * * *").next_after(_local("2025-05-04 04:00:00")) == _local(
        "2025-05-05 04:00:00"
    )
    half = Schedule("0 4 * * *", jitter=600, rand=lambda: 0.5)
    assert half.next_after(now) == _local("2025-05-04 04:05:00")
    daily = Schedule("@daily").next_after(now)
    assert datetime.fromtimestamp(daily).strftime("%H:%M") == "00:00"


@pytest.mark.parametrize("expression", ["", "61 * * * *", "every day", "* * *"])
def test_bad_schedules(expression: str) -> None:
    with pytest.raises(ValueError, match="is no cron expression"):
        Schedule(expression)


def test_addresses() -> None:
    assert parse_listen("127.0.0.1:8425") == ("127.0.0.1", 8425, socket.AF_INET)
    assert parse_listen("[::1]:9000") == ("::1", 9000, socket.AF_INET6)
    for bad in ("8425", "127.0.0.1", "::1:80", "host:0", "host:70000", ":80"):
        with pytest.raises(ValueError, match=r"HOST:PORT|brackets"):
            parse_listen(bad)


def test_update_requests() -> None:
    assert _update_request(b"") is None
    assert _update_request(b" {} ") is None
    assert _update_request(b'{"dry_run": true}') is True
    assert _update_request(b'{"dry_run": false}') is False
    for bad in (b"{", b"null", b'{"dry_run": 1}', b'{"dry_run": null}', b'{"x": 1}'):
        with pytest.raises(ApiError):
            _update_request(bad)
