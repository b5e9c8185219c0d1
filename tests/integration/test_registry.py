"""RegistryClient against the lab's real registries: digests, TLS, auth, request counts.

The client runs in the test process: the registries listen on 127.0.0.1 of the shared network
namespace. Digests are checked against skopeo's. The lab's registries need no service or
container, so these tests use the session lab directly (no reset between tests).
"""

from __future__ import annotations

import base64
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import requests

from updock.errors import RegistryAuthError, RegistryError
from updock.registry import RegistryClient
from updock.registry.manifest import OCI_INDEX
from updock.testing.lab import (
    LAB_PASSWORD,
    LAB_USER,
    Exchange,
    Lab,
    Registry,
    read_registry_log,
)

# The registry client runs in the test process: the lab's podman does not matter.
pytestmark = [pytest.mark.lab, pytest.mark.one_flavour]

AMD64 = {"os": "linux", "architecture": "amd64", "variant": ""}


@pytest.fixture(scope="module")
def lab(lab_session: Lab) -> Lab:
    """The session's lab, without the per-test reset: these tests start no services."""
    return lab_session


def _skopeo_digest(lab: Lab, name: str) -> str:
    args = ["skopeo", "inspect", "--tls-verify=false", f"docker://{name}"]
    if name.startswith(lab.secure.host + "/"):
        args[2:2] = ["--creds", f"{LAB_USER}:{LAB_PASSWORD}"]
    digest: str = json.loads(lab.run(args).stdout)["Digest"]
    return digest


def _push(lab: Lab, registry: Registry, repo: str, tag: str = "latest") -> str:
    """Push a new image as `registry/repo:tag`; its manifest digest, as skopeo sees it."""
    name = lab.build_image(f"{registry.host}/{repo}:{tag}")
    return _skopeo_digest(lab, name)


def _exchanges(registry: Registry) -> list[Exchange]:
    """Every request in the registry's log, including those refused before a handler ran."""
    return read_registry_log(registry.log)


def _new_exchanges(registry: Registry, before: int, at_least: int) -> list[Exchange]:
    """The exchanges logged after the first `before`, once at least `at_least` are there.

    The registry writes a log line after it answered, so the line may lag the answer a bit.
    """
    deadline = time.monotonic() + 2
    while True:
        new = _exchanges(registry)[before:]
        if len(new) >= at_least or time.monotonic() > deadline:
            time.sleep(0.05)  # anything more that is in flight
            return _exchanges(registry)[before:]
        time.sleep(0.02)


@pytest.fixture(scope="module")
def plain_image(lab: Lab) -> tuple[str, str]:
    """(repo, digest) of an image on the plain registry, tag `latest`."""
    return "reg-plain", _push(lab, lab.plain, "reg-plain")


@pytest.fixture(scope="module")
def secure_image(lab: Lab) -> tuple[str, str]:
    """(repo, digest) of an image on the secure registry, tag `latest`."""
    return "reg-secure", _push(lab, lab.secure, "reg-secure")


@pytest.fixture
def empty_conf(tmp_path: Path) -> Path:
    conf = tmp_path / "registries.conf"
    conf.write_text("unqualified-search-registries = []\n")
    return conf


@pytest.fixture
def insecure_conf(tmp_path: Path, lab: Lab) -> Path:
    conf = tmp_path / "registries.conf"
    conf.write_text(f'[[registry]]\nlocation = "{lab.plain.host}"\ninsecure = true\n')
    return conf


def _secure_client(lab: Lab, conf: Path) -> RegistryClient:
    """A client with default TLS settings, the lab's certs.d and a registries.conf of the test."""
    return RegistryClient(
        registries_conf=conf, registries_conf_dirs=[], certs_dirs=[lab.etc_containers / "certs.d"]
    )


# -- plain HTTP ---------------------------------------------------------------------------------


