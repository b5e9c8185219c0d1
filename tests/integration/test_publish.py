"""What a real `updock auto-update` tells: one notification, the history, the metrics.

In the lab: services updated and rolled back by a real run, a webhook receiver on 127.0.0.1,
`updock history`, and Debian's prometheus-node-exporter reading the metrics textfile, scraped
over HTTP and parsed. Notifiers that fail (down, answering 500, slow) leave the run's outcome
and exit status as they were.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.integration.conformance import run_updock
from tests.unit.test_metrics import samples
from updock.testing.lab import ImageKind, Lab, die_with_parent, free_port
from updock.testing.receiver import Receiver

pytestmark = pytest.mark.lab


def _service(lab: Lab, name: str, new: ImageKind) -> str:
    """A service on v1 with `new` pushed as v2; its unit."""
    image = lab.build_image(f"{lab.plain.host}/pub/{name}:latest", version="v1")
    svc = lab.create_service(name, image)
    lab.build_image(image, new, version="v2")
    return svc.unit


@contextlib.contextmanager
def node_exporter(textfiles: Path) -> Iterator[str]:
    """Debian's prometheus-node-exporter on 127.0.0.1, with only its textfile collector reading
    `textfiles`; yields its /metrics URL. Stopped by PID."""
    port = free_port()
    proc = subprocess.Popen(
        [
            "prometheus-node-exporter",
            f"--web.listen-address=127.0.0.1:{port}",
            "--collector.disable-defaults",
            "--collector.textfile",
            f"--collector.textfile.directory={textfiles}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent,  # noqa: PLW1509 (only prctl)
    )
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 10
        while True:
            try:
                requests.get(url, timeout=1)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return samples(requests.get(url, timeout=5).text)


def test_an_update_and_a_rollback_are_one_message_two_history_entries_and_metrics(
    lab: Lab,
) -> None:
    web = _service(lab, "pub-web", ImageKind.HEALTHY)
    api = _service(lab, "pub-api", ImageKind.MISSING_ENTRYPOINT)
    state = lab.root / "pub-state"  # history and totals of this test alone
    textfiles = lab.root / "textfiles"
    textfiles.mkdir()
    env = {"UPDOCK_STATE_DIR": str(state)}
    with Receiver() as receiver:
        res = run_updock(
            lab,
            "--format",
            "json",
            "--notify",
            f"{receiver.url}/hook",
            "--metrics-file",
            str(textfiles / "updock.prom"),
            env=env,
        )
        assert res.returncode == 0, res.stderr
        assert res.statuses() == {"pub-web": "true", "pub-api": "rolled back"}
        time.sleep(0.5)  # a second message would have arrived by now
        (got,) = receiver.received

    doc = got.json()
    assert isinstance(doc, dict)
    assert doc["title"] == f"updock on {lab.hostname()}: 1 updated, 1 rolled back"
    by_name = {c["container"]: c for c in doc["containers"]}
    assert set(by_name) == {"pub-web", "pub-api"}
    assert by_name["pub-web"]["status"] == "true"
    assert by_name["pub-api"]["status"] == "rolled back"
    assert f'restarting systemd unit "{api}" failed' in by_name["pub-api"]["error"]
    for c in by_name.values():
        assert c["image"].endswith(f"/pub/{c['container']}:latest")
        assert c["old_digest"].startswith("sha256:")
        assert c["new_digest"].startswith("sha256:")
        assert c["old_digest"] != c["new_digest"]
    assert "pub-api (container-pub-api.service): rolled back" in doc["body"]

    history = lab.updock("history", "--format", "json", env=env)
    assert history.returncode == 0, history.stderr
    entries = {e["container"]: e for e in json.loads(history.stdout)}
    assert {n: e["outcome"] for n, e in entries.items()} == {
        "pub-web": "true",
        "pub-api": "rolled back",
    }
    assert entries["pub-web"]["new_digest"].startswith("sha256:")
    assert entries["pub-web"]["engine"] == "podman"
    assert "failed" in entries["pub-api"]["error"]
    table = lab.updock("history", "--since", "1h", env=env).stdout.splitlines()
    assert table[0].split()[:3] == ["TIME", "UNIT", "CONTAINER"]
    assert sorted(line.split()[3] for line in table[1:]) == ["pub-api", "pub-web"]
    assert lab.updock("history", "--since", "0s", env=env).stdout.count("\n") == 1

    # A manual rollback is history too (and counts), but notifies nobody.
    back = lab.updock(
        "rollback",
        web,
        env={
            **env,
            "UPDOCK_SETTLE_TIME": "1",
            "UPDOCK_METRICS_FILE": str(textfiles / "updock.prom"),
        },
    )
    assert back.returncode == 0, back.stderr
    history = lab.updock("history", "--format", "json", env=env)
    last = json.loads(history.stdout)[-1]
    assert (last["container"], last["kind"], last["outcome"]) == (
        "pub-web",
        "rollback",
        "rolled back",
    )
    assert last["new_image"] == last["old_image"] or last["new_image"]  # the kept previous image

    with node_exporter(textfiles) as url:
        metrics = _scrape(url)
    assert metrics[("updock_rollbacks_total", (("kind", "manual"),))] == 1
    assert metrics[("updock_runs_total", (("kind", "rollback"),))] == 1
    assert metrics[("updock_updates_total", (("outcome", "updated"),))] == 1
    assert metrics[("updock_updates_total", (("outcome", "rolled_back"),))] == 1
    assert metrics[("updock_updates_total", (("outcome", "failed"),))] == 0
    assert metrics[("updock_rollbacks_total", (("kind", "automatic"),))] == 1
    assert metrics[("updock_last_run_success", ())] == 1
    assert metrics[("updock_last_run_containers", (("outcome", "updated"),))] == 1
    assert abs(metrics[("updock_last_run_timestamp_seconds", ())] - time.time()) < 120
    assert metrics[("updock_last_run_duration_seconds", ())] > 0
    image = f"{lab.plain.host}/pub/pub-api:latest"
    assert metrics[("updock_update_available", (("image", image),))] == 1  # rolled back
    requests_sent = metrics[("updock_registry_requests_total", (("registry", lab.plain.host),))]
    assert requests_sent >= 2  # a HEAD per image name
    assert not [k for k in metrics if k[0] == "node_textfile_scrape_error" and metrics[k]]


def test_failing_notifiers_change_no_outcome_and_no_exit_status(lab: Lab) -> None:
    _service(lab, "pub-ok", ImageKind.HEALTHY)
    env = {"UPDOCK_STATE_DIR": str(lab.root / "pub-fail-state"), "UPDOCK_NOTIFY_TIMEOUT": "2"}
    with Receiver() as good:
        dry = run_updock(
            lab, "--dry-run", "--notify-on", "available", "--notify", good.url, env=env
        )
        assert dry.returncode == 0, dry.stderr
        (got,) = good.wait(1)
    doc = got.json()
    assert isinstance(doc, dict)
    assert doc["title"].endswith(": 1 update(s) available")
    assert [c["status"] for c in doc["containers"]] == ["pending"]

    down = f"http://127.0.0.1:{free_port()}/down"
    with Receiver(status=500) as broken, Receiver(delay=60) as slow:
        urls = f"{down} {broken.url}/500 {slow.url}/slow json://127.0.0.1:{broken.port}/x"
        started = time.monotonic()
        res = run_updock(lab, "--format", "json", env={**env, "UPDOCK_NOTIFY": urls})
        took = time.monotonic() - started
        assert len(slow.wait(1)) == 1, res.stderr
    assert res.returncode == 0, res.stderr
    assert res.statuses() == {"pub-ok": "true"}
    assert lab.container_version("pub-ok") == "v2"
    assert took < 40  # the slow receiver (60 s) was not waited for
    warnings = [line for line in res.stderr.splitlines() if "notification to" in line]
    assert len(warnings) == 4, res.stderr
    assert all(line.startswith("updock: warning: notification to ") for line in warnings)
    assert "/down" not in res.stderr
