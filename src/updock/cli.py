"""The command line: parses flags, calls the run, prints the report, maps errors to exit status.

Exit statuses follow podman: 0 when everything went well (or there was nothing to do), 125 when
anything failed (a flag, a container, a check, a restart); the report is printed either way.

Written with argparse rather than click: `updock auto-update` with nothing to do must start
within twice podman's time (about 26 ms), and importing click alone takes about 30 ms on the lab
machines, argparse about 7. For the same reason this module imports nothing heavy: the run,
and everything it needs, is imported once the flags are valid and `updock.prefetch` has seen
that there is something to do.

Flags parse as podman's (Go pflag) do: booleans are `--flag` or `--flag=false` (a separate word
after a boolean flag is an argument, not its value), no abbreviations.
"""

from __future__ import annotations

import argparse
import os
import sys

from updock import __version__, defaults, logs
from updock.errors import EXIT_ERROR, UpdockError
from updock.prefetch import command_index

TYPE_CHECKING = False  # not typing's: importing typing costs start-up time
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, TypeVar

    from updock.config import ConfigFile
    from updock.options import SafetyOptions
    from updock.publish import Publisher, PublishSettings
    from updock.run import Options, RunResult
    from updock.service.serve import ServeSettings

    _V = TypeVar("_V")

#: The exit status after Ctrl-C (128 + SIGINT), as a shell reports it.
EXIT_INTERRUPTED = 130

#: strconv.ParseBool's words, which pflag accepts for a boolean flag's value.
_TRUE = frozenset(("1", "t", "T", "TRUE", "true", "True"))
_FALSE = frozenset(("0", "f", "F", "FALSE", "false", "False"))


def format_errors(errors: Sequence[BaseException]) -> str:
    """podman's rendering of a run's errors (errorhandling.JoinErrors), without "Error: "."""
    if len(errors) == 1:
        return str(errors[0])
    items = "".join(f"\n\t* {e}" for e in errors)
    return f"{len(errors)} errors occurred:{items}"


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, minus its `import shutil` for the terminal width: argparse makes
    one per `add_argument`, which would cost start-up time."""

    def __init__(self, prog: str) -> None:
        try:
            width = int(os.environ.get("COLUMNS", "")) or os.get_terminal_size(2).columns
        except (ValueError, OSError):
            width = 80
        super().__init__(prog, width=max(width - 2, 40))


class _Parser(argparse.ArgumentParser):
    """A parser whose usage errors read and exit like podman's: `Error: ...`, status 125.

    It notes its boolean flags and the flags that take a value, for `_normalize_bools`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.bool_flags: set[str] = set()
        self.value_flags: set[str] = set()

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        if isinstance(action, _BoolFlag):
            self.bool_flags.update(action.option_strings)
        elif action.nargs != 0:
            self.value_flags.update(action.option_strings)
        return action

    def error(self, message: str) -> None:  # type: ignore[override]  # never returns
        sys.stderr.write(f"Error: {message}\nSee '{self.prog} --help'\n")
        sys.exit(EXIT_ERROR)


def _bool(text: str) -> bool:
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean {text!r} (true or false)")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (>= 0)")
    return value


def _verify_seconds(text: str) -> float:
    """Seconds of verification: at most a day (longer would hold the run's lock as long)."""
    value = _seconds(text)
    if value > defaults.MAX_VERIFY_SECONDS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is more than a day ({defaults.MAX_VERIFY_SECONDS:g} seconds)"
        )
    return value


def _timeout(text: str) -> float:
    """A timeout: more than 0 seconds, finite."""
    value = _seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (> 0)")
    return value


def _log_level(text: str) -> int:
    try:
        return logs.parse_level(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


def _engine(text: str) -> str:
    """`--engine` (or `UPDOCK_ENGINE`, `[auto-update] engine`): `auto`, or the engines named,
    comma separated, each once."""
    if text.strip() == "auto":
        return "auto"
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names or any(n not in ("podman", "docker") for n in names):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not auto, or podman and/or docker (comma separated)"
        )
    return ",".join(names)


def _engine_names(text: str) -> tuple[str, ...] | None:
    """The engines of a checked `--engine` value: None for `auto`."""
    return None if text == "auto" else tuple(text.split(","))


