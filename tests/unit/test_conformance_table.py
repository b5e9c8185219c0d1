"""The conformance table's cells and rows, from made-up outcomes."""

from __future__ import annotations

import json

from tests.integration.conformance import Outcome
from tests.integration.conformance_table import cell, summary, table


def report(tool: str, *statuses: str, code: int = 0) -> Outcome:
    rows = [{"ContainerName": f"c{i}", "Updated": s} for i, s in enumerate(statuses)]
    return Outcome(tool, code, json.dumps(rows), "")


def test_a_run_is_its_statuses_and_a_failing_exit_status() -> None:
    assert summary(report("podman", "true", "rolled back")) == "rolled back, true"
    assert summary(report("podman", "failed", code=125)) == "failed (exit 125)"
    assert summary(Outcome("podman", 0, "", "")) == "none"
    assert summary(Outcome("podman", 0, "UNIT  CONTAINER\n", "")) == "text"


def test_runs_alike_in_a_row_are_counted() -> None:
    runs = [report("u", "pending")] * 3 + [report("u", "failed", code=125)]
    assert cell(runs) == "pending x3; failed (exit 125)"
    assert cell([]) == "-"


def test_one_row_per_scenario_podman_ran_in_a_column_per_version() -> None:
    apply = "tests/integration/test_auto_update_apply.py::test_update_and_rollback"
    records = [
        (f"{apply}[host]", report("podman", "true", "rolled back")),
        (f"{apply}[host]", report("updock", "true", "rolled back")),
        (f"{apply}[trixie]", report("podman", "true", "true")),
        (f"{apply}[trixie]", report("updock", "true", "rolled back")),
        ("tests/integration/test_x.py::test_updock_only[trixie]", report("updock", "true")),
        ("tests/integration/test_x.py::test_p[bogus-trixie]", report("podman", "false")),
    ]
    assert table(records, {"trixie": "5.4.2", "host": "4.3.1"}).splitlines() == [
        "| scenario | podman 4.3.1 | podman 5.4.2 | updock (podman 5.4.2) |",
        "|---|---|---|---|",
        "| auto_update_apply: update and rollback | = updock | true, true | rolled back, true |",
        "| x: p [bogus] | - | false | - |",
    ]


def test_updock_runs_are_those_with_podmans_arguments_and_differences_per_podman_shown() -> None:
    test = "tests/integration/test_apply.py::test_multi"
    dry = ("--dry-run",)

    def run(tool: str, status: str, args: tuple[str, ...] = dry) -> Outcome:
        return Outcome(tool, 0, json.dumps([{"Updated": status}]), "", args)

    records = [
        (f"{test}[trixie]", run("updock", "true", ())),  # a real update: updock's own step
        (f"{test}[trixie]", run("updock", "false")),
        (f"{test}[trixie]", run("podman", "false")),
        (f"{test}[host]", run("updock", "pending")),
        (f"{test}[host]", run("podman", "false")),
    ]
    assert table(records, {"host": "4.3.1", "trixie": "5.4.2"}).splitlines()[2:] == [
        "| apply: multi | false | = updock | false (on podman 4.3.1: pending) |"
    ]
