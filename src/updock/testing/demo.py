"""The demo: a real update and real rollbacks on the lab, and the report.

Run with `./scripts/demo` (root). Three services run in the lab's systemd from the lab registry;
then a new version of each is pushed: a good one for `web`, one whose entrypoint is missing for
`api` (systemd's restart fails), and one that starts and dies two seconds later for `worker`
(systemd's restart succeeds: podman auto-update reports `true` and leaves it down). updock
updates `web` and rolls `api` and `worker` back to the images they ran before, verified, and
sends one notification of it to a webhook receiver on 127.0.0.1, which prints what arrived; then
`updock history` lists what happened.

Then the same on Docker (when docker.io is installed): a dockerd in a network namespace of its
own, two containers no unit runs, a good update of `shop` and one of `cart` that dies after its
start; updock recreates both, keeps `shop` on the new image and puts the old `cart` back, and
`updock history` lists both outcomes.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time

from updock.testing.docker_lab import DockerLab, docker_missing
from updock.testing.flavours import FLAVOURS, make_lab, prepare
from updock.testing.lab import ImageKind, Lab, running_lab
from updock.testing.receiver import Receiver


def _say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def _show(lab: Lab, tool: list[str], *args: str) -> int:
    # As a user would type it: `updock ...`, whatever runs it in this lab's flavour.
    prefix = lab.updock_command()
    shown = ["updock", *tool[len(prefix) :]] if tool[: len(prefix)] == prefix else tool
    print(f"$ {shlex.join([*shown, *args])}", flush=True)
    res = lab.run([*tool, *args], check=False, timeout=300)
    sys.stdout.write(res.stdout)
    sys.stderr.write(res.stderr)
    sys.stdout.flush()
    print(f"(exit status {res.returncode})")
    return res.returncode


def _state(lab: Lab, names: list[str]) -> None:
    for name in names:
        unit = f"container-{name}.service"
        res = lab.run(["podman", "exec", name, "/bin/cat", "/version"], check=False)
        version = res.stdout.strip()
        print(f"  {unit:28} {lab.unit_state(unit):8} running image version {version or '-'}")


def _received(receiver: Receiver) -> None:
    """What the webhook receiver got: the message's title and body, and its JSON fields."""
    _say(f"The webhook receiver on {receiver.url} got {len(receiver.received)} message(s)")
    for got in receiver.received:
        doc = got.json()
        assert isinstance(doc, dict)
        print(f"POST {got.path} ({got.headers.get('Content-Type')})")
        print(f"  title: {doc['title']}")
        for line in str(doc["body"]).splitlines():
            print(f"  | {line}")
        counts = json.dumps(doc["counts"])
        print(f"  counts: {counts}; {len(doc['containers'])} containers listed")


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--tool",
        choices=["updock", "podman"],
        default="updock",
        help="which auto-update to run (default: %(default)s)",
    )
    parser.add_argument(
        "--flavour",
        choices=FLAVOURS,
        default="host",
        help="the lab's podman: the host's, 4.3.1 (bookworm) or 5.4.2 (trixie) (default: "
        "%(default)s)",
    )
    opts = parser.parse_args(argv)
    prepare([opts.flavour])
    lab = make_lab(opts.flavour)
    tool = ["podman", "auto-update"]
    if opts.tool == "updock":
        tool = [*lab.updock_command(), "auto-update"]
    names = ["web", "api", "worker"]
    with running_lab(lab):
        version = ".".join(map(str, lab.podman_version))
        _say(f"Lab up ({lab.flavour}, podman {version}): registry {lab.plain.host}")
        for name in names:
            image = lab.build_image(f"{lab.plain.host}/demo/{name}:latest")
            lab.create_service(name, image)
        _state(lab, names)

        _say("Nothing new in the registry yet")
        _show(lab, tool, "--dry-run")

        _say("Push v2: web good, api with a missing entrypoint, worker dying 2 s after start")
        lab.build_image(f"{lab.plain.host}/demo/web:latest", ImageKind.HEALTHY)
        lab.build_image(f"{lab.plain.host}/demo/api:latest", ImageKind.MISSING_ENTRYPOINT)
        lab.build_image(f"{lab.plain.host}/demo/worker:latest", ImageKind.DIES_AFTER_START)
        _show(lab, tool, "--dry-run")

        metrics = lab.root / "updock.prom"
        with Receiver() as receiver:
            notify = []
            if opts.tool == "updock":
                notify = ["--notify", f"{receiver.url}/updock", "--metrics-file", str(metrics)]
            _say("Update for real: web is updated, api and worker are rolled back")
            status = _show(lab, tool, *notify)
            time.sleep(3)  # long enough for a crash-after-start image to have died
            _state(lab, names)
            if notify:
                _received(receiver)
        if opts.tool == "updock":
            _say("What updock remembers")
            _show(lab, [*lab.updock_command(), "history"])
            _say(f"Its metrics, for node_exporter's textfile collector ({metrics.name})")
            for line in metrics.read_text().splitlines():
                if not line.startswith("#"):
                    print(f"  {line}")
        _say("Done; stopping the lab")
    if opts.tool == "updock":
        docker_status = _docker_demo()
        status = status if docker_status in (0, 125) else docker_status
    return 0 if status in (0, 125) else status


def _docker_demo() -> int:
    """A Docker container updated and one rolled back, recreated by updock."""
    if docker_missing():
        _say(f"Docker part skipped: {', '.join(docker_missing())} not installed")
        return 0
    with DockerLab() as lab:
        _say(f"Docker lab up (dockerd in its own network namespace): registry {lab.registry}")
        for name in ("shop", "cart"):
            image = lab.build_image(f"{lab.registry}/demo/{name}:latest")
            lab.docker("pull", image)
            lab.docker("run", "-d", "--name", name, "--restart", "unless-stopped",
                       "--label", "io.containers.autoupdate=registry", image)  # fmt: skip
        _docker_state(lab)
        _say("Push v2: shop good, cart dying 2 s after start")
        lab.build_image(f"{lab.registry}/demo/shop:latest", ImageKind.HEALTHY)
        lab.build_image(f"{lab.registry}/demo/cart:latest", ImageKind.DIES_AFTER_START)
        args = ["auto-update", "--engine", "docker", "--settle-time", "3"]
        print(f"$ updock {' '.join(args)}", flush=True)
        res = lab.updock(*args)
        sys.stdout.write(res.stdout)
        sys.stderr.write(res.stderr)
        print(f"(exit status {res.returncode})")
        _docker_state(lab)
        _say("What updock remembers of the recreated containers")
        print("$ updock history", flush=True)
        sys.stdout.write(lab.updock("history").stdout)
        return res.returncode


def _docker_state(lab: DockerLab) -> None:
    for name in ("shop", "cart"):
        found = lab.docker("inspect", "--format", "{{.Id}} {{.State.Status}}", name, check=False)
        ident, _, state = found.stdout.strip().partition(" ")
        version = lab.docker("exec", name, "/bin/cat", "/version", check=False).stdout.strip()
        print(f"  container {name:6} {ident[:12]} {state:8} running image version {version or '-'}")


if __name__ == "__main__":
    sys.exit(main())
