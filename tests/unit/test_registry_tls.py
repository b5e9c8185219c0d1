"""TLS settings from registries.conf and `--tls-verify`, and certs.d discovery, from files in
tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from updock.errors import ConfigError
from updock.registry.tls import TLSConfig, TLSSettings, find_cert_files


@pytest.mark.parametrize(
    ("tls_verify", "expected"),
    [
        (None, TLSSettings(verify=False, allow_http=True)),
        (True, TLSSettings(verify=True, allow_http=False)),
        (False, TLSSettings(verify=False, allow_http=True)),
    ],
)
def test_tls_verify_option(tmp_path: Path, tls_verify: bool | None, expected: TLSSettings) -> None:
    path = tmp_path / "registries.conf"
    path.write_text('[[registry]]\nlocation = "r.example.com"\ninsecure = true\n')
    tls = TLSConfig(tls_verify, registries_conf=path, registries_conf_dirs=[], certs_dirs=[])
    assert tls.settings("r.example.com", "app") == expected
    secure = TLSSettings(verify=True, allow_http=False)
    assert tls.settings("other.example.com", "app") == (expected if tls_verify is False else secure)


def test_registries_conf_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "registries.conf"
    path.write_text('[[registry]]\nlocation = "r.example.com"\ninsecure = true\n')
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(path))
    tls = TLSConfig(registries_conf_dirs=[], certs_dirs=[])
    assert tls.settings("r.example.com", "app").allow_http


def test_cert_files_from_the_first_root_with_a_folder(tmp_path: Path) -> None:
    first, second = tmp_path / "home-certs.d", tmp_path / "etc-certs.d"
    host = "r.example.com:5000"
    (second / host).mkdir(parents=True)
    for name in ("b.crt", "a.crt", "client.cert", "client.key", "README"):
        (second / host / name).write_text("x")
    assert find_cert_files(host, [first, second]).ca_files == (
        second / host / "a.crt",
        second / host / "b.crt",
    )
    assert find_cert_files(host, [first, second]).client_cert == (
        second / host / "client.cert",
        second / host / "client.key",
    )
    (first / host).mkdir(parents=True)
    assert find_cert_files(host, [first, second]).ca_files == ()
    assert find_cert_files("other:5000", [first, second]).ca_files == ()


@pytest.mark.parametrize("orphan", ["client.cert", "client.key"])
def test_client_cert_without_its_pair_is_an_error(tmp_path: Path, orphan: str) -> None:
    (tmp_path / "r.example.com").mkdir()
    (tmp_path / "r.example.com" / orphan).write_text("x")
    with pytest.raises(ConfigError, match="client"):
        find_cert_files("r.example.com", [tmp_path])


def test_unloadable_ca_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "r.example.com").mkdir()
    (tmp_path / "r.example.com" / "ca.crt").write_text("not a certificate")
    tls = TLSConfig(certs_dirs=[tmp_path])
    with pytest.raises(ConfigError, match=r"ca\.crt"):
        tls.ssl_context("r.example.com", verify=True)
