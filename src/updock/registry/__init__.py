"""Registry digest checks: which manifest a registry has for an image name, credentials, TLS.

Imports only `updock.errors` and `updock.__version__` (no core, engines or systemd): the caller
passes the parsed name's domain, repository and tag as strings, and the local image's platform
and digests. Nothing here imports requests or ssl at start-up: `transport.py` is loaded on the
first request (or in the background, with `RegistryClient(preload=True)`).

    client.py     RegistryClient.manifest_digest: HEAD (and GET only when needed), auth, reuse,
                  retries, per-registry concurrency bound
    transport.py  one HTTP exchange over requests/urllib3, read whole within the timeout
    exchange.py   what an exchange gives back: a reply or a failure (light, no requests)
    attempts.py   the retry loop of one request; what the requests to one host share
    retry.py      backoff with jitter, Retry-After (pure)
    auth.py       credentials from containers-auth.json / docker config files / helpers
    registries_conf.py  registries.conf: where a tag is looked up (mirrors, remaps), blocked,
                  insecure
    tls.py        TLS per place (insecure, --tls-verify), certs.d, Go-like verification
    manifest.py   media types, digests, a platform's entry of a manifest list (pure)
"""

from updock.registry.auth import (
    CredentialHelpers,
    Credentials,
    default_authfiles,
    find_credentials,
)
from updock.registry.client import RegistryClient
from updock.registry.manifest import Platform, choose_instance
from updock.registry.retry import RetryPolicy
from updock.registry.tls import TLSConfig, TLSSettings

__all__ = [
    "CredentialHelpers",
    "Credentials",
    "Platform",
    "RegistryClient",
    "RetryPolicy",
    "TLSConfig",
    "TLSSettings",
    "choose_instance",
    "default_authfiles",
    "find_credentials",
]
