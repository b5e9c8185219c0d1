"""Self-made CAs in certs.d, in the lab: updock (on the flavour's own Python) and podman agree.

Python 3.13 (Debian 13's, the trixie flavour's) verifies certificates strictly by default
(`VERIFY_X509_STRICT`) and refused a registry whose self-made CA has no keyUsage extension,
which podman's Go verifier accepts. Here a registry of the lab serves such a chain, its CA in the
lab's `/etc/containers/certs.d`, and both `updock auto-update` (run inside the flavour, on its
`python3`: 3.13 on trixie, 3.11 on bookworm) and the flavour's `podman auto-update` must accept
it; a leaf whose host name is only in its common name must be refused by both.
"""

from __future__ import annotations

import pytest

from tests.integration.conformance import podman_since, run_both, run_updock
from updock.testing.certs import make_ca, make_server_cert, write_certs_d
from updock.testing.lab import Lab, Registry

pytestmark = pytest.mark.lab


def _service_on(lab: Lab, reg: Registry, name: str, *, verify: bool) -> str:
    """A service on `reg`'s v1 of `tls/<name>`, then v2 pushed.

    Args:
        verify: pull v1 as podman does by default, verifying the registry's certificate with
            the certs.d CA (else without verification).
    """
    image = lab.build_image(f"{reg.host}/tls/{name}:latest", version="v1")
    if verify:
        lab.podman("pull", "-q", image)
    else:
        lab.pull(image)
    lab.create_service(name, image, pull=False)
    lab.build_image(image, version="v2")
    return image


def test_a_self_made_ca_without_key_usage_is_accepted_by_updock_and_podman(lab: Lab) -> None:
    ca = make_ca("lab CA without keyUsage", key_usage=None)
    leaf = make_server_cert(ca)
    reg = lab.add_registry("nokeyusage", chain=leaf.pem(), key=leaf.key_pem())
    write_certs_d(lab.etc_containers / "certs.d", reg.host, ca)
    _service_on(lab, reg, "nku", verify=True)  # podman's own pull accepts it

    updock, podman = run_both(lab, "--dry-run", "--format", "json")

    assert updock.returncode == 0, updock.stderr
    assert updock.statuses() == {"nku": "pending"}
    assert (podman.returncode, podman.rows()) == (0, updock.rows()), podman.stderr
    # And a real update: updock's check, then podman's pull, both over the same TLS.
    real = run_updock(lab, "--format", "json")
    assert (real.returncode, real.statuses()) == (0, {"nku": "true"}), real.stderr
    assert lab.container_version("nku") == "v2"


def test_a_leaf_with_its_host_only_in_the_common_name_is_refused_by_both(lab: Lab) -> None:
    ca = make_ca("lab CA")
    leaf = make_server_cert(ca, alt_names=False)  # CN=127.0.0.1, no subjectAltName
    reg = lab.add_registry("cnonly", chain=leaf.pem(), key=leaf.key_pem())
    write_certs_d(lab.etc_containers / "certs.d", reg.host, ca)
    _service_on(lab, reg, "cnonly", verify=False)

    updock, podman = run_both(lab, "--dry-run", "--format", "json")

    assert (updock.returncode, updock.statuses()) == (125, {"cnonly": "failed"})
    assert reg.host in updock.stderr
    assert "certificate" in updock.stderr.lower()
    if podman_since(lab, "4.6"):
        assert (podman.returncode, podman.rows()) == (125, updock.rows())
        assert "x509: certificate relies on legacy Common Name field" in podman.stderr
    else:
        # podman 4.3.1 refuses it too, but swallows check errors: `false`, exit 0.
        assert (podman.returncode, podman.statuses()) == (0, {"cnonly": "false"})
