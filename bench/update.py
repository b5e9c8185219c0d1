"""Real updates: podman auto-update and updock auto-update on the same services, side by side.

For each size N:M (N services over M image names), in one lab (real podman, registry, systemd):
N services run v1 of M images whose names point at a loopback proxy in front of the lab's
registry (it adds a round trip to every request, as a registry on the internet would), a v2 of
every image is pushed, and each tool updates the services for real, on its own identical set-up.
Printed per size: the wall time of each tool, their ratio, how many services ended active on v2,
and the downtime of each service (from the moment its unit left `active`, i.e. the old
container's stop began, to the moment it was `active` again, from systemd's own timestamps):
median and maximum; and the CPU seconds the whole machine spent during each tool's run (of
which the lab's systemd), which tell a run that waits from one that competes for the CPU.

    sudo .venv/bin/python bench/update.py [--sizes 10:2,40:8,160:16] [--rtt-ms 50]
        [--settle 5] [--plot bench/update.png] [--flavour trixie]

Targets (exit status 1 when one is missed), for the sizes given: at 40 services, updock's full
update (verification on, default settle time) takes no longer than podman's (ratio >= 1.0); at
160, updock is at least 1.5 times faster; updock's median and maximum downtime are no worse
than podman's; every service ends active on v2 with both tools.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from updock.testing.flavours import FLAVOURS, make_lab, prepare
from updock.testing.lab import Lab, running_lab
from updock.testing.proxy import FaultProxy

#: N -> least podman/updock wall-time ratio.
TARGETS = {40: 1.0, 160: 1.5}


@dataclass(frozen=True)
class Result:
    """One tool's update of one size."""

    wall: float
    exit_code: int
    good: int  # services active on v2 afterwards
    downtimes: list[float]  # seconds, one per service that was restarted
    cpu: float  # CPU seconds the whole machine spent during the run (every process)
    systemd_cpu: float  # of which the lab's systemd (PID 1 of its namespace)

    @property
    def median_down(self) -> float:
        return statistics.median(self.downtimes) if self.downtimes else 0.0

    @property
    def max_down(self) -> float:
        return max(self.downtimes, default=0.0)


def _setup(lab: Lab, proxy: FaultProxy, units: int, images: int) -> tuple[list[str], list[str]]:
    """N services on v1 of M images (pulled through the proxy); then v2 pushed. Returns the
    image names (through the proxy) and the units."""
    proxy.delay = proxy.connect_delay = 0  # set-up goes at full speed
    names = []
    for i in range(images):
        direct = f"{lab.plain.host}/upd{units}-{i}:latest"
        lab.build_image(direct, version="v1")
        name = f"{proxy.host}/upd{units}-{i}:latest"
        lab.pull(name)
        names.append(name)
    unit_names = []
    for j in range(units):
        svc = lab.create_service(
            f"upd{units}-{j:03d}", names[j % images], pull=False, start=False, reload=False
        )
        unit_names.append(svc.unit)
    lab.systemctl("daemon-reload")
    lab.systemctl("start", *unit_names, timeout=900)
    for i in range(images):
        lab.build_image(f"{lab.plain.host}/upd{units}-{i}:latest", version="v2")
    return names, unit_names


def _downtimes(lab: Lab, units: list[str]) -> list[float]:
    """Seconds each unit was not active during its last restart (systemd's timestamps)."""
    out = lab.systemctl(
        "show", "-p", "ActiveExitTimestampMonotonic", "-p", "ActiveEnterTimestampMonotonic",
        *units,
    ).stdout  # fmt: skip
    downtimes = []
    for block in out.strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        left = int(props.get("ActiveExitTimestampMonotonic") or 0)
        back = int(props.get("ActiveEnterTimestampMonotonic") or 0)
        if left and back > left:
            downtimes.append((back - left) / 1e6)
    return downtimes


def _good(lab: Lab, names: list[str], units: list[str]) -> int:
    """Services whose unit is active and whose container runs v2 of its image."""
    v2 = {lab.image_id(name) for name in names}
    running = json.loads(lab.podman("ps", "--format", "json").stdout or "[]")
    on_v2 = {
        (c.get("Labels") or {}).get("PODMAN_SYSTEMD_UNIT")
        for c in running
        if c.get("ImageID") in v2
    }
    states = lab.systemctl("show", "-p", "Id", "-p", "ActiveState", *units).stdout
    active = {
        props["Id"]
        for block in states.strip().split("\n\n")
        if (props := dict(line.split("=", 1) for line in block.splitlines() if "=" in line)).get(
            "ActiveState"
        )
        == "active"
    }
    return len(active & on_v2)


