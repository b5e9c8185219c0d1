"""Bearer token auth against a real registry: `docker-registry serve` with `auth.token`.

The registry trusts a test CA (`rootcertbundle`); the test suite's issuer checks basic
credentials (or, over OAuth2, a refresh token: an identity token) and signs RS256 JWTs with a
key certified by that CA (`x5c`). The registry serves the lab's plain registry's storage
read-only, so images pushed there are checked here. What the registry accepted is read from its
own log.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.test_registry import AMD64, _push
from updock.errors import RegistryAuthError
from updock.registry import RegistryClient
from updock.registry.hints import Hint, load, save
from updock.testing.lab import Lab
from updock.testing.token_registry import SERVICE, SigningChain, TokenIssuer, TokenRegistry

# The registry client runs in the test process: the lab's podman does not matter.
pytestmark = [pytest.mark.lab, pytest.mark.one_flavour]

USER, PASSWORD = "tok-user", "tok-pass-s3cret"
IDENTITY_TOKEN = "idt-refresh-7f3c9a1e5b"


@pytest.fixture(scope="module")
def lab(lab_session: Lab) -> Lab:
    """The session's lab, without the per-test reset: these tests start no services."""
    return lab_session


@pytest.fixture(scope="module")
def images(lab: Lab) -> dict[str, str]:
    """repo -> digest of two images on the plain registry, which the token registry serves."""
    return {repo: _push(lab, lab.plain, repo) for repo in ("tok-a", "tok-b")}


@pytest.fixture(scope="module")
def token_registry(
    lab: Lab, images: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TokenRegistry]:
    with TokenRegistry(
        tmp_path_factory.mktemp("token-registry"),
        lab.root / "registry-plain",
        {USER: PASSWORD},
        refresh_tokens={IDENTITY_TOKEN: USER},
    ) as registry:
        yield registry


@pytest.fixture
def registry(token_registry: TokenRegistry) -> TokenRegistry:
    """The token registry with the issuer's settings and records reset."""
    issuer = token_registry.issuer
    issuer.clear()
    issuer.expires_in = 300
    issuer.token_lifetime = None
    issuer.allow_anonymous = False
    issuer.expired_tokens = 0
    issuer.refresh_tokens = {IDENTITY_TOKEN: USER}
    issuer.refused_status = 400
    return token_registry


def _authfile(tmp_path: Path, host: str, user: str = USER, password: str = PASSWORD) -> str:
    path = tmp_path / "auth.json"
    secret = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {host: {"auth": secret}}}))
    return str(path)


def _insecure(tmp_path: Path, *hosts: str) -> Path:
    """A registries.conf that marks `hosts` insecure (plain HTTP allowed), and nothing else."""
    conf = tmp_path / "registries.conf"
    entries = "".join(f'[[registry]]\nlocation = "{h}"\ninsecure = true\n' for h in hosts)
    conf.write_text("unqualified-search-registries = []\n" + entries)
    return conf


def _client(**kwargs: object) -> RegistryClient:
    return RegistryClient(tls_verify=False, certs_dirs=[], **kwargs)  # type: ignore[arg-type]


def _check_concurrently(
    client: RegistryClient, host: str, authfile: str, repos: list[str]
) -> list[str]:
    with ThreadPoolExecutor(len(repos)) as pool:
        return list(
            pool.map(
                lambda repo: client.manifest_digest(
                    host, repo, "latest", authfile=authfile, **AMD64
                ),
                repos,
            )
        )


def _assert_one_401_then(registry: TokenRegistry, before: int, checks: int) -> None:
    """Since `before`, only one request met the 401: every other check waited for its answer."""
    statuses = [status for _, _, status in registry.exchanges()[before:]]
    assert statuses.count(401) == 1
    assert statuses.count(200) == checks


