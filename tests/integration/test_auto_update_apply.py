"""Real updates, restarts and rollbacks with `updock auto-update`, compared with podman's.

A real run changes the lab, so each scenario is set up twice the same way (same names, same
kinds of images): once for podman, once for updock. Reports are compared without container IDs
(each set-up has new containers), and so are the images the containers end up on.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.integration.conformance import (
    Outcome,
    States,
    compare_runs,
    podman_since,
    run_podman,
    run_updock,
    unit_states,
    without_ids,
)
from updock.testing.lab import ImageKind, Lab

pytestmark = pytest.mark.lab

Setup = Callable[[Lab], list[str]]


def _units(names: list[str]) -> dict[str, str]:
    return {name: f"container-{name}.service" for name in names}


def _versions(lab: Lab, names: list[str]) -> States:
    """container name -> (unit state, /version in the running container or "-")."""
    return unit_states(lab, _units(names))


def _compare(lab: Lab, setup: Setup, *args: str) -> tuple[Outcome, Outcome, States, States]:
    """Set up, run podman; reset, set up again, run updock. Returns both outcomes and states."""
    return compare_runs(lab, lambda lab: _units(setup(lab)), *args)


def _good_and_broken(
    lab: Lab, *, prefix: str = "", names: tuple[str, str] = ("good", "broken")
) -> list[str]:
    """A service whose v2 is good and one whose v2 cannot start, created from `prefix` + name."""
    for name in names:
        image = lab.build_image(f"{lab.plain.host}/apply/{name}:latest", version="v1")
        lab.create_service(name, prefix + image)
    good, broken = names
    lab.build_image(f"{lab.plain.host}/apply/{good}:latest", version="v2")
    lab.build_image(
        f"{lab.plain.host}/apply/{broken}:latest", ImageKind.MISSING_ENTRYPOINT, version="v2"
    )
    return list(names)


def test_update_and_rollback_equal_podman(lab: Lab) -> None:
    podman, updock, podman_state, updock_state = _compare(lab, _good_and_broken)

    assert (updock.returncode, podman.returncode) == (0, 0), updock.stderr
    assert without_ids(updock.rows()) == without_ids(podman.rows())
    assert updock.statuses() == {"good": "true", "broken": "rolled back"}
    assert updock_state == podman_state == {"good": ("active", "v2"), "broken": ("active", "v1")}
    # The previous image is tagged under the name again after the rollback.
    assert lab.container_image("broken") == lab.image_id(f"{lab.plain.host}/apply/broken:latest")
    # Pull progress went to stderr only.
    assert "Copying" in updock.stderr
    assert "Copying" not in updock.stdout


def test_rollback_false_leaves_the_failure_equal_podman(lab: Lab) -> None:
    podman, updock, podman_state, updock_state = _compare(lab, _good_and_broken, "--rollback=false")

    assert updock.returncode == 125
    assert without_ids(updock.rows()) == without_ids(podman.rows())
    assert updock.statuses() == {"good": "true", "broken": "failed"}
    assert updock_state == podman_state
    assert updock_state["broken"] == ("failed", "-")
    assert 'restarting systemd unit "container-broken.service" failed' in updock.stderr
    assert 'expected "done" but received "failed"' in updock.stderr
    if podman_since(lab, "4.5"):
        # Restart errors are returned since podman 4.5: the same exit status and message.
        assert podman.returncode == 125
        assert 'restarting systemd unit "container-broken.service"' in podman.stderr
    else:
        # podman 4.3.1 reports the same rows but exits 0 and says nothing on stderr: a service
        # left down with no error for the timer's log (the spec: any error exits 125).
        assert (podman.returncode, podman.stderr.count("Error")) == (0, 0)


def _docker_prefixed(lab: Lab) -> list[str]:
    """`dgood` and `dbroken`, created from `docker://` names (podman accepts the prefix)."""
    return _good_and_broken(lab, prefix="docker://", names=("dgood", "dbroken"))


def test_docker_transport_prefix_update_and_rollback_equal_podman(lab: Lab) -> None:
    podman, updock, podman_state, updock_state = _compare(lab, _docker_prefixed)

    assert updock.returncode == 0, updock.stderr
    assert updock.statuses() == {"dgood": "true", "dbroken": "rolled back"}
    assert updock_state == {"dgood": ("active", "v2"), "dbroken": ("active", "v1")}
    # The Image column shows the name as created, prefix included, as podman's does.
    images = {f"docker://{lab.plain.host}/apply/{n}:latest" for n in ("dgood", "dbroken")}
    assert {r["Image"] for r in updock.rows()} == {r["Image"] for r in podman.rows()} == images
    # podman does not see either update through the prefix, and leaves both on v1: 4.3.1
    # swallows its check error (`false`, exit 0); later podman reports it (`failed`, 125:
    # "invalid reference format").
    if podman_since(lab, "4.6"):
        assert podman.returncode == 125
        assert podman.statuses() == {"dgood": "failed", "dbroken": "failed"}
        assert podman.stderr.count("invalid reference format") == 2
    else:
        assert podman.returncode == 0
        assert podman.statuses() == {"dgood": "false", "dbroken": "false"}
    assert podman_state == {"dgood": ("active", "v1"), "dbroken": ("active", "v1")}


def _shared(lab: Lab) -> list[str]:
    image = lab.build_image(f"{lab.plain.host}/apply/shared:latest", version="v1")
    for name in ("s1", "s2", "s3"):
        lab.create_service(name, image)
    lab.build_image(image, version="v2")
    return ["s1", "s2", "s3"]


def _manifest_gets(lab: Lab, repo: str) -> int:
    return sum(
        1
        for method, path in lab.plain.requests()
        if method == "GET" and path.startswith(f"/v2/{repo}/manifests/")
    )


def heads_digest(lab: Lab, repo: str) -> str:
    """The digest the registry has for `repo:latest` now (skopeo, not updock)."""
    out = lab.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{lab.plain.host}/{repo}:latest"]
    ).stdout
    digest: str = json.loads(out)["Digest"]
    return digest


def test_shared_image_is_checked_and_pulled_once(lab: Lab) -> None:
    names = _shared(lab)
    before = len(lab.plain.requests())
    updock = run_updock(lab, "--format", "json")
    requests = lab.plain.requests()[before:]

    assert updock.returncode == 0, updock.stderr
    assert updock.statuses() == dict.fromkeys(names, "true")
    assert {v for _, v in _versions(lab, names).values()} == {"v2"}
    heads = [p for m, p in requests if m == "HEAD" and "/manifests/latest" in p]
    gets = [p for m, p in requests if m == "GET" and "/manifests/" in p]
    assert len(heads) == 1  # one check for three containers
    assert len(gets) == 1  # one pull for three containers...
    # ...pinned to the digest the check saw, so the tag cannot move in between.
    assert gets[0].rsplit("/", 1)[-1] == heads_digest(lab, "apply/shared")
    assert "apply/shared@sha256:" in updock.stderr
    assert updock.stderr.count("Trying to pull") == 1
    # podman on the same scenario: same report.
    lab.reset()
    _shared(lab)
    podman = run_podman(lab, "--format", "json")
    assert without_ids(podman.rows()) == without_ids(updock.rows())


def _multiarch(lab: Lab) -> list[str]:
    """A service on a multi-arch image (an OCI index), and a new index pushed."""
    image = lab.build_index(f"{lab.plain.host}/apply/multi:latest", version="v1")
    lab.create_service("multi", image)
    lab.build_index(image, version="v2")
    return ["multi"]


def test_multi_arch_image_costs_one_head_and_no_get_once_updated(lab: Lab) -> None:
    """After an update, a check of a multi-arch image is one HEAD, as for a single-arch one.

    A pull pinned to the platform's entry would leave the new image knowing only that entry's
    digest: every later check would meet an unknown list digest and GET the list again.
    """
    names = _multiarch(lab)
    updock = run_updock(lab, "--format", "json")
    assert updock.returncode == 0, updock.stderr
    assert updock.statuses() == {"multi": "true"}
    assert _versions(lab, names) == {"multi": ("active", "v2")}

    before = len(lab.plain.requests())
    again = run_updock(lab, "--format", "json", "--dry-run")
    assert again.statuses() == {"multi": "false"}
    assert lab.plain.requests()[before:] == [("HEAD", "/v2/apply/multi/manifests/latest")]

    # podman agrees there is nothing new, and pays two GETs for it (its probe and the list).
    before = len(lab.plain.requests())
    podman = run_podman(lab, "--format", "json", "--dry-run")
    assert without_ids(podman.rows()) == without_ids(again.rows())
    assert [m for m, _ in lab.plain.requests()[before:]].count("GET") >= 2


def _fragile_first(lab: Lab) -> list[str]:
    """Three units on one image name; the first (by unit name) cannot start on v2."""
    image = lab.build_image(f"{lab.plain.host}/apply/fragile:latest", version="v1")
    lab.create_service("a-fragile", image, command=["/bin/only-v1"])
    lab.create_service("b-sturdy", image)
    lab.create_service("c-sturdy", image)
    lab.build_image(image, version="v2")
    return ["a-fragile", "b-sturdy", "c-sturdy"]


def test_after_a_rollback_later_containers_are_checked_and_pulled_again(lab: Lab) -> None:
    names = _fragile_first(lab)
    updock = run_updock(lab, "--format", "json")

    assert updock.returncode == 0, updock.stderr
    assert updock.statuses() == {
        "a-fragile": "rolled back",
        "b-sturdy": "true",
        "c-sturdy": "true",
    }
    # Every row tells the truth: `true` rows run v2, the rolled-back one v1.
    assert _versions(lab, names) == {
        "a-fragile": ("active", "v1"),
        "b-sturdy": ("active", "v2"),
        "c-sturdy": ("active", "v2"),
    }
    # The image was pulled again after the rollback re-tagged the name to v1.
    assert updock.stderr.count("Trying to pull") == 2


def _local(lab: Lab) -> list[str]:
    image = lab.build_image("localhost/apply/local:1", local=True, version="v1")
    lab.create_service("loc", image, policy="local", pull=False)
    lab.build_image(image, local=True, version="v2")
    return ["loc"]


def test_local_policy_update_equals_podman(lab: Lab) -> None:
    podman, updock, podman_state, updock_state = _compare(lab, _local)

    assert (updock.returncode, podman.returncode) == (0, 0), updock.stderr
    assert without_ids(updock.rows()) == without_ids(podman.rows())
    assert updock.statuses() == {"loc": "true"}
    assert updock_state == podman_state == {"loc": ("active", "v2")}


def test_dry_run_then_real_run(lab: Lab) -> None:
    image = lab.build_image(f"{lab.plain.host}/apply/dry:latest", version="v1")
    lab.create_service("dry", image)
    lab.build_image(image, version="v2")
    before = lab.container_image("dry")

    dry = run_updock(lab, "--dry-run", "--format", "json")
    assert dry.statuses() == {"dry": "pending"}
    assert lab.container_image("dry") == before
    assert lab.image_id(image) == before  # not even pulled

    real = run_updock(lab, "--format", "json")
    assert real.statuses() == {"dry": "true"}
    assert lab.container_version("dry") == "v2"
    again = run_updock(lab, "--format", "json")
    assert again.statuses() == {"dry": "false"}


def test_kube_unit_with_two_containers_restarts_once(lab: Lab) -> None:
    image = lab.build_image(f"{lab.plain.host}/apply/kube:latest", version="v1")
    lab.pull(image)
    yaml = lab.root / "kube-apply.yaml"
    yaml.write_text(
        f"""apiVersion: v1
