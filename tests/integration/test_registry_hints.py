"""Registry hints against real registries: a run that knows a registry from an earlier run sends
every check at once, over the scheme it knows, with the authentication it knows; a hint that no
longer holds is learned again, and the check still succeeds.

The fault proxy (`FaultProxy`) in front of the lab's plain registry counts connections and
requests and adds the round trip; the TLS registry (`lab.secure`, basic auth) logs every
request with its status.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.test_registry import AMD64, _exchanges, _new_exchanges, _push
from updock.registry import RegistryClient
from updock.registry.hints import Hint, load, save
from updock.registry.retry import RetryPolicy
from updock.testing.lab import Lab, free_port
from updock.testing.proxy import FaultProxy

# The registry client runs in the test process: the lab's podman does not matter.
pytestmark = [
    pytest.mark.lab,
    pytest.mark.one_flavour,
    pytest.mark.filterwarnings("ignore:Unverified HTTPS request"),
]

REPOS = ("hint-a", "hint-b", "hint-c")
FAST = RetryPolicy(attempts=2, base_delay=0.1, max_delay=0.2)
DELAY = 0.3  # per request through the proxy: long enough to tell "at once" from "one by one"


@pytest.fixture(scope="module")
def lab(lab_session: Lab) -> Lab:
    """The session's lab, without the per-test reset: these tests start no services."""
    return lab_session


@pytest.fixture(scope="module")
def digests(lab: Lab) -> dict[str, str]:
    return {repo: _push(lab, lab.plain, repo) for repo in REPOS}


@pytest.fixture
def proxy(lab: Lab) -> Iterator[FaultProxy]:
    with FaultProxy(lab.plain.host) as p:
        yield p


def _check_all(client: RegistryClient, host: str) -> dict[str, str]:
    """Check every repo at once, from as many threads, as a run does."""

    def one(repo: str) -> str:
        return client.manifest_digest(host, repo, "latest", authfile=None, **AMD64)

    with ThreadPoolExecutor(len(REPOS)) as pool:
        return dict(zip(REPOS, pool.map(one, REPOS), strict=True))


def _client(hints: Path) -> RegistryClient:
    # --tls-verify=false: the proxy may be spoken to over plain HTTP, after HTTPS was tried.
    return RegistryClient(tls_verify=False, certs_dirs=[], hints_file=hints, retry=FAST)


def test_the_second_run_sends_every_check_at_once_over_the_known_scheme(
    proxy: FaultProxy, digests: dict[str, str], tmp_path: Path
) -> None:
    hints = tmp_path / "registry-hints.json"
    proxy.delay = DELAY
    with _client(hints) as client:
        assert _check_all(client, proxy.host) == digests
    # The first run tried HTTPS once, then let one request meet the registry alone.
    first = sorted(r.started for r in proxy.requests)
    assert first[1] - first[0] >= DELAY * 0.9
    assert load(hints) == {proxy.host: Hint("http")}

    proxy.clear()
    with _client(hints) as client:
        assert _check_all(client, proxy.host) == digests
    assert sorted((r.method, r.path) for r in proxy.requests) == [
        ("HEAD", f"/v2/{repo}/manifests/latest") for repo in REPOS
    ]
    assert proxy.connections == len(REPOS)  # no failed HTTPS attempt
    starts = sorted(r.started for r in proxy.requests)
    assert starts[-1] - starts[0] < DELAY / 2  # all at once


def test_a_scheme_that_no_longer_works_is_learned_again(
    proxy: FaultProxy, digests: dict[str, str], tmp_path: Path
) -> None:
    hints = tmp_path / "registry-hints.json"
    save(hints, {proxy.host: Hint("https")})  # as if it had served TLS
    with _client(hints) as client:
        assert _check_all(client, proxy.host) == digests
    assert load(hints) == {proxy.host: Hint("http")}


def test_a_registry_that_moved_to_tls_is_learned_again(lab: Lab, tmp_path: Path) -> None:
    digest = _push(lab, lab.secure, "hint-tls")
    hints = tmp_path / "registry-hints.json"
    save(hints, {lab.secure.host: Hint("http")})  # as if it had been plain HTTP
    with _client(hints) as client:
        got = client.manifest_digest(
            lab.secure.host, "hint-tls", "latest", authfile=str(lab.authfile), **AMD64
        )
    assert got == digest
    assert load(hints) == {lab.secure.host: Hint("https", "basic")}


def test_remembered_basic_auth_sends_credentials_at_once(lab: Lab, tmp_path: Path) -> None:
    digest = _push(lab, lab.secure, "hint-basic")
    hints = tmp_path / "registry-hints.json"

    def check() -> str:
        with _client(hints) as client:
            return client.manifest_digest(
                lab.secure.host, "hint-basic", "latest", authfile=str(lab.authfile), **AMD64
            )

    before = len(_exchanges(lab.secure))
    assert check() == digest
    assert [e.status for e in _new_exchanges(lab.secure, before, 2)] == [401, 200]
    before = len(_exchanges(lab.secure))
    assert check() == digest
    assert [e.status for e in _new_exchanges(lab.secure, before, 1)] == [200]
    assert "password" not in (hints.read_text().lower())


def test_a_token_server_that_moved_is_forgotten(
    proxy: FaultProxy, digests: dict[str, str], tmp_path: Path
) -> None:
    hints = tmp_path / "registry-hints.json"
    gone = f"http://127.0.0.1:{free_port()}/token"  # nothing listens there
    save(hints, {proxy.host: Hint("http", "bearer", gone, "svc")})
    with _client(hints) as client:
        assert _check_all(client, proxy.host) == digests
    assert load(hints) == {proxy.host: Hint("http")}
    doc = json.loads(hints.read_text())
    assert gone not in json.dumps(doc)
