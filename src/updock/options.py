"""Option records shared by the run, its actions and verification."""

from __future__ import annotations

from dataclasses import dataclass

from updock.defaults import SETTLE, VERIFY_TIMEOUT


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
