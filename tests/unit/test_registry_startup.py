"""Start-up cost: the registry package leaves its HTTP stack for the first request."""

from __future__ import annotations

import subprocess
import sys

from updock.registry.client import DEFAULT_CONCURRENCY


def test_importing_the_registry_package_loads_no_http_stack() -> None:
    code = (
        "import sys, updock.registry, updock.registry.client\n"
        "print(sorted(m for m in ('requests', 'urllib3', 'ssl', 'http.client') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_the_client_is_usable_before_and_after_its_transport_is_loaded() -> None:
    from updock.registry import RegistryClient

    with RegistryClient(tls_verify=False, certs_dirs=[], preload=True) as client:
        assert client.concurrency == DEFAULT_CONCURRENCY
    RegistryClient(tls_verify=False, certs_dirs=[]).close()  # closing an unused client


def test_cli_default_registry_concurrency_is_the_clients() -> None:
    from updock.cli import auto_update

    option = next(p for p in auto_update.params if p.name == "registry_concurrency")
    assert option.default == DEFAULT_CONCURRENCY
    assert option.envvar == "UPDOCK_REGISTRY_CONCURRENCY"
