"""systemd units that run `updock auto-update` daily, for the system and for users; or
`updock serve` (scheduled runs and the HTTP API) as a service.

`updock install-units [--user] [--serve]` writes them with the path of this updock filled in.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

from updock.errors import ConfigError

UNITS = ("updock-auto-update.service", "updock-auto-update.timer")
TIMER = "updock-auto-update.timer"
#: `updock serve` as a service: instead of the timer (it has a schedule of its own).
SERVE = "updock-serve.service"


def updock_bindir() -> str:
    """The folder of the `updock` executable that is running (or on PATH)."""
    script = Path(sys.argv[0])
    if script.name == "updock" and script.exists():
        return str(script.resolve().parent)
    found = shutil.which("updock")
    if found:
        return str(Path(found).resolve().parent)
    return str(Path(sys.executable).parent)


def render(name: str, bindir: str) -> str:
    """The text of unit `name` with `@BINDIR@` replaced."""
    text = resources.files(__package__).joinpath(name).read_text()
    return text.replace("@BINDIR@", bindir)


def install(*, user: bool, dest: str | None, enable: bool, serve: bool = False) -> list[Path]:
    """Write the units and, with `enable`, reload systemd and enable the timer (with `serve`:
    write and enable updock-serve.service instead).

    Raises:
        ConfigError: the folder cannot be written or systemctl fails.
    """
    if dest is None:
        folder = Path.home() / ".config/systemd/user" if user else Path("/etc/systemd/system")
    else:
        folder = Path(dest)
    bindir = updock_bindir()
    written = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name in (SERVE,) if serve else UNITS:
            path = folder / name
            path.write_text(render(name, bindir))
            written.append(path)
    except OSError as exc:
        raise ConfigError(f"cannot write units to {folder}: {exc}") from exc
    if enable:
        systemctl = ["systemctl", "--user"] if user else ["systemctl"]
        for args in (["daemon-reload"], ["enable", "--now", SERVE if serve else TIMER]):
            res = subprocess.run([*systemctl, *args], capture_output=True, text=True, check=False)
            if res.returncode != 0:
                raise ConfigError(f"systemctl {' '.join(args)} failed: {res.stderr.strip()}")
    return written
