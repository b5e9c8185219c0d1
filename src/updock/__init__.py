"""updock: keeps containers on their newest image, safely.

Layers, and who may import whom (an import that goes upwards is a bug):

    entry.py          the `updock` command: spawns `podman ps` (prefetch.py) before anything else
    cli.py            the thin shell for users: parses flags, prints, maps errors to exit status
    config.py         the TOML configuration file (what flags and UPDOCK_* do not say)
    service/          `updock serve`: runs on a schedule, and the HTTP API
    publish.py        after a run: its history, metrics and notification
    notify/           notifications: the message, the JSON webhook, apprise
    history.py        the update history (JSON lines in the state folder)
    metrics.py        metrics in Prometheus' format (totals in the state folder, the textfile)
    run.py            one auto-update run: drives the core's plan with real engines/services
    record.py         what happened in a run, per container (collected from the plan's actions)
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
