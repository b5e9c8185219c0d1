"""The conformance table: every scenario in which updock and podman's own `auto-update` ran,
with what each reported, per podman version (written at the end of a session, see conftest).

A cell sums up a tool's runs in the scenario, in order: the `Updated` values of each run's JSON
report (`true`, `rolled back`, ...; "none" for an empty report, "text" for another format) and
its exit status when not 0; runs alike in a row are counted (`x3`).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Mapping

from tests.integration.conformance import Outcome


def summary(outcome: Outcome) -> str:
    """One run: its statuses, in report order, and a non-zero exit status."""
    text = outcome.stdout.strip()
    try:
        rows = json.loads(text) if text else []
        statuses = [r["Updated"] for r in rows]
        what = ", ".join(sorted(statuses)) or "none"
    except (ValueError, TypeError, KeyError):
        what = "text"
    return what if outcome.returncode == 0 else f"{what} (exit {outcome.returncode})"


def cell(outcomes: Iterable[Outcome]) -> str:
    """A tool's runs in one scenario, repeats in a row counted."""
    parts = []
    for one, alike in itertools.groupby(map(summary, outcomes)):
        count = len(list(alike))
        parts.append(f"{one} x{count}" if count > 1 else one)
    return "; ".join(parts) or "-"


def _scenario(test_id: str) -> tuple[str, str]:
    """`tests/integration/test_quadlet.py::test_x_y[trixie]` -> ("quadlet: x y", "trixie")."""
    path, _, name = test_id.partition("::")
    flavour = ""
    found = re.fullmatch(r"(.*)\[(.*)\]", name)
    if found:
        name, params = found.groups()
        *extra, flavour = params.split("-")
        if extra:
            name += f" [{'-'.join(extra)}]"
    module = path.rsplit("/", 1)[-1].removesuffix(".py").removeprefix("test_")
    return f"{module}: {name.removeprefix('test_').replace('_', ' ')}", flavour


def table(records: Iterable[tuple[str, Outcome]], versions: Mapping[str, str]) -> str:
    """A Markdown table: one row per scenario in which podman ran, a column of podman's results
    per podman version (flavour), then updock's (on the newest podman's lab).

    Args:
        records: (test ID, outcome), in the order they ran.
        versions: flavour -> its podman version.
    """
    runs: dict[str, dict[str, dict[str, list[Outcome]]]] = {}
    for test_id, outcome in records:
        scenario, flavour = _scenario(test_id)
        tools = runs.setdefault(scenario, {}).setdefault(flavour, {})
        tools.setdefault(outcome.tool, []).append(outcome)
    order = sorted(versions, key=lambda f: [int(p) for p in versions[f].split(".")])
    if not order:
        return ""
    newest = order[-1]
    head = [f"podman {versions[f]}" for f in order]
    lines = [
        f"| scenario | {' | '.join(head)} | updock (podman {versions[newest]}) |",
        "|---" * (len(order) + 2) + "|",
    ]
    for scenario, flavours in runs.items():
        if not any("podman" in tools for tools in flavours.values()):
            continue
        cells = [cell(flavours.get(f, {}).get("podman", [])) for f in order]
        updock = cell(flavours.get(newest, {}).get("updock", []))
        cells = ["= updock" if c == updock != "-" else c for c in cells]
        lines.append(f"| {scenario} | {' | '.join(cells)} | {updock} |")
    return "\n".join(lines) + "\n"
