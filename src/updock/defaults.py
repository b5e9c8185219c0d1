"""Default values shared by the CLI and the shell (a leaf module: cheap to import)."""

#: Seconds a restarted container must stay up (and healthy) before its update counts.
SETTLE = 5.0
#: Seconds a restarted unit has to become verified.
VERIFY_TIMEOUT = 60.0
#: Seconds a run waits for another run's lock.
LOCK_WAIT = 600.0
