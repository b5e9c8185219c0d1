"""The engine's parsing of real podman output, captured from podman 4.3.1 and 5.4.2.

The fixtures under `fixtures/podman-<version>/` are what `python -m updock.testing.capture`
wrote from a lab of that podman, unmodified: a labelled service with a health check
(`fx-healthy`), an unlabelled one (`fx-plain`) and a kube pod (`fxpod`) whose `side` container
has its own policy annotation. Where the two versions differ (podman 5 has no health field in
`ps`, and no `State.Health` at all for a container without a check), the parsed result must not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from updock.core.model import Policy
from updock.core.tasks import assemble_tasks
from updock.engines.podman import parse_container_state, parse_images, parse_listing
from updock.prefetch import wants_update
from updock.testing.capture import HEALTHY, PLAIN, POD

FIXTURES = Path(__file__).with_name("fixtures")
VERSIONS = sorted(p.name.removeprefix("podman-") for p in FIXTURES.glob("podman-*"))


def load(version: str, name: str) -> Any:
    return json.loads((FIXTURES / f"podman-{version}" / name).read_text())


def by_name(entries: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(e for e in entries if e.get("Name", (e.get("Names") or [""])[0]) == name)


@pytest.fixture(params=VERSIONS)
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_both_versions_are_captured() -> None:
    assert VERSIONS == ["4.3.1", "5.4.2"]


def test_the_fixtures_show_the_known_differences() -> None:
    """What the parser must not rely on: podman 5's `ps` has no health field, and its inspect
    has no `State.Health` for a container without a check (4.3.1 has an empty one)."""
    for version in VERSIONS:
        ps = load(version, "ps.json")
        assert not [k for entry in ps for k in entry if "ealth" in k], version
        assert "(healthy)" in by_name(ps, HEALTHY)["Status"]
    old, new = (by_name(load(v, "container-inspect.json"), PLAIN)["State"] for v in VERSIONS)
    assert old["Health"]["Status"] == ""
    assert "Health" not in new
    assert "Healthcheck" not in new


def test_listing_as_updock_takes_it(version: str) -> None:
    """Labelled containers from their inspect entry, the others from `ps`."""
    ps = load(version, "ps.json")
    inspect = load(version, "container-inspect.json")
    labelled = [e for e in inspect if wants_update(e["Config"]["Labels"] or {})]
    containers = {c.name: c for c in parse_listing(ps, labelled)}
    infra = next(c for c in containers.values() if c.is_infra)
    image = by_name(inspect, HEALTHY)["ImageName"]

    assert sorted(containers) == sorted([HEALTHY, PLAIN, infra.name, f"{POD}-main", f"{POD}-side"])
    # kube play keeps the per-container policies in annotations, which only inspect shows.
    assert containers[f"{POD}-side"].annotations["io.containers.autoupdate/side"] == "local"
    assert containers[PLAIN].annotations == {}
    healthy = containers[HEALTHY]
    assert (healthy.raw_image_name, healthy.running, healthy.pod_id) == (image, True, "")
    assert healthy.labels["PODMAN_SYSTEMD_UNIT"] == f"container-{HEALTHY}.service"
    assert healthy.image_id == by_name(ps, HEALTHY)["ImageID"]
    assert containers[PLAIN].raw_image_name == image  # from ps: the resolved name
    assert infra.pod_id == containers[f"{POD}-main"].pod_id != ""
    assert infra.labels["PODMAN_SYSTEMD_UNIT"] == f"pod-{POD}.service"

    units, errors = assemble_tasks(list(containers.values()), authfile=None)
    assert errors == []
    assert {
        unit: [(t.container.name, t.policy, str(t.image)) for t in tasks]
        for unit, tasks in units.items()
    } == {
        f"container-{HEALTHY}.service": [(HEALTHY, Policy.REGISTRY, image)],
        f"pod-{POD}.service": [
            (f"{POD}-main", Policy.REGISTRY, image),
            (f"{POD}-side", Policy.LOCAL, image),
        ],
    }


def test_inspect_and_ps_entries_parse_alike(version: str) -> None:
    """Every field both sources have comes out the same from either."""
    ps = load(version, "ps.json")
    inspect = load(version, "container-inspect.json")
    from_ps = {c.id: c for c in parse_listing(ps, [])}
    from_inspect = {c.id: c for c in parse_listing(ps, inspect)}
    assert from_ps.keys() == from_inspect.keys()
    for cid, listed in from_ps.items():
        inspected = from_inspect[cid]
        fields = ("name", "image_id", "labels", "running", "pod_id", "is_infra")
        assert [getattr(listed, f) for f in fields] == [getattr(inspected, f) for f in fields]


def test_container_state_and_health(version: str) -> None:
    inspect = load(version, "container-inspect.json")
    healthy = parse_container_state(by_name(inspect, HEALTHY))
    assert (healthy.running, healthy.exit_code, healthy.health) == (True, 0, "healthy")
    # The lab's HEALTH_ARGS: --health-interval=1s --health-retries=2 --health-start-period=8s.
    assert (healthy.health_interval, healthy.health_retries) == (1.0, 2)
    assert healthy.health_start_period == 8.0
    assert healthy.image_id == by_name(inspect, HEALTHY)["Image"]
    plain = parse_container_state(by_name(inspect, PLAIN))
    assert (plain.running, plain.health, plain.has_healthcheck) == (True, "", False)


def test_images(version: str) -> None:
    ps = load(version, "ps.json")
    image_id = by_name(ps, HEALTHY)["ImageID"]
    raw = next(i for i in load(version, "image-inspect.json") if i["Id"] == image_id)
    app = parse_images([raw])[image_id]
    name = by_name(load(version, "container-inspect.json"), HEALTHY)["ImageName"]
    assert app.names == (name,)
    assert (app.os, app.architecture, app.variant) == ("linux", "amd64", "")
    # The registry's manifest digest, as pushed and pulled: what a check compares with.
    repository = name.rsplit(":", 1)[0]
    assert app.digests == (raw["Digest"],)
    assert raw["RepoDigests"] == [f"{repository}@{raw['Digest']}"]
