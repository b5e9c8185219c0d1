"""The exception tree of updock: every error it raises on purpose derives from `UpdockError`.

    UpdockError                  root; the CLI catches it once and maps it to an exit status
    ├── UsageError               a bad flag, argument or option value (exit 125, like podman)
    ├── ConfigError              a bad configuration file: auth file, registries.conf, unit file
    ├── ImageReferenceError      an image name that is not a valid (or allowed) reference
    ├── PolicyError              an invalid `io.containers.autoupdate` value
    ├── ContainerConfigError     a container set up for auto-updates lacks its unit or image name
    ├── EngineError              the container engine (podman) failed or answered nonsense
    ├── RegistryError            a registry could not be asked, or answered an error
    │   └── RegistryAuthError    the registry refused the credentials (401/403)
    ├── ServiceError             the service manager (systemd) failed to restart a unit
    ├── VerificationError        a restarted unit did not come up healthy on the expected images
    └── Interrupted              a signal (SIGINT, SIGTERM) stopped the run before this step

Library errors (requests, jeepney, subprocess) are translated at the one boundary that calls the
library and re-raised `from` the original, so callers only ever handle this tree.
"""

from __future__ import annotations

#: podman auto-update exits with this status on any error; updock does the same.
EXIT_ERROR = 125


class UpdockError(Exception):
    """Root of all errors updock raises on purpose.

    Attributes:
        exit_code: the process exit status the CLI uses when this error ends a run.
    """

    exit_code: int = EXIT_ERROR


class UsageError(UpdockError):
    """Raised for a bad command line: unknown flag, positional argument, invalid format."""


class ConfigError(UpdockError):
    """Raised when a configuration file (auth file, registries.conf) is missing or malformed."""


class ImageReferenceError(UpdockError):
    """Raised when an image name cannot be parsed or is not allowed for auto-updates."""


class PolicyError(UpdockError):
    """Raised for an `io.containers.autoupdate` label value that is no known policy."""


class ContainerConfigError(UpdockError):
    """Raised for a container with an auto-update policy that cannot be updated as created.

    Its `PODMAN_SYSTEMD_UNIT` label (or that of its pod's infra container) is missing, or it has
    no raw image name to check and pull.
    """


class EngineError(UpdockError):
    """Raised when the container engine fails a command or its output cannot be parsed."""


class RegistryError(UpdockError):
    """Raised when a registry cannot be reached, times out, or answers with an error."""


class RegistryAuthError(RegistryError):
    """Raised when a registry refuses the credentials given (or demands some and none exist)."""


class ServiceError(UpdockError):
    """Raised when the service manager cannot restart a unit or its job does not end `done`."""


class VerificationError(UpdockError):
    """Raised when a unit, after its restart, is not active, its containers are not running on
    the expected images, do not stay up for the settle time, or are unhealthy."""


#: Exit statuses after SIGINT and SIGTERM (128 + the signal's number), as a shell reports them.
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class Interrupted(UpdockError):
    """Raised instead of starting a step that would change a unit, once the run was asked to
    stop (SIGINT, SIGTERM): what is in flight is finished, nothing new is begun.

    Attributes:
        exit_code: 130 after SIGINT, 143 after SIGTERM.
    """

    def __init__(self, message: str, exit_code: int = EXIT_SIGTERM) -> None:
        super().__init__(message)
        self.exit_code = exit_code
