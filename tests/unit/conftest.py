"""Fixtures shared by the unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def auth_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A home folder under tmp_path; the default auth file locations all below tmp_path, and no
    auth variable of the caller's environment (so no real credentials are ever read)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    for var in ("REGISTRY_AUTH_FILE", "XDG_CONFIG_HOME", "DOCKER_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    return home
