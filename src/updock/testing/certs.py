"""Real X.509 certificates for TLS tests: CAs and server certificates with chosen defects.

Each certificate is made with `cryptography` (the `test` extra), as a self-made registry CA
would be, so that a test can serve it from a real TLS server on 127.0.0.1 and see what updock's
client (and podman's verifier) make of it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

#: What a well-made CA's keyUsage allows: signing certificates and revocation lists.
CA_KEY_USAGE = frozenset({"key_cert_sign", "crl_sign"})

_KEY_USAGE_FLAGS = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def pem(self) -> bytes:
        """The certificate, PEM-encoded."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        """The private key, PEM-encoded (PKCS#8, not encrypted)."""
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def _key_usage(flags: frozenset[str]) -> x509.KeyUsage:
    unknown = flags - set(_KEY_USAGE_FLAGS)
    if unknown:
        raise ValueError(f"unknown keyUsage flags {sorted(unknown)}")
    return x509.KeyUsage(**{name: name in flags for name in _KEY_USAGE_FLAGS})


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _identified(
    builder: x509.CertificateBuilder,
    key: ec.EllipticCurvePrivateKey,
    signer: ec.EllipticCurvePrivateKey,
) -> x509.CertificateBuilder:
    """With subject and authority key identifiers, as `openssl` adds them by default (so that
    only the defect a test chooses is there)."""
    return builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
    ).add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
    )


def make_ca(
    common_name: str = "updock test CA",
    *,
    key_usage: frozenset[str] | None = CA_KEY_USAGE,
    issuer: Issued | None = None,
) -> Issued:
    """A CA certificate (basicConstraints CA:TRUE), valid for a day.

    Args:
        common_name: its subject's CN.
        key_usage: the flags of its keyUsage extension (`CA_KEY_USAGE` by default); None: no
            keyUsage extension at all, as `openssl req -x509` without `-addext` makes it.
        issuer: the CA that signs it (an intermediate CA); None: self-signed.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer.cert.subject if issuer else _name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    if key_usage is not None:
        builder = builder.add_extension(_key_usage(key_usage), critical=True)
    signer = issuer.key if issuer else key
    return Issued(_identified(builder, key, signer).sign(signer, hashes.SHA256()), key)


def make_server_cert(
    ca: Issued,
    hosts: Sequence[str] = ("127.0.0.1",),
    *,
    common_name: str | None = None,
    alt_names: bool = True,
    expired: bool = False,
) -> Issued:
    """A server certificate for `hosts` (IP addresses or DNS names), signed by `ca`.

    Args:
        ca: the issuing CA.
        hosts: the names it is for, as subject alternative names.
        common_name: its subject's CN; the first host when None.
        alt_names: False: no subjectAltName extension, the host in the CN only (the legacy
            form Go refuses).
        expired: valid until yesterday instead of until tomorrow.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    start, end = now - dt.timedelta(minutes=5), now + dt.timedelta(days=1)
    if expired:
        start, end = now - dt.timedelta(days=3), now - dt.timedelta(days=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name or hosts[0]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if alt_names:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return Issued(_identified(builder, key, ca.key).sign(ca.key, hashes.SHA256()), key)


def write_certs_d(root: Path, host: str, *cas: Issued) -> Path:
    """`root/<host>/ca.crt` holding `cas`, as a certs.d folder has it; returns `root`."""
    folder = root / host
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ca.crt").write_bytes(b"".join(ca.pem() for ca in cas))
    return root
