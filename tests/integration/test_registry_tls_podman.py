"""podman's own verifier agrees with the table of `tests/unit/test_registry_tls_verify.py`.

The unit tests check that updock's client accepts exactly the certificates of `CASES` marked
accepted; here skopeo (the same Go code as podman: containers/image over crypto/x509, from the
lab's packages) is asked about the same certificates, served by the same kind of TLS server, so
the table says what podman really does, not what a reader of Go's source expects.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.unit.test_registry_tls_verify import CASES, TLSRegistry
from updock.testing.certs import write_certs_d
from updock.testing.lab import Lab

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def skopeo(lab_session: Lab) -> str:
    """skopeo, installed with the lab's packages."""
    path = shutil.which("skopeo")
    assert path is not None
    return path


@pytest.mark.parametrize("name", CASES)
def test_podman_accepts_what_the_table_says(skopeo: str, tmp_path: Path, name: str) -> None:
    make, accepted, _ = CASES[name]
    case = make()
    server = TLSRegistry(tmp_path, *case.chain)
    try:
        domain = f"{case.host}:{server.port}"
        certs_d = write_certs_d(tmp_path / "certs.d", domain, *case.cas)
        conf, auth = tmp_path / "registries.conf", tmp_path / "auth.json"
        conf.write_text("unqualified-search-registries = []\n")
        auth.write_text("{}")
        done = subprocess.run(
            [
                skopeo, "--registries-conf", str(conf), "inspect", "--raw",
                "--authfile", str(auth), "--cert-dir", str(certs_d / domain),
                f"docker://{domain}/app:latest",
            ],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        server.close()
    if accepted:
        assert done.returncode == 0, done.stderr
    else:
        assert done.returncode != 0
        assert "x509: " in done.stderr
