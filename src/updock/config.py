"""The configuration file: what is not per container (notifications, metrics, the service mode,
defaults of `auto-update`'s flags), in TOML.

Where: `$UPDOCK_CONFIG` if set (then it must exist), else `/etc/updock/updock.toml` for root,
else `$XDG_CONFIG_HOME/updock/updock.toml` (`~/.config/updock/updock.toml`). A missing default
file is no configuration. Flags win over `UPDOCK_*` variables, which win over the file.

    [auto-update]            # defaults of `updock auto-update`'s flags, named as the flags
    settle-time = 10
    rollback = true

    [notify]
    urls = ["https://hooks.example.org/updock", "mailto://user:pass@example.org"]
    on = ["updated", "failed", "rolled-back"]

    [metrics]
    file = "/var/lib/prometheus/node-exporter/updock.prom"

    [serve]
    schedule = "0 4 * * *"
    token-file = "/etc/updock/api-token"

A file that is no valid TOML, or has a table, key or value updock does not take, is an error
naming the file and the line (exit status 125): a typo must not silently leave a default.

`prefetch.config_path` finds the file with nothing imported (the CLI looks for it at start-up);
reading it imports `tomllib` (about 15 ms with `typing`), only when there is a file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TypeVar

from updock.errors import ConfigError
from updock.prefetch import CONFIG_VARIABLE as ENV_VARIABLE
from updock.prefetch import config_path

#: The tables the file may have, and who reads each.
TABLES = ("auto-update", "notify", "metrics", "serve")

_T = TypeVar("_T")


class ConfigFile:
    """A configuration file, read and parsed; values are looked up by table and key.

    Args:
        path: the file; None for no file (every table is empty).
        text: its contents (read from `path` when None).

    Raises:
        ConfigError: it cannot be read, is no valid TOML, or has a table updock does not know
            (the message names the file and the line).
    """

    def __init__(self, path: Path | None, text: str | None = None) -> None:
        self.path = path
        self._lines: list[str] = []
        self._doc: dict[str, object] = {}
        if path is None:
            return
        if text is None:
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"cannot read the configuration file {path}: {exc}") from exc
        self._lines = text.splitlines()
        import tomllib

        try:
            self._doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            found = re.search(r"at line (\d+)", str(exc))
            line = int(found.group(1)) if found else 0
            raise ConfigError(f"{self._where(line)}: not valid TOML: {exc}") from exc
        for name, value in self._doc.items():
            if name not in TABLES or not isinstance(value, dict):
                raise ConfigError(
                    f"{self._where(self._line(None, name))}: unknown table or key {name!r} "
                    f"(the tables are {', '.join(f'[{t}]' for t in TABLES)})"
                )

    @classmethod
    def load(cls) -> ConfigFile:
        """The file `config_path` names (an empty configuration when there is none).

        Raises:
            ConfigError: as the constructor; and when `$UPDOCK_CONFIG` names no file.
        """
        found = config_path()
        if found is None:
            return cls(None)
        path, named = found
        if named and not os.path.isfile(path):
            raise ConfigError(f"${ENV_VARIABLE}: the configuration file {path} does not exist")
        return cls(Path(path))

    def has_any(self, *names: str) -> bool:
        """Whether the file has one of these tables."""
        return any(name in self._doc for name in names)

    def table(self, name: str, known: Collection[str]) -> dict[str, object]:
        """The keys of table `name` (empty when the file has none).

        Raises:
            ConfigError: it has a key not in `known`.
        """
        table = self._doc.get(name, {})
        assert isinstance(table, dict)  # checked in the constructor
        for key in table:
            if key not in known:
                raise self.error(name, key, f"unknown key (known keys: {', '.join(sorted(known))})")
        return dict(table)

    def get(
        self, table: str, key: str, convert: Callable[[object], _T], known: Collection[str]
    ) -> _T | None:
        """`convert` of the value at `[table] key`, None when absent.

        Raises:
            ConfigError: `convert` raised ValueError or TypeError (its message follows the
                file, line, table and key), or the table has an unknown key.
        """
        values = self.table(table, known)
        if key not in values:
            return None
        try:
            return convert(values[key])
        except (ValueError, TypeError) as exc:
            raise self.error(table, key, str(exc)) from exc

    def error(self, table: str, key: str, message: str) -> ConfigError:
        """The error for `[table] key`, naming the file and the key's line."""
        return ConfigError(f"{self._where(self._line(table, key))}: [{table}] {key}: {message}")

    def _where(self, line: int) -> str:
        return f"{self.path}:{line}" if line else str(self.path)

    def _line(self, table: str | None, key: str) -> int:
        """The line where `key` is set in `[table]` (None: at the top, or a table named so)."""
        current: str | None = None
        for number, raw in enumerate(self._lines, 1):
            line = raw.strip()
            header = re.fullmatch(r"\[\s*([^\[\]]+?)\s*\](\s*#.*)?", line)
            if header:
                current = header.group(1).strip("\"'")
                if table is None and current == key:
                    return number
                continue
            assigned = re.match(r"""["']?([A-Za-z0-9_.-]+)["']?\s*=""", line)
            if assigned and assigned.group(1) == key and current == table:
                return number
        return 0


# -- converters of TOML values, for `ConfigFile.get` --------------------------------------------


def text(value: object) -> str:
    """A string."""
    if not isinstance(value, str):
        raise TypeError(f"{value!r} is not a string")
    return value


def flag_text(value: object) -> str:
    """A value written as a flag's argument would be: `true`, `5`, `2.5`, `/path`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise TypeError(f"{value!r} is not a string, number or boolean")


def strings(value: object) -> list[str]:
    """A list of strings (one string is a list of one)."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{value!r} is not a list of strings")
    return list(value)
