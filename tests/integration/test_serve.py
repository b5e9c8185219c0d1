"""`updock serve` in the lab, over HTTP on 127.0.0.1: authentication, a run triggered while
another runs (409, and the CLI's lock held), bad requests, a slow client, scheduled dry runs
that notify, a clean stop on SIGTERM, the shipped unit, and the OpenAPI description fuzzed with
schemathesis."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.unit.test_metrics import samples
from updock.testing.lab import ImageKind, Lab, free_port
from updock.testing.receiver import Receiver

pytestmark = pytest.mark.lab

TOKEN = "s3cret-token-for-the-lab"


@dataclass
class Api:
    """The API of a running `updock serve`."""

    url: str
    state: Path

    def get(self, path: str, token: str | None = TOKEN) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.get(self.url + path, headers=headers, timeout=10)

    def post(self, path: str, body: bytes | None = None) -> requests.Response:
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        return requests.post(self.url + path, data=body, headers=headers, timeout=10)

    def status(self) -> dict[str, object]:
        doc = self.get("/v1/status").json()
        assert isinstance(doc, dict)
        return doc

    def wait_idle(self, timeout: float = 120) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while True:
            doc = self.status()
            if doc["running"] is None and doc["last_run"] is not None:
                return doc
            assert time.monotonic() < deadline, doc
            time.sleep(0.2)


@dataclass
class Served(Api):
    """A running `updock serve`, started by the test."""

    proc: subprocess.Popen[str]
    pid: int

    def stop(self) -> tuple[int, str]:
        """SIGTERM to updock; its exit status and standard error."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, err


def token_file(lab: Lab) -> Path:
    path = lab.root / "api-token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


@contextlib.contextmanager
def served(
    lab: Lab, *args: str, env: Mapping[str, str] | None = None, name: str = "serve"
) -> Iterator[Served]:
    """`updock serve` in the lab, with a state folder of its own (its history and metrics are
    the test's alone); SIGTERM at the end (by PID)."""
    port = free_port()
    state = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=lab.root))  # 0700: a state folder
    proc, pid = lab.start_updock(
        "serve",
        "--listen",
        f"127.0.0.1:{port}",
        "--token-file",
        str(token_file(lab)),
        *args,
        env={"UPDOCK_STATE_DIR": str(state), "UPDOCK_SETTLE_TIME": "1", **(env or {})},
    )
    s = Served(f"http://127.0.0.1:{port}", state, proc, pid)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if s.get("/healthz", token=None).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"updock serve did not come up: {proc.communicate()}")
            time.sleep(0.05)
        yield s
    finally:
        if proc.poll() is None:
            s.stop()


def _service(lab: Lab, name: str, new: ImageKind = ImageKind.HEALTHY) -> str:
    image = lab.build_image(f"{lab.plain.host}/srv/{name}:latest", version="v1")
    unit = lab.create_service(name, image).unit
    lab.build_image(image, new, version="v2")
    return unit


def test_every_route_but_healthz_needs_the_token_and_a_refusal_is_logged_without_it(
    lab: Lab,
) -> None:
    with served(lab, "--schedule", "off") as s:
        health = s.get("/healthz", token=None)
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
        for path in ("/v1/status", "/v1/history", "/metrics", "/v1/openapi.json"):
            for token in (None, "wrong-token-value"):
                res = s.get(path, token=token)
                assert res.status_code == 401, path
                assert res.headers["WWW-Authenticate"] == 'Bearer realm="updock"'
                assert res.json() == {"error": "a valid bearer token is required"}
        refused = requests.post(s.url + "/v1/update", timeout=10)
        assert refused.status_code == 401
        basic = requests.get(s.url + "/v1/status", auth=("user", TOKEN), timeout=10)
        assert basic.status_code == 401
        assert s.get("/v1/status").status_code == 200
        openapi = s.get("/v1/openapi.json").json()
        assert openapi["info"]["title"] == "updock serve"
        assert s.get("/nope").status_code == 404
        wrong = requests.delete(s.url + "/v1/status", timeout=10)
        assert (wrong.status_code, wrong.headers["Allow"]) == (405, "GET")
        code, err = s.stop()
    assert code == 0, err
    assert "GET /v1/status from 127.0.0.1: 401, no bearer token" in err
    assert "GET /v1/status from 127.0.0.1: 401, a wrong bearer token" in err
    assert "wrong-token-value" not in err
    assert TOKEN not in err


