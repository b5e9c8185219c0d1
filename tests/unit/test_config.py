"""The configuration file (`updock.config`): what it sets, what wins over it, and errors that
name the file and the line."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from updock import defaults
from updock.cli import _publish_settings, build_parser, fill_from_environment, main
from updock.config import ConfigFile, strings
from updock.errors import ConfigError
from updock.notify.message import DEFAULT_EVENTS
from updock.run import Options
from updock.service.serve import ServeSettings


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "updock.toml"
    path.write_text(text)
    return path


def _filled(config: ConfigFile, *args: str) -> argparse.Namespace:
    from updock.cli import _normalize_bools

    parser, commands = build_parser("auto-update")
    sub = commands["auto-update"]
    ns = parser.parse_args(["auto-update", *_normalize_bools(sub, args)])
    fill_from_environment(sub, ns, config)
    return ns


def test_flags_then_the_environment_then_the_file_then_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("UPDOCK_SETTLE_TIME", raising=False)
    monkeypatch.delenv("UPDOCK_WAVE_SIZE", raising=False)
    path = _write(
        tmp_path,
        "[auto-update]\nsettle-time = 9\nwave-size = 3\nrollback = false\nlock-wait = 0\n"
        "dry-run = true\n",
    )
    config = ConfigFile(path)
    ns = _filled(config)
    assert (ns.settle_time, ns.wave_size, ns.rollback, ns.lock_wait, ns.dry_run) == (
        9.0,
        3,
        False,
        0.0,
        True,
    )
    assert ns.verify_timeout == defaults.VERIFY_TIMEOUT  # not in the file
    monkeypatch.setenv("UPDOCK_SETTLE_TIME", "4")
    ns = _filled(config, "--wave-size", "5", "--dry-run=false", "--rollback")
    assert (ns.settle_time, ns.wave_size, ns.dry_run, ns.rollback) == (4.0, 5, False, True)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("[auto-update]\nsettle-time = 5\nsettle-time = 6\n", 3, "not valid TOML"),
        ("# updock\n[auto-update]\n\nsettle-time = 'soon'\n", 4, "'soon' is not a number"),
        ("[auto-update]\nwave-size = 0\n", 2, "[auto-update] wave-size: '0' is not a whole"),
        ("[auto-update]\nsettle-tme = 5\n", 2, "settle-tme: unknown key"),
        ("\n[notfy]\nurls = []\n", 2, "unknown table or key 'notfy'"),
        ("[auto-update]\nrollback = 'maybe'\n", 2, "invalid boolean 'maybe'"),
        ("[notify]\nurls = 'https://x', 3\n", 2, "not valid TOML"),
        ("[notify]\nurls = [1, 2]\n", 2, "[notify] urls: [1, 2] is not a list of strings"),
        ("[notify]\non = ['updated', 'sunny']\n", 2, "'sunny': no such event"),
        ('[notify]\ntitle = "{host} {nope}"\n', 2, "names 'nope', which is no field"),
        ('[notify]\n\nline = "{container"\n', 3, "the line template is malformed"),
        ("[metrics]\nfile = 5\n", 2, "[metrics] file: 5 is not a string"),
    ],
)
def test_a_bad_file_is_an_error_naming_the_file_and_line_with_status_125(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    text: str,
    line: int,
    message: str,
) -> None:
    path = _write(tmp_path, text)
    monkeypatch.setenv("UPDOCK_CONFIG", str(path))
    monkeypatch.setenv("UPDOCK_STATE_DIR", str(tmp_path / "state"))
    assert main(["auto-update", "--dry-run"]) == 125
    err = capsys.readouterr().err
    assert err.startswith("Error: ")
    assert message in err
    assert f"{path}:{line}: " in err


def test_a_named_file_that_does_not_exist_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("UPDOCK_CONFIG", str(tmp_path / "nope.toml"))
    assert main(["auto-update"]) == 125
    assert f"$UPDOCK_CONFIG: the configuration file {tmp_path / 'nope.toml'} does not exist" in (
        capsys.readouterr().err
    )


def test_notify_and_metrics_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("UPDOCK_NOTIFY", "UPDOCK_NOTIFY_ON", "UPDOCK_METRICS_FILE"):
        monkeypatch.delenv(variable, raising=False)
    path = _write(
        tmp_path,
        '[notify]\nurls = ["http://127.0.0.1:9/a", "https://example.org/b"]\n'
        'on = "updated,available"\ntimeout = 3\ntitle = "{host}: {summary}"\n'
        '[metrics]\nfile = "/var/tmp/n12/x.prom"\n',
    )
    config = ConfigFile(path)
    ns = argparse.Namespace(notify=None, notify_on=None, metrics_file=None)
    got = _publish_settings(ns, config)
    assert got.notify_urls == ("http://127.0.0.1:9/a", "https://example.org/b")
    assert got.notify_on == {"updated", "available"}
    assert (got.notify_timeout, got.templates.title) == (3.0, "{host}: {summary}")
    assert str(got.metrics_file) == "/var/tmp/n12/x.prom"
    monkeypatch.setenv("UPDOCK_NOTIFY", "http://127.0.0.1:8/env  http://127.0.0.1:7/env")
    monkeypatch.setenv("UPDOCK_NOTIFY_ON", "failed")
    got = _publish_settings(ns, config)
    assert got.notify_urls == ("http://127.0.0.1:8/env", "http://127.0.0.1:7/env")
    assert got.notify_on == {"failed"}
    flags = argparse.Namespace(
        notify=["http://127.0.0.1:6/flag"], notify_on="rolled-back", metrics_file="/m.prom"
    )
    got = _publish_settings(flags, config)
    assert (got.notify_urls, got.notify_on, str(got.metrics_file)) == (
        ("http://127.0.0.1:6/flag",),
        frozenset({"rolled-back"}),
        "/m.prom",
    )
    monkeypatch.delenv("UPDOCK_NOTIFY")
    monkeypatch.delenv("UPDOCK_NOTIFY_ON")
    none = _publish_settings(argparse.Namespace(), None)
    assert (none.notify_urls, none.notify_on, none.metrics_file) == ((), DEFAULT_EVENTS, None)


def test_line_numbers_find_the_key_in_its_table(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[notify]\nurls = ["http://a"]\n\n[ "serve" ]  # the service\nurls = 1\n',
    )
    with pytest.raises(ConfigError, match=r":2: .*unknown key"):
        ConfigFile(path).table("notify", ("on",))
    assert str(ConfigFile(path).error("serve", "urls", "bad")) == f"{path}:5: [serve] urls: bad"


def test_strings() -> None:
    assert strings("a") == ["a"]
    with pytest.raises(TypeError):
        strings([1])


def _serve_setup(*args: str) -> tuple[ServeSettings, Options]:
    from updock.cli import _normalize_bools, _serve_setup

    parser, commands = build_parser("serve")
    sub = commands["serve"]
    ns = parser.parse_args(["serve", *_normalize_bools(sub, args)])
    settings, options, _ = _serve_setup(sub, ns)
    return settings, options(False)


def test_serve_takes_its_table_and_its_runs_take_the_auto_update_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("UPDOCK_SERVE_DRY_RUN", "UPDOCK_LISTEN", "UPDOCK_SCHEDULE", "UPDOCK_JITTER"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.delenv("UPDOCK_SETTLE_TIME", raising=False)
    path = _write(
        tmp_path,
        "[serve]\ndry-run = true\nschedule = '0 4 * * *'\njitter = 60\nlisten = '[::1]:9000'\n"
        "token-file = '/etc/updock/api-token'\n"
        "[auto-update]\ndry-run = false\nsettle-time = 7\n",
    )
    monkeypatch.setenv("UPDOCK_CONFIG", str(path))
    settings, options = _serve_setup()
    assert settings.dry_run is True  # [serve]'s, not [auto-update]'s
    assert settings.schedule is not None
    assert (settings.schedule.expression, settings.schedule.jitter) == ("0 4 * * *", 60.0)
    assert (settings.listen, str(settings.token_file)) == ("[::1]:9000", "/etc/updock/api-token")
    assert options.safety.settle == 7.0
    settings, _ = _serve_setup("--dry-run=false", "--schedule", "off")
    assert (settings.dry_run, settings.schedule) == (False, None)
    monkeypatch.setenv("UPDOCK_SERVE_DRY_RUN", "false")
    assert _serve_setup()[0].dry_run is False


def test_serve_needs_a_token_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UPDOCK_TOKEN_FILE", raising=False)
    monkeypatch.setenv("UPDOCK_CONFIG", str(_write(tmp_path, "[serve]\njitter = 1\n")))
    with pytest.raises(ConfigError, match="needs a file with the API's bearer token"):
        _serve_setup()
    monkeypatch.setenv("UPDOCK_CONFIG", str(_write(tmp_path, "[serve]\nschedule = '99 * * * *'\n")))
    monkeypatch.setenv("UPDOCK_TOKEN_FILE", "/x")
    with pytest.raises(ConfigError, match="schedule: '99 \\* \\* \\* \\*' is no cron expression"):
        _serve_setup()


def test_engines_and_watchtower_labels_come_from_the_file_and_reach_serves_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("UPDOCK_ENGINE", raising=False)
    path = _write(
        tmp_path,
        "[auto-update]\nengine = 'docker, podman'\nwatchtower-labels = true\n"
        "[serve]\ntoken-file = '/etc/updock/api-token'\n",
    )
    config = ConfigFile(path)
    ns = _filled(config)
    assert (ns.engine, ns.watchtower_labels) == ("docker,podman", True)
    assert (_filled(ConfigFile(None)).engine, _filled(ConfigFile(None)).watchtower_labels) == (
        "auto",
        False,
    )
    monkeypatch.setenv("UPDOCK_ENGINE", "podman")
    assert _filled(config).engine == "podman"
    assert _filled(config, "--engine", "docker", "--watchtower-labels=false").engine == "docker"
    monkeypatch.delenv("UPDOCK_ENGINE")
    monkeypatch.setenv("UPDOCK_CONFIG", str(path))
    _, options = _serve_setup()
    assert (options.engines, options.watchtower) == (("docker", "podman"), True)


def test_a_bad_engine_in_the_file_names_the_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("UPDOCK_ENGINE", raising=False)
    path = _write(tmp_path, "[auto-update]\n\nengine = 'lxc'\n")
    monkeypatch.setenv("UPDOCK_CONFIG", str(path))
    monkeypatch.setenv("UPDOCK_STATE_DIR", str(tmp_path / "state"))
    assert main(["auto-update", "--dry-run"]) == 125
    err = capsys.readouterr().err
    assert f"{path}:3: " in err
    assert "'lxc' is not auto, or podman and/or docker" in err
