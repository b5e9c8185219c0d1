"""Faults between the client and a real registry, injected by a loopback proxy the tests control.

The proxy (`updock.testing.proxy.FaultProxy`) forwards to the lab's plain registry and records
every request it saw, with times: retries, waits and request counts are read from it.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.integration.test_registry import AMD64, _push
from updock.errors import RegistryError
from updock.registry import RegistryClient
from updock.registry.manifest import OCI_INDEX
from updock.registry.retry import RetryPolicy
from updock.testing.lab import Lab, free_port
from updock.testing.proxy import FaultProxy

# The registry client runs in the test process: the lab's podman does not matter.
pytestmark = [pytest.mark.lab, pytest.mark.one_flavour]

FAST = RetryPolicy(attempts=3, base_delay=0.2, max_delay=1.0, max_retry_after=2.0)
MANIFEST = "/v2/fault-app/manifests/latest"


@pytest.fixture(scope="module")
def lab(lab_session: Lab) -> Lab:
    """The session's lab, without the per-test reset: these tests start no services."""
    return lab_session


@pytest.fixture(scope="module")
def digest(lab: Lab) -> str:
    return _push(lab, lab.plain, "fault-app")


@pytest.fixture
def proxy(lab: Lab) -> Iterator[FaultProxy]:
    with FaultProxy(lab.plain.host) as p:
        yield p


def _client(**kwargs: object) -> RegistryClient:
    kwargs.setdefault("retry", FAST)
    return RegistryClient(tls_verify=False, certs_dirs=[], **kwargs)  # type: ignore[arg-type]


def _check(client: RegistryClient, proxy: FaultProxy, repo: str = "fault-app") -> str:
    return client.manifest_digest(proxy.host, repo, "latest", authfile=None, **AMD64)


def _gaps(proxy: FaultProxy) -> list[float]:
    starts = sorted(r.started for r in proxy.requests)
    return [b - a for a, b in itertools.pairwise(starts)]


# -- 5xx ----------------------------------------------------------------------------------------


def test_5xx_is_retried_with_backoff(proxy: FaultProxy, digest: str) -> None:
    proxy.fail(503, times=2, path=MANIFEST)
    with _client() as client:
        assert _check(client, proxy) == digest
    assert [(r.method, r.status) for r in proxy.requests] == [
        ("HEAD", 503),
        ("HEAD", 503),
        ("HEAD", 200),
    ]
    first, second = _gaps(proxy)
    assert first >= FAST.base_delay / 2  # 0.1-0.2 s
    assert second >= FAST.base_delay  # 0.2-0.4 s: doubled


def test_persistent_5xx_fails_after_three_attempts(proxy: FaultProxy) -> None:
    proxy.fail(502, times=10)
    with _client() as client, pytest.raises(RegistryError) as info:
        _check(client, proxy)
    assert str(info.value) == (
        f"checking {proxy.host}/fault-app:latest: {proxy.host} answered 502 Bad Gateway "
        "(after 3 attempts)"
    )
    assert len(proxy.requests) == 3


def test_4xx_is_not_retried(proxy: FaultProxy) -> None:
    proxy.fail(400, times=10)
    with _client() as client, pytest.raises(RegistryError, match=r"answered 400 Bad Request$"):
        _check(client, proxy)
    assert len(proxy.requests) == 1


# -- 429 ----------------------------------------------------------------------------------------


def test_429_waits_for_retry_after(proxy: FaultProxy, digest: str) -> None:
    proxy.fail(429, path=MANIFEST, headers={"Retry-After": "1"})
    with _client() as client:
        assert _check(client, proxy) == digest
    assert [r.status for r in proxy.requests] == [429, 200]
    assert _gaps(proxy)[0] >= 1.0


def test_429_asking_for_too_long_fails_at_once(proxy: FaultProxy) -> None:
    proxy.fail(429, times=10, headers={"Retry-After": "3600"})
    started = time.monotonic()
    with _client() as client, pytest.raises(RegistryError) as info:
        _check(client, proxy)
    assert time.monotonic() - started < 1
    assert str(info.value).startswith(
        f"checking {proxy.host}/fault-app:latest: {proxy.host} is rate limiting "
        "(429 Too Many Requests, Retry-After: 3600)"
    )
    assert len(proxy.requests) == 1  # never hammered


def test_429_holds_back_every_thread_of_the_run(proxy: FaultProxy, digest: str) -> None:
    proxy.fail(429, headers={"Retry-After": "1"})
    with _client() as client, ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda _: _check(client, proxy), range(4)))
    assert got == [digest] * 4
    refused = [r for r in proxy.requests if r.status == 429]
    assert len(refused) == 1
    others = [r for r in proxy.requests if r.status != 429]
    assert len(others) == 4
    assert min(r.started for r in others) - refused[0].ended >= 0.95


# -- connections --------------------------------------------------------------------------------


def test_reset_connection_is_retried(proxy: FaultProxy, digest: str) -> None:
    proxy.reset(path=MANIFEST)
    with _client() as client:
        assert _check(client, proxy) == digest
    assert [(r.fault, r.status) for r in proxy.requests] == [("reset", 0), ("", 200)]


