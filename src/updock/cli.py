"""The command line: parses flags, calls the run, prints the report, maps errors to exit status."""

from __future__ import annotations

import click

from updock import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="updock")
def cli() -> None:
    """Keep containers on their newest image, safely.

    A drop-in replacement for `podman auto-update` that verifies every update and rolls back
    what it broke.
    """


def main() -> None:
    """Entry point of the `updock` console script."""
    cli()