def test_plain_registry_with_tls_verify_false(lab: Lab, plain_image: tuple[str, str]) -> None:
    repo, digest = plain_image
    with RegistryClient(tls_verify=False, registries_conf_dirs=[], certs_dirs=[]) as client:
        got = client.manifest_digest(lab.plain.host, repo, "latest", authfile=None, **AMD64)
    assert got == digest


def test_plain_registry_marked_insecure_in_registries_conf(
    lab: Lab, plain_image: tuple[str, str], insecure_conf: Path
) -> None:
    repo, digest = plain_image
    with RegistryClient(
        registries_conf=insecure_conf, registries_conf_dirs=[], certs_dirs=[]
    ) as client:
        got = client.manifest_digest(lab.plain.host, repo, "latest", authfile=None, **AMD64)
    assert got == digest


def test_plain_registry_not_marked_insecure_is_refused(
    lab: Lab, plain_image: tuple[str, str], empty_conf: Path
) -> None:
    repo, _ = plain_image
    with (
        RegistryClient(registries_conf=empty_conf, registries_conf_dirs=[], certs_dirs=[]) as c,
        pytest.raises(RegistryError, match=rf"^checking {lab.plain.host}/{repo}:latest: TLS"),
    ):
        c.manifest_digest(lab.plain.host, repo, "latest", authfile=None, **AMD64)


def test_tls_verify_true_refuses_plain_http_even_when_insecure(
    lab: Lab, plain_image: tuple[str, str], insecure_conf: Path
) -> None:
    repo, _ = plain_image
    client = RegistryClient(
        tls_verify=True, registries_conf=insecure_conf, registries_conf_dirs=[], certs_dirs=[]
    )
    with client, pytest.raises(RegistryError) as info:
        client.manifest_digest(lab.plain.host, repo, "latest", authfile=None, **AMD64)
    assert not isinstance(info.value, RegistryAuthError)
    assert str(info.value).startswith(f"checking {lab.plain.host}/{repo}:latest: TLS")
    assert isinstance(info.value.__cause__, requests.exceptions.SSLError)


def test_unknown_tag_is_manifest_unknown(lab: Lab, plain_image: tuple[str, str]) -> None:
    repo, _ = plain_image
    with (
        RegistryClient(tls_verify=False, certs_dirs=[]) as client,
        pytest.raises(RegistryError, match="manifest unknown"),
    ):
        client.manifest_digest(lab.plain.host, repo, "no-such-tag", authfile=None, **AMD64)


def test_nothing_listening_names_the_registry() -> None:
    with (
        RegistryClient(tls_verify=False, timeout=2, certs_dirs=[]) as client,
        pytest.raises(RegistryError) as info,
    ):
        client.manifest_digest("127.0.0.1:1", "app", "1", authfile=None, **AMD64)
    message = str(info.value)
    assert message.startswith("checking 127.0.0.1:1/app:1: cannot connect to 127.0.0.1:1")
    assert "refused" in message.lower()


def test_new_push_changes_the_digest(lab: Lab) -> None:
    first = _push(lab, lab.plain, "reg-moving", "1")
    with RegistryClient(tls_verify=False, certs_dirs=[]) as client:
        assert client.manifest_digest(
            lab.plain.host, "reg-moving", "1", authfile=None, **AMD64
        ) == (first)
        second = _push(lab, lab.plain, "reg-moving", "1")
        assert second != first
        got = client.manifest_digest(lab.plain.host, "reg-moving", "1", authfile=None, **AMD64)
    assert got == second


def test_one_head_per_image_no_probe_no_get_one_connection(lab: Lab) -> None:
    digests = {repo: _push(lab, lab.plain, repo) for repo in ("reg-count-a", "reg-count-b")}
    before = len(_exchanges(lab.plain))
    with RegistryClient(tls_verify=False, certs_dirs=[]) as client:
        for repo, digest in digests.items():
            got = client.manifest_digest(lab.plain.host, repo, "latest", authfile=None, **AMD64)
            assert got == digest
    new = _new_exchanges(lab.plain, before, 2)
    assert sorted((e.method, e.uri, e.status) for e in new) == [
        ("HEAD", "/v2/reg-count-a/manifests/latest", 200),
        ("HEAD", "/v2/reg-count-b/manifests/latest", 200),
    ]
    assert len({e.remote for e in new}) == 1  # the connection was reused


