"""The `updock` command's entry point: as little as possible before the real work starts.

For `auto-update`, `podman ps` is started first thing, before the rest of updock (click, the
core, the engine) is imported: with nothing to update, listing containers is most of a run, and
this way it overlaps with the imports. `updock.engines.podman` takes the output from `PREFETCHED`.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys

#: The arguments of the prefetched `podman ps`, and the process (0 or 1 of them).
PS_ARGS = ("ps", "--no-trunc", "--format", "json")
PREFETCHED: list[subprocess.Popen[str]] = []


def prefetch_listing() -> None:
    """Start `podman ps` now, with this process's environment."""
    with contextlib.suppress(OSError):  # the engine's own call reports it
        PREFETCHED.append(
            subprocess.Popen(
                ["podman", *PS_ARGS],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
            )
        )


def main() -> None:
    """Start listing containers for `auto-update` at once, then run the CLI."""
    args = sys.argv[1:]
    if args[:1] == ["auto-update"] and "-h" not in args and "--help" not in args:
        prefetch_listing()
    from updock.cli import main as cli_main

    cli_main()
