"""Credential helpers (`credHelpers`, `credsStore`): which source is tried, and running them.

The helpers are tiny shell scripts written into a PATH folder of the test; they follow the
docker-credential-helpers protocol (`get`, the server on stdin, JSON on stdout).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from updock.errors import ConfigError
from updock.registry.auth import (
    AuthDoc,
    CredentialHelpers,
    Credentials,
    EntrySource,
    HelperSource,
    credential_sources,
    find_credentials,
    helper_servers,
)

SECRET = "helper-s3cr3t"


def _auth(user: str, password: str = "file-pw") -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, auth_home: Path) -> Path:
    """A folder first in PATH for the test's helpers; no auth file of the caller is read."""
    path = tmp_path / "bin"
    path.mkdir()
    monkeypatch.setenv("PATH", f"{path}:/usr/bin:/bin")
    return path


def write_helper(bin_dir: Path, name: str, known: dict[str, tuple[str, str]]) -> Path:
    """`docker-credential-<name>`: answers for the servers in `known`; logs each call."""
    calls = bin_dir / f"{name}.calls"
    cases = ""
    for server, (user, secret) in known.items():
        answer = json.dumps({"ServerURL": server, "Username": user, "Secret": secret})
        cases += f"  {_sh(server)}) printf '%s' {_sh(answer)} ;;\n"
    script = bin_dir / f"docker-credential-{name}"
    script.write_text(
        "#!/bin/sh\n"
        '[ "$1" = get ] || { echo "unsupported: $1" >&2; exit 2; }\n'
        "server=$(cat)\n"
        f'printf "%s\\n" "$server" >> {_sh(str(calls))}\n'
        'case "$server" in\n'
        f"{cases}"
        '  *) echo "credentials not found in native keychain"; exit 1 ;;\n'
        "esac\n"
    )
    script.chmod(0o755)
    return calls


def _sh(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def _calls(calls: Path) -> list[str]:
    return calls.read_text().splitlines() if calls.exists() else []


# -- which source, in which order (pure) --------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "registry", "repository", "expected"),
    [
        (AuthDoc({}), "reg.example.com", "app", []),
        (
            AuthDoc({"reg.example.com": {}}, {"reg.example.com": "pass"}),
            "reg.example.com",
            "app",
            [HelperSource("pass"), EntrySource("reg.example.com")],
        ),
        (  # the helper of another registry is not asked
            AuthDoc({}, {"other.example.com": "pass"}, "store"),
            "reg.example.com",
            "app",
            [HelperSource("store")],
        ),
        (  # entries, most specific first, before the default store
            AuthDoc({"reg.example.com": {}, "reg.example.com/ns": {}}, {}, "store"),
            "reg.example.com",
            "ns/app",
            [
                EntrySource("reg.example.com/ns"),
                EntrySource("reg.example.com"),
                HelperSource("store"),
            ],
        ),
        (  # docker's Hub key names Docker Hub, whatever alias the image uses
            AuthDoc({}, {"https://index.docker.io/v1/": "hub"}),
            "docker.io",
            "library/alpine",
            [HelperSource("hub")],
        ),
        (  # an exact key before a URL key of the same host
            AuthDoc({}, {"https://reg.example.com": "url", "reg.example.com": "exact"}),
            "reg.example.com",
            "app",
            [HelperSource("exact")],
        ),
        (  # the port is part of the registry
            AuthDoc({}, {"127.0.0.1:5000": "five"}),
            "127.0.0.1:5001",
            "app",
            [],
        ),
    ],
)
def test_credential_sources(
    doc: AuthDoc, registry: str, repository: str, expected: list[object]
) -> None:
    assert credential_sources(doc, registry, repository) == expected


@pytest.mark.parametrize(
    ("registry", "expected"),
    [
        ("quay.io", ["quay.io"]),
        ("127.0.0.1:5000", ["127.0.0.1:5000"]),
        ("docker.io", ["docker.io", "https://index.docker.io/v1/"]),
        ("index.docker.io", ["docker.io", "https://index.docker.io/v1/"]),
    ],
)
def test_helper_servers(registry: str, expected: list[str]) -> None:
    assert helper_servers(registry) == expected


# -- running helpers ----------------------------------------------------------------------------