def test_one_token_per_repository_scope_reused_and_accepted(
    registry: TokenRegistry, images: dict[str, str], tmp_path: Path
) -> None:
    authfile = _authfile(tmp_path, registry.host)
    before = len(registry.exchanges())
    with _client() as client:
        for repo in ("tok-a", "tok-a", "tok-b", "tok-a", "tok-b"):
            got = client.manifest_digest(registry.host, repo, "latest", authfile=authfile, **AMD64)
            assert got == images[repo]
    assert [
        (r.scopes, r.service, r.account, r.authorization) for r in registry.issuer.requests
    ] == [
        (("repository:tok-a:pull",), SERVICE, USER, "ok"),
        (("repository:tok-b:pull",), SERVICE, USER, "ok"),
    ]
    # Only the very first request meets the 401; every token was accepted by the registry.
    assert registry.exchanges()[before:] == [
        ("HEAD", "/v2/tok-a/manifests/latest", 401),
        ("HEAD", "/v2/tok-a/manifests/latest", 200),
        ("HEAD", "/v2/tok-a/manifests/latest", 200),
        ("HEAD", "/v2/tok-b/manifests/latest", 200),
        ("HEAD", "/v2/tok-a/manifests/latest", 200),
        ("HEAD", "/v2/tok-b/manifests/latest", 200),
    ]


def test_concurrent_checks_share_the_first_401_and_one_token_per_scope(
    registry: TokenRegistry, images: dict[str, str], tmp_path: Path
) -> None:
    authfile = _authfile(tmp_path, registry.host)
    jobs = [repo for repo in images for _ in range(6)]
    before = len(registry.exchanges())
    with _client() as client:
        got = _check_concurrently(client, registry.host, authfile, jobs)
    assert got == [images[repo] for repo in jobs]
    assert sorted(r.scopes for r in registry.issuer.requests) == [
        ("repository:tok-a:pull",),
        ("repository:tok-b:pull",),
    ]
    _assert_one_401_then(registry, before, len(jobs))


def test_token_renewed_after_it_expires(
    registry: TokenRegistry, images: dict[str, str], tmp_path: Path
) -> None:
    authfile = _authfile(tmp_path, registry.host)
    registry.issuer.expires_in = 60
    clock = [1000.0]
    with _client(clock=lambda: clock[0]) as client:
        for _ in range(2):
            client.manifest_digest(registry.host, "tok-a", "latest", authfile=authfile, **AMD64)
        assert len(registry.issuer.requests) == 1
        clock[0] += 55  # within the margin before expiry: renewed ahead of time
        got = client.manifest_digest(registry.host, "tok-a", "latest", authfile=authfile, **AMD64)
    assert got == images["tok-a"]
    assert len(registry.issuer.requests) == 2
    assert registry.issuer.requests[1].token != registry.issuer.requests[0].token


def test_a_cached_token_the_registry_refuses_is_replaced_once(
    registry: TokenRegistry, images: dict[str, str], tmp_path: Path
) -> None:
    authfile = _authfile(tmp_path, registry.host)
    with _client() as client:
        client.manifest_digest(registry.host, "tok-a", "latest", authfile=authfile, **AMD64)
        # The next token the issuer signs has expired (an hour ago) while the client is told it
        # lives 300 s: the registry refuses it, the client fetches a new one and goes on.
        registry.issuer.expired_tokens = 1
        before = len(registry.exchanges())
        got = client.manifest_digest(registry.host, "tok-b", "latest", authfile=authfile, **AMD64)
        assert registry.exchanges()[before:] == [
            ("HEAD", "/v2/tok-b/manifests/latest", 401),
            ("HEAD", "/v2/tok-b/manifests/latest", 200),
        ]
        # The token of the other scope was never refused: still in use, not fetched again.
        registry.issuer.expired_tokens = 100
        client.manifest_digest(registry.host, "tok-a", "latest", authfile=authfile, **AMD64)
    assert got == images["tok-b"]
    assert [r.scopes[0] for r in registry.issuer.requests] == [
        "repository:tok-a:pull",
        "repository:tok-b:pull",
        "repository:tok-b:pull",
    ]


def test_a_fresh_token_refused_is_an_auth_error_naming_the_registry(
    registry: TokenRegistry, tmp_path: Path
) -> None:
    authfile = _authfile(tmp_path, registry.host)
    registry.issuer.expired_tokens = 100
    with _client() as client, pytest.raises(RegistryAuthError) as info:
        client.manifest_digest(registry.host, "tok-a", "latest", authfile=authfile, **AMD64)
    assert str(info.value).startswith(
        f"checking {registry.host}/tok-a:latest: {registry.host} refused the credentials (401"
    )
    assert len(registry.issuer.requests) == 1  # no loop of tokens


