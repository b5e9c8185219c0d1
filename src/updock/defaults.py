"""Default values and option records shared by the CLI and the shell.

A leaf module, cheap to import: `updock --help` and a run with nothing to do import no more.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Seconds a restarted container must stay up (and healthy) before its update counts.
SETTLE = 5.0
#: Seconds a restarted unit has to become verified.
VERIFY_TIMEOUT = 60.0
#: Seconds a run waits for another run's lock.
LOCK_WAIT = 600.0
#: Registry requests in flight at once, per registry.
REGISTRY_CONCURRENCY = 8


@dataclass(frozen=True)
class SafetyOptions:
    """How updates are verified and what is kept.

    Attributes:
        settle: seconds a restarted container must stay up.
        verify_timeout: seconds a restarted unit has to become verified.
        keep_previous: keep the previous image's updock tag after a verified update (until the
            next one), so `updock rollback UNIT` can go back; False releases it at once.
    """

    settle: float = SETTLE
    verify_timeout: float = VERIFY_TIMEOUT
    keep_previous: bool = True
