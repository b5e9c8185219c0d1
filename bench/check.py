"""Registry checks of updock and of the real `podman auto-update`, side by side, in the lab.

    sudo .venv/bin/python bench/check.py [--containers 40] [--images 8] [--rtt-ms 50]

Starts its own lab (real podman, registry and systemd; `updock.testing.lab.running_lab`) and
stops it at the end, whatever happens. N containers (one systemd unit each) run M images of the
lab's plain registry; their image names point at a loopback proxy in front of that registry
(`updock.testing.proxy.FaultProxy`) which adds the round trip (once per request, and once per
new connection for its handshake) and counts every request. Then, on that same setup:

1. start-up: both tools with nothing to do (no labelled container yet), median of several runs;
2. `auto-update --dry-run` of both when nothing changed (every row `false`); updock's first run
   starts without its registry hints (`updock.registry.hints`), and is shown apart (the target
   holds for the median);
3. the same after a new version of every image was pushed (every row `pending`).

updock's modules are byte-compiled first, as an installed package's are (pip compiles them; an
editable install under PYTHONDONTWRITEBYTECODE would compile them on every start).

For each it prints the wall time, the ratio, and the registry requests each tool made (by kind:
`GET /v2/` probes, manifest GETs and HEADs, token requests), and whether the reports agree.
Targets (exit status 1 when one is missed): updock at least 20 times faster than podman; at most
M+1 registry requests; no manifest GET when nothing changed; start-up within twice podman's.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import updock
from updock.registry import hints
from updock.testing.lab import Lab, running_lab
from updock.testing.proxy import FaultProxy, ProxiedRequest

SPEEDUP_TARGET = 20.0
STARTUP_TARGET = 2.0


@dataclass(frozen=True)
class Measure:
    """One tool's runs of one scenario."""

    tool: str
    seconds: list[float]
    requests: list[ProxiedRequest]  # of the first run
    connections: int  # of the first run
    rows: list[tuple[str, str]]  # (container name, updated) of the first run
    exit_codes: list[int]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def count(self, pick: Callable[[ProxiedRequest], bool]) -> int:
        return sum(1 for r in self.requests if pick(r))


def _is_probe(r: ProxiedRequest) -> bool:
    return r.method == "GET" and r.path.rstrip("/") == "/v2"


def _is_manifest(method: str) -> Callable[[ProxiedRequest], bool]:
    return lambda r: r.method == method and "/manifests/" in r.path


def _rows(stdout: str) -> list[tuple[str, str]]:
    try:
        doc = json.loads(stdout) if stdout.strip() else []
    except json.JSONDecodeError:
        return [("<unparsable output>", stdout[:200])]
    return sorted((row["ContainerName"], row["Updated"]) for row in doc)


def _time(run: Callable[[], subprocess.CompletedProcess[str]]) -> tuple[float, int, str, str]:
    started = time.perf_counter()
    res = run()
    return time.perf_counter() - started, res.returncode, res.stdout, res.stderr


def _tools(lab: Lab, *args: str) -> dict[str, Callable[[], subprocess.CompletedProcess[str]]]:
    return {
        "podman auto-update": lambda: lab.auto_update(*args),
        "updock auto-update": lambda: lab.updock("auto-update", *args),
    }


def measure(lab: Lab, proxy: FaultProxy, runs: int) -> list[Measure]:
    """Both tools' `auto-update --dry-run --format json`, alternating, `runs` times each."""
    results: dict[str, Measure] = {}
    for n in range(runs):
        for tool, run in _tools(lab, "--dry-run", "--format", "json").items():
            proxy.clear()
            seconds, code, stdout, stderr = _time(run)
            if code != 0:
                print(f"  ! {tool} exited {code}: {stderr.strip()[:500]}", file=sys.stderr)
            if n == 0:
                results[tool] = Measure(
                    tool, [seconds], proxy.requests, proxy.connections, _rows(stdout), [code]
                )
            else:
                results[tool].seconds.append(seconds)
                results[tool].exit_codes.append(code)
    return list(results.values())


def measure_startup(lab: Lab, runs: int) -> dict[str, float]:
    """Median wall time of each tool's `auto-update` with nothing to do."""
    times: dict[str, list[float]] = {}
    for _ in range(runs):
        for tool, run in _tools(lab).items():
            seconds, code, stdout, stderr = _time(run)
            if code != 0 or stdout.strip():
                print(f"  ! {tool} exited {code}: {stderr.strip()[:500]}", file=sys.stderr)
            times.setdefault(tool, []).append(seconds)
    return {tool: statistics.median(t) for tool, t in times.items()}


def setup(lab: Lab, proxy: FaultProxy, containers: int, images: int) -> list[str]:
    """Push M images, start N services on them (names through the proxy); the image names."""
    with (lab.conf / "registries.conf").open("a") as conf:
        conf.write(f'[[registry]]\nlocation = "{proxy.host}"\ninsecure = true\n')
    names = []
    for i in range(images):
        lab.build_image(f"{lab.plain.host}/bench-{i}:latest")
        name = f"{proxy.host}/bench-{i}:latest"
        lab.pull(name)
        names.append(name)
    units = []
    for j in range(containers):
        service = lab.create_service(f"bench-{j:03d}", names[j % images], pull=False, start=False)
        units.append(service.unit)
    lab.systemctl("start", *units, timeout=600)
    return names