def test_wrong_credentials_are_an_auth_error_naming_the_registry(
    registry: TokenRegistry, tmp_path: Path
) -> None:
    wrong = "not-" + PASSWORD
    authfile = _authfile(tmp_path, registry.host, password=wrong)
    with _client() as client, pytest.raises(RegistryAuthError) as info:
        client.manifest_digest(registry.host, "tok-a", "latest", authfile=authfile, **AMD64)
    message = str(info.value)
    assert message.startswith(f"checking {registry.host}/tok-a:latest: ")
    assert f"token server 127.0.0.1:{registry.issuer.port} of {registry.host} refused" in message
    assert "the credentials (401" in message
    for secret in (wrong, PASSWORD, base64.b64encode(f"{USER}:{wrong}".encode()).decode()):
        assert secret not in message
    assert [r.authorization for r in registry.issuer.requests] == ["refused"]  # asked once


@pytest.mark.parametrize("tls_verify", [False, None])
def test_anonymous_pull_when_the_issuer_allows_it(
    registry: TokenRegistry, images: dict[str, str], tmp_path: Path, tls_verify: bool | None
) -> None:
    # Anonymous token requests may go over plain HTTP even where credentials may not: with
    # registries.conf (tls_verify None), the token server is not marked insecure.
    registry.issuer.allow_anonymous = True
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    conf = _insecure(tmp_path, registry.host)
    with RegistryClient(
        tls_verify, registries_conf=conf, registries_conf_dirs=[], certs_dirs=[]
    ) as client:
        got = client.manifest_digest(registry.host, "tok-a", "latest", authfile=str(empty), **AMD64)
    assert got == images["tok-a"]
    assert [(r.account, r.authorization) for r in registry.issuer.requests] == [("", "anonymous")]


