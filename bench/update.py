"""Real updates: podman auto-update and updock auto-update on the same scenario, side by side.

N services over M images in the lab's systemd; a new version of every image is pushed; each tool
then updates them for real (on its own, identical set-up). Prints the wall time of each, their
ratio, and whether every service ended active on the new version. podman restarts the units one
at a time and trusts systemd's job result; updock restarts units that share no image name side
by side and verifies each (settle time, health), which costs the settle time per group of units.

    sudo .venv/bin/python bench/update.py [--units N --images M --settle SECONDS]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from updock.testing.lab import Lab, running_lab


def _setup(lab: Lab, units: int, images: int) -> list[str]:
    names = [f"{lab.plain.host}/upd-{i}:latest" for i in range(images)]
    for name in names:
        lab.build_image(name, version="v1")
        lab.pull(name)
    services = [f"upd-{j:03d}" for j in range(units)]
    unit_names = []
    for j, service in enumerate(services):
        svc = lab.create_service(service, names[j % images], pull=False, start=False)
        unit_names.append(svc.unit)
    lab.systemctl("start", *unit_names, timeout=600)
    for name in names:
        lab.build_image(name, version="v2")
    return services


def _run(lab: Lab, cmd: list[str], services: list[str]) -> tuple[float, int, int]:
    started = time.perf_counter()
    res = lab.run(cmd, check=False, timeout=1800)
    wall = time.perf_counter() - started
    time.sleep(1)
    good = 0
    for service in services:
        version = lab.run(["podman", "exec", service, "/bin/cat", "/version"], check=False)
        active = lab.unit_state(f"container-{service}.service") == "active"
        good += int(active and version.stdout.strip() == "v2")
    return wall, res.returncode, good


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", type=int, default=16, metavar="N")
    parser.add_argument("--images", type=int, default=4, metavar="M")
    parser.add_argument("--settle", type=float, default=5.0, help="updock's --settle-time")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/update.py needs root (the lab runs systemd and podman as root)")
        return 2
    tools = {
        "podman auto-update": ["podman", "auto-update", "--format", "json"],
        "updock auto-update": [
            sys.executable, "-m", "updock", "auto-update", "--format", "json",
            f"--settle-time={args.settle:g}",
        ],
    }  # fmt: skip
    results = {}
    with running_lab() as lab:
        print(
            f"real update of {args.units} units over {args.images} images "
            f"(updock settle time {args.settle:g}s)"
        )
        for tool, cmd in tools.items():
            lab.reset()
            services = _setup(lab, args.units, args.images)
            results[tool] = _run(lab, cmd, services)
            wall, code, good = results[tool]
            print(
                f"  {tool:20} {wall:7.2f}s  exit {code:3}  "
                f"{good}/{args.units} active on the new version"
            )
    podman, updock = results["podman auto-update"][0], results["updock auto-update"][0]
    print(f"  updock / podman: {updock / podman:.2f}x the time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