def test_cred_helpers_entry_is_used_and_wins_over_auths(bin_dir: Path, tmp_path: Path) -> None:
    calls = write_helper(bin_dir, "pass", {"reg.example.com": ("helper-user", SECRET)})
    authfile = tmp_path / "config.json"
    authfile.write_text(
        json.dumps(
            {
                "auths": {"reg.example.com": _auth("file-user")},
                "credHelpers": {"reg.example.com": "pass"},
            }
        )
    )
    creds = find_credentials("reg.example.com", "ns/app", str(authfile))
    assert creds == Credentials("helper-user", SECRET)
    assert _calls(calls) == ["reg.example.com"]


def test_creds_store_behind_docker_markers(bin_dir: Path) -> None:
    calls = write_helper(bin_dir, "desktop", {"127.0.0.1:5000": ("store-user", SECRET)})
    docker = Path.home() / ".docker"
    docker.mkdir()
    (docker / "config.json").write_text(
        json.dumps({"auths": {"127.0.0.1:5000": {}}, "credsStore": "desktop"})
    )
    assert find_credentials("127.0.0.1:5000", "app", None) == Credentials("store-user", SECRET)
    assert find_credentials("127.0.0.1:5001", "app", None) is None  # helper knows nothing
    assert _calls(calls) == ["127.0.0.1:5000", "127.0.0.1:5001"]


def test_helper_with_nothing_sends_the_search_to_the_next_file(bin_dir: Path) -> None:
    write_helper(bin_dir, "empty", {})
    first = Path.home() / ".config" / "containers" / "auth.json"
    first.parent.mkdir(parents=True)
    first.write_text(json.dumps({"credHelpers": {"reg.example.com": "empty"}}))
    docker = Path.home() / ".docker" / "config.json"
    docker.parent.mkdir()
    docker.write_text(json.dumps({"auths": {"reg.example.com": _auth("docker-user")}}))
    assert find_credentials("reg.example.com", "app", None) == Credentials("docker-user", "file-pw")


def test_docker_hub_asks_docker_io_then_the_v1_url(bin_dir: Path, tmp_path: Path) -> None:
    calls = write_helper(bin_dir, "hub", {"https://index.docker.io/v1/": ("hub-user", SECRET)})
    authfile = tmp_path / "config.json"
    authfile.write_text(json.dumps({"credsStore": "hub"}))
    assert find_credentials("docker.io", "library/alpine", str(authfile)) == Credentials(
        "hub-user", SECRET
    )
    assert _calls(calls) == ["docker.io", "https://index.docker.io/v1/"]


def test_each_helper_and_server_runs_once_per_run(bin_dir: Path, tmp_path: Path) -> None:
    calls = write_helper(bin_dir, "pass", {"reg.example.com": ("helper-user", SECRET)})
    authfile = tmp_path / "config.json"
    authfile.write_text(json.dumps({"credsStore": "pass"}))
    helpers = CredentialHelpers()
    for repo in ("a", "b", "ns/c", "a"):
        creds = find_credentials("reg.example.com", repo, str(authfile), helpers=helpers)
        assert creds == Credentials("helper-user", SECRET)
    assert _calls(calls) == ["reg.example.com"]


def test_missing_helper_is_an_error_naming_helper_and_file(bin_dir: Path, tmp_path: Path) -> None:
    authfile = tmp_path / "config.json"
    authfile.write_text(json.dumps({"credHelpers": {"reg.example.com": "nowhere"}}))
    with pytest.raises(ConfigError) as info:
        find_credentials("reg.example.com", "app", str(authfile))
    message = str(info.value)
    assert "docker-credential-nowhere" in message
    assert str(authfile) in message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('echo "keyring locked" >&2; exit 3', "failed for reg.example.com: keyring locked"),
        (  # what it printed on standard output is never quoted: it may be the secret
            f"""printf '{{"Username": "u", "Secret": "{SECRET}"}}'; exit 1""",
            "failed for reg.example.com: exit status 1",
        ),
        (
            f"echo '{SECRET}'; echo 'store is read-only' >&2; exit 4",
            "failed for reg.example.com: store is read-only",
        ),
        (f"printf '%s' 'not json {SECRET}'", "answered no valid JSON"),
        (f"""printf '%s' '{{"Username": 1, "Secret": "{SECRET}"}}'""", '"Username" and "Secret"'),
    ],
)
def test_failing_helper_names_helper_and_file_never_the_secret(
    bin_dir: Path, tmp_path: Path, body: str, expected: str
) -> None:
    script = bin_dir / "docker-credential-odd"
    script.write_text(f"#!/bin/sh\ncat >/dev/null\n{body}\n")
    script.chmod(0o755)
    authfile = tmp_path / "config.json"
    authfile.write_text(json.dumps({"credHelpers": {"reg.example.com": "odd"}}))
    with pytest.raises(ConfigError) as info:
        find_credentials("reg.example.com", "app", str(authfile))
    message = str(info.value)
    assert expected in message
    assert "docker-credential-odd" in message
    assert str(authfile) in message
    assert SECRET not in message
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or SECRET not in str(info.value.__context__)


