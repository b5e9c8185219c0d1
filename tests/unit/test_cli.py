"""The command line's parsing: podman's flag grammar, usage errors with exit status 125, and a
start-up that imports nothing heavy. (Running commands is tested in the lab.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from updock import defaults
from updock.cli import build_parser, main
from updock.core.model import LABEL_POLICY
from updock.prefetch import LABEL_POLICY as PREFETCH_LABEL_POLICY


def _usage_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    with pytest.raises(SystemExit) as caught:
        main(list(args))
    assert caught.value.code == 125
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("Error: ")
    return err


def test_booleans_as_pflag_parses_them() -> None:
    assert _filled()["dry_run"] is False
    assert _filled()["rollback"] is True
    assert _filled()["tls_verify"] is None
    assert _filled("--dry-run")["dry_run"] is True
    assert _filled("--dry-run=false")["dry_run"] is False
    assert _filled("--rollback=false", "--tls-verify=FALSE")["rollback"] is False
    assert _filled("--tls-verify=t")["tls_verify"] is True
    # A word after a boolean flag is an argument, not its value (then refused, as by podman).
    assert _filled("--dry-run", "false")["args"] == ["false"]
    # The value of a flag that takes one is left alone, even when it looks like a flag.
    assert _filled("--format", "--dry-run")["fmt"] == "--dry-run"
    assert _filled("--format", "--dry-run")["dry_run"] is False


def _filled(*args: str) -> dict[str, object]:
    from updock.cli import _normalize_bools, fill_from_environment

    parser, commands = build_parser("auto-update")
    sub = commands["auto-update"]
    ns = parser.parse_args(["auto-update", *_normalize_bools(sub, args)])
    fill_from_environment(sub, ns)
    return vars(ns)


def test_unset_options_come_from_the_environment_then_the_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable in ("UPDOCK_SETTLE_TIME", "UPDOCK_VERIFY_TIMEOUT", "UPDOCK_REGISTRY_CONCURRENCY"):
        monkeypatch.delenv(variable, raising=False)
    plain = _filled()
    assert (plain["settle_time"], plain["verify_timeout"], plain["registry_concurrency"]) == (
        defaults.SETTLE,
        defaults.VERIFY_TIMEOUT,
        defaults.REGISTRY_CONCURRENCY,
    )
    assert plain["lock_wait"] == defaults.LOCK_WAIT
    monkeypatch.setenv("UPDOCK_SETTLE_TIME", "2.5")
    monkeypatch.setenv("UPDOCK_REGISTRY_CONCURRENCY", "3")
    from_env = _filled("--settle-time", "7")  # a flag wins over the environment
    assert (from_env["settle_time"], from_env["registry_concurrency"]) == (7.0, 3)
    assert _filled()["settle_time"] == 2.5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["auto-update", "some-container"], "`updock auto-update` takes no arguments"),
        (["auto-update", "--dry-run", "yes-please"], "takes no arguments"),
        (["auto-update", "--dry-run=maybe"], "invalid boolean 'maybe'"),
        (["auto-update", "--dry-ru"], "unknown flag: --dry-ru"),  # no abbreviations
        (["auto-update", "--settle-time", "-1"], "'-1' is not a number of seconds"),
        (["auto-update", "--settle-time", "inf"], "'inf' is not a number of seconds"),
        (["auto-update", "--verify-timeout", "nan"], "'nan' is not a number of seconds"),
        (["auto-update", "--verify-timeout", "1e9"], "'1e9' is more than a day"),
        (["rollback", "u.service", "--settle-time", "90000"], "'90000' is more than a day"),
        (["auto-update", "--lock-wait", "soon"], "'soon' is not a number of seconds"),
        (["auto-update", "--registry-concurrency", "0"], "'0' is not a whole number >= 1"),
        (["auto-update", "--pull-timeout", "0"], "'0' is not a number of seconds (> 0)"),
        (["auto-update", "--podman-timeout", "inf"], "'inf' is not a number of seconds"),
        (["auto-update", "--authfile", "/no/such/auth.json"], "/no/such/auth.json"),
        (["auto-update", "--engine", "lxc"], "--engine: 'lxc' is not auto, or podman"),
        (["auto-update", "--engine", ","], "--engine: ',' is not auto"),
        (["rollback"], "UNIT"),
        (["bogus"], "invalid choice: 'bogus'"),
        ([], "missing command"),
    ],
)
def test_usage_errors_exit_125_and_say_what(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    err = _usage_error(capsys, *args)
    assert message in err
    assert "See 'updock" in err


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("UPDOCK_SETTLE_TIME", "abc"),
        ("UPDOCK_VERIFY_TIMEOUT", "-3"),
        ("UPDOCK_REGISTRY_CONCURRENCY", "many"),
    ],
)
def test_a_bad_environment_value_names_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    err = _usage_error(capsys, "auto-update")
    assert f"${variable}: {value!r}" in err


def test_version_and_help_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out == "updock, version 0.1.0\n"
    with pytest.raises(SystemExit) as caught:
        main(["auto-update", "--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--dry-run", "--format", "--rollback", "--tls-verify", "--authfile"):
        assert flag in out
    assert "UPDOCK_SETTLE_TIME" in out


def test_prefetch_knows_the_policy_label() -> None:
    assert PREFETCH_LABEL_POLICY == LABEL_POLICY


def test_prefetch_knows_dockers_default_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    from updock import prefetch
    from updock.engines.docker import DEFAULT_SOCKET

    assert prefetch.DOCKER_SOCKET == DEFAULT_SOCKET
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    assert prefetch.docker_in_play(("podman", "docker"))
    assert not prefetch.docker_in_play(("podman",))
    monkeypatch.setenv("DOCKER_HOST", "unix:///var/tmp/x.sock")
    assert prefetch.docker_in_play(None)  # auto: a Docker host, `podman ps` alone cannot say
    assert not prefetch.docker_in_play(("podman",))


def test_prefetch_times_podman_ps_out_like_any_podman_command() -> None:
    from updock import defaults, prefetch

    assert prefetch.PS_TIMEOUT == defaults.PODMAN_TIMEOUT


def _loaded(code: str, modules: tuple[str, ...]) -> list[str]:
    """Which of `modules` a fresh interpreter has loaded after running `code`."""
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    return out.split()


#: What a run with nothing to do must not import: each costs start-up time against podman's.
HEAVY = (
    "click", "typing", "dataclasses", "subprocess", "requests", "urllib3", "ssl", "shutil",
    "threading", "logging", "updock.run", "updock.registry", "updock.core",
    "updock.engines", "updock.systemd",
)  # fmt: skip


def _run_with_nothing_to_do(
    tmp_path: Path, args: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`updock ARGS` run for real (`updock.entry.main`) in a fresh interpreter, with a `podman`
    that lists one container without an auto-update label. If the run ends early, its standard
    output ends with `ended early with STATUS: ` and which of `HEAVY` it loaded (the background
    imports of a run with work to do, `prefetch.warm_up`, are switched off: they are not the main
    thread's start-up)."""
    (tmp_path / "podman").write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {tmp_path}/podman.calls\n'
        'echo \'[{"Id": "1", "Names": ["web"], "State": "running", "Labels": {}}]\'\n'
    )
    (tmp_path / "podman").chmod(0o755)
    probe = f"""
import os, sys
from updock import entry, prefetch
prefetch.warm_up = lambda modules: None
real_exit = os._exit
def report(code):
    loaded = [m for m in {HEAVY!r} if m in sys.modules]
    sys.stdout.write("ended early with " + str(code) + ": " + " ".join(loaded))
    sys.stdout.flush()
    real_exit(code)
os._exit = report
sys.argv = ["updock", *{args!r}]
entry.main()
"""
    full_env = {
        **os.environ,
        "PATH": f"{tmp_path}:{os.environ['PATH']}",
        "UPDOCK_STATE_DIR": str(tmp_path / "state"),
        # No configuration file: the user's default one is in an empty home (root's would be
        # /etc/updock/updock.toml).
        "UPDOCK_CONFIG": "",
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": "",
        **(env or {}),
    }
    if full_env["UPDOCK_CONFIG"] == "":
        del full_env["UPDOCK_CONFIG"]
    return subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=full_env, check=False
    )


