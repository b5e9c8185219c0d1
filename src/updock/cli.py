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
    from typing import Any

    from updock.options import SafetyOptions
    from updock.run import RunResult

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


def _add_bool(parser: argparse.ArgumentParser, name: str, default: bool | None, help: str) -> None:
    shown = "" if default is None else f" (default: {str(default).lower()})"
    parser.add_argument(
        name,
        action=_BoolFlag,
        type=_bool,
        default=default,
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
    variable: str,
    convert: Callable[[str], object],
    fallback: object,
) -> None:
    """Fill an option the user did not give from `$variable`, else `fallback`."""
    if getattr(namespace, dest) is not None:
        return
    raw = os.environ.get(variable)
    if raw is None or raw == "":
        setattr(namespace, dest, fallback)
        return
    try:
        setattr(namespace, dest, convert(raw))
    except argparse.ArgumentTypeError as exc:
        parser.error(f"${variable}: {exc}")


def _report(run: Callable[[], RunResult | None], fmt: str) -> int:
    """Run, print the report in `fmt` on stdout and the errors on stderr; 125 on any error.

    `run` returns None when there was nothing to do (no report at all, as podman).
    """
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
        # A run stopped by a signal says so in its status (130, 143), as a shell would.
        from updock.errors import Interrupted

        stopped = [e for e in errors if isinstance(e, Interrupted)]
        return stopped[0].exit_code if stopped else EXIT_ERROR
    return 0


# -- commands ----------------------------------------------------------------------------------


