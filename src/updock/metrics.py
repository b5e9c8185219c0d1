"""Metrics in Prometheus' text format: a textfile for node_exporter, and `/metrics` of the service.

A timer run is a process of its own, so counters that must grow across runs are kept in the
state folder (`metrics.json`, under the history's lock, written atomically like every file
there), with what the last auto-update run saw. Each run adds to them; then the textfile
(`--metrics-file`, for node_exporter's textfile collector) is written from them, atomically
(prometheus_client writes a new file and renames it over the old one), and `updock serve`
renders the same on `/metrics`. prometheus_client is imported only when metrics are written
(it takes a tenth of a second).

    updock_last_run_timestamp_seconds       when the last auto-update run ended
    updock_last_run_duration_seconds        how long it took
    updock_last_run_success                 1 when it had no error
    updock_last_run_containers{outcome}     its containers by outcome (updated, unchanged,
                                            failed, available, rolled_back)
    updock_update_available{image}          1 when the last run found a new image for the name
                                            that does not run (a dry run's, a rolled back one)
    updock_updates_total{outcome}           containers updated, rolled_back, failed (by
                                            auto-update runs)
    updock_rollbacks_total{kind}            containers rolled back: automatic, manual
    updock_runs_total{kind}                 runs: auto-update, rollback
    updock_registry_requests_total{registry}  requests to each registry (and token server)
    updock_registry_errors_total{registry}  those that failed or got an error answer
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from updock.core.model import Status
from updock.record import RunRecord
from updock.statefolder import StateFolder

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

log = logging.getLogger(__name__)

FILE = "metrics.json"
VERSION = 1

_OUTCOMES = {
    Status.UPDATED: "updated",
    Status.NOT_UPDATED: "unchanged",
    Status.FAILED: "failed",
    Status.PENDING: "available",
    Status.ROLLED_BACK: "rolled_back",
}

Totals = dict[str, Any]


def empty_totals() -> Totals:
    """Totals of a host that never ran."""
    return {
        "version": VERSION,
        "updates": {"updated": 0, "rolled_back": 0, "failed": 0},
        "rollbacks": {"automatic": 0, "manual": 0},
        "runs": {"auto-update": 0, "rollback": 0},
        "registry_requests": {},
        "registry_errors": {},
        "last": None,
    }


def add_run(totals: Totals, record: RunRecord, ended: float) -> Totals:
    """`totals` with the run of `record` added (a new document; `totals` is left alone)."""
    out: Totals = json.loads(json.dumps(totals))
    manual = record.kind == "rollback"
    out["runs"][record.kind] = out["runs"].get(record.kind, 0) + 1
    for task in record.tasks:
        outcome = _OUTCOMES[task.status]
        if outcome in out["updates"] and not manual:  # `updock rollback` updates nothing
            out["updates"][outcome] += 1
        if task.status is Status.ROLLED_BACK:
            out["rollbacks"]["manual" if manual else "automatic"] += 1
    for key, counts in (
        ("registry_requests", record.registry_requests),
        ("registry_errors", record.registry_errors),
    ):
        for host, n in counts.items():
            out[key][host] = out[key].get(host, 0) + n
    if not manual:
        available: dict[str, int] = {}
        for task in record.tasks:
            found = task.update_available and task.status is not Status.UPDATED
            available[task.image] = max(available.get(task.image, 0), int(found))
        out["last"] = {
            "time": ended,
            "duration": record.duration,
            "success": int(not record.errors),
            "containers": {name: record.count(status) for status, name in _OUTCOMES.items()},
            "available": available,
        }
    return out


def load_totals(folder: StateFolder) -> Totals:
    """The totals kept in the state folder (fresh ones when there are none, or they cannot
    be read: metrics are no reason to fail a run, and counters may start again)."""
    try:
        data = folder.read(FILE)
        doc = json.loads(data) if data is not None else None
    except (OSError, ValueError) as exc:
        log.warning("metrics totals %s unreadable (%s): counting from 0 again", FILE, exc)
        doc = None
    fresh = empty_totals()
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        return fresh
    for key, value in fresh.items():
        if not isinstance(doc.get(key), type(value)) and value is not None:
            return fresh
    return doc


def save_totals(folder: StateFolder, totals: Totals) -> None:
    """Replace the totals in the state folder, atomically.

    Raises:
        OSError: they cannot be written.
    """
    folder.write(FILE, json.dumps(totals, sort_keys=True).encode())


def families(totals: Totals, extra: Mapping[str, float] | None = None) -> Iterator[Metric]:
    """The metric families of `totals` (and of `extra` gauges: name -> value)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    last = totals.get("last")
    if last is not None:
        yield GaugeMetricFamily(
            "updock_last_run_timestamp_seconds",
            "When the last auto-update run ended (seconds since the epoch).",
            value=float(last["time"]),
        )
        yield GaugeMetricFamily(
            "updock_last_run_duration_seconds",
            "How long the last auto-update run took.",
            value=float(last["duration"]),
        )
        yield GaugeMetricFamily(
            "updock_last_run_success",
            "1 when the last auto-update run had no error, else 0.",
            value=float(last["success"]),
        )
        containers = GaugeMetricFamily(
            "updock_last_run_containers",
            "Containers of the last auto-update run, by outcome.",
            labels=["outcome"],
        )
        for outcome, n in sorted(last["containers"].items()):
            containers.add_metric([outcome], float(n))
        yield containers
        available = GaugeMetricFamily(
            "updock_update_available",
            "1 when the last auto-update run found a new image for this name that does not "
            "run (a dry run's, or one rolled back).",
            labels=["image"],
        )
        for image, flag in sorted(last["available"].items()):
            available.add_metric([image], float(flag))
        yield available
    for name, help_text, key, label in (
        ("updock_updates", "Containers updated, rolled back or failed.", "updates", "outcome"),
        ("updock_rollbacks", "Containers rolled back, by kind.", "rollbacks", "kind"),
        ("updock_runs", "Runs, by kind.", "runs", "kind"),
        (
            "updock_registry_requests",
            "Requests to each registry and token server.",
            "registry_requests",
            "registry",
        ),
        (
            "updock_registry_errors",
            "Registry requests that failed or got an error answer.",
            "registry_errors",
            "registry",
        ),
    ):
        family = CounterMetricFamily(name, help_text, labels=[label])
        for value, n in sorted(totals[key].items()):
            family.add_metric([value], float(n))
        yield family
    for name, value in sorted((extra or {}).items()):
        yield GaugeMetricFamily(name, name.replace("_", " "), value=value)


class _Collector:
    """A prometheus_client collector of fixed families."""

    def __init__(self, totals: Totals, extra: Mapping[str, float] | None) -> None:
        self._totals = totals
        self._extra = extra

    def collect(self) -> Iterator[Metric]:
        return families(self._totals, self._extra)


def render(totals: Totals, extra: Mapping[str, float] | None = None) -> bytes:
    """The text format of `totals` (what `/metrics` serves)."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(totals, extra))
    return generate_latest(registry)


def write_textfile(path: Path, totals: Totals) -> None:
    """Write `totals` to `path` for node_exporter's textfile collector, atomically.

    Raises:
        OSError: it cannot be written.
    """
    from prometheus_client import CollectorRegistry, write_to_textfile

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(totals, None))
    write_to_textfile(str(path), registry)
