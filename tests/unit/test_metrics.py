"""The metrics' totals (`updock.metrics`): what each run adds, and the text format."""

from __future__ import annotations

import dataclasses

from prometheus_client.parser import text_string_to_metric_families

from tests.unit.test_notify_message import RUN, task
from updock.core.model import Status
from updock.metrics import add_run, empty_totals, render
from updock.record import RunRecord


def samples(text: bytes | str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(name, sorted labels) -> value of every sample in a text exposition."""
    out = {}
    decoded = text.decode() if isinstance(text, bytes) else text
    for family in text_string_to_metric_families(decoded):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_runs_add_up_and_the_last_one_is_described() -> None:
    run = dataclasses.replace(
        RUN, registry_requests={"reg:5000": 3}, registry_errors={"reg:5000": 1}
    )
    totals = add_run(add_run(empty_totals(), run, 1000.0), run, 2000.0)
    dry = RunRecord(host="h", dry_run=True, duration=0.5, tasks=(task("new", Status.PENDING),))
    totals = add_run(totals, dry, 3000.0)
    manual = RunRecord(kind="rollback", tasks=(task("web", Status.ROLLED_BACK),))
    totals = add_run(totals, manual, 4000.0)
    got = samples(render(totals, {"updock_next_run_timestamp_seconds": 5000.0}))
    assert got[("updock_updates_total", (("outcome", "updated"),))] == 2
    assert got[("updock_updates_total", (("outcome", "rolled_back"),))] == 2  # not the manual one
    assert got[("updock_rollbacks_total", (("kind", "automatic"),))] == 2
    assert got[("updock_rollbacks_total", (("kind", "manual"),))] == 1
    assert got[("updock_runs_total", (("kind", "auto-update"),))] == 3
    assert got[("updock_registry_requests_total", (("registry", "reg:5000"),))] == 6
    assert got[("updock_registry_errors_total", (("registry", "reg:5000"),))] == 2
    # The last auto-update run was the dry run (a manual rollback is not one).
    assert got[("updock_last_run_timestamp_seconds", ())] == 3000.0
    assert got[("updock_last_run_duration_seconds", ())] == 0.5
    assert got[("updock_last_run_containers", (("outcome", "available"),))] == 1
    assert got[("updock_update_available", (("image", "registry.example/new:latest"),))] == 1
    assert got[("updock_next_run_timestamp_seconds", ())] == 5000.0


def test_an_update_rolled_back_is_still_available_and_one_applied_is_not() -> None:
    totals = add_run(empty_totals(), RUN, 1.0)
    got = samples(render(totals))
    assert got[("updock_update_available", (("image", "registry.example/api:latest"),))] == 1
    assert got[("updock_update_available", (("image", "registry.example/web:latest"),))] == 0
    assert got[("updock_update_available", (("image", "registry.example/db:latest"),))] == 0
    assert got[("updock_last_run_success", ())] == 1


def test_a_host_that_never_ran_has_counters_at_zero_and_no_last_run() -> None:
    got = samples(render(empty_totals()))
    assert got[("updock_updates_total", (("outcome", "failed"),))] == 0
    assert not [k for k in got if k[0].startswith("updock_last_run")]