class _BoolFlag(argparse.Action):
    """`--flag=VALUE` (`_normalize_bools` has made `--flag` into `--flag=true`)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)


def _add_bool(
    parser: argparse.ArgumentParser,
    name: str,
    default: bool | None,
    help: str,
    *,
    filled: bool = False,
) -> None:
    """A boolean flag; with `filled`, left None when not given (`fill_from_environment` fills
    it from the configuration file, else `default`)."""
    shown = "" if default is None else f" (default: {str(default).lower()})"
    parser.add_argument(
        name,
        action=_BoolFlag,
        type=_bool,
        default=None if filled else default,
        metavar="[=true|false]",
        help=help + shown,
    )


def _normalize_bools(parser: _Parser, args: Sequence[str]) -> list[str]:
    """Words as pflag reads them: `--flag` to `--flag=true` for a boolean flag (a following word
    is never its value), `--flag VALUE` to `--flag=VALUE` for the others (so that a value may
    start with "-")."""
    bools, takes_value = parser.bool_flags, parser.value_flags
    out: list[str] = []
    value_next = False
    for i, word in enumerate(args):
        if value_next:  # the value of the flag before, even if it starts with "-"
            out[-1] += f"={word}"
            value_next = False
            continue
        if word == "--":
            return out + list(args[i:])
        value_next = word in takes_value
        out.append(f"{word}=true" if word in bools else word)
    return out


def _env_default(
    parser: argparse.ArgumentParser,
    namespace: argparse.Namespace,
    dest: str,
    variable: str | None,
    convert: Callable[[str], object],
    fallback: object,
) -> None:
    """Fill an option the user did not give from `$variable`, else `fallback`."""
    if getattr(namespace, dest) is not None:
        return
    raw = os.environ.get(variable) if variable else None
    if raw is None or raw == "":
        setattr(namespace, dest, fallback)
        return
    try:
        setattr(namespace, dest, convert(raw))
    except argparse.ArgumentTypeError as exc:
        parser.error(f"${variable}: {exc}")


def _report(
    run: Callable[[], RunResult | None],
    fmt: str,
    after: Callable[[RunResult | None, Sequence[BaseException]], None] | None = None,
) -> int:
    """Run, print the report in `fmt` on stdout and the errors on stderr; 125 on any error.

    `run` returns None when there was nothing to do (no report at all, as podman). `after`
    gets the result (None if there was none) and the errors once they are printed (it
    publishes the run: it cannot change the exit status).
    """
    result: RunResult | None = None
    errors: list[BaseException] = []
    try:
        if fmt not in ("", "json"):
            from updock.core.report import format_report

            format_report([], fmt)  # a bad template fails before anything changes
        result = run()
        if result is not None:
            errors = list(result.errors)
            if result.rows:
                from updock.core.report import format_report

                sys.stdout.write(format_report(result.rows, fmt))
                sys.stdout.flush()
    except UpdockError as exc:
        errors = [exc]
    if errors:
        sys.stderr.write(f"Error: {format_errors(errors)}\n")
        sys.stderr.flush()
    if after is not None:
        after(result, errors)
    if errors:
        # A run stopped by a signal says so in its status (130, 143), as a shell would.
        from updock.errors import Interrupted

        stopped = [e for e in errors if isinstance(e, Interrupted)]
        return stopped[0].exit_code if stopped else EXIT_ERROR
    return 0


# -- commands ----------------------------------------------------------------------------------


#: Options of `auto-update` filled when not given: (dest, key in the configuration file's
#: `[auto-update]` table, environment variable, converter, default).
_FILLED: tuple[tuple[str, str, str | None, Callable[[str], object], object], ...] = (
    ("settle_time", "settle-time", "UPDOCK_SETTLE_TIME", _verify_seconds, defaults.SETTLE),
    (
        "verify_timeout",
        "verify-timeout",
        "UPDOCK_VERIFY_TIMEOUT",
        _verify_seconds,
        defaults.VERIFY_TIMEOUT,
    ),
    (
        "podman_timeout",
        "podman-timeout",
        "UPDOCK_PODMAN_TIMEOUT",
        _timeout,
        defaults.PODMAN_TIMEOUT,
    ),
    ("pull_timeout", "pull-timeout", "UPDOCK_PULL_TIMEOUT", _timeout, defaults.PULL_TIMEOUT),
    (
        "restart_concurrency",
        "restart-concurrency",
        "UPDOCK_RESTART_CONCURRENCY",
        _count,
        defaults.RESTART_CONCURRENCY,
    ),
    ("wave_size", "wave-size", "UPDOCK_WAVE_SIZE", _count, defaults.WAVE_SIZE),
    (
        "registry_concurrency",
        "registry-concurrency",
        "UPDOCK_REGISTRY_CONCURRENCY",
        _count,
        defaults.REGISTRY_CONCURRENCY,
    ),
    ("lock_wait", "lock-wait", None, _seconds, defaults.LOCK_WAIT),
    ("dry_run", "dry-run", None, _bool, False),
    ("rollback", "rollback", None, _bool, True),
    ("keep_previous", "keep-previous", None, _bool, True),
    ("tls_verify", "tls-verify", None, _bool, None),
    ("engine", "engine", "UPDOCK_ENGINE", _engine, "auto"),
    ("watchtower_labels", "watchtower-labels", None, _bool, False),
)

#: The keys of the configuration file's `[auto-update]` table.
AUTO_UPDATE_KEYS = frozenset([key for _, key, *_ in _FILLED] + ["authfile"])


def _from_config(
    config: ConfigFile | None, key: str, convert: Callable[[str], object], default: object
) -> object:
    """`[auto-update] key` of the configuration file, converted as the flag's value; else
    `default`.

    Raises:
        ConfigError: the value is not one the flag takes (naming the file and line).
    """
    if config is None:
        return default
    found = config.get(
        "auto-update", key, lambda value: _flag_value(convert, value), AUTO_UPDATE_KEYS
    )
    return default if found is None else found


def _flag_value(convert: Callable[[str], _V], value: object) -> _V:
    """`convert` of a value of the configuration file (or of a variable) written as a flag's
    argument; ValueError when it is not one the flag takes."""
    from updock.config import flag_text

    try:
        return convert(flag_text(value))
    except argparse.ArgumentTypeError as exc:
        raise ValueError(str(exc)) from None


def fill_from_environment(
    parser: argparse.ArgumentParser, ns: argparse.Namespace, config: ConfigFile | None = None
) -> None:
    """Options of `auto-update` the user did not give: from `UPDOCK_*`, else the configuration
    file, else the defaults.

    Raises:
        ConfigError: the configuration file has a bad value.
    """
    for dest, key, variable, convert, default in _FILLED:
        if getattr(ns, dest, None) is None:
            fallback = _from_config(config, key, convert, default)
            _env_default(parser, ns, dest, variable, convert, fallback)


def _load_config() -> ConfigFile | None:
    """The configuration file, when there is one (nothing is imported when there is none).

    Raises:
        ConfigError: it cannot be read, or is not valid.
    """
    from updock.prefetch import config_path

    if config_path() is None:
        return None
    from updock.config import ConfigFile

    return ConfigFile.load()


def _split_env(variable: str) -> list[str] | None:
    raw = os.environ.get(variable, "").strip()
    return raw.split() if raw else None


#: The keys of the configuration file's `[notify]` table.
NOTIFY_KEYS = ("urls", "on", "timeout", "title", "line")


def _publish_settings(ns: argparse.Namespace, config: ConfigFile | None) -> PublishSettings:
    """Notifications and metrics: flags, else `UPDOCK_*`, else the configuration file.

    Raises:
        ConfigError: a value of the configuration file or of a variable is bad.
    """
    from pathlib import Path

    from updock.config import ConfigFile, strings, text
    from updock.errors import ConfigError
    from updock.notify import DEFAULT_TIMEOUT
    from updock.notify.message import DEFAULT_EVENTS, Templates, check_template, parse_events
    from updock.publish import PublishSettings

    conf = config if config is not None else ConfigFile(None)
    notify_keys = NOTIFY_KEYS
    urls = getattr(ns, "notify", None) or _split_env("UPDOCK_NOTIFY")
    if urls is None:
        urls = conf.get("notify", "urls", strings, notify_keys) or []
    events: frozenset[str] | None
    if getattr(ns, "notify_on", None) is not None:
        events = parse_events([ns.notify_on])  # checked by the flag's parser
    elif os.environ.get("UPDOCK_NOTIFY_ON"):
        try:
            events = parse_events([os.environ["UPDOCK_NOTIFY_ON"]])
        except ValueError as exc:
            raise ConfigError(f"$UPDOCK_NOTIFY_ON: {exc}") from None
    else:
        events = conf.get("notify", "on", lambda v: parse_events(strings(v)), notify_keys)
    timeout = os.environ.get("UPDOCK_NOTIFY_TIMEOUT")
    if timeout:
        try:
            seconds: float | None = _timeout(timeout)
        except argparse.ArgumentTypeError as exc:
            raise ConfigError(f"$UPDOCK_NOTIFY_TIMEOUT: {exc}") from None
    else:
        seconds = conf.get("notify", "timeout", lambda v: _timeout(str(v)), notify_keys)
    defaults_ = Templates()
    templates = Templates(
        title=conf.get("notify", "title", lambda v: check_template("title", text(v)), notify_keys)
        or defaults_.title,
        line=conf.get("notify", "line", lambda v: check_template("line", text(v)), notify_keys)
        or defaults_.line,
    )
    metrics = getattr(ns, "metrics_file", None) or os.environ.get("UPDOCK_METRICS_FILE") or None
    if metrics is None:
        metrics = conf.get("metrics", "file", text, ("file",))
    return PublishSettings(
        notify_urls=tuple(urls),
        notify_on=events if events is not None else DEFAULT_EVENTS,
        notify_timeout=seconds if seconds is not None else DEFAULT_TIMEOUT,
        templates=templates,
        metrics_file=Path(metrics) if metrics else None,
    )


def _events(text: str) -> str:
    """`--notify-on`: checked here, parsed with the others in `_publish_settings`."""
    from updock.notify.message import parse_events

    try:
        parse_events([text])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _auto_update(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> int:
    if ns.args:
        parser.error("`updock auto-update` takes no arguments")
    import time

    started = time.time()
    try:
        config = _load_config()
        fill_from_environment(parser, ns, config)
        authfile = _authfile(parser, ns, config)
        wants_publisher = bool(
            ns.notify
            or ns.metrics_file
            or _publishing_env()
            or (config is not None and config.has_any("notify", "metrics"))
        )
        # Notify URLs and templates are checked before anything changes; without any, the
        # publisher (and all it imports) waits until there is something to do.
        publisher = _publisher(ns, config) if wants_publisher else None
    except UpdockError as exc:
        sys.stderr.write(f"Error: {exc}\n")
        return EXIT_ERROR
    if ns.tls_verify is False:
        import warnings

        # The user asked for unverified TLS: urllib3's warning per request is only noise.
        warnings.filterwarnings("ignore", message="Unverified HTTPS request")
    entered: list[bool] = []  # the run began (the flags and the format were good)
    ran: list[bool] = []  # and had something to do

    def run() -> RunResult | None:
        nonlocal publisher
        from updock.prefetch import docker_in_play, nothing_to_do

        entered.append(True)
        if not docker_in_play(_engine_names(ns.engine)) and nothing_to_do(
            dry_run=ns.dry_run, timeout=ns.podman_timeout
        ):
            return None
        ran.append(True)
        logs.configure(ns.log_level)  # only now: importing logging costs start-up time
        if publisher is None:
            publisher = _publisher(ns, config)
        from updock.run import run_auto_update
        from updock.stopping import StopRequest

        stop = StopRequest()
        with stop.on_signals():
            return run_auto_update(_options(ns, authfile, ns.dry_run), stop=stop)

    def after(result: RunResult | None, errors: Sequence[BaseException]) -> None:
        if publisher is None or not entered:
            return  # nothing to do and nothing asked for, or a bad --format
        logs.configure(ns.log_level)
        from updock.publish import failed_run

        if result is not None and result.record is not None:
            record = result.record
        else:
            record = failed_run(errors, dry_run=ns.dry_run, started=started)
        if ran or record.errors or publisher.settings.metrics_file is not None:
            publisher.publish(record)

    return _report(run, ns.fmt, after)


def _options(ns: argparse.Namespace, authfile: str | None, dry_run: bool) -> Options:
    """The run's options from the filled flags."""
    from updock.run import Options

    return Options(
        authfile=authfile,
        dry_run=dry_run,
        rollback=ns.rollback,
        tls_verify=ns.tls_verify,
        safety=_safety(ns.settle_time, ns.verify_timeout, ns.keep_previous),
        lock_wait=ns.lock_wait,
        registry_concurrency=ns.registry_concurrency,
        podman_timeout=ns.podman_timeout,
        pull_timeout=ns.pull_timeout,
        restart_concurrency=ns.restart_concurrency,
        wave_size=ns.wave_size,
        engines=_engine_names(ns.engine),
        watchtower=ns.watchtower_labels,
    )


