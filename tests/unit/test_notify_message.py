"""The message of a run (`notify.message`): when a run notifies, what the title and body say."""

from __future__ import annotations

import pytest

from updock.core.model import Status
from updock.notify.message import (
    DEFAULT_EVENTS,
    Templates,
    compose,
    parse_events,
    summary,
    wanted,
)
from updock.record import RunRecord, TaskRecord

D1, D2 = "sha256:" + "11" * 32, "sha256:" + "22" * 32


def task(name: str, status: Status, error: str = "") -> TaskRecord:
    return TaskRecord(
        unit=f"container-{name}.service",
        container=name,
        container_id=name * 12,
        engine="podman",
        image=f"registry.example/{name}:latest",
        policy="registry",
        status=status,
        old_digest=D1,
        new_digest=D2 if status is not Status.NOT_UPDATED else "",
        update_available=status is not Status.NOT_UPDATED,
        duration=6.25,
        error=error,
    )


RUN = RunRecord(
    host="web01",
    started=1714795200.0,
    duration=12.5,
    tasks=(
        task("api", Status.ROLLED_BACK, "verifying unit container-api.service failed: died\n  x"),
        task("db", Status.NOT_UPDATED),
        task("web", Status.UPDATED),
    ),
)


def test_title_and_body_say_host_counts_and_each_container() -> None:
    msg = compose(RUN, DEFAULT_EVENTS, Templates())
    assert msg.title == "updock on web01: 1 updated, 1 rolled back"
    assert msg.body == (
        "api (container-api.service): rolled back, registry.example/api:latest "
        "sha256:111111111111 -> sha256:222222222222\n"
        "    seen: verifying unit container-api.service failed: died\n"
        "            x\n"
        "web (container-web.service): updated, registry.example/web:latest "
        "sha256:111111111111 -> sha256:222222222222"
    )
    assert msg.payload["counts"] == {
        "updated": 1,
        "rolled_back": 1,
        "failed": 0,
        "available": 0,
        "unchanged": 1,
    }
    containers = msg.payload["containers"]
    assert isinstance(containers, list)
    assert [c["container"] for c in containers] == ["api", "web"]
    assert containers[0]["old_digest"] == "sha256:111111111111"
    assert containers[0]["engine"] == "podman"
    assert containers[0]["status"] == "rolled back"


def test_only_runs_with_a_chosen_event_notify() -> None:
    assert wanted(RUN, DEFAULT_EVENTS)
    assert not wanted(RUN, {"failed"})
    quiet = RunRecord(host="h", tasks=(task("db", Status.NOT_UPDATED),))
    assert not wanted(quiet, DEFAULT_EVENTS | {"available"})
    dry = RunRecord(host="h", dry_run=True, tasks=(task("web", Status.PENDING),))
    assert not wanted(dry, DEFAULT_EVENTS)
    assert wanted(dry, {"available"})
    assert compose(dry, {"available"}, Templates()).title == "updock on h: 1 update(s) available"
    broken = RunRecord(host="h", errors=("cannot list containers: podman exited 125",))
    assert wanted(broken, {"failed"})
    msg = compose(broken, {"failed"}, Templates())
    assert msg.title == "updock on h: 1 error"
    assert msg.body == "errors of the run:\n  - cannot list containers: podman exited 125"


def test_templates_change_the_message() -> None:
    templates = Templates(title="[{host}] {updated}/{rolled_back}", line="{status}|{container}")
    msg = compose(RUN, {"updated", "rolled-back"}, templates)
    assert msg.title == "[web01] 1/1"
    assert msg.body == "rolled back|api\ntrue|web"


def test_events_parse_and_name_what_is_unknown() -> None:
    assert parse_events(["updated,failed", " available "]) == {"updated", "failed", "available"}
    with pytest.raises(ValueError, match="'sunny': no such event"):
        parse_events(["updated,sunny"])


def test_summary_of_a_run_with_nothing() -> None:
    assert summary(RunRecord()) == "nothing changed"
