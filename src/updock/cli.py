"""The command line: parses flags, calls the run, prints the report, maps errors to exit status.

Exit statuses follow podman: 0 when everything went well (or there was nothing to do), 125 when
anything failed (a flag, a container, a check, a restart); the report is printed either way.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

from updock import __version__, defaults
from updock.defaults import SafetyOptions
from updock.errors import EXIT_ERROR, UpdockError

if TYPE_CHECKING:
    from updock.run import RunResult

_F = TypeVar("_F", bound=Callable[..., Any])

CONTEXT = {"help_option_names": ["-h", "--help"]}


def format_errors(errors: Sequence[BaseException]) -> str:
    """podman's rendering of a run's errors (errorhandling.JoinErrors), without "Error: "."""
    if len(errors) == 1:
        return str(errors[0])
    items = "".join(f"\n\t* {e}" for e in errors)
    return f"{len(errors)} errors occurred:{items}"


class _Group(click.Group):
    """A group whose usage errors exit with podman's status 125 instead of click's 2."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(EXIT_ERROR)
        except click.ClickException as exc:
            exc.show()
            sys.exit(EXIT_ERROR)


def _bool_option(name: str, default: bool | None, help: str) -> Callable[[_F], _F]:
    """A boolean flag that also takes `=true`/`=false`, like podman's (Go pflag) flags."""
    return click.option(
        name,
        type=click.BOOL,
        is_flag=False,
        flag_value=True,
        default=default,
        show_default=default is not None,
        metavar="[=true|false]",
        help=help,
    )


_settle_option = click.option(
    "--settle-time",
    type=click.FloatRange(min=0),
    default=defaults.SETTLE,
    show_default=True,
    envvar="UPDOCK_SETTLE_TIME",
    metavar="SECONDS",
    help="How long a restarted container must stay up (and healthy) before its update counts. "
    "A container's io.updock.verify.settle label can raise it. [env: UPDOCK_SETTLE_TIME]",
)


def _report(run: Callable[[], RunResult], fmt: str) -> None:
    """Run, print the report in `fmt` on stdout and the errors on stderr; exit 125 on any."""
    errors: list[BaseException] = []
    try:
        if fmt not in ("", "json"):
            from updock.core.report import format_report

            format_report([], fmt)  # a bad template fails before anything changes
        result = run()
        errors = list(result.errors)
        if result.rows:
            from updock.core.report import format_report

            sys.stdout.write(format_report(result.rows, fmt))
            sys.stdout.flush()
    except UpdockError as exc:
        errors = [exc]
    if errors:
        click.echo(f"Error: {format_errors(errors)}", err=True)
        sys.exit(EXIT_ERROR)


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="updock")
def cli() -> None:
    """Keep containers on their newest image, safely.

    A drop-in replacement for `podman auto-update` that verifies every update and rolls back
    what it broke.
    """


