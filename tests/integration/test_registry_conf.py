"""registries.conf remaps, mirrors and blocked registries: updock's check goes where podman's pull
goes, as the lab's registries log it.

Each test writes a registries.conf of its own; the check runs in the test process
(`RegistryClient(registries_conf=...)`), podman's pull in the lab with
`CONTAINERS_REGISTRIES_CONF` pointing at the same file. The names the containers use point at a
port of 127.0.0.1 where nothing listens: a request that went there instead of where the file
says would fail.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_registry import AMD64, _exchanges, _new_exchanges, _push
from updock.errors import RegistryAuthError, RegistryError
from updock.registry import RegistryClient
from updock.testing.lab import LAB_PASSWORD, LAB_USER, Lab, Registry, free_port

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab(lab_session: Lab) -> Lab:
    """The session's lab, not reset between tests (the one test that starts services resets it)."""
    return lab_session


def _conf(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "registries.conf"
    path.write_text("unqualified-search-registries = []\n" + text)
    return path


def _remap(tmp_path: Path, prefix: str, location: str, *, insecure: bool) -> Path:
    """A registries.conf that remaps `prefix` to `location`."""
    entry = f'[[registry]]\nprefix = "{prefix}"\nlocation = "{location}"\n'
    return _conf(tmp_path, entry + ("insecure = true\n" if insecure else ""))


def _check(conf: Path, name: str, authfile: str | None = None, certs: Path | None = None) -> str:
    domain, _, rest = name.partition("/")
    repository, _, tag = rest.rpartition(":")
    with RegistryClient(
        registries_conf=conf, registries_conf_dirs=[], certs_dirs=[certs] if certs else []
    ) as client:
        return client.manifest_digest(domain, repository, tag, authfile=authfile, **AMD64)


def _podman_pull(
    lab: Lab, conf: Path, name: str, authfile: Path | None = None
) -> subprocess.CompletedProcess[str]:
    args = ["podman", "pull", "-q", *(["--authfile", str(authfile)] if authfile else []), name]
    return lab.run(args, check=False, env={"CONTAINERS_REGISTRIES_CONF": str(conf)})


def _manifest_requests(registry: Registry, before: int) -> list[tuple[str, int]]:
    """(path, status) of the manifest requests logged after the first `before`, each once."""
    seen: list[tuple[str, int]] = []
    for e in _new_exchanges(registry, before, 1):
        if "/manifests/" in e.uri and (e.uri, e.status) not in seen:
            seen.append((e.uri, e.status))
    return seen


def _both_go_to(
    lab: Lab, registry: Registry, conf: Path, name: str, **kwargs: Path
) -> list[tuple[str, int]]:
    """Check `name` with updock, then pull it with podman: both ask for the same manifests, in
    the same order (podman meets a 401 on its `GET /v2/` probe, updock on its first request).
    Returns updock's manifest requests."""
    before = len(_exchanges(registry))
    authfile = kwargs.get("authfile")
    _check(conf, name, str(authfile) if authfile else None, kwargs.get("certs"))
    ours = _manifest_requests(registry, before)
    before = len(_exchanges(registry))
    pulled = _podman_pull(lab, conf, name, authfile)
    assert pulled.returncode == 0, pulled.stderr
    theirs = _manifest_requests(registry, before)
    assert list(dict.fromkeys(p for p, _ in theirs)) == list(dict.fromkeys(p for p, _ in ours))
    return ours


def test_a_remapped_prefix_is_checked_where_podman_pulls_it(lab: Lab, tmp_path: Path) -> None:
    digest = _push(lab, lab.plain, "remapped/conf-remap")
    logical = f"127.0.0.1:{free_port()}/team"
    conf = _remap(tmp_path, logical, f"{lab.plain.host}/remapped", insecure=True)
    assert _check(conf, f"{logical}/conf-remap:latest") == digest
    assert _both_go_to(lab, lab.plain, conf, f"{logical}/conf-remap:latest") == [
        ("/v2/remapped/conf-remap/manifests/latest", 200)
    ]


def test_mirrors_are_checked_in_order_before_the_registry(lab: Lab, tmp_path: Path) -> None:
    _push(lab, lab.plain, "conf-mirrored")  # the registry's own copy: another digest
    mirrored = _push(lab, lab.plain, "mirror/conf-mirrored")
    plain = lab.plain.host
    mirrors = "".join(
        f'[[registry.mirror]]\nlocation = "{plain}/{m}"\ninsecure = true\n'
        for m in ("mirror-empty", "mirror")
    )
    conf = _conf(tmp_path, f'[[registry]]\nlocation = "{plain}"\ninsecure = true\n{mirrors}')
    name = f"{plain}/conf-mirrored:latest"
    assert _check(conf, name) == mirrored
    assert _both_go_to(lab, lab.plain, conf, name) == [
        ("/v2/mirror-empty/conf-mirrored/manifests/latest", 404),
        ("/v2/mirror/conf-mirrored/manifests/latest", 200),
    ]


def test_mirrors_for_digests_only_are_not_asked_for_a_tag(lab: Lab, tmp_path: Path) -> None:
    own = _push(lab, lab.plain, "conf-by-digest")
    _push(lab, lab.plain, "mirror/conf-by-digest")
    plain = lab.plain.host
    conf = _conf(
        tmp_path,
        f'[[registry]]\nlocation = "{plain}"\ninsecure = true\nmirror-by-digest-only = true\n'
        f'[[registry.mirror]]\nlocation = "{plain}/mirror"\ninsecure = true\n',
    )
    name = f"{plain}/conf-by-digest:latest"
    assert _check(conf, name) == own
    assert _both_go_to(lab, lab.plain, conf, name) == [("/v2/conf-by-digest/manifests/latest", 200)]


def test_a_blocked_registry_is_not_asked(lab: Lab, tmp_path: Path) -> None:
    _push(lab, lab.plain, "blocked-ns/conf-blocked")
    prefix = f"{lab.plain.host}/blocked-ns"
    conf = _conf(
        tmp_path, f'[[registry]]\nlocation = "{prefix}"\ninsecure = true\nblocked = true\n'
    )
    name = f"{prefix}/conf-blocked:latest"
    before = len(_exchanges(lab.plain))
    with pytest.raises(RegistryError) as info:
        _check(conf, name)
    assert str(info.value) == f"checking {name}: registry {prefix} is blocked in {conf}"
    pulled = _podman_pull(lab, conf, name)
    assert pulled.returncode != 0
    assert f"registry {prefix} is blocked" in pulled.stderr
    assert _exchanges(lab.plain)[before:] == []  # neither asked it


def _authfile(path: Path, host: str) -> Path:
    secret = base64.b64encode(f"{LAB_USER}:{LAB_PASSWORD}".encode()).decode()
    path.write_text(json.dumps({"auths": {host: {"auth": secret}}}))
    return path


def test_a_remapped_location_gets_its_own_credentials(lab: Lab, tmp_path: Path) -> None:
    # containers/image looks credentials up for the place it asks (the remapped name), not for
    # the name the container uses.
    digest = _push(lab, lab.secure, "remapped-sec/conf-cred")
    logical = f"127.0.0.1:{free_port()}"
    conf = _remap(tmp_path, f"{logical}/sec", f"{lab.secure.host}/remapped-sec", insecure=False)
    name = f"{logical}/sec/conf-cred:latest"
    certs = lab.etc_containers / "certs.d"
    physical = _authfile(tmp_path / "physical.json", lab.secure.host)
    assert _check(conf, name, str(physical), certs) == digest
    assert _both_go_to(lab, lab.secure, conf, name, authfile=physical, certs=certs) == [
        ("/v2/remapped-sec/conf-cred/manifests/latest", 401),
        ("/v2/remapped-sec/conf-cred/manifests/latest", 200),
    ]
    logical_only = _authfile(tmp_path / "logical.json", logical)
    with pytest.raises(RegistryAuthError) as info:
        _check(conf, name, str(logical_only), certs)
    assert f"{lab.secure.host} demands credentials and no auth file has any" in str(info.value)
    assert _podman_pull(lab, conf, name, logical_only).returncode != 0


def test_a_blocked_registry_fails_its_containers_and_no_other(lab: Lab, tmp_path: Path) -> None:
    try:
        blocked = lab.build_image(f"{lab.plain.host}/blocked-run/app:latest")
        free = lab.build_image(f"{lab.plain.host}/free-run/app:latest")
        lab.create_service("conf-blocked", blocked)
        lab.create_service("conf-free", free)
        for name in (blocked, free):
            lab.build_image(name)  # newer images: both would be updated
        blocked_id = lab.podman("inspect", "--format", "{{.Id}}", "conf-blocked").stdout.strip()
        prefix = f"{lab.plain.host}/blocked-run"
        conf = tmp_path / "registries.conf"
        conf.write_text(
            (lab.conf / "registries.conf").read_text()
            + f'[[registry]]\nlocation = "{prefix}"\ninsecure = true\nblocked = true\n'
        )
        before = len(lab.plain.requests())

        res = lab.updock(
            "auto-update", "--dry-run", "--format", "json",
            env={"CONTAINERS_REGISTRIES_CONF": str(conf)},
        )  # fmt: skip

        assert res.returncode == 125, res.stderr
        rows = {row["ContainerName"]: row["Updated"] for row in json.loads(res.stdout)}
        assert rows == {"conf-blocked": "failed", "conf-free": "pending"}
        assert blocked_id in res.stderr
        assert f"registry {prefix} is blocked in {conf}" in res.stderr
        assert lab.plain.requests()[before:] == [("HEAD", "/v2/free-run/app/manifests/latest")]
    finally:
        lab.reset()
