"""Diagnostics in the lab: `--log-level=info` shows each unit's phases with their timings,
debug each registry request, and the default level only what went wrong."""

from __future__ import annotations

import re

import pytest

from tests.integration.conformance import FAST_VERIFY, Outcome, run_updock
from updock.testing.lab import ImageKind, Lab

pytestmark = pytest.mark.lab

SECONDS = r"\d+\.\d\ds"


def _updock(lab: Lab, *args: str) -> Outcome:
    res = lab.updock(*args, env={**FAST_VERIFY, "UPDOCK_LOG_LEVEL": ""})
    return Outcome("updock", res.returncode, res.stdout, res.stderr)


def _lines(stderr: str, level: str) -> list[str]:
    prefix = f"updock: {level}: "
    return [line.removeprefix(prefix) for line in stderr.splitlines() if line.startswith(prefix)]


def test_info_shows_each_units_phases_with_timings_and_the_default_does_not(lab: Lab) -> None:
    images = {}
    for name in ("good", "bad"):
        images[name] = lab.build_image(f"{lab.plain.host}/logs/{name}:latest", version="v1")
        lab.create_service(name, images[name])
    lab.build_image(images["good"], version="v2")
    lab.build_image(images["bad"], ImageKind.EXITS_AT_ONCE, version="v2")

    res = _updock(lab, "--log-level=info", "auto-update", "--format", "json")

    assert (res.returncode, res.statuses()) == (0, {"good": "true", "bad": "rolled back"})
    info = _lines(res.stderr, "info")
    good, bad = "unit container-good.service: ", "unit container-bad.service: "
    for pattern in (
        rf"{good}container good: checked {images['good']} in {SECONDS}: update available",
        rf"{good}container good: pulled {images['good']} \(sha256:[0-9a-f]{{64}}\) in {SECONDS}",
        rf"{good}restarted in {SECONDS}",
        rf"{good}verified in {SECONDS}",
        rf"{good}updated in {SECONDS}",
        rf"{bad}(restart|verification) failed after {SECONDS}",
        rf"{bad}container bad: previous image tagged {images['bad']} again in {SECONDS}",
        rf"{bad}restarted on the previous images in {SECONDS}",
        rf"{bad}verified on the previous images in {SECONDS}",
        rf"{bad}rolled back after {SECONDS} \(the rollback took {SECONDS}\)",
    ):
        assert any(re.fullmatch(pattern, line) for line in info), (pattern, res.stderr)
    # What the failed update's verification (or restart) saw is an error, shown at every level.
    assert any("container-bad.service" in line for line in _lines(res.stderr, "error"))

    # The default level: the bad update is tried again and fails again, said as an error only.
    lab.build_image(images["good"], version="v3")
    res = _updock(lab, "auto-update", "--format", "json")
    assert (res.returncode, res.statuses()) == (0, {"good": "true", "bad": "rolled back"})
    assert _lines(res.stderr, "info") == []
    assert _lines(res.stderr, "debug") == []
    assert any("container-bad.service" in line for line in _lines(res.stderr, "error"))


def test_debug_shows_each_registry_request(lab: Lab) -> None:
    image = lab.build_image(f"{lab.plain.host}/logs/quiet:latest", version="v1")
    lab.create_service("quiet", image)

    res = run_updock(lab, "--dry-run", "--format", "json", "--log-level", "debug")

    assert (res.returncode, res.statuses()) == (0, {"quiet": "false"}), res.stderr
    manifest = rf"http://{re.escape(lab.plain.host)}/v2/logs/quiet/manifests/latest"
    requests = [
        line
        for line in _lines(res.stderr, "debug")
        if re.fullmatch(rf"HEAD {manifest}: 200 OK in \d+\.\d{{3}}s", line)
    ]
    assert len(requests) == 1, res.stderr
    assert any(
        line.startswith("unit container-quiet.service: ") for line in _lines(res.stderr, "info")
    )