# -- TLS and basic auth -------------------------------------------------------------------------


def test_secure_registry_with_authfile_and_certs_d(
    lab: Lab, secure_image: tuple[str, str], empty_conf: Path
) -> None:
    repo, digest = secure_image
    with _secure_client(lab, empty_conf) as client:
        got = client.manifest_digest(
            lab.secure.host, repo, "latest", authfile=str(lab.authfile), **AMD64
        )
    assert got == digest


def test_basic_auth_meets_one_401_per_registry_then_sends_credentials_at_once(
    lab: Lab, empty_conf: Path
) -> None:
    digests = {repo: _push(lab, lab.secure, repo) for repo in ("reg-basic-a", "reg-basic-b")}
    before = len(_exchanges(lab.secure))
    with _secure_client(lab, empty_conf) as client:
        for repo, digest in digests.items():
            got = client.manifest_digest(
                lab.secure.host, repo, "latest", authfile=str(lab.authfile), **AMD64
            )
            assert got == digest
    new = _new_exchanges(lab.secure, before, 3)
    assert [(e.method, e.uri, e.status) for e in new] == [
        ("HEAD", "/v2/reg-basic-a/manifests/latest", 401),
        ("HEAD", "/v2/reg-basic-a/manifests/latest", 200),
        ("HEAD", "/v2/reg-basic-b/manifests/latest", 200),
    ]
    assert len({e.remote for e in new}) == 1


def test_secure_registry_without_credentials(
    lab: Lab, secure_image: tuple[str, str], empty_conf: Path, tmp_path: Path
) -> None:
    repo, _ = secure_image
    authfile = tmp_path / "auth.json"
    authfile.write_text('{"auths": {}}')
    with (
        _secure_client(lab, empty_conf) as client,
        pytest.raises(RegistryAuthError, match=f"^checking {lab.secure.host}/{repo}:latest: "),
    ):
        client.manifest_digest(lab.secure.host, repo, "latest", authfile=str(authfile), **AMD64)


def test_secure_registry_with_wrong_password(
    lab: Lab, secure_image: tuple[str, str], empty_conf: Path, tmp_path: Path
) -> None:
    repo, _ = secure_image
    wrong = "wrong-" + LAB_PASSWORD
    authfile = tmp_path / "auth.json"
    token = base64.b64encode(f"{LAB_USER}:{wrong}".encode()).decode()
    authfile.write_text(json.dumps({"auths": {lab.secure.host: {"auth": token}}}))
    with _secure_client(lab, empty_conf) as client, pytest.raises(RegistryAuthError) as info:
        client.manifest_digest(lab.secure.host, repo, "latest", authfile=str(authfile), **AMD64)
    message = str(info.value)
    assert "refused the credentials" in message
    for secret in (wrong, token, LAB_USER):
        assert secret not in message


def test_secure_registry_with_wrong_ca(
    lab: Lab, secure_image: tuple[str, str], empty_conf: Path, tmp_path: Path
) -> None:
    repo, _ = secure_image
    certs = tmp_path / "certs.d" / lab.secure.host
    certs.mkdir(parents=True)
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "1", "-subj", "/CN=not the lab CA",
            "-keyout", str(tmp_path / "other.key"), "-out", str(certs / "ca.crt"),
        ],
        check=True, capture_output=True,
    )  # fmt: skip
    client = RegistryClient(
        registries_conf=empty_conf, registries_conf_dirs=[], certs_dirs=[tmp_path / "certs.d"]
    )
    with client, pytest.raises(RegistryError) as info:
        client.manifest_digest(lab.secure.host, repo, "latest", authfile=str(lab.authfile), **AMD64)
    message = str(info.value)
    assert message.startswith(f"checking {lab.secure.host}/{repo}:latest: TLS")
    assert "certificate" in message.lower()


