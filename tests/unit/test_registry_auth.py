"""Credentials lookup in auth files: which file, which key, and no secret in any error."""

from __future__ import annotations

import base64
import json
import logging
import os
import re
from pathlib import Path

import pytest

from updock.errors import ConfigError
from updock.registry.auth import AuthFile, Credentials, default_authfiles, find_credentials

SECRET = "s3cr3t-pw"


def _auth(user: str, password: str = SECRET) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def _write(path: Path, auths: dict[str, object], *, wrap: bool = True) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": auths} if wrap else auths))
    return str(path)


@pytest.fixture(autouse=True)
def home(auth_home: Path) -> Path:
    """Default locations all under tmp_path; no auth variables from the caller's environment."""
    return auth_home


# -- keys within one file -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("repository", "expected"),
    [
        ("ns/repo", "repo-user"),
        ("ns/other", "ns-user"),
        ("ns/sub/deep", "ns-user"),
        ("elsewhere/repo", "host-user"),
        ("repo", "host-user"),
    ],
)
def test_most_specific_key_wins(tmp_path: Path, repository: str, expected: str) -> None:
    authfile = _write(
        tmp_path / "auth.json",
        {
            "reg.example.com": _auth("host-user"),
            "reg.example.com/ns": _auth("ns-user"),
            "reg.example.com/ns/repo": _auth("repo-user"),
            "other.example.com": _auth("other-user"),
        },
    )
    creds = find_credentials("reg.example.com", repository, authfile)
    assert creds == Credentials(expected, SECRET)


def test_namespace_key_does_not_match_a_prefix_of_a_component(tmp_path: Path) -> None:
    authfile = _write(tmp_path / "auth.json", {"reg.example.com/ns": _auth("ns-user")})
    assert find_credentials("reg.example.com", "nsx/repo", authfile) is None


def test_port_is_part_of_the_registry(tmp_path: Path) -> None:
    authfile = _write(tmp_path / "auth.json", {"127.0.0.1:5000": _auth("five")})
    assert find_credentials("127.0.0.1:5000", "app", authfile) == Credentials("five", SECRET)
    assert find_credentials("127.0.0.1:5001", "app", authfile) is None
    assert find_credentials("127.0.0.1", "app", authfile) is None


def test_no_entry_means_anonymous(tmp_path: Path) -> None:
    authfile = _write(tmp_path / "auth.json", {"other.example.com": _auth("x")})
    assert find_credentials("reg.example.com", "app", authfile) is None


@pytest.mark.parametrize(
    "key",
    [
        "https://reg.example.com",
        "http://reg.example.com",
        "https://reg.example.com/v1/",
        "reg.example.com/v1/",
        "reg.example.com/v2/",
        "reg.example.com/",
        "REG.example.com",
    ],
)
def test_url_style_keys_name_the_host(tmp_path: Path, key: str) -> None:
    authfile = _write(tmp_path / "auth.json", {key: _auth("url-user")})
    assert find_credentials("reg.example.com", "ns/app", authfile) == Credentials(
        "url-user", SECRET
    )


def test_scheme_prefixed_key_with_a_path_still_counts_for_the_host_only(tmp_path: Path) -> None:
    authfile = _write(
        tmp_path / "auth.json",
        {"https://reg.example.com/ns": _auth("url-user"), "reg.example.com/ns": _auth("ns-user")},
    )
    assert find_credentials("reg.example.com", "ns/app", authfile) == Credentials("ns-user", SECRET)
    assert find_credentials("reg.example.com", "other/app", authfile) == Credentials(
        "url-user", SECRET
    )


def test_exact_key_beats_a_url_key_for_the_same_host(tmp_path: Path) -> None:
    authfile = _write(
        tmp_path / "auth.json",
        {"https://reg.example.com/v1/": _auth("url-user"), "reg.example.com": _auth("exact")},
    )
    assert find_credentials("reg.example.com", "app", authfile) == Credentials("exact", SECRET)


