"""Assembling tasks: who is eligible, which unit, which authfile, and per-container errors."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import replace

import pytest

from updock.core.model import Apply, Container, Policy, Task
from updock.core.reference import registry_image_name
from updock.core.tasks import assemble_tasks, unit_groups
from updock.errors import ContainerConfigError, ImageReferenceError, PolicyError

POLICY = "io.containers.autoupdate"
AUTHFILE = "io.containers.autoupdate.authfile"
UNIT = "PODMAN_SYSTEMD_UNIT"


def ctr(
    name: str,
    *,
    policy: str | None = "registry",
    unit: str | None = None,
    image: str = "quay.io/app/web:latest",
    running: bool = True,
    pod_id: str = "",
    is_infra: bool = False,
    labels: Mapping[str, str] | None = None,
) -> Container:
    """A container whose ID is its name repeated to 64 characters."""
    labels = dict(labels or {})
    if policy is not None:
        labels[POLICY] = policy
    if unit is not None:
        labels[UNIT] = unit
    return Container(
        id=(name * 64)[:64],
        name=name,
        image_id="i" * 64,
        raw_image_name=image,
        labels=labels,
        running=running,
        pod_id=pod_id,
        is_infra=is_infra,
    )


def test_eligible_containers_become_tasks() -> None:
    web = ctr("web", unit="web.service")
    tasks, errors = assemble_tasks([web], None)
    assert errors == []
    assert tasks == {
        "web.service": [
            Task(
                unit="web.service",
                container=web,
                policy=Policy.REGISTRY,
                image=registry_image_name("quay.io/app/web:latest"),
                authfile=None,
            )
        ]
    }


@pytest.mark.parametrize(
    "container",
    [
        ctr("stopped", unit="s.service", running=False),
        ctr("nolabel", unit="n.service", policy=None),
        ctr("empty", unit="e.service", policy=""),
        ctr("disabled", unit="d.service", policy="disabled"),
        # A stopped container is skipped before its labels are even looked at.
        ctr("stoppedbad", running=False, policy="bogus"),
        ctr("infra", unit="pod.service", pod_id="p" * 64, is_infra=True),
    ],
)
def test_skipped_without_error(container: Container) -> None:
    assert assemble_tasks([container], None) == ({}, [])


def test_an_old_container_renamed_aside_is_never_updated() -> None:
    """`vpn.updock-old-<its ID>` is updock's own old container (left aside by a killed run, or
    started again by podman): never a task, even running and labelled."""
    aside = replace(ctr("vpn"), name=f"vpn.updock-old-{('vpn' * 64)[:12]}")
    other = replace(ctr("vpn2"), name="vpn2.updock-old-000000000000")  # not its ID: a name
    units, errors = assemble_tasks([aside, other], None)
    assert errors == []
    assert [t.container.name for ts in units.values() for t in ts] == [other.name]


def test_image_alias_and_local_policy() -> None:
    tasks, errors = assemble_tasks(
        [
            ctr("a", unit="a.service", policy="image"),
            ctr("b", unit="b.service", policy="local", image="localhost/mine"),
        ],
        None,
    )
    assert errors == []
    assert tasks["a.service"][0].policy is Policy.REGISTRY
    # The local policy needs no fully-qualified, tagged reference.
    assert tasks["b.service"][0].policy is Policy.LOCAL


def test_invalid_policy_is_an_error_and_others_proceed() -> None:
    bad = ctr("bad", unit="bad.service", policy="fake")
    good = ctr("good", unit="good.service")
    tasks, errors = assemble_tasks([bad, good], None)
    assert list(tasks) == ["good.service"]
    assert len(errors) == 1
    assert isinstance(errors[0], PolicyError)
    assert str(errors[0]) == (
        f'auto-updating container "{bad.id}": invalid auto-update policy "fake": '
        'valid policies are ["disabled" "image" "local" "registry"]'
    )


def test_a_container_no_unit_runs_is_recreated() -> None:
    """A container outside pods without a unit label (a Docker container, a podman container
    started by hand or by a script) is no error: updock recreates it itself."""
    lost = ctr("lost")
    blank = ctr("blank", unit="")  # an empty label cannot be restarted either
    tasks, errors = assemble_tasks([lost, blank], None)
    assert errors == []
    assert {u: [(t.container.name, t.apply) for t in ts] for u, ts in tasks.items()} == {
        "container:blank": [("blank", Apply.RECREATE)],
        "container:lost": [("lost", Apply.RECREATE)],
    }
    with_unit = assemble_tasks([ctr("web", unit="web.service")], None)[0]
    assert with_unit["web.service"][0].apply is Apply.RESTART


def test_compose_containers_are_named_by_project_and_service() -> None:
    compose = {"com.docker.compose.project": "shop", "com.docker.compose.service": "api"}
    one, two = ctr("shop_api_1", labels=compose), ctr("shop_api_2", labels=compose)
    tasks, errors = assemble_tasks([two, one], None)
    assert errors == []
    assert {u: [t.container.name for t in ts] for u, ts in tasks.items()} == {
        "compose:shop/api": ["shop_api_1", "shop_api_2"]
    }


@pytest.mark.parametrize(
    ("value", "flag", "taken"),
    [("true", True, True), ("1", True, True), ("false", True, False), ("true", False, False)],
)
def test_watchtower_label_only_with_the_flag(value: str, flag: bool, taken: bool) -> None:
    tower = ctr("tower", policy=None, labels={"com.centurylinklabs.watchtower.enable": value})
    tasks, errors = assemble_tasks([tower], None, watchtower=flag)
    assert errors == []
    assert [t.policy for ts in tasks.values() for t in ts] == ([Policy.REGISTRY] if taken else [])


def test_an_own_policy_label_wins_over_watchtowers() -> None:
    tower = ctr(
        "tower", policy="disabled", labels={"com.centurylinklabs.watchtower.enable": "true"}
    )
    assert assemble_tasks([tower], None, watchtower=True) == ({}, [])


def test_empty_raw_image_name() -> None:
    anon = ctr("anon", unit="anon.service", image="")
    tasks, errors = assemble_tasks([anon], None)
    assert tasks == {}
    assert isinstance(errors[0], ContainerConfigError)
    assert str(errors[0]) == f'auto-updating container "{anon.id}": raw-image name is empty'


@pytest.mark.parametrize(
    ("image", "detail"),
    [
        ("busybox:latest", "short name"),
        ("quay.io/app/web", "(no tag)"),
        ("oci:/srv/layout", 'transport "oci"'),
        ("quay.io/app/web:1@sha256:" + "a" * 64, "without digest"),
    ],
)
def test_registry_policy_needs_a_fully_qualified_reference(image: str, detail: str) -> None:
    shortie = ctr("shortie", unit="s.service", image=image)
    tasks, errors = assemble_tasks([shortie], None)
    assert tasks == {}
    assert isinstance(errors[0], ImageReferenceError)
    message = str(errors[0])
    assert message.startswith(f'registry auto-updating container "{shortie.id}": ')
    assert detail in message


def test_docker_transport_prefix_is_accepted() -> None:
    tasks, errors = assemble_tasks(
        [ctr("d", unit="d.service", image="docker://quay.io/app/web:1")], None
    )
    assert errors == []
    image = tasks["d.service"][0].image
    assert image.raw == "docker://quay.io/app/web:1"  # the report shows it as typed
    assert str(image) == "quay.io/app/web:1"  # podman's store and tag take it without prefix
    assert image.key == registry_image_name("quay.io/app/web:1").key


def test_a_docker_prefix_does_not_split_units_of_one_image_name() -> None:
    units = {
        "a.service": [ctr("a", unit="a.service", image="docker://quay.io/app/web:1")],
        "b.service": [ctr("b", unit="b.service", image="quay.io/app/web:1")],
    }
    tasks, errors = assemble_tasks([c for cs in units.values() for c in cs], None)
    assert errors == []
    assert unit_groups(tasks) == [["a.service", "b.service"]]


def test_pod_container_uses_infra_unit() -> None:
    pod = "p" * 64
    infra = ctr("infra", policy=None, unit="pod-app.service", pod_id=pod, is_infra=True)
    # Its own unit label is ignored: the pod's unit restarts the whole pod.
    member = ctr("app-web", unit="ignored.service", pod_id=pod)
    tasks, errors = assemble_tasks([member, infra], None)
    assert errors == []
    assert [t.container for t in tasks["pod-app.service"]] == [member]


def test_pod_without_infra_container() -> None:
    member = ctr("app-web", pod_id="q" * 64)
    _, errors = assemble_tasks([member], None)
    assert isinstance(errors[0], ContainerConfigError)
    assert str(errors[0]) == (
        f'auto-updating container "{member.id}": looking up pod\'s systemd unit: '
        f'no infra container found for pod "{"q" * 64}"'
    )


def test_pod_infra_without_unit_label() -> None:
    pod = "p" * 64
    infra = ctr("infra", policy=None, pod_id=pod, is_infra=True)
    member = ctr("app-web", unit="own.service", pod_id=pod)
    _, errors = assemble_tasks([infra, member], None)
    assert str(errors[0]) == (
        f'auto-updating container "{member.id}": no PODMAN_SYSTEMD_UNIT label found'
    )


def test_infra_of_another_pod_is_not_used() -> None:
    other = ctr("infra", policy=None, unit="other.service", pod_id="o" * 64, is_infra=True)
    member = ctr("app-web", pod_id="p" * 64)
    tasks, errors = assemble_tasks([other, member], None)
    assert tasks == {}
    assert "no infra container found" in str(errors[0])


def test_authfile_label_wins_over_argument() -> None:
    tasks, _ = assemble_tasks(
        [
            ctr("a", unit="a.service", labels={AUTHFILE: "/etc/a.json"}),
            ctr("b", unit="b.service"),
        ],
        "/run/auth.json",
    )
    assert tasks["a.service"][0].authfile == "/etc/a.json"
    assert tasks["b.service"][0].authfile == "/run/auth.json"


def test_kube_play_per_container_labels() -> None:
    pod = "p" * 64
    infra = ctr("infra", policy=None, unit="kube.service", pod_id=pod, is_infra=True)
    web = ctr(
        "demo-web",
        policy="registry",
        pod_id=pod,
        labels={f"{POLICY}/web": "local", f"{AUTHFILE}/web": "/web.json"},
    )
    db = ctr("demo-db", policy="registry", pod_id=pod, labels={f"{POLICY}/db": "disabled"})
    cache = ctr("demo-cache", policy=None, pod_id=pod, labels={f"{POLICY}/cache": "registry"})
    tasks, errors = assemble_tasks([infra, web, db, cache], "/default.json")
    assert errors == []
    by_name = {t.container.name: t for t in tasks["kube.service"]}
    assert set(by_name) == {"demo-web", "demo-cache"}
    assert by_name["demo-web"].policy is Policy.LOCAL
    assert by_name["demo-web"].authfile == "/web.json"
    assert by_name["demo-cache"].policy is Policy.REGISTRY
    assert by_name["demo-cache"].authfile == "/default.json"


def test_units_and_tasks_are_ordered() -> None:
    pod = "p" * 64
    containers = [
        ctr("zeta", unit="b.service"),
        ctr("infra", policy=None, unit="a.service", pod_id=pod, is_infra=True),
        ctr("mid", pod_id=pod),
        ctr("alpha", pod_id=pod),
        ctr("beta", unit="c.service"),
    ]
    tasks, errors = assemble_tasks(containers, None)
    assert errors == []
    assert list(tasks) == ["a.service", "b.service", "c.service"]
    assert [t.container.name for t in tasks["a.service"]] == ["alpha", "mid"]


def test_errors_name_each_container_and_keep_order() -> None:
    one = ctr("one", policy="bogus")
    two = ctr("two", pod_id="q" * 64)  # a pod without an infra container
    three = ctr("three", unit="t.service", image="alpine")
    _, errors = assemble_tasks([one, two, three], None)
    assert [type(e) for e in errors] == [PolicyError, ContainerConfigError, ImageReferenceError]
    for error, container in zip(errors, (one, two, three), strict=True):
        assert f'"{container.id}"' in str(error)


def test_unit_groups_join_units_that_share_image_names() -> None:
    from updock.core.model import Container, Policy, Task
    from updock.core.tasks import unit_groups

    def task(unit: str, image: str) -> Task:
        c = Container(id=unit * 8, name=unit, image_id="i", raw_image_name=image)
        return Task(
            unit=unit, container=c, policy=Policy.REGISTRY, image=registry_image_name(image)
        )

    units = {
        "a": [task("a", "r.io/x:1")],
        "b": [task("b", "r.io/y:1")],
        "c": [task("c", "r.io/y:1"), task("c", "r.io/z:1")],
        "d": [task("d", "r.io/z:1")],
        "e": [task("e", "r.io/x:1")],
        "f": [task("f", "r.io/w:1")],
    }
    assert unit_groups(units) == [["a", "e"], ["b", "c", "d"], ["f"]]


@pytest.mark.parametrize(
    "value", ["soon", "-1", "", "inf", "-inf", "nan", "Infinity", "1e300", "86401"]
)
def test_bad_verification_label_is_an_error_before_any_update(value: str) -> None:
    bad = ctr("bad", unit="bad.service", labels={"io.updock.verify.settle": value})
    good = ctr("good", unit="good.service", labels={"io.updock.verify.timeout": "90"})
    units, errors = assemble_tasks([bad, good], None)
    assert list(units) == ["good.service"]
    assert len(errors) == 1
    assert isinstance(errors[0], ContainerConfigError)
    assert "io.updock.verify.settle" in str(errors[0])
    assert bad.id in str(errors[0])
    assert "(bad)" in str(errors[0])


@pytest.mark.parametrize("value", ["0", "2.5", "86400"])
def test_verification_labels_up_to_a_day_are_taken(value: str) -> None:
    c = ctr("c", unit="c.service", labels={"io.updock.verify.timeout": value})
    units, errors = assemble_tasks([c], None)
    assert (list(units), errors) == (["c.service"], [])


def test_a_container_is_updated_after_the_ones_it_depends_on() -> None:
    def dep(name: str, image: str, *needs: str) -> Task:
        container = Container(
            id=(name * 64)[:64], name=name, image_id="i" * 64, raw_image_name=image,
            depends_on=needs,
        )  # fmt: skip
        return Task(f"container:{name}", container, Policy.REGISTRY, registry_image_name(image))

    app = dep("app", "quay.io/x/app:1", "vpn", "db")
    vpn = dep("vpn", "quay.io/x/vpn:1")
    db = dep("db", "quay.io/x/db:1")
    other = dep("other", "quay.io/x/other:1", "gone")  # needs a container not updated
    units = {t.unit: [t] for t in (app, db, other, vpn)}
    assert unit_groups(units) == [
        ["container:db", "container:vpn", "container:app"],
        ["container:other"],
    ]


def test_containers_in_a_recreated_containers_network_namespace_follow_it() -> None:
    """Running containers that join the namespace of a recreated one (by its name or ID) and
    have no task of their own are its followers; one with a task of its own is among its
    follower tasks; another engine's, a stopped one, and those of a unit's container are
    neither."""
    vpn = ctr("vpn")
    by_name = dataclasses.replace(ctr("app", policy=None), network_of="vpn")
    by_id = dataclasses.replace(ctr("side", policy=None), network_of=vpn.id)
    labelled = dataclasses.replace(ctr("own"), network_of="vpn")
    other = dataclasses.replace(ctr("else", policy=None), network_of="vpn", engine="docker")
    stopped = dataclasses.replace(ctr("off", policy=None), network_of="vpn", running=False)
    served = ctr("served", unit="served.service")
    near = dataclasses.replace(ctr("near", policy=None), network_of="served")
    tasks, errors = assemble_tasks(
        [vpn, by_name, by_id, labelled, other, stopped, served, near], None
    )
    assert errors == []
    assert [c.name for c in tasks["container:vpn"][0].followers] == ["app", "side"]
    # One with a task of its own follows unless that task has an update (`core.recreate`).
    assert [t.container.name for t in tasks["container:vpn"][0].follower_tasks] == ["own"]
    assert tasks["container:own"][0].followers == ()
    assert tasks["served.service"][0].followers == ()


def test_a_pods_members_never_follow_a_recreated_container() -> None:
    """A pod's members share its infra container's namespace, and are updated as the pod (its
    unit): even one said to join a recreated container's namespace is no follower of it."""
    vpn = ctr("vpn")
    infra = ctr("infra", policy=None, unit="pod-p.service", pod_id="p", is_infra=True)
    member = dataclasses.replace(ctr("member", policy=None, pod_id="p"), network_of="vpn")
    labelled = dataclasses.replace(ctr("labelled", pod_id="p"), network_of="vpn")
    tasks, errors = assemble_tasks([vpn, infra, member, labelled], None)
    assert errors == []
    assert [t.container.name for t in tasks["pod-p.service"]] == ["labelled"]
    assert tasks["container:vpn"][0].followers == ()
    assert tasks["container:vpn"][0].follower_tasks == ()