def test_a_run_triggered_while_another_runs_is_409_and_the_cli_meets_the_same_lock(
    lab: Lab,
) -> None:
    unit = _service(lab, "srv-web")
    with served(lab, "--schedule", "off", env={"UPDOCK_SETTLE_TIME": "4"}) as s:
        first = s.post("/v1/update")
        assert first.status_code == 202, first.text
        run = first.json()["run"]
        assert (run["id"], run["trigger"], run["dry_run"]) == (1, "api", False)
        second = s.post("/v1/update", b'{"dry_run": true}')
        assert second.status_code == 409
        assert second.json()["current"]["id"] == 1
        # The CLI meets the service's run through the same lock (held before any restart).
        deadline = time.monotonic() + 60
        while lab.unit_starts(unit) < 2:
            assert time.monotonic() < deadline, "the unit was never restarted"
            time.sleep(0.05)
        cli = lab.updock("auto-update", "--lock-wait", "0", env={"UPDOCK_STATE_DIR": str(s.state)})
        assert cli.returncode == 125
        assert "another updock run" in cli.stderr
        doc = s.wait_idle()
        last = doc["last_run"]
        assert isinstance(last, dict)
        assert last["exit_status"] == 0
        assert [(r["ContainerName"], r["Updated"]) for r in last["report"]] == [("srv-web", "true")]
        assert doc["journal"] == {"units": [], "error": None}
        assert doc["next_run"] is None
        history = s.get("/v1/history?since=1h").json()
        # The CLI's run that could not take the lock is a failure of the history too.
        assert [(e["container"], e["outcome"]) for e in history] == [
            ("", "failed"),
            ("srv-web", "true"),
        ]
        assert "another updock run" in history[0]["error"]
        metrics = samples(s.get("/metrics").text)
        assert metrics[("updock_updates_total", (("outcome", "updated"),))] == 1
        assert metrics[("updock_run_in_progress", ())] == 0
        again = s.post("/v1/update", b'{"dry_run": true}')
        assert again.status_code == 202
        assert again.json()["run"]["id"] == 2
        code, err = s.stop()
    assert code == 0, err
    assert lab.container_version("srv-web") == "v2"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "the body is not JSON"),
        (b"[true]", 400, "the body must be a JSON object"),
        (b'{"dry_run": "yes"}', 400, "dry_run must be true or false"),
        (b'{"dry_run": true, "force": 1}', 400, "unknown fields: force"),
        (b'{"dry_run": null}', 400, "dry_run must be true or false"),
        (b"\xff\xfe", 400, "the body is not JSON"),
    ],
)
def test_bad_update_requests_are_400_and_begin_nothing(
    lab: Lab, body: bytes, status: int, message: str
) -> None:
    with served(lab, "--schedule", "off") as s:
        res = s.post("/v1/update", body)
        assert (res.status_code, res.json()["error"].startswith(message)) == (status, True)
        assert s.status()["last_run"] is None
        assert s.status()["running"] is None
        assert s.get("/v1/history?since=soon").status_code == 400


def test_a_slow_client_is_cut_off_and_holds_up_nobody(lab: Lab) -> None:
    with served(lab, "--schedule", "off") as s:
        port = int(s.url.rsplit(":", 1)[1])
        big = socket.create_connection(("127.0.0.1", port))
        big.sendall(b"POST /v1/update HTTP/1.0\r\nContent-Length: 999999999\r\n\r\n")
        assert b" 413 " in big.recv(1024).split(b"\r\n")[0]
        big.close()
        slow = socket.create_connection(("127.0.0.1", port))
        started = time.monotonic()
        slow.sendall(b"GET /v1/status HTTP/1.0\r\n")
        closed_after = None
        for _ in range(40):  # a header line every 2 s: each read is within the read timeout
            try:
                slow.sendall(b"X-Slow: 1\r\n")
            except OSError:
                closed_after = time.monotonic() - started
                break
            # Others are served meanwhile.
            quick = time.monotonic()
            assert s.get("/healthz", token=None).status_code == 200
            assert time.monotonic() - quick < 1
            slow.settimeout(2)
            try:
                if slow.recv(1024) == b"":
                    closed_after = time.monotonic() - started
                    break
            except TimeoutError:
                pass
        slow.close()
        assert closed_after is not None, "the slow client was never cut off"
        assert 9 <= closed_after <= 15  # the request deadline is 10 s