@pytest.mark.parametrize(
    "args",
    [
        ["auto-update"],
        ["auto-update", "--dry-run", "--format", "json"],
        ["--log-level", "debug", "auto-update"],
        ["auto-update", "--log-level=info"],
    ],
)
def test_a_run_with_nothing_to_do_imports_nothing_heavy(tmp_path: Path, args: list[str]) -> None:
    """No configuration file (the default one of a user, in an empty home), no notification,
    no metrics file: the run ends early, says nothing, and has imported none of `HEAVY`."""
    res = _run_with_nothing_to_do(tmp_path, args)
    assert (res.returncode, res.stdout, res.stderr) == (0, "ended early with 0: ", "")
    # The listing was spawned by `entry` first thing, and is the only podman command.
    calls = (tmp_path / "podman.calls").read_text()
    assert calls == "ps --no-trunc --format json\n"


def test_a_configuration_file_costs_only_its_reading_with_nothing_to_do(tmp_path: Path) -> None:
    (tmp_path / "updock.toml").write_text("[auto-update]\nsettle-time = 3\n[serve]\n")
    res = _run_with_nothing_to_do(
        tmp_path, ["auto-update"], {"UPDOCK_CONFIG": str(tmp_path / "updock.toml")}
    )
    assert res.returncode == 0, res.stderr
    loaded = res.stdout.removeprefix("ended early with 0: ").split()
    # tomllib imports typing; nothing of a run is loaded.
    assert set(loaded) <= {"typing"}, loaded
    assert (tmp_path / "podman.calls").read_text() == "ps --no-trunc --format json\n"


def test_a_metrics_file_is_written_also_when_there_is_nothing_to_do(tmp_path: Path) -> None:
    prom = tmp_path / "updock.prom"
    res = _run_with_nothing_to_do(tmp_path, ["auto-update", "--metrics-file", str(prom)])
    assert res.returncode == 0, res.stderr
    text = prom.read_text()
    assert "updock_last_run_timestamp_seconds " in text
    assert 'updock_runs_total{kind="auto-update"} 1.0' in text
    assert not (tmp_path / "state" / "history.jsonl").exists()  # nothing happened


def test_importing_the_registry_package_loads_no_http_stack() -> None:
    code = "import updock.registry, updock.registry.client"
    assert _loaded(code, ("requests", "urllib3", "ssl", "http.client")) == []


def test_ctrl_c_is_a_word_and_status_130(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from updock import cli

    def interrupted(parser: object, ns: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_install_units", interrupted)
    assert main(["install-units", "--no-enable"]) == 130
    assert capsys.readouterr().err == "Error: interrupted\n"
