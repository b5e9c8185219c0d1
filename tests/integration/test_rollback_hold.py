"""`updock rollback UNIT` sticks: later runs leave the image name on its previous image until the
registry offers another one, or `updock release` ends the hold. Against the real lab."""

from __future__ import annotations

import json

import pytest

from tests.integration.conformance import FAST_VERIFY, run_updock
from updock.testing.lab import Lab

pytestmark = pytest.mark.lab


def _rollback(lab: Lab, unit: str) -> list[str]:
    res = lab.updock("rollback", unit, "--format", "json", env=FAST_VERIFY)
    assert res.returncode == 0, res.stderr
    return [row["Updated"] for row in json.loads(res.stdout)]


def test_a_manual_rollback_sticks_until_another_image_or_a_release(lab: Lab) -> None:
    name = "sticky"
    image = lab.build_image(f"{lab.plain.host}/hold/{name}:latest", version="v1")
    unit = lab.create_service(name, image).unit
    lab.build_image(image, version="v2")
    assert run_updock(lab, "--format", "json").statuses() == {name: "true"}
    assert lab.container_version(name) == "v2"

    back = lab.updock("rollback", unit, "--format", "json", env=FAST_VERIFY)
    assert back.returncode == 0, back.stderr
    assert [r["Updated"] for r in json.loads(back.stdout)] == ["rolled back"]
    assert f"{image} is held on its previous image" in back.stderr
    assert lab.container_version(name) == "v1"
    starts = lab.unit_starts(unit)

    # The next runs leave it there: the registry still offers v2, the image rolled back from.
    for args in (("--dry-run",), ()):
        res = run_updock(lab, "--format", "json", *args)
        assert (res.returncode, res.statuses()) == (0, {name: "false"}), res.stderr
    assert lab.container_version(name) == "v1"

    # A second rollback does not swap back to v2.
    again = lab.updock("rollback", unit, env=FAST_VERIFY)
    assert again.returncode == 125
    assert f"container {name} of unit {unit} runs its kept previous image" in again.stderr
    assert "nothing to roll back to" in again.stderr
    assert lab.container_version(name) == "v1"
    assert lab.unit_starts(unit) == starts  # nothing restarted since the rollback

    # Released, v2 comes back.
    listed = lab.updock("release")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith(f"{image}: held back from image ")
    assert f"by `updock rollback` of {unit}" in listed.stdout
    released = lab.updock("release", unit)
    assert released.returncode == 0, released.stderr
    assert released.stdout.startswith(f"released {image}: ")
    assert run_updock(lab, "--format", "json").statuses() == {name: "true"}
    assert lab.container_version(name) == "v2"

    # Held back from v2 again; the registry's v3 ends the hold.
    assert _rollback(lab, unit) == ["rolled back"]
    assert run_updock(lab, "--format", "json").statuses() == {name: "false"}
    lab.build_image(image, version="v3")
    res = run_updock(lab, "--format", "json")
    assert res.statuses() == {name: "true"}, res.stderr
    assert lab.container_version(name) == "v3"
    assert lab.updock("release").stdout == "no image is held back\n"
    nothing = lab.updock("release", image)
    assert nothing.returncode == 125
    assert f"no image is held back for {image}" in nothing.stderr
