"""The conformance table: every scenario in which updock and podman's own `auto-update` ran,
with what each reported, per podman version (written at the end of a session, see conftest).

A cell sums up a tool's runs in the scenario that were compared (podman's, and updock's with the
same arguments), in order: the `Updated` values of each run's JSON report (`true`, `rolled
back`, ...; "none" for an empty report, "text" for another format) and its exit status when not
0; runs alike in a row are counted (`x3`).
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


def _paired(runs: list[Outcome]) -> tuple[list[Outcome], list[Outcome]]:
    """podman's runs, and the updock runs they were compared with: the k-th updock run with the
    same arguments as podman's k-th run with them (updock's other runs, such as a real update
    before a dry run that both make, are its own steps)."""
    podman = [o for o in runs if o.tool == "podman"]
    updock: dict[tuple[str, ...], list[Outcome]] = {}
    for o in runs:
        if o.tool == "updock":
            updock.setdefault(o.args, []).append(o)
    paired = [updock[o.args].pop(0) for o in podman if updock.get(o.args)]
    return podman, paired


def table(records: Iterable[tuple[str, Outcome]], versions: Mapping[str, str]) -> str:
    """A Markdown table: one row per scenario in which podman ran, a column of podman's results
    per podman version (flavour), then updock's runs compared with them (on the newest podman's
    lab; where updock's differ on another podman, those too).

    Args:
        records: (test ID, outcome), in the order they ran.
        versions: flavour -> its podman version.
    """
    runs: dict[str, dict[str, list[Outcome]]] = {}
    for test_id, outcome in records:
        scenario, flavour = _scenario(test_id)
        runs.setdefault(scenario, {}).setdefault(flavour, []).append(outcome)
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
        pairs = {f: _paired(flavours.get(f, [])) for f in order}
        if not any(podman for podman, _ in pairs.values()):
            continue
        podman_cells = {f: cell(podman) for f, (podman, _) in pairs.items()}
        updock_cells = {f: cell(compared) for f, (_, compared) in pairs.items()}
        cells = [
            "= updock" if podman_cells[f] == updock_cells[f] != "-" else podman_cells[f]
            for f in order
        ]
        ours = updock_cells[newest]
        others = [
            f"on podman {versions[f]}: {updock_cells[f]}"
            for f in order
            if updock_cells[f] not in ("-", ours)
        ]
        if others:
            ours += f" ({'; '.join(others)})"
        lines.append(f"| {scenario} | {' | '.join(cells)} | {ours} |")
    return "\n".join(lines) + "\n"