def test_scheduled_dry_runs_notify_of_updates_available(lab: Lab) -> None:
    _service(lab, "srv-avail")
    with (
        Receiver() as receiver,
        served(
            lab,
            "--schedule",
            "* * * * * */3",  # every 3 seconds (croniter's sixth field)
            "--jitter",
            "0",
            "--dry-run",
            "--notify",
            receiver.url,
            "--notify-on",
            "available",
        ) as s,
    ):
        assert isinstance(s.status()["next_run"], str)
        (got, *_) = receiver.wait(1, timeout=30)
        doc = s.wait_idle()
    message = got.json()
    assert isinstance(message, dict)
    assert [(c["container"], c["status"]) for c in message["containers"]] == [
        ("srv-avail", "pending")
    ]
    last = doc["last_run"]
    assert isinstance(last, dict)
    assert (last["trigger"], last["dry_run"]) == ("schedule", True)
    assert lab.container_version("srv-avail") == "v1"  # nothing changed


def test_the_shipped_unit_serves_and_stops_cleanly_mid_update(lab: Lab) -> None:
    """`updock install-units --serve`, started by systemd; `systemctl stop` during a run lets
    the unit being updated finish (verified), and the service ends inactive, not failed."""
    image = lab.build_image(f"{lab.plain.host}/srv/stop:latest", version="v1")
    units = [lab.create_service(n, image).unit for n in ("srv-stop-a", "srv-stop-b")]
    lab.build_image(image, version="v2")  # a canary (a), then the rest (b)
    res = lab.updock("install-units", "--serve", "--dest", str(lab.units), "--no-enable")
    assert res.returncode == 0, res.stderr
    assert not (lab.units / "updock-auto-update.timer").exists()
    port = free_port()
    dropin = lab.units / "updock-serve.service.d"
    dropin.mkdir()
    (dropin / "lab.conf").write_text(
        "[Service]\n"
        f"Environment=UPDOCK_TOKEN_FILE={token_file(lab)} UPDOCK_LISTEN=127.0.0.1:{port}\n"
        "Environment=UPDOCK_SCHEDULE=off UPDOCK_SETTLE_TIME=4\n"
    )
    lab.systemctl("daemon-reload")
    s = Api(f"http://127.0.0.1:{port}", lab.root / "updock-state")
    try:
        show = lab.systemctl(
            "show", "updock-serve.service", "-p", "KillMode", "-p", "TimeoutStopUSec"
        )
        assert "KillMode=mixed" in show.stdout
        lab.systemctl("start", "updock-serve.service")
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(requests.ConnectionError):
                if s.get("/healthz", token=None).status_code == 200:
                    break
            assert time.monotonic() < deadline, lab.unit_log("updock-serve.service")
            time.sleep(0.1)
        assert s.post("/v1/update").status_code == 202
        while lab.unit_starts(units[0]) < 2:
            assert time.monotonic() < deadline + 60, "the first unit was never restarted"
            time.sleep(0.05)
        lab.systemctl("stop", "updock-serve.service", timeout=120)
        assert lab.unit_state("updock-serve.service") == "inactive"
        assert lab.container_version("srv-stop-a") == "v2"  # finished and verified
        assert lab.container_version("srv-stop-b") == "v1"  # never begun
        assert {lab.unit_state(u) for u in units} == {"active"}
        state = lab.root / "updock-state" / "state.json"
        assert not state.exists() or json.loads(state.read_text())["units"] == {}
    finally:
        lab.systemctl("stop", "updock-serve.service", check=False)
        (lab.units / "updock-serve.service").unlink()
        for f in dropin.iterdir():
            f.unlink()
        dropin.rmdir()
        lab.systemctl("daemon-reload")


def test_the_api_conforms_to_its_openapi_description(lab: Lab) -> None:
    """schemathesis generates requests from the shipped description (bodies, queries, missing
    and wrong tokens) and checks every answer against it: status codes, content types,
    schemas, no server error."""
    from updock.service.api import openapi_document

    spec = lab.root / "openapi.json"
    spec.write_bytes(openapi_document())
    with served(lab, "--schedule", "off", "--dry-run") as s:
        res = subprocess.run(
            [
                str(Path(sys.executable).with_name("schemathesis")),
                "run",
                str(spec),
                "--url",
                s.url,
                "--header",
                f"Authorization: Bearer {TOKEN}",
                "--checks",
                "all",
                "--max-examples",
                "50",
                "--seed",
                "1",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
            cwd=lab.root,  # its example database stays in the lab
        )
        assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
        assert s.get("/healthz", token=None).status_code == 200