@pytest.mark.parametrize(
    "key",
    ["https://index.docker.io/v1/", "docker.io", "index.docker.io", "registry-1.docker.io"],
)
@pytest.mark.parametrize("registry", ["docker.io", "index.docker.io"])
def test_docker_hub_aliases(tmp_path: Path, key: str, registry: str) -> None:
    authfile = _write(tmp_path / "auth.json", {key: _auth("hub-user")})
    assert find_credentials(registry, "library/alpine", authfile) == Credentials("hub-user", SECRET)


def test_docker_hub_namespace_key(tmp_path: Path) -> None:
    authfile = _write(
        tmp_path / "auth.json",
        {"https://index.docker.io/v1/": _auth("hub-user"), "docker.io/myorg": _auth("org-user")},
    )
    assert find_credentials("docker.io", "myorg/app", authfile) == Credentials("org-user", SECRET)
    assert find_credentials("docker.io", "library/alpine", authfile) == Credentials(
        "hub-user", SECRET
    )


def test_password_may_contain_colons(tmp_path: Path) -> None:
    authfile = _write(tmp_path / "auth.json", {"reg.example.com": _auth("u", "a:b:c")})
    assert find_credentials("reg.example.com", "app", authfile) == Credentials("u", "a:b:c")


def test_entry_without_auth_falls_back_to_a_less_specific_key(tmp_path: Path) -> None:
    # Docker writes `{}` entries when a credential helper holds the secret.
    authfile = _write(
        tmp_path / "auth.json",
        {"reg.example.com/ns": {}, "reg.example.com": _auth("host-user")},
    )
    assert find_credentials("reg.example.com", "ns/app", authfile) == Credentials(
        "host-user", SECRET
    )


def test_credentials_repr_hides_the_secret() -> None:
    creds = Credentials("someone", SECRET)
    assert SECRET not in repr(creds)
    assert "someone" not in repr(creds)
    assert SECRET not in str(creds)
    assert creds == ("someone", SECRET, "")
    assert creds.identity_token == ""


def test_credentials_with_an_identity_token_hide_it_and_are_a_key() -> None:
    creds = Credentials("someone", "", IDENTITY)
    for text in (repr(creds), str(creds), repr([creds]), repr({"k": creds}), f"{creds}"):
        assert IDENTITY not in text
        assert "someone" not in text
    # Part of the client's token cache keys: hashable, and another token is another key.
    cache = {("realm", creds): 1, ("realm", Credentials("someone", "", "other")): 2}
    assert cache[("realm", Credentials("someone", "", IDENTITY))] == 1
    assert Credentials("someone", "") != creds


# -- identity tokens (`identitytoken`) ----------------------------------------------------------

IDENTITY = "idt-0a1b2c3d-refresh"


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        # what `docker login` writes for an identity token: the user, an empty password
        (
            {"auth": base64.b64encode(b"someone:").decode(), "identitytoken": IDENTITY},
            Credentials("someone", "", IDENTITY),
        ),
        ({"identitytoken": IDENTITY}, Credentials("", "", IDENTITY)),
        ({"auth": "", "identitytoken": IDENTITY}, Credentials("", "", IDENTITY)),
        (  # both: the password for Basic registries, the identity token for Bearer ones
            {**_auth("someone"), "identitytoken": IDENTITY},
            Credentials("someone", SECRET, IDENTITY),
        ),
        ({**_auth("someone"), "identitytoken": ""}, Credentials("someone", SECRET)),
    ],
)
def test_identity_token_of_an_entry(
    tmp_path: Path, entry: dict[str, str], expected: Credentials
) -> None:
    authfile = _write(tmp_path / "auth.json", {"reg.example.com": entry})
    assert find_credentials("reg.example.com", "app", authfile) == expected


def test_identity_token_in_the_docker_config_by_default(home: Path) -> None:
    _write(
        home / ".docker" / "config.json", {"https://reg.example.com": {"identitytoken": IDENTITY}}
    )
    creds = find_credentials("reg.example.com", "ns/app", None)
    assert creds == Credentials("", "", IDENTITY)


def test_identity_token_entry_wins_over_a_less_specific_key(tmp_path: Path) -> None:
    authfile = _write(
        tmp_path / "auth.json",
        {"reg.example.com/ns": {"identitytoken": IDENTITY}, "reg.example.com": _auth("host-user")},
    )
    assert find_credentials("reg.example.com", "ns/app", authfile) == Credentials("", "", IDENTITY)
    assert find_credentials("reg.example.com", "other", authfile) == Credentials(
        "host-user", SECRET
    )