def _publishing_env() -> bool:
    return any(
        os.environ.get(v) for v in ("UPDOCK_NOTIFY", "UPDOCK_METRICS_FILE", "UPDOCK_NOTIFY_ON")
    )


def _publisher(ns: argparse.Namespace, config: ConfigFile | None) -> Publisher:
    """What publishes the run (history, metrics, notifications); checked now.

    Raises:
        ConfigError: a notify URL, template or setting is bad.
    """
    from updock.publish import Publisher

    return Publisher(_publish_settings(ns, config))


def _authfile(
    parser: argparse.ArgumentParser, ns: argparse.Namespace, config: ConfigFile | None
) -> str | None:
    """`--authfile`, else `$REGISTRY_AUTH_FILE`, else the configuration file's."""
    authfile: str | None = ns.authfile
    if authfile is not None:
        if not os.path.exists(authfile):
            parser.error(
                f"--authfile: credential file is not accessible: {authfile}: no such file or "
                "directory"
            )
        return authfile
    authfile = os.environ.get("REGISTRY_AUTH_FILE") or None
    if authfile is None and config is not None:
        from updock.config import text

        authfile = config.get("auto-update", "authfile", text, AUTO_UPDATE_KEYS)
        if authfile is not None and not os.path.exists(authfile):
            raise config.error(
                "auto-update", "authfile", f"credential file {authfile} does not exist"
            )
    return authfile


