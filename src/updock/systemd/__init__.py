"""Service managers: restart the unit that runs a container and wait for the job's result.

This package imports only `updock.errors` (and jeepney, in `dbus`); the core never imports it.
The run layer depends on the `ServiceManager` protocol, so its tests can pass a double, while the
real implementation is `SystemdManager` (systemd over D-Bus), obtained with `connect()`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from updock.systemd.dbus import SystemdManager

__all__ = ["ServiceConnection", "ServiceManager", "SystemdManager", "connect"]


def connect(user: bool | None = None, timeout: float = 300) -> SystemdManager:
    """Connect to systemd (see `updock.systemd.dbus.connect`); imports jeepney only now."""
    from updock.systemd.dbus import connect as dbus_connect

    return dbus_connect(user=user, timeout=timeout)


def __getattr__(name: str) -> object:
    # `SystemdManager` stays importable from here without importing jeepney at start-up.
    if name == "SystemdManager":
        from updock.systemd.dbus import SystemdManager

        return SystemdManager
    raise AttributeError(name)


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

    def job_pending(self, unit: str) -> bool:
        """Whether a job of the unit (a start, stop or restart) is queued or running.

        Raises:
            ServiceError: the manager could not be asked.
        """
        ...

    def describe(self, unit: str) -> str:
        """What the manager says of the unit (states, result, exit status), for messages.

        Raises:
            ServiceError: the manager could not be asked.
        """
        ...

    def close(self) -> None:
        """Release the connection."""


@dataclass
class ServiceConnection:
    """A service manager, connected on first use (a run with nothing to restart never does).

    The run's threads share it (`SystemdManager` is thread-safe): one connection, whose signals
    systemd sends and updock reads once, however many units restart side by side.
    """

    connect: Callable[[], ServiceManager]
    _services: ServiceManager | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def get(self) -> ServiceManager:
        """The connection."""
        with self._lock:
            if self._services is None:
                self._services = self.connect()
            return self._services

    def close(self) -> None:
        """Close the connection if it was made."""
        with self._lock:
            services, self._services = self._services, None
        if services is not None:
            services.close()