def report(
    title: str, measures: list[Measure], images: int, *, changed: bool, cold: bool = False
) -> list[str]:
    """Print one scenario's table; the targets it missed.

    Args:
        cold: updock's first run had no registry hints: show it apart (the target is for the
            median: a host's later runs, each day, have the hints).
    """
    podman, updock = measures
    print(f"\n{title}, median of {len(podman.seconds)} run(s):")
    print(
        f"  {'':20} {'wall':>9} {'requests':>9} {'GET /v2/':>9} {'manifest GET':>13} "
        f"{'manifest HEAD':>14} {'connections':>12}"
    )
    for m in measures:
        print(
            f"  {m.tool:20} {m.median:8.3f}s {len(m.requests):9d} {m.count(_is_probe):9d} "
            f"{m.count(_is_manifest('GET')):13d} {m.count(_is_manifest('HEAD')):14d} "
            f"{m.connections:12d}"
        )
    missed = []
    ratio = podman.median / updock.median
    lines = [f"podman / updock: {ratio:.1f}x (target >= {SPEEDUP_TARGET:g}x)"]
    if ratio < SPEEDUP_TARGET:
        missed.append(f"{title}: only {ratio:.1f}x faster")
    if cold:
        first = updock.seconds[0]
        lines.append(
            f"updock's first run, without registry hints: {first:.3f}s, "
            f"podman / updock: {podman.median / first:.1f}x"
        )
    lines.append(f"updock requests: {len(updock.requests)} (target <= M+1 = {images + 1})")
    if len(updock.requests) > images + 1:
        missed.append(f"{title}: {len(updock.requests)} requests")
    if not changed:
        gets = updock.count(_is_manifest("GET"))
        lines.append(f"updock manifest GETs: {gets} (target 0)")
        if gets:
            missed.append(f"{title}: {gets} manifest GETs")
    agree = podman.rows == updock.rows
    statuses = sorted({u for _, u in updock.rows})
    lines.append(f"reports agree: {'yes' if agree else 'NO'} ({len(updock.rows)} rows: {statuses})")
    if not agree:
        missed.append(f"{title}: the reports differ")
    if any(podman.exit_codes + updock.exit_codes):
        missed.append(f"{title}: a run failed")
    for line in lines:
        print(f"  {line}")
    return missed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--containers", type=int, default=40, metavar="N")
    parser.add_argument("--images", type=int, default=8, metavar="M")
    parser.add_argument("--rtt-ms", type=float, default=50.0, metavar="MS")
    parser.add_argument("--runs", type=int, default=3, help="runs of each dry run (median)")
    parser.add_argument("--startup-runs", type=int, default=7, help="runs of the start-up test")
    args = parser.parse_args(argv)
    if args.images < 1 or args.containers < args.images:
        parser.error("need at least one image and at least as many containers as images")
    if os.geteuid() != 0:
        print("bench/check.py needs root (the lab runs systemd and podman as root)")
        return 2
    rtt = args.rtt_ms / 1000
    compileall.compile_dir(Path(updock.__file__).parent, quiet=1)
    missed: list[str] = []
    with running_lab() as lab, FaultProxy(lab.plain.host) as proxy:
        print(
            f"updock registry-check benchmark: {args.containers} containers over {args.images} "
            f"images, {args.rtt_ms:g} ms round trip (proxy {proxy.host} -> registry "
            f"{lab.plain.host}), podman {_podman_version(lab)}"
        )
        startup = measure_startup(lab, args.startup_runs)
        podman_s, updock_s = startup["podman auto-update"], startup["updock auto-update"]
        print(f"\nnothing to do (no labelled container), median of {args.startup_runs} runs:")
        print(f"  podman auto-update   {podman_s:6.3f}s")
        print(
            f"  updock auto-update   {updock_s:6.3f}s   {updock_s / podman_s:.2f}x podman's "
            f"(target <= {STARTUP_TARGET:g}x)"
        )
        if updock_s > STARTUP_TARGET * podman_s:
            missed.append(f"start-up: {updock_s / podman_s:.2f}x podman's")

        setup_started = time.perf_counter()
        setup(lab, proxy, args.containers, args.images)
        print(f"\n(setup: {time.perf_counter() - setup_started:.0f}s)")
        proxy.delay = proxy.connect_delay = rtt
        (Path(lab.env["UPDOCK_STATE_DIR"]) / hints.FILE_NAME).unlink(missing_ok=True)
        title = f"dry run, nothing changed ({args.containers} x false)"
        missed += report(
            title, measure(lab, proxy, args.runs), args.images, changed=False, cold=True
        )

        proxy.delay = proxy.connect_delay = 0
        for i in range(args.images):
            lab.build_image(f"{lab.plain.host}/bench-{i}:latest")  # straight to the registry
        proxy.delay = proxy.connect_delay = rtt
        title = f"dry run, every image changed ({args.containers} x pending)"
        missed += report(title, measure(lab, proxy, args.runs), args.images, changed=True)
    print()
    if missed:
        print("targets missed: " + "; ".join(missed))
        return 1
    print("all targets met")
    return 0


def _podman_version(lab: Lab) -> str:
    return lab.podman("version", "--format", "{{.Client.Version}}").stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
