"""The lab's flavours, one per podman: which exist, which to run, and how to get them ready.

- `host`: the machine's own podman (4.3.1 on Debian 12, 5.4.2 on Debian 13), `lab.Lab`;
- `bookworm`: podman 4.3.1 and Python 3.11 of a Debian 12 rootfs, `rootfs.RootfsLab`;
- `trixie`: podman 5.4.2 and Python 3.13 of a Debian 13 rootfs, `rootfs.RootfsLab`.

`UPDOCK_LAB_FLAVOURS` (comma separated) chooses them (by default, each podman version once:
`default_flavours`); `python -m updock.testing.flavours`
installs what they need and builds the missing rootfs caches (in parallel), so that a test
session does not pay for it in its first test.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from updock.testing.lab import Lab, LabError, install_packages
from updock.testing.rootfs import RootfsLab, ensure_rootfs

log = logging.getLogger(__name__)

#: The Debian suites of the rootfs flavours.
SUITES = ("bookworm", "trixie")

FLAVOURS = ("host", *SUITES)


def host_suite() -> str:
    """The Debian codename of this machine ("bookworm", "trixie"), or "" if it is not Debian."""
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            key, _, value = line.partition("=")
            if key == "VERSION_CODENAME":
                return value.strip().strip('"')
    return ""


def default_flavours() -> list[str]:
    """`host`, and the rootfs flavours of the podman versions the host does not have.

    Each podman version runs once: on Debian 12 `host` (4.3.1) and `trixie` (5.4.2), on
    Debian 13 `host` (5.4.2) and `bookworm` (4.3.1), elsewhere all three.
    """
    return ["host", *(suite for suite in SUITES if suite != host_suite())]


def lab_flavours() -> list[str]:
    """The flavours `UPDOCK_LAB_FLAVOURS` asks for, in its order (default: `default_flavours`).

    Raises:
        LabError: a name that is not a flavour.
    """
    value = os.environ.get("UPDOCK_LAB_FLAVOURS", "")
    chosen = [f.strip() for f in value.split(",") if f.strip()] or default_flavours()
    unknown = [f for f in chosen if f not in FLAVOURS]
    if unknown:
        raise LabError(
            f"UPDOCK_LAB_FLAVOURS: unknown flavour {', '.join(unknown)} "
            f"(known: {', '.join(FLAVOURS)})"
        )
    return list(dict.fromkeys(chosen))


def make_lab(flavour: str) -> Lab:
    """A lab of `flavour`, not started."""
    return Lab() if flavour == "host" else RootfsLab(flavour)


def prepare(flavours: list[str]) -> None:
    """Install the host's packages (the registries run there) and build missing rootfs caches."""
    install_packages()
    suites = [f for f in flavours if f != "host"]
    if suites and shutil.which("debootstrap") is None:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-q", "debootstrap"], check=True, env=env)
    with ThreadPoolExecutor(max_workers=max(1, len(suites))) as pool:
        for _ in pool.map(ensure_rootfs, suites):
            pass


def main() -> None:
    """Get the flavours of `UPDOCK_LAB_FLAVOURS` ready; say which and how long it took."""
    logging.basicConfig(format="%(message)s", level=logging.INFO)
    started = time.monotonic()
    flavours = lab_flavours()
    prepare(flavours)
    took = time.monotonic() - started
    log.warning("lab flavours ready in %.0fs: %s", took, ", ".join(flavours))


if __name__ == "__main__":
    main()
