"""A real distribution registry with token authentication, and the token issuer it trusts.

Docker Hub, quay.io, ghcr.io and most public registries authenticate with Bearer tokens: the
registry answers 401 with `WWW-Authenticate: Bearer realm=...,service=...,scope=...`, the client
asks the realm (a token server) for a token, with its credentials, and sends that. To test that
flow against the real thing, `TokenRegistry` runs `docker-registry serve` with its `auth.token`
configuration, and `TokenIssuer` is the token server: a small HTTP server on 127.0.0.1 that
checks basic credentials and signs JWTs (RS256) with a key whose certificate chain (`x5c`) leads
to the CA the registry is told to trust (`rootcertbundle`). Each token grants `pull` on the
repositories it was asked for (the `access` claim). It also speaks the OAuth2 side of the
distribution token spec: a form `POST` with `grant_type=refresh_token` and a refresh token it
knows (an "identity token", as docker and podman call it) gets an `access_token`.

The registry serves a storage folder read-only (typically the lab's plain registry's, so that
images pushed there can be checked through token auth without pushing them again).

Needs PyJWT and cryptography (the `test` extra).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import secrets
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from updock.testing.lab import die_with_parent, read_registry_log, start_loopback_server

SERVICE = "updock-lab-token-registry"
ISSUER = "updock-lab-token-issuer"


@dataclass(frozen=True)
class TokenRequest:
    """One request the issuer received.

    Attributes:
        scopes: the `scope` parameters, in order.
        service: the `service` parameter ("" if absent).
        account: the `account` parameter ("" if absent).
        authorization: "ok" (valid credentials or refresh token), "anonymous" (none) or
            "refused".
        token: the token issued ("" when refused).
        method: "GET" (the token spec's basic flow) or "POST" (OAuth2).
        grant_type: the OAuth2 `grant_type` of a `POST` ("" for a `GET`).
        refresh_token: the `refresh_token` of a `POST` ("" if absent).
        client_id: the `client_id` of a `POST` ("" if absent).
        password_sent: the request carried a password: a basic `Authorization` header, or a
            `password` form field.
    """

    scopes: tuple[str, ...]
    service: str
    account: str
    authorization: str
    token: str
    method: str = "GET"
    grant_type: str = ""
    refresh_token: str = ""
    client_id: str = ""
    password_sent: bool = False


@dataclass(frozen=True)
class SigningChain:
    """A test CA and a signing key with its certificate issued by that CA."""

    ca_pem: bytes
    key: rsa.RSAPrivateKey
    chain_der: tuple[bytes, ...]  # the signing certificate, then the CA's

    @classmethod
    def create(cls) -> SigningChain:
        """A new CA and signing certificate, valid for a day."""
        now = dt.datetime.now(dt.UTC)
        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "updock lab token CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        leaf = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "updock lab token signer")])
            )
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        return cls(
            ca.public_bytes(serialization.Encoding.PEM),
            key,
            (
                leaf.public_bytes(serialization.Encoding.DER),
                ca.public_bytes(serialization.Encoding.DER),
            ),
        )


class TokenIssuer:
    """A token server on 127.0.0.1: `GET /token?service=&scope=&account=` with basic auth, and
    `POST /token` (OAuth2, form-encoded) with `grant_type=refresh_token`.

    Settings may change while it runs. An OAuth2 request is refused as RFC 6749 has it: an
    unknown refresh token with `refused_status` (400 `invalid_grant` by default; some servers
    answer 401), a missing parameter or another service with 400 `invalid_request`, another
    grant type with 400 `unsupported_grant_type`.

    Args:
        chain: the key that signs tokens and its certificate chain (sent as `x5c`).
        users: user name -> password of the accounts it knows.
        refresh_tokens: refresh token -> user name, the identity tokens it knows.
        service: the `service` it issues tokens for (the token's audience).
        issuer: the token's `iss`.

    Attributes:
        expires_in: the lifetime it tells the client (`expires_in`), seconds.
        token_lifetime: the lifetime written into the token (`exp`); `expires_in` when None.
        allow_anonymous: issue (pull) tokens to requests without credentials.
        expired_tokens: this many next tokens are issued expired an hour ago (the registry
            refuses them; the client is told they are fresh).
        refused_status: the status of the answer to an unknown refresh token (400 or 401).
    """

    def __init__(
        self,
        chain: SigningChain,
        users: dict[str, str],
        *,
        refresh_tokens: dict[str, str] | None = None,
        service: str = SERVICE,
        issuer: str = ISSUER,
    ) -> None:
        self.chain = chain
        self.users = dict(users)
        self.refresh_tokens = dict(refresh_tokens or {})
        self.refused_status = 400
        self.service = service
        self.issuer = issuer
        self.expires_in = 300
        self.token_lifetime: int | None = None
        self.allow_anonymous = False
        self.expired_tokens = 0
        self._lock = threading.Lock()
        self._requests: list[TokenRequest] = []
        issuer_self = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                issuer_self._handle(self)

            def do_POST(self) -> None:
                issuer_self._handle_oauth2(self)

        self._server, self._thread = start_loopback_server(Handler, "token-issuer")
        self.port = int(self._server.server_address[1])

    @property
    def realm(self) -> str:
        """The URL the registry sends clients to."""
        return f"http://127.0.0.1:{self.port}/token"

    @property
    def requests(self) -> list[TokenRequest]:
        """Every token request so far."""
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        """Forget the requests seen."""
        with self._lock:
            self._requests.clear()

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _authorize(self, header: str | None) -> tuple[str, str]:
        """("ok" | "anonymous" | "refused", the user name)."""
        if header is None:
            return ("anonymous" if self.allow_anonymous else "refused"), ""
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return "refused", ""
        try:
            user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return "refused", ""
        if sep and user in self.users and secrets.compare_digest(self.users[user], password):
            return "ok", user
        return "refused", user

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        split = urlsplit(req.path)
        if split.path != "/token":
            _reply(req, 404, {"error": "not found"})
            return
        query = parse_qs(split.query)
        scopes = tuple(query.get("scope", []))
        service = query.get("service", [""])[0]
        account = query.get("account", [""])[0]
        authorization, user = self._authorize(req.headers.get("Authorization"))
        if service != self.service:
            authorization = "refused"
        token = ""
        if authorization != "refused":
            token = self._sign(user, scopes)
        with self._lock:
            self._requests.append(TokenRequest(scopes, service, account, authorization, token))
        if not token:
            _reply(req, 401, {"details": "incorrect username or password"})
            return
        issued = dt.datetime.now(dt.UTC).isoformat()
        body = {"token": token, "access_token": token, "expires_in": self.expires_in}
        _reply(req, 200, {**body, "issued_at": issued})

    def _handle_oauth2(self, req: BaseHTTPRequestHandler) -> None:
        """`POST /token`: the OAuth2 flow of the distribution token spec, refresh tokens only."""
        try:
            length = int(req.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= 64 * 1024:
            req.close_connection = True
            _reply(req, 400, {"error": "invalid_request"})
            return
        raw = req.rfile.read(length)  # all of it, so the connection can serve the next one
        if urlsplit(req.path).path != "/token":
            _reply(req, 404, {"error": "not found"})
            return
        form: dict[str, list[str]] = {}
        content_type = req.headers.get("Content-Type", "").partition(";")[0].strip().lower()
        if content_type == "application/x-www-form-urlencoded":
            form = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)

        def one(name: str) -> str:
            return form.get(name, [""])[0]

        scopes = tuple(s for value in form.get("scope", []) for s in value.split(" ") if s)
        grant_type, refresh_token, client_id = (
            one("grant_type"),
            one("refresh_token"),
            one("client_id"),
        )
        header = req.headers.get("Authorization", "")
        password_sent = "password" in form or header.lower().startswith("basic ")
        user = ""
        error = ""
        if not form or not grant_type or not client_id:
            error = "invalid_request"
        elif grant_type != "refresh_token":
            error = "unsupported_grant_type"
        elif not refresh_token or one("service") != self.service:
            error = "invalid_request"
        else:
            with self._lock:
                known = dict(self.refresh_tokens)
            for candidate, owner in known.items():
                if secrets.compare_digest(candidate.encode(), refresh_token.encode()):
                    user = owner
            if not user:
                error = "invalid_grant"
        token = "" if error else self._sign(user, scopes)
        record = TokenRequest(
            scopes,
            one("service"),
            one("account"),
            "refused" if error else "ok",
            token,
            method="POST",
            grant_type=grant_type,
            refresh_token=refresh_token,
            client_id=client_id,
            password_sent=password_sent,
        )
        with self._lock:
            self._requests.append(record)
        if error:
            status = self.refused_status if error == "invalid_grant" else 400
            _reply(req, status, {"error": error})
            return
        issued = dt.datetime.now(dt.UTC).isoformat()
        _reply(
            req,
            200,
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": self.expires_in,
                "issued_at": issued,
                "scope": " ".join(scopes),
            },
        )

    def _sign(self, user: str, scopes: tuple[str, ...]) -> str:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind == "repository" and name:
                granted = [a for a in actions.split(",") if a == "pull"]
                access.append({"type": "repository", "name": name, "actions": granted})
        now = int(time.time())
        with self._lock:
            expired = self.expired_tokens > 0
            if expired:
                self.expired_tokens -= 1
        lifetime = self.token_lifetime if self.token_lifetime is not None else self.expires_in
        exp = now - 3600 if expired else now + lifetime
        claims = {
            "iss": self.issuer,
            "sub": user,
            "aud": self.service,
            "exp": exp,
            "nbf": min(now, exp) - 10,
            "iat": min(now, exp) - 10,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        x5c = [base64.b64encode(der).decode("ascii") for der in self.chain.chain_der]
        return jwt.encode(claims, self.chain.key, algorithm="RS256", headers={"x5c": x5c})


def _reply(req: BaseHTTPRequestHandler, status: int, doc: dict[str, object]) -> None:
    body = json.dumps(doc).encode()
    req.send_response(status)
    req.send_header("Content-Type", "application/json")
    req.send_header("Content-Length", str(len(body)))
    req.end_headers()
    req.wfile.write(body)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TokenRegistry:
    """`docker-registry serve` with token auth, plain HTTP on 127.0.0.1, and its issuer.

    Use as a context manager, or call `start()` and `stop()`; the registry process is ended by
    PID, and killed by the kernel if the process that started it dies first.

    Args:
        workdir: folder for its configuration, certificates and log.
        storage: the storage folder it serves, read-only.
        users: user name -> password of the accounts the issuer knows.
        refresh_tokens: refresh token -> user name, the identity tokens the issuer knows.
    """

    def __init__(
        self,
        workdir: Path,
        storage: Path,
        users: dict[str, str],
        refresh_tokens: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.storage = storage
        self.chain = SigningChain.create()
        self.issuer = TokenIssuer(self.chain, users, refresh_tokens=refresh_tokens)
        self.port = _free_port()
        self.log = workdir / "token-registry.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """`127.0.0.1:PORT`, the registry part of an image name."""
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> TokenRegistry:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Write the configuration and start the registry; stop everything on failure."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        if not self.storage.is_dir():
            raise FileNotFoundError(f"no registry storage at {self.storage}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        bundle = self.workdir / "token-ca.crt"
        bundle.write_bytes(self.chain.ca_pem)
        config = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "json", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "maintenance": {
                    "readonly": {"enabled": True},
                    "uploadpurging": {"enabled": False},
                },
            },
            "http": {"addr": self.host, "secret": "updock-lab-token"},
            "auth": {
                "token": {
                    "realm": self.issuer.realm,
                    "service": self.issuer.service,
                    "issuer": self.issuer.issuer,
                    "rootcertbundle": str(bundle),
                }
            },
        }
        cfg = self.workdir / "token-registry.yml"
        cfg.write_text(json.dumps(config))  # JSON is YAML
        with self.log.open("wb") as log:
            self._proc = subprocess.Popen(
                ["docker-registry", "serve", str(cfg)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=die_with_parent,  # noqa: PLW1509 (only prctl)
            )  # fmt: skip
        deadline = time.monotonic() + 20
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"the token registry exited with {self._proc.returncode}: "
                    f"{self.log.read_text()[-2000:]}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the token registry does not listen on {self.host}")
            time.sleep(0.05)

    def stop(self) -> None:
        """End the registry (by PID) and the issuer."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.issuer.close()

    def exchanges(self) -> list[tuple[str, str, int]]:
        """(method, URI, status) of every request the registry logged, refused ones included.

        A request refused for want of a (valid) token logs no "response completed" line, only
        an authorization error: it counts as 401.
        """
        return [(e.method, e.uri, e.status) for e in read_registry_log(self.log)]