@cli.command("auto-update", context_settings=CONTEXT)
@click.argument("args", nargs=-1, metavar="")
@click.option(
    "--authfile",
    metavar="PATH",
    default=None,
    help="Registry credentials file (containers-auth.json). Default: $REGISTRY_AUTH_FILE. "
    "A container's io.containers.autoupdate.authfile label wins over both.",
)
@_bool_option("--dry-run", False, "Check for updates and report them as 'pending'; change nothing.")
@click.option(
    "--format",
    "fmt",
    metavar="FORMAT",
    default="",
    help="Output format: 'json', or a Go template such as '{{.Unit}} {{.Updated}}' "
    "('table ...' adds a header). Fields: Unit, Container, ContainerName, ContainerID, Image, "
    "Policy, Updated.",
)
@_bool_option(
    "--rollback",
    True,
    "Roll back to the previous image when an update fails (--rollback=false to turn off).",
)
@_bool_option(
    "--tls-verify",
    None,
    "Require HTTPS and verify certificates when contacting registries "
    "(default: as registries.conf says; --tls-verify=false allows plain HTTP).",
)
@_settle_option
@click.option(
    "--verify-timeout",
    type=click.FloatRange(min=0),
    default=defaults.VERIFY_TIMEOUT,
    show_default=True,
    envvar="UPDOCK_VERIFY_TIMEOUT",
    metavar="SECONDS",
    help="How long a restarted unit has to become active, running and healthy; health checks "
    "get at least their own start period, interval and retries. Label: "
    "io.updock.verify.timeout. [env: UPDOCK_VERIFY_TIMEOUT]",
)
@_bool_option(
    "--keep-previous",
    True,
    "Keep the previous image (tagged localhost/updock-previous/<container>) after a verified "
    "update, for `updock rollback`; --keep-previous=false releases it at once.",
)
@click.option(
    "--lock-wait",
    type=click.FloatRange(min=0),
    default=defaults.LOCK_WAIT,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait while another updock run updates this host (0: exit at once).",
)
@click.option(
    "--registry-concurrency",
    type=click.IntRange(min=1),
    default=defaults.REGISTRY_CONCURRENCY,
    show_default=True,
    envvar="UPDOCK_REGISTRY_CONCURRENCY",
    metavar="N",
    help="Requests in flight to one registry at most; checks of different registries run "
    "side by side. [env: UPDOCK_REGISTRY_CONCURRENCY]",
)
def auto_update(
    args: tuple[str, ...],
    authfile: str | None,
    dry_run: bool,
    fmt: str,
    rollback: bool,
    tls_verify: bool | None,
    settle_time: float,
    verify_timeout: float,
    keep_previous: bool,
    lock_wait: float,
    registry_concurrency: int,
) -> None:
    """Update containers according to their auto-update policy.

    Policies are set with the "io.containers.autoupdate" label ("registry" or "local");
    containers must run in systemd units that create a new container on start (as
    "podman generate systemd --new" and Quadlet units do). Prints one row per container:
    UNIT, CONTAINER, IMAGE, POLICY and UPDATED (true, false, failed, pending, rolled back).
    Exits 125 when anything failed.
    """
    # Imported here so that `updock --help` does not pay for the registry and D-Bus stacks.
    from updock.run import Options, run_auto_update

    if args:
        raise click.UsageError("`updock auto-update` takes no arguments")
    if tls_verify is False:
        # The user asked for unverified TLS: urllib3's warning per request is only noise.
        warnings.filterwarnings("ignore", message="Unverified HTTPS request")
    if authfile is None:
        authfile = os.environ.get("REGISTRY_AUTH_FILE") or None
    elif not os.path.exists(authfile):
        raise click.BadParameter(
            f"credential file is not accessible: {authfile}: no such file or directory",
            param_hint="--authfile",
        )
    safety = SafetyOptions(
        settle=settle_time, verify_timeout=verify_timeout, keep_previous=keep_previous
    )
    options = Options(
        authfile=authfile,
        dry_run=dry_run,
        rollback=rollback,
        tls_verify=tls_verify,
        safety=safety,
        lock_wait=lock_wait,
        registry_concurrency=registry_concurrency,
    )
    _report(lambda: run_auto_update(options), fmt)


@cli.command("rollback", context_settings=CONTEXT)
@click.argument("unit")
@click.option("--format", "fmt", metavar="FORMAT", default="", help="As for auto-update.")
@_settle_option
def rollback(unit: str, fmt: str, settle_time: float) -> None:
    """Put UNIT's containers back on the images they ran before their last update.

    updock keeps each container's previous image (tagged localhost/updock-previous/<name>)
    after an update; this re-tags it under the container's image name, restarts the unit and
    verifies it. Prints the report (UPDATED is "rolled back", or "failed"); exits 125 on error.
    """
    from updock.run import Options, run_rollback

    _report(lambda: run_rollback(unit, Options(safety=SafetyOptions(settle=settle_time))), fmt)


@cli.command("install-units", context_settings=CONTEXT)
@click.option("--user", is_flag=True, help="Install for the user's systemd manager (rootless).")
@click.option(
    "--dest",
    metavar="DIR",
    default=None,
    help="Folder to write the units to. Default: /etc/systemd/system, or "
    "~/.config/systemd/user with --user.",
)
@click.option(
    "--enable/--no-enable",
    default=True,
    show_default=True,
    help="Reload systemd and enable and start the timer.",
)
def install_units(user: bool, dest: str | None, enable: bool) -> None:
    """Install updock-auto-update.service and .timer (daily, randomized delay, persistent)."""
    from updock.units import install

    written = install(user=user, dest=dest, enable=enable)
    for path in written:
        click.echo(f"wrote {path}")


def main() -> None:
    """Entry point of the `updock` console script."""
    cli()