def test_secure_registry_unverified_with_tls_verify_false(
    lab: Lab, secure_image: tuple[str, str]
) -> None:
    repo, digest = secure_image
    with RegistryClient(tls_verify=False, certs_dirs=[]) as client:
        got = client.manifest_digest(
            lab.secure.host, repo, "latest", authfile=str(lab.authfile), **AMD64
        )
    assert got == digest


def test_shared_by_threads(lab: Lab, empty_conf: Path) -> None:
    digests = {repo: _push(lab, lab.secure, repo) for repo in ("reg-thread-a", "reg-thread-b")}
    jobs = [repo for repo in digests for _ in range(8)]
    with _secure_client(lab, empty_conf) as client, ThreadPoolExecutor(8) as pool:
        got = list(
            pool.map(
                lambda repo: client.manifest_digest(
                    lab.secure.host, repo, "latest", authfile=str(lab.authfile), **AMD64
                ),
                jobs,
            )
        )
    assert got == [digests[repo] for repo in jobs]


# -- manifest lists -----------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexImage:
    repo: str
    index_digest: str
    amd64: str
    arm64: str
    arm_v7: str


@pytest.fixture(scope="module")
def index_image(lab: Lab) -> IndexImage:
    """An OCI index `reg-index:latest` on the plain registry over three pushed images.

    The images are all busybox for the lab's machine; the index entries declare the platforms.
    """
    repo = "reg-index"
    digests = {tag: _push(lab, lab.plain, repo, tag) for tag in ("amd64", "arm64", "armv7")}
    base = f"http://{lab.plain.host}/v2/{repo}/manifests"
    manifests = []
    for tag, platform in (
        ("amd64", {"os": "linux", "architecture": "amd64"}),
        ("arm64", {"os": "linux", "architecture": "arm64", "variant": "v8"}),
        ("armv7", {"os": "linux", "architecture": "arm", "variant": "v7"}),
    ):
        got = requests.get(
            f"{base}/{tag}", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}
        )
        got.raise_for_status()
        manifests.append(
            {
                "mediaType": got.headers["Content-Type"],
                "digest": digests[tag],
                "size": len(got.content),
                "platform": platform,
            }
        )
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})
    put = requests.put(f"{base}/latest", data=body, headers={"Content-Type": OCI_INDEX})
    put.raise_for_status()
    return IndexImage(
        repo, put.headers["Docker-Content-Digest"], digests["amd64"], digests["arm64"],
        digests["armv7"],
    )  # fmt: skip


@pytest.mark.parametrize(
    ("platform", "expected"),
    [
        ({"os": "linux", "architecture": "amd64", "variant": ""}, "amd64"),
        ({"os": "linux", "architecture": "arm64", "variant": "v8"}, "arm64"),
        ({"os": "linux", "architecture": "arm64", "variant": ""}, "arm64"),
        ({"os": "linux", "architecture": "arm", "variant": "v7"}, "arm_v7"),
        ({"os": "linux", "architecture": "arm", "variant": "v6"}, "arm_v7"),  # "" matches any
    ],
)
def test_index_returns_the_platform_entry_with_one_head_and_one_get(
    lab: Lab, index_image: IndexImage, platform: dict[str, str], expected: str
) -> None:
    before = len(_exchanges(lab.plain))
    with RegistryClient(tls_verify=False, certs_dirs=[]) as client:
        got = client.manifest_digest(
            lab.plain.host, index_image.repo, "latest", authfile=None, **platform
        )
    assert got == getattr(index_image, expected)
    new = _new_exchanges(lab.plain, before, 2)
    assert [(e.method, e.uri) for e in new] == [
        ("HEAD", f"/v2/{index_image.repo}/manifests/latest"),
        ("GET", f"/v2/{index_image.repo}/manifests/{index_image.index_digest}"),
    ]


