"""Diagnostics on stderr, at podman's log levels (`updock --log-level LEVEL`, `$UPDOCK_LOG_LEVEL`).

Modules log through `logging.getLogger(__name__)`, below the `updock` logger; `configure` gives
that logger its level and a handler that writes `updock: LEVEL: message` lines to stderr. The CLI
calls it only once a run has work to do: a run with nothing to do ends before `logging` is even
imported (about 5 ms, of a start-up budget of 26). So this module imports nothing at the top.

What each level shows:

- error (the default): what went wrong, also what a rollback repaired (what verification saw,
  the unit's last journal lines), and an update a killed run left behind;
- warning: also what updock worked around (an auth file entry it skipped, ...);
- info: also each unit's phases and how long each took (checked, pulled, restarted, verified,
  rolled back), and the registry requests tried again;
- debug, trace: also each registry request (method, URL without secrets, status, time) and
  where credentials were found.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not typing's: importing typing costs start-up time
if TYPE_CHECKING:
    import logging

#: podman's levels (logrus's names, as `podman --log-level` takes them) and the `logging` level
#: each stands for. logrus's fatal and panic end the program when logged; here they only filter.
LEVELS = {
    "trace": 5,
    "debug": 10,
    "info": 20,
    "warn": 30,
    "warning": 30,
    "error": 40,
    "fatal": 50,
    "panic": 50,
}

#: The level when neither the flag nor the variable gives one.
DEFAULT_LEVEL = "error"

#: The environment variable read when `--log-level` is not given.
ENV_VARIABLE = "UPDOCK_LOG_LEVEL"

#: The `logging` level below DEBUG that `trace` stands for.
TRACE = LEVELS["trace"]

#: How each level is named in a line (the name podman prints for it).
_NAMES = {5: "trace", 10: "debug", 20: "info", 30: "warning", 40: "error", 50: "fatal"}

_HANDLER_NAME = "updock-stderr"


def parse_level(text: str) -> int:
    """The `logging` level of one of podman's level names (any case).

    Raises:
        ValueError: no such level; the message lists the levels (for a usage error).
    """
    level = LEVELS.get(text.lower())
    if level is None:
        raise ValueError(f"log level {text!r} is not supported, choose from: {', '.join(LEVELS)}")
    return level


class _Stderr:
    """Writes to whatever `sys.stderr` is at the time (a test may have replaced it)."""

    def write(self, text: str) -> None:
        sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def level_name(level: int) -> str:
    """podman's name of a `logging` level (of the nearest named level below it)."""
    return next((_NAMES[n] for n in sorted(_NAMES, reverse=True) if level >= n), "trace")


def _name_level(record: logging.LogRecord) -> bool:
    """A handler filter: gives the record its level as podman names it, for the format."""
    record.__dict__["podman_level"] = level_name(record.levelno)
    return True


def configure(level: int) -> None:
    """Show updock's records of `level` and above on stderr, one `updock: LEVEL: msg` line each.

    Calling it again replaces the handler it added before (and nothing else).

    Args:
        level: a `logging` level, as `parse_level` returns.
    """
    import logging

    logger = logging.getLogger("updock")
    for old in [h for h in logger.handlers if h.get_name() == _HANDLER_NAME]:
        logger.removeHandler(old)
    handler = logging.StreamHandler(_Stderr())
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(_name_level)
    handler.setFormatter(logging.Formatter("updock: %(podman_level)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)


def show_warnings(logger: logging.Logger) -> None:
    """Let `logger`'s warnings through even at the default level (error): for what is part of
    a run's result without failing it (a notification that failed, a history not written)."""
    import logging

    parent = logging.getLogger("updock").getEffectiveLevel()
    logger.setLevel(min(parent, logging.WARNING))