def fill_from_environment(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> None:
    """Options of `auto-update` the user did not give: from `UPDOCK_*`, else the defaults."""
    _env_default(parser, ns, "settle_time", "UPDOCK_SETTLE_TIME", _verify_seconds, defaults.SETTLE)
    _env_default(
        parser,
        ns,
        "verify_timeout",
        "UPDOCK_VERIFY_TIMEOUT",
        _verify_seconds,
        defaults.VERIFY_TIMEOUT,
    )
    _env_default(
        parser, ns, "podman_timeout", "UPDOCK_PODMAN_TIMEOUT", _timeout, defaults.PODMAN_TIMEOUT
    )
    _env_default(parser, ns, "pull_timeout", "UPDOCK_PULL_TIMEOUT", _timeout, defaults.PULL_TIMEOUT)
    _env_default(
        parser,
        ns,
        "restart_concurrency",
        "UPDOCK_RESTART_CONCURRENCY",
        _count,
        defaults.RESTART_CONCURRENCY,
    )
    _env_default(parser, ns, "wave_size", "UPDOCK_WAVE_SIZE", _count, defaults.WAVE_SIZE)
    _env_default(
        parser,
        ns,
        "registry_concurrency",
        "UPDOCK_REGISTRY_CONCURRENCY",
        _count,
        defaults.REGISTRY_CONCURRENCY,
    )


def _auto_update(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> int:
    if ns.args:
        parser.error("`updock auto-update` takes no arguments")
    fill_from_environment(parser, ns)
    authfile: str | None = ns.authfile
    if authfile is None:
        authfile = os.environ.get("REGISTRY_AUTH_FILE") or None
    elif not os.path.exists(authfile):
        parser.error(
            f"--authfile: credential file is not accessible: {authfile}: no such file or directory"
        )
    if ns.tls_verify is False:
        import warnings

        # The user asked for unverified TLS: urllib3's warning per request is only noise.
        warnings.filterwarnings("ignore", message="Unverified HTTPS request")

    engines = _engines(parser, ns.engine or os.environ.get("UPDOCK_ENGINE") or "auto")

    def run() -> RunResult | None:
        from updock.prefetch import docker_in_play, nothing_to_do

        if not docker_in_play(engines) and nothing_to_do(
            dry_run=ns.dry_run, timeout=ns.podman_timeout
        ):
            return None
        logs.configure(ns.log_level)  # only now: importing logging costs start-up time
        from updock.run import Options, run_auto_update

        options = Options(
            authfile=authfile,
            dry_run=ns.dry_run,
            rollback=ns.rollback,
            tls_verify=ns.tls_verify,
            safety=_safety(ns.settle_time, ns.verify_timeout, ns.keep_previous),
            lock_wait=ns.lock_wait,
            registry_concurrency=ns.registry_concurrency,
            podman_timeout=ns.podman_timeout,
            pull_timeout=ns.pull_timeout,
            restart_concurrency=ns.restart_concurrency,
            wave_size=ns.wave_size,
            engines=engines,
            watchtower=ns.watchtower_labels,
        )
        from updock.stopping import StopRequest

        stop = StopRequest()
        with stop.on_signals():
            return run_auto_update(options, stop=stop)

    return _report(run, ns.fmt)


def _engines(parser: argparse.ArgumentParser, text: str) -> tuple[str, ...] | None:
    """`--engine`'s value: None for `auto`, else the engines named (comma separated)."""
    if text == "auto":
        return None
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in ("podman", "docker")]
    if unknown or not names:
        parser.error(f"--engine: {text!r} is not auto, or podman and/or docker (comma separated)")
    return names


def _safety(settle: float, verify_timeout: float, keep_previous: bool) -> SafetyOptions:
    from updock.options import SafetyOptions

    return SafetyOptions(settle=settle, verify_timeout=verify_timeout, keep_previous=keep_previous)


def _rollback(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> int:
    _env_default(parser, ns, "settle_time", "UPDOCK_SETTLE_TIME", _verify_seconds, defaults.SETTLE)

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

    return _report(run, ns.fmt)


def _previous(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> int:
    from updock.run import Options, list_previous

    if ns.fmt not in ("", "table", "json"):
        parser.error(f"--format: {ns.fmt!r} is not json or table")
    try:
        kept = list_previous(Options())
    except UpdockError as exc:
        sys.stderr.write(f"Error: {exc}\n")
        return EXIT_ERROR
    if ns.fmt == "json":
        import json

        sys.stdout.write(json.dumps([k.as_dict() for k in kept], indent=4) + "\n")
        return 0
    from updock.core.report import TAB_MINWIDTH, TAB_PADDING
    from updock.core.tabwriter import tabwrite

    lines = ["UNIT\tCONTAINER\tIMAGE\tPREVIOUS\tPREVIOUS ID"]
    lines += [
        f"{k.unit}\t{k.container_name}\t{k.image}\t{k.previous}\t{k.previous_image_id[:12] or '-'}"
        for k in kept
    ]
    sys.stdout.write(tabwrite("\n".join(lines) + "\n", minwidth=TAB_MINWIDTH, padding=TAB_PADDING))
    return 0


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
        written = install(user=ns.user, dest=ns.dest, enable=ns.enable)
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
        auto, "--dry-run", False, "Check for updates and report them as 'pending'; change nothing."
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
    )
    _add_bool(
        auto,
        "--tls-verify",
        None,
        "Require HTTPS and verify certificates when contacting registries (default: as "
        "registries.conf says; --tls-verify=false allows plain HTTP).",
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
    )
    auto.add_argument(
        "--lock-wait",
        type=_seconds,
        default=defaults.LOCK_WAIT,
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
    )
    auto.set_defaults(handler=_auto_update)
    return auto


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


def _install_units_parser(commands: _Subparsers[_Parser]) -> _Parser:
    units: _Parser = commands.add_parser(
        "install-units",
        help="Install updock-auto-update.service and .timer.",
        description="Install updock-auto-update.service and .timer (daily, randomized delay, "
        "persistent).",
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
        help="Reload systemd and enable and start the timer (default: --enable).",
    )
    units.set_defaults(handler=_install_units)
    return units


_COMMANDS: dict[str, Callable[[_Subparsers[_Parser]], _Parser]] = {
    "auto-update": _auto_update_parser,
    "rollback": _rollback_parser,
    "previous": _previous_parser,
    "release": _release_parser,
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
