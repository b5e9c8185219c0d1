"""The registry client checks an image whether its HTTP stack was loaded early (`preload`, in a
background thread that races the first request) or on the first request.

Each case runs in a fresh interpreter, where nothing has imported requests yet, against a real
HTTP server on 127.0.0.1. (That importing the package loads no HTTP stack is in `test_cli.py`.)
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

DIGEST = "sha256:" + hashlib.sha256(b"startup").hexdigest()


class _Registry(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Docker-Content-Digest", DIGEST)
        self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def registry() -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """`127.0.0.1:PORT` of a plain HTTP server that answers manifest `HEAD`s, and what it saw."""
    seen: list[tuple[str, str]] = []

    class Handler(_Registry):
        def do_HEAD(self) -> None:
            seen.append(("HEAD", self.path))
            super().do_HEAD()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,))
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


_PROGRAM = """
import sys
from updock.registry import RegistryClient

preload, host, authfile = sys.argv[1] == "preload", sys.argv[2], sys.argv[3]
RegistryClient(tls_verify=False, certs_dirs=[]).close()  # an unused client loads nothing
print("loaded before:", "requests" in sys.modules)
with RegistryClient(tls_verify=False, certs_dirs=[], preload=preload) as client:
    print(client.manifest_digest(
        host, "app", "latest", authfile=authfile, os="linux", architecture="amd64", variant=""
    ))
"""


@pytest.mark.parametrize("mode", ["preload", "on-first-request"])
def test_a_fresh_client_checks_an_image(
    registry: tuple[str, list[tuple[str, str]]], tmp_path: Path, mode: str
) -> None:
    host, seen = registry
    authfile = tmp_path / "auth.json"
    authfile.write_text("{}")
    env = {**os.environ, "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", _PROGRAM, mode, host, str(authfile)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["loaded before: False", DIGEST]
    assert seen == [("HEAD", "/v2/app/manifests/latest")]
