"""Where a run is killed while a container follows a recreated one into its network namespace,
and what the next run's repair then says: shared by the Docker and the unit-less podman tests."""

from __future__ import annotations

from updock.testing.lab import ImageKind

#: (crash point, vpn's new image, the repair's outcome) for `UPDOCK_TEST_CRASH_AT`.
FOLLOW_CRASHES = [
    ("step-creating:vpn", ImageKind.HEALTHY, "rolled back"),  # app untouched, restarted
    ("step-stopping:app", ImageKind.HEALTHY, "rolled back"),
    ("step-renaming:app", ImageKind.HEALTHY, "rolled back"),
    ("step-creating:app", ImageKind.HEALTHY, "rolled back"),
    ("step-starting:app", ImageKind.HEALTHY, "verified and completed"),
    ("step-verified:app", ImageKind.HEALTHY, "verified and completed"),
    ("step-restoring:app", ImageKind.EXITS_AT_ONCE, "rolled back"),
]