def test_anonymous_refused(registry: TokenRegistry, tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    with _client() as client, pytest.raises(RegistryAuthError, match="refused anonymous access"):
        client.manifest_digest(registry.host, "tok-a", "latest", authfile=str(empty), **AMD64)


# -- identity tokens (OAuth2 refresh tokens) ----------------------------------------------------


def _token_helper(bin_dir: Path, identity_token: str) -> Path:
    """`docker-credential-idt`: the identity token (user `<token>`) for any server; logs calls."""
    calls = bin_dir / "idt.calls"
    answer = json.dumps({"Username": "<token>", "Secret": identity_token})
    script = bin_dir / "docker-credential-idt"
    script.write_text(
        f'#!/bin/sh\n[ "$1" = get ] || exit 2\ncat >> {calls}\necho >> {calls}\n'
        f"printf '%s' '{answer}'\n"
    )
    script.chmod(0o755)
    return calls


@pytest.fixture
def helper_authfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An auth file naming the helper `idt` for every registry, the helper's folder in PATH.

    The test writes the helper (`_token_helper(bin_dir, token)`) into `path.parent / "bin"`.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": {}, "credsStore": "idt"}))
    return path


def test_identity_token_from_a_helper_gets_tokens_with_an_oauth2_post(
    registry: TokenRegistry,
    images: dict[str, str],
    helper_authfile: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = _token_helper(helper_authfile.parent / "bin", IDENTITY_TOKEN)
    authfile = str(helper_authfile)
    before = len(registry.exchanges())
    caplog.set_level(logging.DEBUG)
    with _client() as client:
        for repo in ("tok-a", "tok-b", "tok-a"):
            got = client.manifest_digest(registry.host, repo, "latest", authfile=authfile, **AMD64)
            assert got == images[repo]
    # One OAuth2 POST per scope, with the identity token as refresh token and no password.
    assert [
        (
            r.method,
            r.grant_type,
            r.refresh_token,
            r.client_id,
            r.service,
            r.scopes,
            r.password_sent,
            r.authorization,
        )
        for r in registry.issuer.requests
    ] == [
        (
            "POST",
            "refresh_token",
            IDENTITY_TOKEN,
            "updock",
            SERVICE,
            (f"repository:{r}:pull",),
            False,
            "ok",
        )
        for r in ("tok-a", "tok-b")
    ]
    assert registry.exchanges()[before:] == [
        ("HEAD", "/v2/tok-a/manifests/latest", 401),
        ("HEAD", "/v2/tok-a/manifests/latest", 200),
        ("HEAD", "/v2/tok-b/manifests/latest", 200),
        ("HEAD", "/v2/tok-a/manifests/latest", 200),
    ]
    assert calls.read_text().split() == [registry.host]  # the helper is asked once
    assert caplog.records  # the client did log (debug): none of it holds the identity token
    assert all(IDENTITY_TOKEN not in record.getMessage() for record in caplog.records)


def test_identity_token_from_an_auth_file_entry(
    registry: TokenRegistry, images: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "auth.json"
    user_only = base64.b64encode(f"{USER}:".encode()).decode()  # what `docker login` writes
    entry = {"auth": user_only, "identitytoken": IDENTITY_TOKEN}
    path.write_text(json.dumps({"auths": {registry.host: entry}}))
    with _client() as client:
        got = client.manifest_digest(registry.host, "tok-b", "latest", authfile=str(path), **AMD64)
    assert got == images["tok-b"]
    assert [(r.method, r.refresh_token, r.password_sent) for r in registry.issuer.requests] == [
        ("POST", IDENTITY_TOKEN, False)
    ]


@pytest.mark.parametrize("status", [400, 401])
def test_a_wrong_identity_token_is_an_auth_error_naming_the_registry(
    registry: TokenRegistry, helper_authfile: Path, status: int
) -> None:
    wrong = "idt-wrong-" + IDENTITY_TOKEN
    _token_helper(helper_authfile.parent / "bin", wrong)
    registry.issuer.refused_status = status
    with _client() as client, pytest.raises(RegistryAuthError) as info:
        client.manifest_digest(
            registry.host, "tok-a", "latest", authfile=str(helper_authfile), **AMD64
        )
    message = str(info.value)
    assert message.startswith(f"checking {registry.host}/tok-a:latest: ")
    assert f"token server 127.0.0.1:{registry.issuer.port} of {registry.host} refused" in message
    assert f"the identity token ({status} " in message
    assert "invalid_grant" in message
    assert wrong not in message
    assert IDENTITY_TOKEN not in message
    assert [(r.method, r.refresh_token, r.authorization) for r in registry.issuer.requests] == [
        ("POST", wrong, "refused")  # asked once, no loop
    ]


def test_a_basic_registry_with_only_an_identity_token_is_an_auth_error(
    lab: Lab, helper_authfile: Path
) -> None:
    _token_helper(helper_authfile.parent / "bin", IDENTITY_TOKEN)
    conf = helper_authfile.parent / "registries.conf"
    conf.write_text("unqualified-search-registries = []\n")
    # The lab's TLS registry with htpasswd (Basic) auth, its CA from the lab's certs.d.
    secure = RegistryClient(
        registries_conf=conf, registries_conf_dirs=[], certs_dirs=[lab.etc_containers / "certs.d"]
    )
    with secure as client, pytest.raises(RegistryAuthError) as info:
        client.manifest_digest(
            lab.secure.host, "tok-basic", "latest", authfile=str(helper_authfile), **AMD64
        )
    message = str(info.value)
    assert message.startswith(f"checking {lab.secure.host}/tok-basic:latest: {lab.secure.host} ")
    assert "Basic" in message
    assert "identity token" in message
    assert IDENTITY_TOKEN not in message


# -- where credentials may go -------------------------------------------------------------------


def _configured(conf: Path, **kwargs: object) -> RegistryClient:
    """A client that follows registries.conf (no --tls-verify)."""
    return RegistryClient(registries_conf=conf, registries_conf_dirs=[], certs_dirs=[], **kwargs)  # type: ignore[arg-type]


def test_credentials_go_to_a_plain_http_token_server_only_when_it_is_insecure(
    registry: TokenRegistry, images: dict[str, str], tmp_path: Path
) -> None:
    authfile = _authfile(tmp_path, registry.host)
    token_server = f"127.0.0.1:{registry.issuer.port}"
    # The registry is insecure (it speaks plain HTTP), its token server (plain HTTP too) is not.
    before = len(registry.exchanges())
    conf = _insecure(tmp_path, registry.host)
    with _configured(conf) as client, pytest.raises(RegistryAuthError) as info:
        client.manifest_digest(registry.host, "tok-a", "latest", authfile=authfile, **AMD64)
    message = str(info.value)
    assert message.startswith(f"checking {registry.host}/tok-a:latest: the token server ")
    assert f"{token_server} of {registry.host} speaks plain HTTP" in message
    assert "only over HTTPS" in message
    assert registry.issuer.requests == []  # nothing at all went there
    assert registry.exchanges()[before:] == [("HEAD", "/v2/tok-a/manifests/latest", 401)]

    # Marked insecure as well: the credentials go there, and the check succeeds.
    with _configured(_insecure(tmp_path, registry.host, token_server)) as client:
        got = client.manifest_digest(registry.host, "tok-a", "latest", authfile=authfile, **AMD64)
    assert got == images["tok-a"]
    assert [(r.account, r.authorization) for r in registry.issuer.requests] == [(USER, "ok")]


def test_an_identity_token_goes_to_a_plain_http_token_server_only_when_it_is_insecure(
    registry: TokenRegistry, helper_authfile: Path
) -> None:
    _token_helper(helper_authfile.parent / "bin", IDENTITY_TOKEN)
    conf = _insecure(helper_authfile.parent, registry.host)
    with _configured(conf) as client, pytest.raises(RegistryAuthError, match="plain HTTP"):
        client.manifest_digest(
            registry.host, "tok-a", "latest", authfile=str(helper_authfile), **AMD64
        )
    assert registry.issuer.requests == []


# -- token servers from the hints file ----------------------------------------------------------


def test_a_token_server_named_only_by_the_hints_file_gets_no_credentials(
    registry: TokenRegistry, images: dict[str, str], tmp_path: Path
) -> None:
    # A hints file that names another token server (one that would take any password): the
    # registry's own challenge sends the credentials to its real token server instead.
    foreign = TokenIssuer(SigningChain.create(), {USER: PASSWORD})
    try:
        hints = tmp_path / "registry-hints.json"
        save(hints, {registry.host: Hint("http", "bearer", foreign.realm, SERVICE)})
        authfile = _authfile(tmp_path, registry.host)
        repos = ["tok-a", "tok-b"] * 3
        before = len(registry.exchanges())
        with _client(hints_file=hints) as client:
            got = _check_concurrently(client, registry.host, authfile, repos)
        assert got == [images[repo] for repo in repos]
        assert foreign.requests == []
    finally:
        foreign.close()
    # One request asked the registry (the only 401); the others waited for its answer.
    _assert_one_401_then(registry, before, len(repos))
    assert sorted((r.scopes[0], r.authorization) for r in registry.issuer.requests) == [
        ("repository:tok-a:pull", "ok"),
        ("repository:tok-b:pull", "ok"),
    ]
    assert load(hints)[registry.host].realm == registry.issuer.realm


def test_a_remembered_token_server_is_confirmed_once_per_run(
    registry: TokenRegistry, images: dict[str, str], tmp_path: Path
) -> None:
    hints = tmp_path / "registry-hints.json"
    save(hints, {registry.host: Hint("http", "bearer", registry.issuer.realm, SERVICE)})
    authfile = _authfile(tmp_path, registry.host)
    repos = ["tok-a", "tok-b"] * 3
    for _ in range(2):  # each run confirms it once
        before = len(registry.exchanges())
        with _client(hints_file=hints) as client:
            assert _check_concurrently(client, registry.host, authfile, repos) == [
                images[repo] for repo in repos
            ]
        _assert_one_401_then(registry, before, len(repos))


def test_anonymous_checks_use_a_remembered_token_server_at_once(
    registry: TokenRegistry, images: dict[str, str], tmp_path: Path
) -> None:
    registry.issuer.allow_anonymous = True
    hints = tmp_path / "registry-hints.json"
    save(hints, {registry.host: Hint("http", "bearer", registry.issuer.realm, SERVICE)})
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    before = len(registry.exchanges())
    with _client(hints_file=hints) as client:
        got = client.manifest_digest(registry.host, "tok-a", "latest", authfile=str(empty), **AMD64)
    assert got == images["tok-a"]
    assert registry.exchanges()[before:] == [("HEAD", "/v2/tok-a/manifests/latest", 200)]
    assert [r.authorization for r in registry.issuer.requests] == ["anonymous"]