def _machine_cpu() -> float:
    """CPU seconds every process of the machine has spent so far (/proc/stat, all CPUs)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _process_cpu(pid: int | None) -> float:
    """CPU seconds process `pid` has spent so far (0 when unknown)."""
    if pid is None:
        return 0.0
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    lab: Lab, proxy: FaultProxy, tool: list[str], units: int, images: int, rtt: float
) -> Result:
    lab.reset()
    names, unit_names = _setup(lab, proxy, units, images)
    proxy.delay = proxy.connect_delay = rtt
    cpu, systemd_cpu = _machine_cpu(), _process_cpu(lab.systemd_pid)
    started = time.perf_counter()
    res = lab.run(tool, check=False, timeout=3600)
    wall = time.perf_counter() - started
    cpu, systemd_cpu = _machine_cpu() - cpu, _process_cpu(lab.systemd_pid) - systemd_cpu
    proxy.delay = proxy.connect_delay = 0
    if res.returncode != 0:
        print(
            f"  ! {tool[0]} exited {res.returncode}: {res.stderr.strip()[-800:]}", file=sys.stderr
        )
    time.sleep(1)
    good, down = _good(lab, names, unit_names), _downtimes(lab, unit_names)
    return Result(wall, res.returncode, good, down, cpu, systemd_cpu)


def _plot(path: Path, sizes: list[int], results: dict[str, list[Result]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for tool, marker in (("podman", "o"), ("updock", "s")):
        ax.plot(sizes, [r.wall for r in results[tool]], marker=marker, label=f"{tool} auto-update")
    ax.set_xlabel("services (every image changed)")
    ax.set_ylabel("wall time of a real update (s)")
    ax.set_title("Real update, verified (updock) vs unverified (podman)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    print(f"plot: {path}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10:2,40:8,160:16", help="N:M,... services:images")
    parser.add_argument("--rtt-ms", type=float, default=50.0, metavar="MS")
    parser.add_argument("--settle", type=float, default=5.0, help="updock's --settle-time")
    parser.add_argument("--plot", type=Path, default=None, metavar="PNG")
    parser.add_argument(
        "--flavour",
        choices=FLAVOURS,
        default="host",
        help="the lab's podman: the host's, or a Debian rootfs's (trixie: podman 5.4)",
    )
    parser.add_argument(
        "--updock-args", default="", metavar="ARGS", help="more arguments for updock (to compare)"
    )
    args = parser.parse_args(argv)
    sizes = [tuple(int(x) for x in s.split(":")) for s in args.sizes.split(",")]
    if os.geteuid() != 0:
        print("bench/update.py needs root (the lab runs systemd and podman as root)")
        return 2
    tools = {
        "podman": ["podman", "auto-update", "--format", "json"],
        "updock": [
            "UPDOCK", "auto-update", "--format", "json",
            f"--settle-time={args.settle:g}", *args.updock_args.split(),
        ],
    }  # fmt: skip
    results: dict[str, list[Result]] = {tool: [] for tool in tools}
    missed = []
    prepare([args.flavour])
    with running_lab(make_lab(args.flavour)) as lab, FaultProxy(lab.plain.host) as proxy:
        tools["updock"][:1] = lab.updock_command()  # whatever runs updock in this flavour
        with (lab.conf / "registries.conf").open("a") as conf:
            conf.write(f'[[registry]]\nlocation = "{proxy.host}"\ninsecure = true\n')
        version = lab.podman("version", "--format", "{{.Client.Version}}").stdout.strip()
        print(
            f"real update, every image changed, {args.rtt_ms:g} ms round trip to the registry, "
            f"podman {version}, updock settle time {args.settle:g}s, {os.cpu_count()} cores\n"
        )
        header = (
            f"{'services':>8} {'images':>6} | {'podman':>8} {'updock':>8} {'ratio':>6} | "
            f"{'downtime median (s)':>20} | {'downtime max (s)':>17} | {'on v2':>9} | "
            f"{'CPU s (systemd)':>23}"
        )
        print(header)
        print(f"{'':>8} {'':>6} | {'':>8} {'':>8} {'':>6} | {'podman':>9} {'updock':>10} | "
              f"{'podman':>8} {'updock':>8} | {'p':>4} {'u':>4} | "
              f"{'podman':>11} {'updock':>11}")  # fmt: skip
        for units, images in sizes:
            for tool, cmd in tools.items():
                results[tool].append(measure(lab, proxy, cmd, units, images, args.rtt_ms / 1000))
            p, u = results["podman"][-1], results["updock"][-1]
            ratio = p.wall / u.wall
            print(
                f"{units:>8} {images:>6} | {p.wall:>7.1f}s {u.wall:>7.1f}s {ratio:>5.2f}x | "
                f"{p.median_down:>9.2f} {u.median_down:>10.2f} | {p.max_down:>8.2f} "
                f"{u.max_down:>8.2f} | {p.good:>4} {u.good:>4} | "
                f"{p.cpu:>5.1f} ({p.systemd_cpu:>3.1f}) {u.cpu:>5.1f} ({u.systemd_cpu:>3.1f})",
                flush=True,
            )
            target = TARGETS.get(units)
            if target is not None and ratio < target:
                missed.append(f"{units} services: podman/updock {ratio:.2f}x < {target:g}x")
            if u.median_down > p.median_down or u.max_down > p.max_down:
                missed.append(f"{units} services: updock's downtime is worse than podman's")
            if u.good != units:
                missed.append(f"{units} services: updock left {units - u.good} not active on v2")
        lab.reset()
    if args.plot is not None:
        _plot(args.plot, [n for n, _ in sizes], results)
    print()
    if missed:
        print("targets missed: " + "; ".join(missed))
        return 1
    print("all targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
