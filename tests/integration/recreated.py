"""What the Docker and the unit-less podman tests of recreated containers share: where a run is
killed while a container follows a recreated one into its network namespace (and what the next
run's repair then says), and how two inspected configurations are compared."""

from __future__ import annotations

from typing import Any

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


def same_configuration(old: Any, new: Any) -> None:
    """Two comparable configurations (inspect objects without what differs between any two
    containers) are equal: item by item, for a readable failure."""
    assert sorted(new) == sorted(old)
    for key in sorted(old):
        if isinstance(old[key], dict):
            for sub in sorted(set(old[key]) | set(new[key])):
                assert (key, sub, new[key].get(sub)) == (key, sub, old[key].get(sub))
        assert (key, new[key]) == (key, old[key])