def test_known_index_digest_is_returned_without_get(lab: Lab, index_image: IndexImage) -> None:
    before = len(_exchanges(lab.plain))
    with RegistryClient(tls_verify=False, certs_dirs=[]) as client:
        got = client.manifest_digest(
            lab.plain.host,
            index_image.repo,
            "latest",
            authfile=None,
            known_digests={index_image.amd64, index_image.index_digest},
            **AMD64,
        )
    assert got == index_image.index_digest
    new = _new_exchanges(lab.plain, before, 1)
    assert [(e.method, e.uri) for e in new] == [
        ("HEAD", f"/v2/{index_image.repo}/manifests/latest")
    ]


def test_index_without_the_platform(lab: Lab, index_image: IndexImage) -> None:
    with (
        RegistryClient(tls_verify=False, certs_dirs=[]) as client,
        pytest.raises(RegistryError) as info,
    ):
        client.manifest_digest(
            lab.plain.host,
            index_image.repo,
            "latest",
            os="linux",
            architecture="s390x",
            variant="",
            authfile=None,
        )
    message = str(info.value)
    assert message.startswith(f"checking {lab.plain.host}/{index_image.repo}:latest: ")
    assert "linux/s390x" in message


# -- bearer tokens ------------------------------------------------------------------------------


class TokenGateway:
    """A bearer-token front for the lab's plain registry, on 127.0.0.1.

    `/token` hands out tokens (as Docker Hub's auth server does); any other request needs one
    and is forwarded to the real registry. Records what it saw.
    """

    def __init__(self, upstream: str, *, user: str, password: str) -> None:
        self.upstream = upstream
        self.user, self.password = user, password
        self.token_requests: list[dict[str, str]] = []
        self.registry_requests: list[tuple[str, str, int]] = []
        self.issued: dict[str, str] = {}  # token -> scope
        self.expires_in = 300
        self.allow_anonymous = False
        self._lock = threading.Lock()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                gateway.handle(self, "GET")

            def do_HEAD(self) -> None:
                gateway.handle(self, "HEAD")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

    def handle(self, req: BaseHTTPRequestHandler, method: str) -> None:
        path, _, query = req.path.partition("?")
        if path == "/token":
            self._token(req, query)
            return
        auth = req.headers.get("Authorization", "")
        with self._lock:
            scope = self.issued.get(auth.removeprefix("Bearer "))
        repo = path.removeprefix("/v2/").partition("/manifests/")[0]
        if not auth.startswith("Bearer ") or scope != f"repository:{repo}:pull":
            with self._lock:
                self.registry_requests.append((method, path, 401))
            challenge = (
                f'Bearer realm="http://{self.host}/token",service="lab-gateway",'
                f'scope="repository:{repo}:pull"'
            )
            self._reply(req, 401, {"WWW-Authenticate": challenge}, b"")
            return
        up = requests.request(
            method,
            f"http://{self.upstream}{path}",
            headers={"Accept": req.headers.get("Accept", "")},
        )
        with self._lock:
            self.registry_requests.append((method, path, up.status_code))
        keep = ("Content-Type", "Docker-Content-Digest")
        headers = {k: up.headers[k] for k in keep if k in up.headers}
        if method == "HEAD":
            headers["Content-Length"] = up.headers.get("Content-Length", "0")
            self._reply(req, up.status_code, headers, b"", length=False)
        else:
            self._reply(req, up.status_code, headers, up.content)

    def _token(self, req: BaseHTTPRequestHandler, query: str) -> None:
        params = {k: v[0] for k, v in parse_qs(query).items()}
        expected = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        given = req.headers.get("Authorization")
        if given == expected:
            params["authorization"] = "ok"
        elif given is None and self.allow_anonymous:
            params["authorization"] = "anonymous"
        else:
            params["authorization"] = "refused"
        with self._lock:
            self.token_requests.append(params)
            token = f"tok-{len(self.token_requests)}"
            self.issued[token] = params.get("scope", "")
            body = json.dumps({"token": token, "expires_in": self.expires_in}).encode()
        if params["authorization"] == "refused":
            self._reply(req, 401, {}, b"")
            return
        self._reply(req, 200, {"Content-Type": "application/json"}, body)

    @staticmethod
    def _reply(
        req: BaseHTTPRequestHandler,
        status: int,
        headers: dict[str, str],
        body: bytes,
        *,
        length: bool = True,
    ) -> None:
        req.send_response(status)
        for k, v in headers.items():
            req.send_header(k, v)
        if length:
            req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        if body:
            req.wfile.write(body)


