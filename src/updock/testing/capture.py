"""Capture what a real podman prints, as fixtures for the engine's parsing tests.

`python -m updock.testing.capture FLAVOUR DEST` starts a lab of that flavour (bookworm: podman
4.3.1, trixie: podman 5.4.2), sets up the kinds of containers updock meets (a labelled service
with a health check, an unlabelled one, a kube pod with per-container policies and its infra
container) and writes, unmodified, into DEST/podman-<version>/:

- `ps.json`: `podman ps --no-trunc --format json` (what updock lists with);
- `container-inspect.json`: `podman container inspect` of every running container;
- `image-inspect.json`: `podman image inspect` of their images.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from updock.prefetch import PS_ARGS
from updock.testing.flavours import make_lab, prepare
from updock.testing.lab import HEALTH_ARGS, Lab

#: Names of the captured containers, which the parsing tests look for.
HEALTHY = "fx-healthy"
PLAIN = "fx-plain"
POD = "fxpod"


def _set_up(lab: Lab) -> None:
    image = lab.build_image(f"{lab.plain.host}/fixture/app:latest")
    lab.create_service(HEALTHY, image, run_args=HEALTH_ARGS)
    lab.create_service(PLAIN, image, policy=None)
    yaml = lab.root / "fixture-pod.yaml"
    yaml.write_text(
        f"""apiVersion: v1
kind: Pod
metadata:
  name: {POD}
  annotations:
    io.containers.autoupdate: "registry"
    io.containers.autoupdate/side: "local"
spec:
  containers:
  - name: main
    image: {image}
  - name: side
    image: {image}
"""
    )
    lab.run(
        ["podman", "kube", "play", "--network", "none", str(yaml)],
        env={"PODMAN_SYSTEMD_UNIT": f"pod-{POD}.service"},
    )
    deadline = time.monotonic() + 30
    while lab.podman("inspect", "--format", "{{.State.Health.Status}}", HEALTHY, check=False) \
            .stdout.strip() != "healthy":  # fmt: skip
        if time.monotonic() > deadline:
            raise TimeoutError(f"{HEALTHY} never became healthy")
        lab.podman("healthcheck", "run", HEALTHY, check=False)
        time.sleep(0.5)


def capture(lab: Lab, dest: Path) -> Path:
    """Set up the containers in `lab` and write podman's output; returns the folder."""
    _set_up(lab)
    folder = dest / f"podman-{'.'.join(map(str, lab.podman_version))}"
    folder.mkdir(parents=True, exist_ok=True)
    ps = lab.podman(*PS_ARGS).stdout
    ids = [c["Id"] for c in json.loads(ps)]
    images = sorted({c["ImageID"] for c in json.loads(ps)})
    outputs = {
        "ps.json": ps,
        "container-inspect.json": lab.podman("container", "inspect", *ids).stdout,
        "image-inspect.json": lab.podman("image", "inspect", *images).stdout,
    }
    for name, text in outputs.items():
        (folder / name).write_text(text)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("flavour")
    parser.add_argument("dest", type=Path)
    args = parser.parse_args()
    prepare([args.flavour])
    lab = make_lab(args.flavour)
    try:
        lab.start()
        print(capture(lab, args.dest))
    finally:
        lab.stop()


if __name__ == "__main__":
    main()