def test_identity_token_next_to_an_auth_without_colon_is_kept_and_not_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    encoded = base64.b64encode(b"no-colon-" + SECRET.encode()).decode()
    authfile = _write(
        tmp_path / "auth.json", {"reg.example.com": {"auth": encoded, "identitytoken": IDENTITY}}
    )
    with caplog.at_level(logging.DEBUG, logger="updock.registry"):
        creds = find_credentials("reg.example.com", "app", authfile)
    assert creds == Credentials("", "", IDENTITY)
    assert "only its identity token is used" in caplog.text
    for secret in (IDENTITY, SECRET, encoded):
        assert secret not in caplog.text


def test_invalid_identity_token_is_an_error_without_the_secret(tmp_path: Path) -> None:
    authfile = _write(tmp_path / "auth.json", {"reg.example.com": {"identitytoken": [IDENTITY]}})
    with pytest.raises(ConfigError) as info:
        find_credentials("reg.example.com", "app", authfile)
    message = str(info.value)
    assert "\"identitytoken\" of 'reg.example.com' is not a string" in message
    assert authfile in message
    assert IDENTITY not in message


def test_identity_token_with_a_broken_auth_is_an_error_without_either(tmp_path: Path) -> None:
    authfile = _write(
        tmp_path / "auth.json",
        {"reg.example.com": {"auth": "%%" + SECRET, "identitytoken": IDENTITY}},
    )
    with pytest.raises(ConfigError, match="not base64") as info:
        find_credentials("reg.example.com", "app", authfile)
    assert IDENTITY not in str(info.value)
    assert SECRET not in str(info.value)


# -- broken files -------------------------------------------------------------------------------


def test_explicit_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "auth.json"
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        find_credentials("reg.example.com", "app", str(missing))


def test_explicit_unreadable_file_is_an_error_naming_it(tmp_path: Path) -> None:
    # A folder stands in for an unreadable file: reading it fails even as root.
    folder = tmp_path / "auth.json"
    folder.mkdir()
    with pytest.raises(ConfigError, match=re.escape(str(folder))):
        find_credentials("reg.example.com", "app", str(folder))


@pytest.mark.parametrize(
    "content",
    [
        # Broken JSON right after the secret: a parser quoting its input would leak it.
        '{"auths": {"reg.example.com": {"auth": "' + SECRET + '" ',
        "[1, 2]",
        '{"auths": ["' + SECRET + '"]}',
        '{"auths": {"reg.example.com": "' + SECRET + '"}}',
        '{"auths": {"reg.example.com": {"auth": 12345}}}',
    ],
)
def test_invalid_file_is_an_error_naming_it_without_secret(tmp_path: Path, content: str) -> None:
    path = tmp_path / "auth.json"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        find_credentials("reg.example.com", "app", str(path))
    assert str(path) in str(info.value)
    assert SECRET not in str(info.value)


