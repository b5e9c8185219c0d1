"""The `updock` command's entry point: as little as possible before the real work starts.

For `auto-update`, `podman ps` is spawned first thing (`updock.prefetch`), before the command
line is even parsed: with nothing to update, listing containers is most of a run.
"""

from __future__ import annotations

import os
import sys

from updock import prefetch  # imports nothing but os

TYPE_CHECKING = False  # not typing's: importing typing costs start-up time
if TYPE_CHECKING:
    from typing import NoReturn


def main() -> NoReturn:
    """Start listing containers for `auto-update` at once, then run the CLI."""
    args = sys.argv[1:]
    at = prefetch.command_index(args)
    if args[at : at + 1] == ["auto-update"] and "-h" not in args and "--help" not in args:
        prefetch.start_listing()
    from updock.cli import main as cli_main

    code = cli_main()
    if prefetch.ENDED_EARLY:
        # Nothing was done, so there is nothing to clean up: skip the interpreter's teardown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)
