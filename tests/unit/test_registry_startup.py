"""The registry client works whether its HTTP stack was loaded early (`preload`) or not.

(That importing the package loads no HTTP stack is in `test_cli.py`.)
"""

from __future__ import annotations

from updock.registry.client import DEFAULT_CONCURRENCY


def test_the_client_is_usable_before_and_after_its_transport_is_loaded() -> None:
    from updock.registry import RegistryClient

    with RegistryClient(tls_verify=False, certs_dirs=[], preload=True) as client:
        assert client.concurrency == DEFAULT_CONCURRENCY
    RegistryClient(tls_verify=False, certs_dirs=[]).close()  # closing an unused client
