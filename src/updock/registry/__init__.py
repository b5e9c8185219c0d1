"""Registry digest checks: which manifest a registry has for an image name, credentials, TLS.

Imports only `updock.errors`, `updock.defaults` and `updock.__version__` (no core, engines or
systemd): the caller passes the parsed name's domain, repository and tag as strings, and the
local image's platform and digests. Nothing here imports requests or ssl at start-up:
`transport.py` is loaded on the first request (or in the background, with
`RegistryClient(preload=True)`).

Modules, from the top (each imports only those below it; contact.py names hosts.py's
`HostState` in types only):

    client.py           RegistryClient: head/resolve/manifest_digest; where to ask, the
                        authentication flow of a request (401 -> credentials or a token)
    tokens.py           Bearer tokens from a registry's token server, cached per scope
    schemes.py          which scheme a registry speaks (HTTPS, or HTTP when insecure)
    hosts.py            what the run knows of each host (scheme, challenge, from hints too)
    contact.py          the first-contact wait; confirming a token server of the hints
    replies.py          what a registry's answer means: the reply, or an error naming it
    call.py             one check at one place: image, registry, repository, credentials, TLS
    challenge.py        WWW-Authenticate parsing, the Basic header (pure)
    attempts.py         the retry loop of one request; what the requests to one host share
    retry.py            backoff with jitter, Retry-After (pure)
    transport.py        one HTTP exchange over requests/urllib3, read whole within the timeout
    exchange.py         what an exchange gives back: a reply or a failure (light, no requests)
    tls.py              TLS per place (insecure, --tls-verify), certs.d, Go-like verification
    registries_conf.py  registries.conf: where a tag is looked up (mirrors, remaps), blocked,
                        insecure
    auth.py             credentials from containers-auth.json / docker config files / helpers
    hints.py            what earlier runs learned of registries (registry-hints.json)
    manifest.py         media types, digests, a platform's entry of a manifest list (pure)
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
