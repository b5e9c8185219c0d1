"""Per-registry transport settings: whether to verify TLS, may fall back to plain HTTP, which CAs
and client certificate to use.

Sources, as containers/image reads them:

- registries.conf (`registries_conf.py`): a place marked `insecure` is tried over HTTPS without
  verification first, then over plain HTTP. `--tls-verify` overrides it either way.
- certs.d: the first of `$HOME/.config/containers/certs.d/<host[:port]>`,
  `/etc/containers/certs.d/<host[:port]>`, `/etc/docker/certs.d/<host[:port]>` that exists.
  `*.crt` files are CAs trusted on top of the system's; a `NAME.cert` with its `NAME.key` is the
  client certificate.

Certificates are verified as podman's Go verifier (crypto/x509) does, not as the running
Python's defaults would (see `verifying_context`), so that updock reaches exactly the registries
podman reaches, on every Python updock supports.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from updock.errors import ConfigError
from updock.registry.registries_conf import (
    RegistriesConf,
    default_registries_conf,
    default_registries_conf_dirs,
    user_config_dir,
)

if TYPE_CHECKING:  # ssl itself is imported when the first context is made (start-up time)
    import ssl

log = logging.getLogger(__name__)

SYSTEM_CERTS_DIRS = (Path("/etc/containers/certs.d"), Path("/etc/docker/certs.d"))


@dataclass(frozen=True)
class TLSSettings:
    """How to connect to one registry.

    Attributes:
        verify: verify the server's certificate (and host name).
        allow_http: fall back to plain HTTP when HTTPS fails.
    """

    verify: bool
    allow_http: bool


def default_certs_dirs() -> list[Path]:
    """The certs.d roots, searched in this order for a `<host[:port]>` folder."""
    return [user_config_dir() / "containers" / "certs.d", *SYSTEM_CERTS_DIRS]


@dataclass(frozen=True)
class CertFiles:
    """The certs.d files for one registry host.

    Attributes:
        ca_files: CA certificates (`*.crt`) trusted on top of the system's.
        client_cert: (certificate, key) to present, or None.
    """

    ca_files: tuple[Path, ...] = ()
    client_cert: tuple[Path, Path] | None = None


def find_cert_files(host: str, certs_dirs: Sequence[Path]) -> CertFiles:
    """The certs.d files for `host[:port]`, from the first root that has a folder for it.

    Raises:
        ConfigError: a client certificate without its key, or a key without its certificate.
    """
    for root in certs_dirs:
        folder = root / host
        if not folder.is_dir():
            continue
        files = sorted(p for p in folder.iterdir() if p.is_file())
        cas = tuple(p for p in files if p.suffix == ".crt")
        certs = [p for p in files if p.suffix == ".cert"]
        for key in (p for p in files if p.suffix == ".key"):
            if not key.with_suffix(".cert").exists():
                raise ConfigError(f"missing client certificate {key.with_suffix('.cert')}")
        client = None
        for cert in certs:
            if not cert.with_suffix(".key").exists():
                raise ConfigError(f"missing key {cert.with_suffix('.key')} for {cert}")
            if client is None:
                client = (cert, cert.with_suffix(".key"))
        if len(certs) > 1:
            log.warning("%s has %d client certificates; using %s", folder, len(certs), certs[0])
        return CertFiles(cas, client)
    return CertFiles()


def verifying_context() -> ssl.SSLContext:
    """A client context that verifies certificates as Go's crypto/x509 does (what podman uses).

    From `ssl.create_default_context()` (system CAs, TLS 1.2 at least, host names checked),
    with three changes, whatever the Python version's defaults:

    - no `VERIFY_X509_STRICT` (Python 3.13 sets it): Go does not refuse a CA without a
      keyUsage extension, nor certificates without key identifiers, which OpenSSL's strict
      mode does. A CA whose keyUsage lacks keyCertSign, an expired certificate or an unknown
      CA are still refused, as Go refuses them;
    - `VERIFY_X509_PARTIAL_CHAIN` (Python 3.13 sets it too): every certificate of a certs.d
      file is a trust anchor, as in Go's root pool, so an intermediate CA alone is enough;
    - no host name check against the subject's common name: Go matches only the subject
      alternative names (since Go 1.15).
    """
    import ssl

    ctx = ssl.create_default_context()
    ctx.verify_flags = (ctx.verify_flags & ~ssl.VERIFY_X509_STRICT) | ssl.VERIFY_X509_PARTIAL_CHAIN
    ctx.hostname_checks_common_name = False
    return ctx


class TLSConfig:
    """TLS settings of every registry, read lazily once and kept for the object's life.

    Args:
        tls_verify: None: what registries.conf says (an insecure registry is tried over HTTPS
            without verification, then plain HTTP). False: that for every registry. True:
            always verify over HTTPS, even where registries.conf says insecure.
        registries_conf: the main registries.conf; default: `default_registries_conf()`.
        registries_conf_dirs: its drop-in folders; default: `default_registries_conf_dirs()`.
        certs_dirs: the certs.d roots; default: `default_certs_dirs()`.
    """

    def __init__(
        self,
        tls_verify: bool | None = None,
        *,
        registries_conf: Path | None = None,
        registries_conf_dirs: Sequence[Path] | None = None,
        certs_dirs: Sequence[Path] | None = None,
    ) -> None:
        self.tls_verify = tls_verify
        self._registries_conf_path = registries_conf
        self._registries_conf_dirs = registries_conf_dirs
        self._certs_dirs = list(default_certs_dirs() if certs_dirs is None else certs_dirs)
        self._conf: RegistriesConf | None = None
        self._contexts: dict[tuple[str, bool], ssl.SSLContext] = {}
        self._lock = threading.Lock()

    def registries_conf(self) -> RegistriesConf:
        """registries.conf, read on the first call.

        Raises:
            ConfigError: it is malformed.
        """
        with self._lock:
            if self._conf is None:
                path = self._registries_conf_path or default_registries_conf()
                dirs = self._registries_conf_dirs
                if dirs is None:
                    dirs = default_registries_conf_dirs()
                self._conf = RegistriesConf(path, dirs)
            return self._conf

    def settings(self, domain: str, repository: str = "") -> TLSSettings:
        """How to connect for `domain/repository`.

        Raises:
            ConfigError: registries.conf is malformed (only read when `tls_verify` is None).
        """
        if self.tls_verify is None:
            return self.for_insecure(self.registries_conf().insecure(domain, repository))
        return self.for_insecure(False)

    def may_send_credentials(self, scheme: str, host: str) -> bool:
        """Whether credentials may go to `host` over `scheme`: over HTTPS, or to a host that
        registries.conf (or `--tls-verify=false`) marks insecure.

        (A registry itself is spoken to over plain HTTP only when it is insecure, so its Basic
        credentials never need this check; a token server may be any host its registry names.)
        """
        return scheme == "https" or self.settings(host).allow_http

    def for_insecure(self, insecure: bool) -> TLSSettings:
        """How to connect to a place registries.conf marks `insecure` (or not): as it says, unless
        `tls_verify` decides for every place."""
        if self.tls_verify is not None:
            insecure = not self.tls_verify
        return TLSSettings(verify=not insecure, allow_http=insecure)

    def ssl_context(self, host: str, verify: bool) -> ssl.SSLContext:
        """The SSL context for `host[:port]`: system CAs plus certs.d, and its client certificate.

        Raises:
            ConfigError: a certs.d file cannot be loaded.
        """
        key = (host, verify)
        with self._lock:
            ctx = self._contexts.get(key)
        if ctx is not None:
            return ctx
        import ssl

        files = find_cert_files(host, self._certs_dirs)
        if verify:
            ctx = verifying_context()
        else:
            # No CA is consulted: do not spend the time to load the system's.
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        current: Path | None = None
        try:
            for current in files.ca_files:
                ctx.load_verify_locations(cafile=str(current))
            if files.client_cert is not None:
                current = files.client_cert[0]
                ctx.load_cert_chain(str(files.client_cert[0]), str(files.client_cert[1]))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load {current} for {host}: {exc}") from exc
        with self._lock:
            return self._contexts.setdefault(key, ctx)
