"""Which registry certificates updock's client accepts: those podman's Go verifier accepts.

Each test serves a real certificate (made with `updock.testing.certs`) from a real TLS server on
127.0.0.1 that answers a manifest `HEAD` as a registry does, and checks it through
`RegistryClient` with that CA in a certs.d folder. What Go (podman 4.3's and 5.x's crypto/x509)
does with each was seen with `skopeo inspect --cert-dir` against the same kind of server.

Python 3.13's `ssl.create_default_context()` adds `VERIFY_X509_STRICT` and
`VERIFY_X509_PARTIAL_CHAIN` to the verify flags; the `defaults` fixture runs every test twice,
with this Python's defaults and with 3.13's forced on, so that the tests say the same on 3.11
as on 3.13 (scripts/test also runs them on a real 3.13 when there is one).
"""

from __future__ import annotations

import hashlib
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from updock.errors import RegistryError
from updock.registry import RegistryClient
from updock.testing.certs import Issued, make_ca, make_server_cert, write_certs_d

MANIFEST = b'{"schemaVersion": 2}'
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
PLATFORM = {"os": "linux", "architecture": "amd64", "variant": ""}
#: The verify flags Python 3.13 adds in `create_default_context()`.
PY313_FLAGS = ssl.VERIFY_X509_STRICT | ssl.VERIFY_X509_PARTIAL_CHAIN


class _Registry(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._answer(MANIFEST, send=False)

    def do_GET(self) -> None:  # podman's client asks `GET /v2/` first, then the manifest
        self._answer(MANIFEST if "/manifests/" in self.path else b"{}")

    def _answer(self, body: bytes, *, send: bool = True) -> None:
        self.send_response(200)
        self.send_header("Docker-Content-Digest", DIGEST)
        self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send:
            self.wfile.write(body)


class TLSRegistry:
    """A TLS server on 127.0.0.1 that serves `chain` (server certificate first) and answers every
    manifest `HEAD` with `DIGEST`."""

    def __init__(self, tmp: Path, server: Issued, *chain: Issued) -> None:
        cert, key = tmp / "server.pem", tmp / "server.key"
        cert.write_bytes(server.pem() + b"".join(c.pem() for c in chain))
        key.write_bytes(server.key_pem())
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
        self._server.daemon_threads = True
        self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,))
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@pytest.fixture(params=["this-python", "python-3.13"])
def defaults(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The default context of this Python, or made as Python 3.13 makes it."""
    if request.param == "python-3.13":
        original = ssl.create_default_context

        def as_in_313(*args: object, **kwargs: object) -> ssl.SSLContext:
            ctx = original(*args, **kwargs)  # type: ignore[arg-type]
            ctx.verify_flags |= PY313_FLAGS
            return ctx

        monkeypatch.setattr(ssl, "create_default_context", as_in_313)
    return str(request.param)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[list[TLSRegistry]]:
    servers: list[TLSRegistry] = []
    yield servers
    for server in servers:
        server.close()


def _check(
    tmp_path: Path, serve: list[TLSRegistry], ca: list[Issued], host: str, *chain: Issued
) -> str:
    """Serve `chain`, trust `ca` for `host:port` in certs.d, and check an image there."""
    server = TLSRegistry(tmp_path, *chain)
    serve.append(server)
    domain = f"{host}:{server.port}"
    conf = tmp_path / "registries.conf"
    conf.write_text("unqualified-search-registries = []\n")
    certs_d = write_certs_d(tmp_path / "certs.d", domain, *ca)
    with RegistryClient(
        registries_conf=conf, registries_conf_dirs=[], certs_dirs=[certs_d], timeout=5
    ) as client:
        return client.manifest_digest(domain, "app", "latest", authfile=None, **PLATFORM)


def _refused(
    tmp_path: Path, serve: list[TLSRegistry], ca: list[Issued], host: str, *chain: Issued
) -> str:
    with pytest.raises(RegistryError) as info:
        _check(tmp_path, serve, ca, host, *chain)
    message = str(info.value)
    assert f"TLS connection to {host}:" in message
    assert "certificate verify failed" in message
    return message


@dataclass(frozen=True)
class Case:
    """A registry's certificates: the CAs in certs.d, the host name, the chain it serves."""

    cas: list[Issued]
    host: str
    chain: list[Issued]


def _well_made() -> Case:
    ca = make_ca()
    return Case([ca], "127.0.0.1", [make_server_cert(ca)])


def _ca_without_key_usage() -> Case:
    # What Python 3.13 refused ("CA cert does not include key usage extension") and podman not.
    ca = make_ca(key_usage=None)
    return Case([ca], "127.0.0.1", [make_server_cert(ca)])


def _intermediate_alone_in_certs_d() -> Case:
    # Go trusts every certificate of its root pool as an anchor, not only self-signed ones.
    intermediate = make_ca("intermediate CA", issuer=make_ca("root CA"))
    return Case([intermediate], "127.0.0.1", [make_server_cert(intermediate), intermediate])


def _dns_name_in_alt_names() -> Case:
    ca = make_ca()
    return Case([ca], "localhost", [make_server_cert(ca, ["localhost"], common_name="other")])


def _host_in_common_name_only() -> Case:
    # Go: "x509: certificate relies on legacy Common Name field, use SANs instead".
    ca = make_ca()
    return Case([ca], "localhost", [make_server_cert(ca, ["localhost"], alt_names=False)])


def _ca_key_usage_without_cert_sign() -> Case:
    ca = make_ca(key_usage=frozenset({"digital_signature", "crl_sign"}))
    return Case([ca], "127.0.0.1", [make_server_cert(ca)])


def _expired() -> Case:
    ca = make_ca()
    return Case([ca], "127.0.0.1", [make_server_cert(ca, expired=True)])


def _another_host() -> Case:
    ca = make_ca()
    return Case([ca], "127.0.0.1", [make_server_cert(ca, ["registry.example"])])


def _unknown_ca() -> Case:
    return Case([make_ca("another CA")], "127.0.0.1", [make_server_cert(make_ca())])


#: name -> (how to make it, what Go's verifier says: accepted or not, and a word of its refusal
#: in OpenSSL's message).
CASES: dict[str, tuple[Callable[[], Case], bool, str]] = {
    "a well-made CA": (_well_made, True, ""),
    "a CA without keyUsage": (_ca_without_key_usage, True, ""),
    "an intermediate CA alone in certs.d": (_intermediate_alone_in_certs_d, True, ""),
    "a DNS name in the alt names": (_dns_name_in_alt_names, True, ""),
    "the host in the common name only": (_host_in_common_name_only, False, "mismatch"),
    "a CA whose keyUsage lacks keyCertSign": (_ca_key_usage_without_cert_sign, False, "CA"),
    "an expired certificate": (_expired, False, "expired"),
    "another host name": (_another_host, False, "mismatch"),
    "an unknown CA": (_unknown_ca, False, ""),
}


@pytest.mark.parametrize("name", CASES)
def test_accepted_as_go_accepts_it(
    tmp_path: Path, serve: list[TLSRegistry], defaults: str, name: str
) -> None:
    make, accepted, word = CASES[name]
    case = make()
    if accepted:
        assert _check(tmp_path, serve, case.cas, case.host, *case.chain) == DIGEST
    else:
        assert word in _refused(tmp_path, serve, case.cas, case.host, *case.chain)
