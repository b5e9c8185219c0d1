"""Service managers: restart the unit that runs a container and wait for the job's result.

This package imports only `updock.errors` (and jeepney, in `dbus`); the core never imports it.
The run layer depends on the `ServiceManager` protocol, so its tests can pass a double, while the
real implementation is `SystemdManager` (systemd over D-Bus), obtained with `connect()`.
"""

from __future__ import annotations

from typing import Protocol

from updock.systemd.dbus import SystemdManager, connect

__all__ = ["ServiceManager", "SystemdManager", "connect"]


class ServiceManager(Protocol):
    """What updock needs from a service manager."""

    def restart(self, unit: str) -> None:
        """Restart `unit` and wait until its job ends.

        Raises:
            ServiceError: the job's result is not "done" (message shape as podman's:
                `restarting systemd unit "U" failed: expected "done" but received "failed"`),
                the unit does not exist, or the manager could not be asked in time.
        """

    def active_state(self, unit: str) -> str:
        """The unit's ActiveState: "active", "failed", "inactive", "activating", ...

        Raises:
            ServiceError: the manager could not be asked.
        """

    def describe(self, unit: str) -> str:
        """What the manager says of the unit (states, result, exit status), for messages.

        Raises:
            ServiceError: the manager could not be asked.
        """
        ...

    def close(self) -> None:
        """Release the connection."""