def test_invalid_base64_is_an_error_without_secret(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    bad = "!!" + base64.b64encode(f"user:{SECRET}".encode()).decode()
    _write(path, {"reg.example.com": {"auth": bad}})
    with pytest.raises(ConfigError) as info:
        find_credentials("reg.example.com", "app", str(path))
    message = str(info.value)
    assert str(path) in message
    assert SECRET not in message
    assert bad not in message
    assert info.value.__cause__ is None  # nothing chained that could quote the text


def test_auth_without_colon_is_skipped_and_logged_without_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    encoded = base64.b64encode(SECRET.encode()).decode()
    authfile = _write(tmp_path / "auth.json", {"reg.example.com": {"auth": encoded}})
    with caplog.at_level(logging.DEBUG, logger="updock.registry"):
        assert find_credentials("reg.example.com", "app", authfile) is None
    assert caplog.records
    assert SECRET not in caplog.text
    assert encoded not in caplog.text


def test_lookup_logs_no_secret(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    entry = _auth("the-user")
    authfile = _write(tmp_path / "auth.json", {"reg.example.com": entry})
    with caplog.at_level(logging.DEBUG, logger="updock.registry"):
        assert find_credentials("reg.example.com", "app", authfile) is not None
    assert SECRET not in caplog.text
    assert "the-user" not in caplog.text
    assert entry["auth"] not in caplog.text


# -- which file ---------------------------------------------------------------------------------


def test_registry_auth_file_variable_is_used_when_no_file_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    env_file = _write(tmp_path / "env-auth.json", {"reg.example.com": _auth("env-user")})
    _write(home / ".config/containers/auth.json", {"reg.example.com": _auth("default")})
    monkeypatch.setenv("REGISTRY_AUTH_FILE", env_file)
    assert find_credentials("reg.example.com", "app", None) == Credentials("env-user", SECRET)


def test_explicit_file_wins_over_the_variable_and_defaults_are_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    explicit = _write(tmp_path / "explicit.json", {"other.example.com": _auth("x")})
    env_file = _write(tmp_path / "env-auth.json", {"reg.example.com": _auth("env-user")})
    _write(home / ".config/containers/auth.json", {"reg.example.com": _auth("default")})
    monkeypatch.setenv("REGISTRY_AUTH_FILE", env_file)
    assert find_credentials("reg.example.com", "app", explicit) is None


def test_registry_auth_file_variable_pointing_nowhere_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match=r"missing\.json"):
        find_credentials("reg.example.com", "app", None)


def test_default_locations_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    assert default_authfiles() == [
        AuthFile(tmp_path / "run/containers/auth.json"),
        AuthFile(home / ".config/containers/auth.json"),
        AuthFile(home / ".docker/config.json"),
        AuthFile(home / ".dockercfg", legacy=True),
    ]
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dockercfg"))
    assert default_authfiles() == [
        AuthFile(Path(f"/run/containers/{os.geteuid()}/auth.json")),
        AuthFile(tmp_path / "xdg/containers/auth.json"),
        AuthFile(tmp_path / "dockercfg/config.json"),
        AuthFile(home / ".dockercfg", legacy=True),
    ]


def test_first_default_file_with_an_entry_wins(tmp_path: Path, home: Path) -> None:
    runtime = tmp_path / "run/containers/auth.json"
    config = home / ".config/containers/auth.json"
    docker = home / ".docker/config.json"
    _write(docker, {"reg.example.com": _auth("docker-user")})
    assert find_credentials("reg.example.com", "app", None) == Credentials("docker-user", SECRET)
    # A file earlier in the order wins even with a less specific key.
    _write(config, {"reg.example.com": _auth("config-user"), "x.example.com": _auth("x")})
    _write(docker, {"reg.example.com/app": _auth("docker-user")})
    assert find_credentials("reg.example.com", "app", None) == Credentials("config-user", SECRET)
    _write(runtime, {"reg.example.com": _auth("runtime-user")})
    assert find_credentials("reg.example.com", "app", None) == Credentials("runtime-user", SECRET)
    # A file without an entry for this registry does not stop the search.
    assert find_credentials("x.example.com", "app", None) == Credentials("x", SECRET)


def test_docker_config_variable_replaces_home_docker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    _write(home / ".docker/config.json", {"reg.example.com": _auth("home-docker")})
    _write(tmp_path / "dc/config.json", {"reg.example.com": _auth("docker-config")})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dc"))
    assert find_credentials("reg.example.com", "app", None) == Credentials("docker-config", SECRET)


def test_legacy_dockercfg(home: Path) -> None:
    _write(
        home / ".dockercfg",
        {"https://reg.example.com/v1/": _auth("legacy")},
        wrap=False,
    )
    assert find_credentials("reg.example.com", "ns/app", None) == Credentials("legacy", SECRET)


def test_missing_default_files_mean_anonymous() -> None:
    assert find_credentials("reg.example.com", "app", None) is None


def test_broken_default_file_is_an_error_naming_it(home: Path) -> None:
    path = home / ".config/containers/auth.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json " + SECRET)
    with pytest.raises(ConfigError) as info:
        find_credentials("reg.example.com", "app", None)
    assert str(path) in str(info.value)
    assert SECRET not in str(info.value)