@pytest.fixture
def gateway(lab: Lab) -> Iterator[TokenGateway]:
    gw = TokenGateway(lab.plain.host, user="tok-user", password="tok-pass")
    try:
        yield gw
    finally:
        gw.close()


def test_bearer_token_fetched_once_per_repository_and_reused(
    lab: Lab, gateway: TokenGateway, plain_image: tuple[str, str], tmp_path: Path
) -> None:
    repo, digest = plain_image
    other = "reg-bearer-other"
    other_digest = _push(lab, lab.plain, other)
    authfile = tmp_path / "auth.json"
    secret = base64.b64encode(b"tok-user:tok-pass").decode()
    authfile.write_text(json.dumps({"auths": {gateway.host: {"auth": secret}}}))
    with RegistryClient(tls_verify=False, certs_dirs=[]) as client:
        for name, want in ((repo, digest), (repo, digest), (other, other_digest), (repo, digest)):
            got = client.manifest_digest(
                gateway.host, name, "latest", authfile=str(authfile), **AMD64
            )
            assert got == want
    assert [(t["scope"], t["service"], t["account"], t["authorization"])
            for t in gateway.token_requests] == [
        (f"repository:{repo}:pull", "lab-gateway", "tok-user", "ok"),
        (f"repository:{other}:pull", "lab-gateway", "tok-user", "ok"),
    ]  # fmt: skip
    assert gateway.registry_requests == [
        ("HEAD", f"/v2/{repo}/manifests/latest", 401),
        ("HEAD", f"/v2/{repo}/manifests/latest", 200),
        ("HEAD", f"/v2/{repo}/manifests/latest", 200),
        ("HEAD", f"/v2/{other}/manifests/latest", 200),  # token fetched first: no 401
        ("HEAD", f"/v2/{repo}/manifests/latest", 200),
    ]


def test_anonymous_bearer_token_renewed_after_expiry(
    lab: Lab, gateway: TokenGateway, plain_image: tuple[str, str]
) -> None:
    repo, digest = plain_image
    gateway.allow_anonymous = True
    clock = [1000.0]
    with RegistryClient(tls_verify=False, certs_dirs=[], clock=lambda: clock[0]) as client:
        for _ in range(2):
            got = client.manifest_digest(gateway.host, repo, "latest", authfile=None, **AMD64)
            assert got == digest
        assert len(gateway.token_requests) == 1
        clock[0] += gateway.expires_in
        client.manifest_digest(gateway.host, repo, "latest", authfile=None, **AMD64)
    assert [t["authorization"] for t in gateway.token_requests] == ["anonymous", "anonymous"]
    assert "account" not in gateway.token_requests[0]
    assert all(r[2] == 200 for r in gateway.registry_requests[1:])


def test_token_server_refusing_is_an_auth_error(
    lab: Lab, gateway: TokenGateway, plain_image: tuple[str, str], tmp_path: Path
) -> None:
    repo, _ = plain_image
    authfile = tmp_path / "auth.json"
    secret = base64.b64encode(b"tok-user:not-the-password").decode()
    authfile.write_text(json.dumps({"auths": {gateway.host: {"auth": secret}}}))
    with (
        RegistryClient(tls_verify=False, certs_dirs=[]) as client,
        pytest.raises(RegistryAuthError, match="token server") as info,
    ):
        client.manifest_digest(gateway.host, repo, "latest", authfile=str(authfile), **AMD64)
    assert "not-the-password" not in str(info.value)
    assert secret not in str(info.value)
