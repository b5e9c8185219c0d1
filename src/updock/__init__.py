"""updock: keeps containers on their newest image, safely.

Layers, and who may import whom (an import that goes upwards is a bug):

    entry.py          the `updock` command: spawns `podman ps` (prefetch.py) before anything else
    cli.py            the thin shell for users: parses flags, prints, maps errors to exit status
    run.py            one auto-update run: drives the core's plan with real engines/services
    phases.py         the info-level log of each unit's phases and their timings
    engines/          container engines (podman): list containers and images, pull, tag
    registry/         registry digest checks, credentials, TLS
    systemd/          service managers (systemd over D-Bus): restart a unit, wait for its job
    core/             pure decisions and values: no I/O, imports nothing above it
    errors.py         the exception tree, importable from every layer
    statefolder.py    the state folder's files read and written safely; imports only errors.py,
                      importable from every layer but the core
    prefetch.py       that `podman ps`, and whether a run has anything to do, decided before the
                      rest is imported; a leaf (imports nothing of updock), importable from every
                      layer but the core
    logs.py           `--log-level` and the format of diagnostics on stderr; a leaf, like
                      prefetch.py (modules log through `logging.getLogger(__name__)`)

`testing/` holds the lab (real podman, registry and systemd) used by the tests and the demo;
nothing in the package imports it.
"""

__version__ = "0.1.0"