def _safety(settle: float, verify_timeout: float, keep_previous: bool) -> SafetyOptions:
    from updock.options import SafetyOptions

    return SafetyOptions(settle=settle, verify_timeout=verify_timeout, keep_previous=keep_previous)


def _rollback(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> int:
    try:
        config = _load_config()
        default = _from_config(config, "settle-time", _verify_seconds, defaults.SETTLE)
    except UpdockError as exc:
        sys.stderr.write(f"Error: {exc}\n")
        return EXIT_ERROR
    _env_default(parser, ns, "settle_time", "UPDOCK_SETTLE_TIME", _verify_seconds, default)

    def run() -> RunResult:
        logs.configure(ns.log_level)
        from updock.run import Options, run_rollback
        from updock.stopping import StopRequest

        safety = _safety(ns.settle_time, defaults.VERIFY_TIMEOUT, True)
        stop = StopRequest()
        with stop.on_signals():
            result = run_rollback(ns.unit, Options(safety=safety), stop=stop)
        # Part of the command's result, not a diagnostic: shown whatever the log level.
        for name in sorted({r.image for r in result.rows if r.updated == "rolled back"}):
            sys.stderr.write(
                f"{name} is held on its previous image: auto-update leaves it there until the "
                f"registry offers another image than the one rolled back from (`updock release "
                f"{ns.unit}` ends the hold)\n"
            )
        return result

    def after(result: RunResult | None, errors: Sequence[BaseException]) -> None:
        # Into the history and the metrics (a manual rollback notifies nobody: its user knows).
        if result is None or result.record is None:
            return
        import dataclasses

        from updock.publish import Publisher

        try:
            settings = _publish_settings(ns, config)
        except UpdockError as exc:
            sys.stderr.write(f"Error: {exc}\n")
            return
        Publisher(dataclasses.replace(settings, notify_urls=())).publish(result.record)

    return _report(run, ns.fmt, after)


#: The keys of the configuration file's `[serve]` table.
SERVE_KEYS = ("listen", "schedule", "jitter", "token-file", "dry-run")


def _serve(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> int:
    from updock.service.serve import serve

    logs.configure(ns.log_level)
    try:
        settings, options, publisher = _serve_setup(parser, ns)
        return serve(settings, options, publisher)
    except UpdockError as exc:
        sys.stderr.write(f"Error: {exc}\n")
        return EXIT_ERROR


def _serve_setup(
    parser: argparse.ArgumentParser, ns: argparse.Namespace
) -> tuple[ServeSettings, Callable[[bool], Options], Publisher]:
    """The service's settings (flags, else `UPDOCK_*`, else `[serve]`), its runs' options
    (`[auto-update]` and `UPDOCK_*`) and its publisher.

    Raises:
        ConfigError: a setting is bad, or there is no token file.
    """
    from pathlib import Path

    from updock.config import ConfigFile, text
    from updock.errors import ConfigError
    from updock.service.schedule import DEFAULT_JITTER, DEFAULT_SCHEDULE, OFF, Schedule
    from updock.service.serve import DEFAULT_LISTEN, ServeSettings
    from updock.state import default_state_dir

    config = _load_config()
    conf = config if config is not None else ConfigFile(None)
    serve_dry_run = ns.dry_run  # serve's own flag; the run's options fill `ns.dry_run`
    # The run's options: `[auto-update]` of the configuration file, and `UPDOCK_*`.
    for dest, *_ in _FILLED:
        setattr(ns, dest, getattr(ns, dest, None))
    fill_from_environment(parser, ns, config)
    authfile = os.environ.get("REGISTRY_AUTH_FILE") or None
    if authfile is None and config is not None:
        authfile = config.get("auto-update", "authfile", text, AUTO_UPDATE_KEYS)

    def setting(flag: object, variable: str, key: str, convert: Callable[[object], Any]) -> Any:
        if flag is not None:
            return flag
        if os.environ.get(variable):
            try:
                return convert(os.environ[variable])
            except (ValueError, argparse.ArgumentTypeError) as exc:
                raise ConfigError(f"${variable}: {exc}") from None
        return conf.get("serve", key, convert, SERVE_KEYS)

    listen = setting(ns.listen, "UPDOCK_LISTEN", "listen", _listen) or DEFAULT_LISTEN
    token_file = setting(ns.token_file, "UPDOCK_TOKEN_FILE", "token-file", text)
    if token_file is None:
        raise ConfigError(
            "updock serve needs a file with the API's bearer token: --token-file, "
            "$UPDOCK_TOKEN_FILE or [serve] token-file (a token is never given on the "
            "command line)"
        )
    expression = setting(ns.schedule, "UPDOCK_SCHEDULE", "schedule", text)
    expression = DEFAULT_SCHEDULE if expression is None else expression
    jitter = setting(ns.jitter, "UPDOCK_JITTER", "jitter", lambda v: _flag_value(_seconds, v))
    jitter = DEFAULT_JITTER if jitter is None else jitter
    dry_run = setting(
        serve_dry_run, "UPDOCK_SERVE_DRY_RUN", "dry-run", lambda v: _flag_value(_bool, v)
    )
    schedule = None
    if expression.strip().lower() != OFF:
        try:
            schedule = Schedule(expression, jitter)
        except ValueError as exc:
            raise ConfigError(f"schedule: {exc}") from None
    settings = ServeSettings(
        listen=listen,
        token_file=Path(token_file),
        schedule=schedule,
        dry_run=bool(dry_run),
        state_dir=default_state_dir(),
    )
    return settings, lambda dry: _options(ns, authfile, dry), _publisher(ns, config)


def _listen(value: object) -> str:
    from updock.service.api import parse_listen

    if not isinstance(value, str):
        raise TypeError(f"{value!r} is not a string")
    parse_listen(value)  # raises ValueError
    return value


def _history(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> int:
    from updock.history import History, parse_duration
    from updock.state import default_state_dir

    if ns.fmt not in ("", "table", "json"):
        parser.error(f"--format: {ns.fmt!r} is not json or table")
    since = None
    if ns.since is not None:
        import time

        try:
            since = time.time() - parse_duration(ns.since)
        except ValueError as exc:
            parser.error(f"--since: {exc}")
    logs.configure(ns.log_level)
    try:
        entries = History(default_state_dir()).read(since)
    except UpdockError as exc:
        sys.stderr.write(f"Error: {exc}\n")
        return EXIT_ERROR
    if ns.fmt == "json":
        import json

        sys.stdout.write(json.dumps(entries, indent=4) + "\n")
        return 0
    from updock.history import table

    sys.stdout.write(table(entries))
    return 0


def _previous(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> int:
    from updock.run import Options, list_previous

    if ns.fmt not in ("", "table", "json"):
        parser.error(f"--format: {ns.fmt!r} is not json or table")
    kept, errors = list_previous(Options())
    for error in errors:
        sys.stderr.write(f"Error: {error}\n")
    status = EXIT_ERROR if errors else 0
    if ns.fmt == "json":
        import json

        sys.stdout.write(json.dumps([k.as_dict() for k in kept], indent=4) + "\n")
        return status
    from updock.core.report import TAB_MINWIDTH, TAB_PADDING
    from updock.core.tabwriter import tabwrite

    # The engine's column only on a host with more than podman: podman's listing stays as it was.
    engines = any(k.engine != "podman" for k in kept)
    lines = ["UNIT\tCONTAINER\tIMAGE\tPREVIOUS\tPREVIOUS ID" + ("\tENGINE" if engines else "")]
    lines += [
        f"{k.unit}\t{k.container_name}\t{k.image}\t{k.previous}\t{k.previous_image_id[:12] or '-'}"
        + (f"\t{k.engine}" if engines else "")
        for k in kept
    ]
    sys.stdout.write(tabwrite("\n".join(lines) + "\n", minwidth=TAB_MINWIDTH, padding=TAB_PADDING))
    return status


def _release(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> int:
    import time

    from updock.run import Options, run_release

    try:
        holds = run_release(ns.targets, Options())
    except UpdockError as exc:
        sys.stderr.write(f"Error: {exc}\n")
        return EXIT_ERROR
    for hold in holds:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(hold.since))
        what = (
            f"{hold.name}: held back from image {hold.image_id[:12]} by `updock rollback` of "
            f"{', '.join(hold.units)} since {since}"
        )
        print(f"released {what}" if ns.targets else what)
    if not holds:
        print("no image is held back")
    return 0


def _install_units(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> int:
    from updock.units import install

    try:
        written = install(user=ns.user, dest=ns.dest, enable=ns.enable, serve=ns.serve)
    except UpdockError as exc:
        sys.stderr.write(f"Error: {exc}\n")
        return EXIT_ERROR
    for path in written:
        print(f"wrote {path}")
    return 0


# -- the parser --------------------------------------------------------------------------------

_SETTLE_HELP = (
    "How long a restarted container must stay up (and healthy) before its update counts. "
    "A container's io.updock.verify.settle label can raise it. "
    f"[env: UPDOCK_SETTLE_TIME; default: {defaults.SETTLE:g}]"
)


_LOG_LEVEL_HELP = (
    f"Diagnostics shown on stderr: {', '.join(logs.LEVELS)}. info adds each unit's phases "
    f"and their timings, debug each registry request. [env: {logs.ENV_VARIABLE}; default: "
    f"{logs.DEFAULT_LEVEL}]"
)


def _log_level_option(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "--log-level", type=_log_level, metavar="LEVEL", default=default, help=_LOG_LEVEL_HELP
    )


def _format_option(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--format", dest="fmt", metavar="FORMAT", default="", help=help)


def build_parser(command: str | None = None) -> tuple[_Parser, dict[str, _Parser]]:
    """The `updock` command line, and the parser of each command built.

    Args:
        command: build only this command's parser (when it is one): a run needs no other.
    """
    top = _Parser(
        prog="updock",
        description="Keep containers on their newest image, safely. A drop-in replacement for "
        "`podman auto-update` that verifies every update and rolls back what it broke.",
    )
    top.add_argument("--version", action="version", version=f"updock, version {__version__}")
    _log_level_option(top, None)
    commands = top.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=_Parser, prog="updock"
    )
    wanted = [command] if command in _COMMANDS else list(_COMMANDS)
    built = {name: _COMMANDS[name](commands) for name in wanted}
    for sub in built.values():
        # Also after the command; given there, it wins (the top's default must not).
        _log_level_option(sub, argparse.SUPPRESS)
    return top, built


_Subparsers = argparse._SubParsersAction  # the type add_subparsers() returns


def _auto_update_parser(commands: _Subparsers[_Parser]) -> _Parser:
    auto: _Parser = commands.add_parser(
        "auto-update",
        help="Update containers according to their auto-update policy.",
        description="Update containers according to their auto-update policy. Policies are "
        'set with the "io.containers.autoupdate" label ("registry" or "local"); containers '
        'must run in systemd units that create a new container on start (as "podman generate '
        'systemd --new" and Quadlet units do). Prints one row per container: UNIT, CONTAINER, '
        "IMAGE, POLICY and UPDATED (true, false, failed, pending, rolled back). Exits 125 when "
        "anything failed.",
    )
    auto.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    auto.add_argument(
        "--authfile",
        metavar="PATH",
        help="Registry credentials file (containers-auth.json). Default: $REGISTRY_AUTH_FILE. "
        "A container's io.containers.autoupdate.authfile label wins over both.",
    )
    _add_bool(
        auto,
        "--dry-run",
        False,
        "Check for updates and report them as 'pending'; change nothing.",
        filled=True,
    )
    _format_option(
        auto,
        "Output format: 'json', or a Go template such as '{{.Unit}} {{.Updated}}' ('table ...' "
        "adds a header). Fields: Unit, Container, ContainerName, ContainerID, Image, Policy, "
        "Updated.",
    )
    _add_bool(
        auto,
        "--rollback",
        True,
        "Roll back to the previous image when an update fails (--rollback=false to turn off).",
        filled=True,
    )
    _add_bool(
        auto,
        "--tls-verify",
        None,
        "Require HTTPS and verify certificates when contacting registries (default: as "
        "registries.conf says; --tls-verify=false allows plain HTTP).",
        filled=True,
    )
    auto.add_argument("--settle-time", type=_verify_seconds, metavar="SECONDS", help=_SETTLE_HELP)
    auto.add_argument(
        "--verify-timeout",
        type=_verify_seconds,
        metavar="SECONDS",
        help="How long a restarted unit has to become active, running and healthy; health "
        "checks get at least their own start period, interval and retries. Label: "
        "io.updock.verify.timeout. "
        f"[env: UPDOCK_VERIFY_TIMEOUT; default: {defaults.VERIFY_TIMEOUT:g}]",
    )
    _add_bool(
        auto,
        "--keep-previous",
        True,
        "Keep the previous image (tagged localhost/updock-previous/<name>-<hash>) after a "
        "verified update, for `updock rollback`; --keep-previous=false releases it at once.",
        filled=True,
    )
    auto.add_argument(
        "--lock-wait",
        type=_seconds,
        metavar="SECONDS",
        help="How long to wait while another updock run updates this host (0: exit at once). "
        f"[default: {defaults.LOCK_WAIT:g}]",
    )
    auto.add_argument(
        "--podman-timeout",
        type=_timeout,
        metavar="SECONDS",
        help="How long a podman command (inspect, tag, a health check) may take before it is "
        "stopped and counts as failed; one that hangs (a storage lock held elsewhere) must "
        "not hold the run. "
        f"[env: UPDOCK_PODMAN_TIMEOUT; default: {defaults.PODMAN_TIMEOUT:g}]",
    )
    auto.add_argument(
        "--pull-timeout",
        type=_timeout,
        metavar="SECONDS",
        help="How long a pull may take before it is stopped and counts as failed. "
        f"[env: UPDOCK_PULL_TIMEOUT; default: {defaults.PULL_TIMEOUT:g}]",
    )
    auto.add_argument(
        "--restart-concurrency",
        type=_count,
        metavar="N",
        help="Units restarting at once at most (each restart stops and starts containers, "
        "which compete for the CPU). "
        f"[env: UPDOCK_RESTART_CONCURRENCY; default: 1 per core, {defaults.RESTART_CONCURRENCY}]",
    )
    auto.add_argument(
        "--wave-size",
        type=_count,
        metavar="N",
        help="Units of one image name restarted and verified side by side at most, once a first "
        "unit (the canary) verified the new image; each that fails is rolled back on its own. "
        f"[env: UPDOCK_WAVE_SIZE; default: 4 per core, {defaults.WAVE_SIZE}]",
    )
    auto.add_argument(
        "--registry-concurrency",
        type=_count,
        metavar="N",
        help="Requests in flight to one registry at most; checks of different registries run "
        "side by side. "
        f"[env: UPDOCK_REGISTRY_CONCURRENCY; default: {defaults.REGISTRY_CONCURRENCY}]",
    )
    auto.add_argument(
        "--engine",
        type=_engine,
        metavar="ENGINES",
        help="Which engines' containers to update: podman, docker, or both (podman,docker). "
        "auto: podman when it is installed, and Docker when DOCKER_HOST is set or "
        "/var/run/docker.sock exists (a daemon that cannot be reached is an error; podman's "
        "containers are updated all the same). Containers no systemd unit runs (every Docker "
        "container) are recreated: stopped, renamed aside, created again on the new image, "
        "verified, and the old one removed, or put back. [env: UPDOCK_ENGINE; default: auto]",
    )
    _add_bool(
        auto,
        "--watchtower-labels",
        False,
        "Also update containers labelled com.centurylinklabs.watchtower.enable=true (as "
        "io.containers.autoupdate=registry), for hosts coming from Watchtower.",
        filled=True,
    )
    _publish_options(auto)
    auto.set_defaults(handler=_auto_update)
    return auto


def _publish_options(parser: argparse.ArgumentParser) -> None:
    """--notify, --notify-on, --metrics-file (of auto-update and serve)."""
    parser.add_argument(
        "--notify",
        action="append",
        metavar="URL",
        help="Send one message per run that updated, rolled back or failed (see --notify-on): "
        "an http(s):// URL gets a JSON POST; other URLs go to apprise (mailto://, ntfy://, "
        "...; pip install 'updock[notify]'). Repeatable. A failing notifier is a warning, "
        "never a failed run. [env: UPDOCK_NOTIFY, space-separated; config: [notify] urls]",
    )
    parser.add_argument(
        "--notify-on",
        type=_events,
        metavar="EVENTS",
        help="What makes a run notify, comma-separated: updated, rolled-back, failed, "
        "available (a dry run's pending updates). [env: UPDOCK_NOTIFY_ON; config: [notify] "
        "on; default: updated,rolled-back,failed]",
    )
    parser.add_argument(
        "--metrics-file",
        metavar="PATH",
        help="Write Prometheus metrics to PATH after each run, atomically, for node_exporter's "
        "textfile collector (name it *.prom in its folder). [env: UPDOCK_METRICS_FILE; "
        "config: [metrics] file]",
    )


def _rollback_parser(commands: _Subparsers[_Parser]) -> _Parser:
    back: _Parser = commands.add_parser(
        "rollback",
        help="Put a unit's containers back on the images they ran before their last update.",
        description="Put UNIT's containers back on the images they ran before their last "
        "update. updock keeps each container's previous image (tagged "
        "localhost/updock-previous/<name>-<hash>, see `updock previous`) after an update; "
        "this re-tags it under the container's image name, restarts the unit and verifies it. "
        "The rollback sticks: "
        "auto-update leaves each of these image names on its previous image while the "
        "registry still offers the image rolled back from (see `updock release`). Rolling "
        "back a unit that runs its previous images already is an error. Prints the report "
        '(UPDATED is "rolled back", or "failed"); exits 125 on error.',
    )
    back.add_argument("unit", metavar="UNIT")
    _format_option(back, "As for auto-update.")
    back.add_argument("--settle-time", type=_verify_seconds, metavar="SECONDS", help=_SETTLE_HELP)
    back.set_defaults(handler=_rollback)
    return back


def _previous_parser(commands: _Subparsers[_Parser]) -> _Parser:
    prev: _Parser = commands.add_parser(
        "previous",
        help="List the previous image kept for each auto-updated container.",
        description="List every auto-updated container with the name its previous image is "
        "kept under (localhost/updock-previous/<name>-<hash>, safe from `podman image prune`), "
        "which `updock rollback UNIT` goes back to.",
    )
    _format_option(prev, "'table' (the default) or 'json'.")
    prev.set_defaults(handler=_previous)
    return prev


def _release_parser(commands: _Subparsers[_Parser]) -> _Parser:
    release: _Parser = commands.add_parser(
        "release",
        help="Let auto-update update image names that `updock rollback` held back.",
        description="`updock rollback UNIT` holds each image name of UNIT back: auto-update "
        "leaves it on the image it went back to (reported false) while the registry still "
        "offers the image it was rolled back from, and updates it again once the registry "
        "offers another one. This ends such holds at once, for the image names given (as the "
        "report's IMAGE column shows them) or for every name held back by rolling back a "
        "UNIT given. Without an argument, lists the holds. Exits 125 when an argument matches "
        "no hold (then none is released).",
    )
    release.add_argument("targets", nargs="*", metavar="UNIT|IMAGE")
    release.set_defaults(handler=_release)
    return release


def _history_parser(commands: _Subparsers[_Parser]) -> _Parser:
    history: _Parser = commands.add_parser(
        "history",
        help="List the updates, rollbacks and failures of earlier runs.",
        description="List what earlier runs did, oldest first: every container updated, rolled "
        "back (also by `updock rollback`) or failed, with its image, old and new digest, "
        "outcome, duration and, for failures, what was seen; and errors of runs that named no "
        "container. Kept in history.jsonl in the state folder (about 1 MiB, then rotated; three "
        "older files are kept).",
    )
    history.add_argument(
        "--since",
        metavar="DURATION",
        help="Only what happened in the last DURATION: 90s, 15m, 2h, 7d, 1w, 1h30m.",
    )
    _format_option(history, "'table' (the default) or 'json'.")
    history.set_defaults(handler=_history)
    return history


def _serve_parser(commands: _Subparsers[_Parser]) -> _Parser:
    serve: _Parser = commands.add_parser(
        "serve",
        help="Run auto-update on a schedule, with an HTTP API (status, history, metrics).",
        description="Run `updock auto-update` on a schedule (a cron expression, plus random "
        "jitter), and serve an HTTP API: POST /v1/update (begin a run now; 409 while one "
        "runs), GET /v1/status, GET /v1/history, GET /metrics, GET /healthz, GET "
        "/v1/openapi.json. Every route but /healthz needs the bearer token of --token-file. "
        "Runs never overlap, nor with other updock runs on the host (the same lock). The "
        "runs take their options from the configuration file's [auto-update] table and "
        "UPDOCK_* variables. SIGTERM finishes the unit being updated and stops. "
        "`updock install-units --serve` installs updock-serve.service.",
    )
    serve.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="The API's address. [env: UPDOCK_LISTEN; config: [serve] listen; default: "
        "127.0.0.1:8425]",
    )
    serve.add_argument(
        "--token-file",
        metavar="PATH",
        help="A file (not readable by others) holding the API's bearer token. [env: "
        "UPDOCK_TOKEN_FILE; config: [serve] token-file]",
    )
    serve.add_argument(
        "--schedule",
        metavar="CRON",
        help="When runs are due, in local time: five cron fields ('0 4 * * *') or @daily, "
        "@hourly, ...; 'off': only on POST /v1/update. [env: UPDOCK_SCHEDULE; config: [serve] "
        "schedule; default: @daily]",
    )
    serve.add_argument(
        "--jitter",
        type=_seconds,
        metavar="SECONDS",
        help="Delay each scheduled run by a random time below this. [env: UPDOCK_JITTER; "
        "config: [serve] jitter; default: 900]",
    )
    _add_bool(
        serve,
        "--dry-run",
        False,
        "Scheduled runs only check (report 'pending', notify with --notify-on available); "
        "POST /v1/update may still ask for a real run. [config: [serve] dry-run]",
        filled=True,
    )
    _publish_options(serve)
    serve.set_defaults(handler=_serve)
    return serve


def _install_units_parser(commands: _Subparsers[_Parser]) -> _Parser:
    units: _Parser = commands.add_parser(
        "install-units",
        help="Install updock-auto-update.service and .timer (or updock-serve.service).",
        description="Install updock-auto-update.service and .timer (daily, randomized delay, "
        "persistent); with --serve, updock-serve.service instead (`updock serve`: a schedule "
        "of its own and the HTTP API).",
    )
    units.add_argument(
        "--serve",
        action="store_true",
        help="Install updock-serve.service (and enable it) instead of the timer.",
    )
    units.add_argument(
        "--user", action="store_true", help="Install for the user's systemd manager (rootless)."
    )
    units.add_argument(
        "--dest",
        metavar="DIR",
        help="Folder to write the units to. Default: /etc/systemd/system, or "
        "~/.config/systemd/user with --user.",
    )
    units.add_argument(
        "--enable",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Reload systemd and enable and start the timer, or the service with --serve "
        "(default: --enable).",
    )
    units.set_defaults(handler=_install_units)
    return units


_COMMANDS: dict[str, Callable[[_Subparsers[_Parser]], _Parser]] = {
    "auto-update": _auto_update_parser,
    "rollback": _rollback_parser,
    "previous": _previous_parser,
    "release": _release_parser,
    "history": _history_parser,
    "serve": _serve_parser,
    "install-units": _install_units_parser,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `updock` command line; its exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    at = command_index(args)  # after the global flags
    command = args[at] if at < len(args) else None
    parser, commands = build_parser(command)
    sub = commands.get(command) if command else None
    if sub is not None:
        args = [*args[: at + 1], *_normalize_bools(sub, args[at + 1 :])]
    ns, unknown = parser.parse_known_args(args)
    if unknown:
        (sub or parser).error(f"unknown flag: {unknown[0]}")
    if ns.command is None:
        parser.error("missing command 'updock COMMAND'")
    _env_default(
        sub or parser,
        ns,
        "log_level",
        logs.ENV_VARIABLE,
        _log_level,
        logs.LEVELS[logs.DEFAULT_LEVEL],
    )
    handler: Callable[[argparse.ArgumentParser, argparse.Namespace], int] = ns.handler
    try:
        return handler(sub or parser, ns)
    except KeyboardInterrupt:  # Ctrl-C: a word, not a traceback (an update is journaled)
        sys.stderr.write("Error: interrupted\n")
        return EXIT_INTERRUPTED