kind: Pod
metadata:
  name: kapp
  annotations:
    io.containers.autoupdate: "registry"
spec:
  containers:
  - name: one
    image: {image}
  - name: two
    image: {image}
"""
    )
    starts = lab.root / "kube-apply.starts"
    unit = "container-kapp.service"  # the lab's reset removes container-*.service units
    (lab.units / unit).write_text(
        f"""[Unit]
Description=kube play unit like podman-kube@.service
[Service]
Environment=PODMAN_SYSTEMD_UNIT=%n
ExecStartPre=/bin/sh -c 'echo start >> {starts}'
ExecStart=/usr/bin/podman kube play --replace --service-container=true --network none {yaml}
ExecStop=/usr/bin/podman kube down {yaml}
Type=notify
NotifyAccess=all
"""
    )
    lab.systemctl("daemon-reload")
    lab.systemctl("start", unit)
    lab.build_image(image, version="v2")

    updock = run_updock(lab, "--format", "json")

    assert updock.returncode == 0, updock.stderr
    assert updock.statuses() == {"kapp-one": "true", "kapp-two": "true"}
    assert {r["Unit"] for r in updock.rows()} == {unit}
    assert starts.read_text().count("start") == 2  # started once, restarted once
    assert lab.container_version("kapp-one") == lab.container_version("kapp-two") == "v2"
    # podman (4.3.1 and 5.4) on the next version: the same report, one restart too.
    lab.build_image(image, version="v3")
    podman = run_podman(lab, "--format", "json")
    assert podman.returncode == 0, podman.stderr
    assert without_ids(podman.rows()) == without_ids(updock.rows())
    assert starts.read_text().count("start") == 3
    assert lab.container_version("kapp-one") == lab.container_version("kapp-two") == "v3"
    lab.systemctl("stop", unit)
