"""Default values shared by the CLI and the shell.

A leaf module that imports nothing: the CLI needs these before it knows whether there is anything
to do (`updock.prefetch`).
"""

from __future__ import annotations

import os

#: Seconds a restarted container must stay up (and healthy) before its update counts.
SETTLE = 5.0
#: Seconds a restarted unit has to become verified.
VERIFY_TIMEOUT = 60.0
#: The longest settle time or verification timeout a flag or label may ask for (a day).
MAX_VERIFY_SECONDS = 86400.0
#: Seconds a run waits for another run's lock.
LOCK_WAIT = 600.0
#: Registry requests in flight at once, per registry.
REGISTRY_CONCURRENCY = 8
#: Seconds a podman command (inspect, tag, a health check run, ...) may take before it is killed.
PODMAN_TIMEOUT = 300.0
#: Seconds a pull may take before it is killed.
PULL_TIMEOUT = 1800.0
#: Units restarting at once at most, in a run: each restart is a podman stop and run, which
#: compete for the CPU and stretch each other's downtime. One per core: measured on 2 cores
#: (bench/update.py, 40 units), 1 restart at a time gave 2.5 restarts a second, 2 gave 3.7,
#: 4 gave 3.4 with twice the downtime.
RESTART_CONCURRENCY = os.cpu_count() or 1
#: Units of one image name restarted and verified side by side at most, after their canary.
WAVE_SIZE = 4 * (os.cpu_count() or 1)