def test_persistent_resets_fail_naming_the_registry(proxy: FaultProxy) -> None:
    proxy.reset(times=10)
    with _client() as client, pytest.raises(RegistryError) as info:
        _check(client, proxy)
    message = str(info.value)
    assert message.startswith(f"checking {proxy.host}/fault-app:latest: ")
    assert proxy.host in message.partition(": ")[2]
    assert "reset" in message
    assert message.endswith("(3 attempts)")
    assert len(proxy.requests) == 3


def test_read_timeout_is_retried_then_fails(proxy: FaultProxy, digest: str) -> None:
    proxy.stall(1.0, times=1)
    with _client(timeout=(1.0, 0.3)) as client:
        assert _check(client, proxy) == digest  # the second attempt is not held back
        proxy.stall(1.0, times=3)
        with pytest.raises(RegistryError) as info:
            _check(client, proxy)
    assert str(info.value) == (
        f"checking {proxy.host}/fault-app:latest: {proxy.host} did not answer within 0.3s "
        "(3 attempts)"
    )


def test_a_body_that_drips_in_too_slowly_times_out(lab: Lab, proxy: FaultProxy) -> None:
    """The read timeout bounds the whole answer, not only the wait for each piece of it."""
    amd64 = _push(lab, lab.plain, "fault-index", "amd64")
    base = f"http://{lab.plain.host}/v2/fault-index/manifests"
    got = requests.get(
        f"{base}/amd64", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}
    )
    entry = {
        "mediaType": got.headers["Content-Type"],
        "digest": amd64,
        "size": len(got.content),
        "platform": {"os": "linux", "architecture": "amd64"},
    }
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}, indent=8)
    requests.put(
        f"{base}/latest", data=index, headers={"Content-Type": OCI_INDEX}
    ).raise_for_status()
    with _client(timeout=(1.0, 0.5), retry=RetryPolicy(attempts=1)) as client:
        assert (
            client.manifest_digest(proxy.host, "fault-index", "latest", authfile=None, **AMD64)
            == amd64
        )
        proxy.chunk_size, proxy.chunk_delay = 50, 0.1  # each piece in time, all of it not
        with pytest.raises(RegistryError) as info:
            client.manifest_digest(proxy.host, "fault-index", "latest", authfile=None, **AMD64)
    assert str(info.value) == (
        f"checking {proxy.host}/fault-index:latest: {proxy.host} did not send its whole answer "
        "within 0.5s"
    )


def test_a_registry_that_is_down_fails_fast_after_its_first_check(lab: Lab, digest: str) -> None:
    down = f"127.0.0.1:{free_port()}"
    with _client() as client:
        started = time.monotonic()
        with pytest.raises(RegistryError) as first:
            client.manifest_digest(down, "app", "1", authfile=None, **AMD64)
        took = time.monotonic() - started
        assert took >= FAST.base_delay / 2 + FAST.base_delay  # two waits between three attempts
        started = time.monotonic()
        with pytest.raises(RegistryError) as second:
            client.manifest_digest(down, "other", "2", authfile=None, **AMD64)
        assert time.monotonic() - started < 0.1
        # Another registry is not affected.
        assert client.manifest_digest(lab.plain.host, "fault-app", "latest", authfile=None, **AMD64)
    assert str(first.value).startswith(f"checking {down}/app:1: cannot connect to {down} ")
    assert "Connection refused" in str(first.value)
    assert str(first.value).endswith("(3 attempts)")
    assert str(second.value) == str(first.value).replace(f"{down}/app:1", f"{down}/other:2")


# -- concurrency --------------------------------------------------------------------------------


@pytest.mark.parametrize("bound", [1, 3])
def test_requests_in_flight_per_registry_are_bounded(proxy: FaultProxy, bound: int) -> None:
    proxy.delay = 0.1
    tags = [f"missing-{n}" for n in range(9)]
    errors: list[str] = []
    lock = threading.Lock()

    def check(tag: str) -> None:
        try:
            client.manifest_digest(proxy.host, "fault-app", tag, authfile=None, **AMD64)
        except RegistryError as exc:
            with lock:
                errors.append(str(exc))

    with _client(concurrency=bound) as client, ThreadPoolExecutor(9) as pool:
        list(pool.map(check, tags))
    assert len(errors) == 9
    assert all("manifest unknown" in e for e in errors)
    assert proxy.max_in_flight == bound
    assert len(proxy.requests) == 9
    # Connections kept open and reused; one more for the HTTPS attempt of the first contact,
    # which the other threads waited for instead of trying HTTPS themselves.
    assert proxy.connections == bound + 1
    assert 1 not in {r.connection for r in proxy.requests}


def test_sequential_checks_reuse_one_connection(proxy: FaultProxy, digest: str) -> None:
    with _client() as client:
        for _ in range(3):
            assert _check(client, proxy) == digest
    assert proxy.connections == 2  # the first one was the HTTPS attempt
    assert {r.connection for r in proxy.requests} == {2}
    assert proxy.counts() == {("HEAD", MANIFEST): 3}