def test_helper_answering_token_user_gives_an_identity_token(bin_dir: Path, tmp_path: Path) -> None:
    calls = write_helper(bin_dir, "idt", {"reg.example.com": ("<token>", SECRET)})
    authfile = tmp_path / "config.json"
    authfile.write_text(json.dumps({"credHelpers": {"reg.example.com": "idt"}}))
    helpers = CredentialHelpers()
    for repo in ("app", "ns/other"):
        creds = find_credentials("reg.example.com", repo, str(authfile), helpers=helpers)
        # containers/image and docker alike: no user name, no password, the Secret is the token.
        assert creds == Credentials("", "", SECRET)
        assert creds is not None
        assert creds.identity_token == SECRET
        assert SECRET not in repr(creds)
    assert _calls(calls) == ["reg.example.com"]


def test_helper_answering_token_user_for_docker_hub(bin_dir: Path, tmp_path: Path) -> None:
    write_helper(bin_dir, "hubidt", {"https://index.docker.io/v1/": ("<token>", SECRET)})
    authfile = tmp_path / "config.json"
    authfile.write_text(json.dumps({"credsStore": "hubidt"}))
    creds = find_credentials("docker.io", "library/alpine", str(authfile))
    assert creds == Credentials("", "", SECRET)


def test_helper_answering_token_user_without_a_token_has_nothing(
    bin_dir: Path, tmp_path: Path
) -> None:
    write_helper(bin_dir, "empty-idt", {"reg.example.com": ("<token>", "")})
    first = tmp_path / "config.json"
    first.write_text(json.dumps({"credHelpers": {"reg.example.com": "empty-idt"}}))
    assert find_credentials("reg.example.com", "app", str(first)) is None


def test_helper_error_is_remembered_for_the_run(bin_dir: Path, tmp_path: Path) -> None:
    calls = bin_dir / "calls"
    script = bin_dir / "docker-credential-broken"
    script.write_text(f"#!/bin/sh\ncat >/dev/null\necho x >> {calls}\necho broken; exit 2\n")
    script.chmod(0o755)
    authfile = tmp_path / "config.json"
    authfile.write_text(json.dumps({"credsStore": "broken"}))
    helpers = CredentialHelpers()
    for repo in ("a", "b"):
        with pytest.raises(ConfigError, match="broken"):
            find_credentials("reg.example.com", repo, str(authfile), helpers=helpers)
    assert calls.read_text() == "x\n"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"credHelpers": ["pass"]}, '"credHelpers" is not a map'),
        ({"credHelpers": {"reg.example.com": 3}}, '"credHelpers" is not a map'),
        ({"credsStore": 3}, '"credsStore" is not a string'),
        ({"credsStore": "../evil"}, "invalid credential helper name"),
    ],
)
def test_invalid_helper_settings(
    bin_dir: Path, tmp_path: Path, content: dict[str, object], expected: str
) -> None:
    authfile = tmp_path / "config.json"
    authfile.write_text(json.dumps(content))
    with pytest.raises(ConfigError, match=expected):
        find_credentials("reg.example.com", "app", str(authfile))


def test_slow_helper_times_out(bin_dir: Path, tmp_path: Path) -> None:
    script = bin_dir / "docker-credential-slow"
    script.write_text("#!/bin/sh\nexec sleep 5\n")
    script.chmod(0o755)
    authfile = tmp_path / "config.json"
    authfile.write_text(json.dumps({"credsStore": "slow"}))
    with pytest.raises(ConfigError, match=r"did not answer within 0\.3s"):
        find_credentials(
            "reg.example.com", "app", str(authfile), helpers=CredentialHelpers(timeout=0.3)
        )
