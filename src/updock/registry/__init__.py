"""Registry digest checks: which manifest a registry has for an image name, credentials, TLS.

Imports only `updock.errors` and `updock.__version__` (no core, engines or systemd): the caller
passes the parsed name's domain, repository and tag as strings, and the local image's platform
and digests.

    client.py    RegistryClient.manifest_digest: HEAD (and GET only when needed), auth, reuse
    auth.py      credentials from containers-auth.json / docker config files
    tls.py       registries.conf `insecure`, certs.d CAs and client certificates
    manifest.py  media types, digests, a platform's entry of a manifest list (pure)
"""

from updock.registry.auth import Credentials, default_authfiles, find_credentials
from updock.registry.client import RegistryClient
from updock.registry.manifest import Platform, choose_instance
from updock.registry.tls import TLSConfig, TLSSettings

__all__ = [
    "Credentials",
    "Platform",
    "RegistryClient",
    "TLSConfig",
    "TLSSettings",
    "choose_instance",
    "default_authfiles",
    "find_credentials",
]
