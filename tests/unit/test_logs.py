"""Diagnostics: podman's log levels, where the flag may go, what each level shows, and the
info-level phases of a unit with their timings (driven by the real plan, a scripted handler and
a fake clock)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator

import pytest

from updock import cli, logs
from updock.core.model import Container, Policy, Task
from updock.core.plan import (
    Action,
    Check,
    CheckResult,
    Outcome,
    Pull,
    Restart,
    SharedImageState,
    UnitPlan,
    Verify,
    drive,
    rollback_unit,
    update_unit,
)
from updock.core.reference import registry_image_name
from updock.errors import ServiceError, UpdockError, VerificationError
from updock.phases import PhaseLog
from updock.registry.transport import loggable_url


@pytest.fixture(autouse=True)
def _restore_logger() -> Iterator[None]:
    """`configure` changes the `updock` logger of this process: put it back afterwards."""
    logger = logging.getLogger("updock")
    handlers, level = list(logger.handlers), logger.level
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)


# --- levels -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "level"),
    [
        ("trace", 5),
        ("debug", logging.DEBUG),
        ("info", logging.INFO),
        ("warn", logging.WARNING),
        ("warning", logging.WARNING),
        ("error", logging.ERROR),
        ("fatal", logging.CRITICAL),
        ("panic", logging.CRITICAL),
        ("DEBUG", logging.DEBUG),  # podman lower-cases the flag's value
    ],
)
def test_podmans_level_names(name: str, level: int) -> None:
    assert logs.parse_level(name) == level


@pytest.mark.parametrize("name", ["", "verbose", "10", "err"])
def test_an_unknown_level_lists_the_known_ones(name: str) -> None:
    with pytest.raises(ValueError, match="is not supported, choose from") as caught:
        logs.parse_level(name)
    assert f"log level {name!r} is not supported" in str(caught.value)
    assert "trace, debug, info, warn, warning, error, fatal, panic" in str(caught.value)


def _emit_one_of_each() -> None:
    log = logging.getLogger("updock.somewhere")
    log.log(logs.TRACE, "t-line")
    log.debug("d-line")
    log.info("i-line")
    log.warning("w-line")
    log.error("e-line\n  second line")
    log.critical("c-line")


@pytest.mark.parametrize(
    ("level", "shown"),
    [
        ("trace", ["trace: t", "debug: d", "info: i", "warning: w", "error: e", "fatal: c"]),
        ("debug", ["debug: d", "info: i", "warning: w", "error: e", "fatal: c"]),
        ("info", ["info: i", "warning: w", "error: e", "fatal: c"]),
        ("warn", ["warning: w", "error: e", "fatal: c"]),
        ("error", ["error: e", "fatal: c"]),
        ("panic", ["fatal: c"]),
    ],
)
def test_each_level_shows_itself_and_above_on_stderr(
    capsys: pytest.CaptureFixture[str], level: str, shown: list[str]
) -> None:
    logs.configure(logs.parse_level(level))
    _emit_one_of_each()
    out, err = capsys.readouterr()
    assert out == ""
    lines = [line for line in err.splitlines() if line.startswith("updock: ")]
    assert lines == [f"updock: {s}-line" for s in shown]
    if "error: e" in shown:
        assert "updock: error: e-line\n  second line\n" in err


def test_configuring_twice_shows_each_line_once(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure(logging.DEBUG)
    logs.configure(logging.INFO)
    logging.getLogger("updock.x").info("once")
    logging.getLogger("updock.x").debug("not at info")
    assert capsys.readouterr().err == "updock: info: once\n"


# --- the flag and the variable ----------------------------------------------------------------


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[argparse.Namespace]:
    """The parsed arguments `updock auto-update` (and rollback) would run with, not running."""
    got: list[argparse.Namespace] = []

    def handler(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> int:
        got.append(ns)
        return 0

    monkeypatch.setattr(cli, "_auto_update", handler)
    monkeypatch.setattr(cli, "_rollback", handler)
    monkeypatch.delenv(logs.ENV_VARIABLE, raising=False)
    return got


@pytest.mark.parametrize(
    ("args", "level"),
    [
        (["auto-update"], logging.ERROR),
        (["--log-level=info", "auto-update"], logging.INFO),
        (["--log-level", "debug", "auto-update", "--dry-run"], logging.DEBUG),
        (["auto-update", "--log-level=warn"], logging.WARNING),
        (["auto-update", "--dry-run", "--log-level", "trace"], logs.TRACE),
        (["--log-level=error", "auto-update", "--log-level=info"], logging.INFO),  # the last
        (["--log-level=debug", "rollback", "x.service"], logging.DEBUG),
    ],
)
def test_the_flag_goes_before_or_after_the_command(
    seen: list[argparse.Namespace], args: list[str], level: int
) -> None:
    assert cli.main(args) == 0
    assert [ns.log_level for ns in seen] == [level]


def test_the_variable_when_no_flag(
    seen: list[argparse.Namespace], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(logs.ENV_VARIABLE, "Info")
    assert cli.main(["auto-update"]) == 0
    assert cli.main(["auto-update", "--log-level=debug"]) == 0  # the flag wins
    assert [ns.log_level for ns in seen] == [logging.INFO, logging.DEBUG]


@pytest.mark.parametrize(
    ("args", "variable", "message"),
    [
        (["--log-level=loud", "auto-update"], None, "log level 'loud' is not supported"),
        (["auto-update", "--log-level", "loud"], None, "log level 'loud' is not supported"),
        (["auto-update"], "loud", f"${logs.ENV_VARIABLE}: log level 'loud' is not supported"),
    ],
)
def test_a_bad_level_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    variable: str | None,
    message: str,
) -> None:
    if variable is None:
        monkeypatch.delenv(logs.ENV_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(logs.ENV_VARIABLE, variable)
    with pytest.raises(SystemExit) as caught:
        cli.main(args)
    assert caught.value.code == 125
    err = capsys.readouterr().err
    assert err.startswith("Error: ")
    assert message in err


# --- debug: requests without secrets ----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://r.example/v2/app/manifests/1", "https://r.example/v2/app/manifests/1"),
        ("https://user:pw@r.example:5000/v2/", "https://r.example:5000/v2/"),
        (
            "https://auth.example/token?scope=repository:app:pull&service=r&account=alice",
            "https://auth.example/token?scope=repository:app:pull&service=r&account=***",
        ),
        (
            "https://auth.example/t?sig=abc&expires=1#frag",
            "https://auth.example/t?sig=***&expires=***",
        ),
    ],
)
def test_request_urls_are_logged_without_secrets(url: str, shown: str) -> None:
    assert loggable_url(url) == shown


# --- info: a unit's phases --------------------------------------------------------------------

IMAGE = "127.0.0.1:5000/app:latest"
DIGEST = "sha256:" + "ab" * 32


def _task(name: str = "web") -> Task:
    container = Container(id=name * 32, name=name, image_id="0" * 64, raw_image_name=IMAGE)
    return Task(
        unit="web.service",
        container=container,
        policy=Policy.REGISTRY,
        image=registry_image_name(IMAGE),
    )


class Scripted:
    """Performs actions from a script, each taking a given time on a fake clock."""

    def __init__(self, durations: dict[type, float], failures: dict[type, list[Outcome]]) -> None:
        self.now = 100.0
        self.durations = durations
        self.failures = failures

    def clock(self) -> float:
        return self.now

    def __call__(self, action: Action) -> Outcome:
        self.now += self.durations.get(type(action), 0.0)
        if isinstance(action, Check):
            return CheckResult(update_available=True, digest=DIGEST)
        planned = self.failures.get(type(action))
        outcome = planned.pop(0) if planned else None
        if outcome is None and isinstance(action, Pull):
            outcome = "f" * 64  # the pulled image's ID
        if isinstance(outcome, UpdockError):
            raise outcome
        return outcome


def _update(rollback: bool = True) -> UnitPlan:
    return update_unit(
        "web.service", [_task()], dry_run=False, rollback=rollback, images_done=SharedImageState()
    )


def _phases(caplog: pytest.LogCaptureFixture, script: Scripted, plan: UnitPlan) -> list[str]:
    """What `PhaseLog` logs at info while `script` performs `plan`."""
    with caplog.at_level(logging.INFO, logger="updock"):
        drive(plan, PhaseLog(script, clock=script.clock))
    return [r.getMessage() for r in caplog.records if r.name == "updock.phases"]


DURATIONS = {Check: 0.02, Pull: 1.5, Restart: 0.4, Verify: 5.0}


def test_info_shows_an_updates_phases_with_their_timings(caplog: pytest.LogCaptureFixture) -> None:
    assert _phases(caplog, Scripted(DURATIONS, {}), _update()) == [
        f"unit web.service: container web: checked {IMAGE} in 0.02s: update available",
        f"unit web.service: container web: pulled {IMAGE} ({DIGEST}) in 1.50s",
        "unit web.service: restarted in 0.40s",
        "unit web.service: verified in 5.00s",
        "unit web.service: updated in 6.92s",
    ]


def test_info_shows_a_rollbacks_phases(caplog: pytest.LogCaptureFixture) -> None:
    failed = VerificationError("verifying unit web.service failed: container web exited")
    lines = _phases(caplog, Scripted(DURATIONS, {Verify: [failed]}), _update())
    assert lines[3:] == [
        "unit web.service: verification failed after 5.00s",
        f"unit web.service: container web: previous image tagged {IMAGE} again in 0.00s",
        "unit web.service: restarted on the previous images in 0.40s",
        "unit web.service: verified on the previous images in 5.00s",
        "unit web.service: rolled back after 12.32s (the rollback took 5.40s)",
    ]


def test_info_says_when_a_rollback_fails_or_is_off(caplog: pytest.LogCaptureFixture) -> None:
    broken = ServiceError('restarting systemd unit "web.service" failed')
    lines = _phases(caplog, Scripted(DURATIONS, {Restart: [broken, broken]}), _update())
    assert lines[-1] == "unit web.service: rollback failed after 2.32s (the rollback took 0.40s)"
    caplog.clear()
    lines = _phases(caplog, Scripted(DURATIONS, {Restart: [broken]}), _update(rollback=False))
    assert lines[-1] == "unit web.service: update failed after 1.92s, left as it is (no rollback)"


def test_info_shows_a_manual_rollback(caplog: pytest.LogCaptureFixture) -> None:
    plan = rollback_unit("web.service", [_task()], {"web" * 32: "1" * 64})
    assert _phases(caplog, Scripted(DURATIONS, {}), plan) == [
        f"unit web.service: container web: image 111111111111 tagged {IMAGE} in 0.00s",
        "unit web.service: restarted in 0.40s",
        "unit web.service: verified in 5.00s",
        "unit web.service: rolled back in 5.40s",
    ]


def test_below_info_nothing_is_logged_and_every_action_is_done(
    caplog: pytest.LogCaptureFixture,
) -> None:
    script = Scripted(DURATIONS, {})
    with caplog.at_level(logging.ERROR, logger="updock"):
        rows, errors = drive(_update(), PhaseLog(script, clock=script.clock))
    assert caplog.records == []
    assert ([r.updated.value for r in rows], errors) == (["true"], [])
    assert script.now == 100 + 6.92
