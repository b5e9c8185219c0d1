"""Pure parsing in the podman engine: the raw image name from the creating command."""

from __future__ import annotations

import pytest

from updock.engines.podman import raw_image_name

RESOLVED = "127.0.0.1:5000/app:latest"


@pytest.mark.parametrize(
    ("command", "resolved", "raw"),
    [
        (["podman", "run", "-d", "--name", "x", RESOLVED], RESOLVED, RESOLVED),
        (["podman", "run", "-d", f"docker://{RESOLVED}"], RESOLVED, f"docker://{RESOLVED}"),
        (["podman", "run", "--rm", "foo:bar", "sh"], "localhost/foo:bar", "foo:bar"),
        (["podman", "run", "alpine:3"], "docker.io/library/alpine:3", "alpine:3"),
        # An option's value that looks like the image is not taken for it.
        (
            ["podman", "run", "--label", "foo:bar", "--name", "foo:bar", "foo:bar"],
            "localhost/foo:bar",
            "foo:bar",
        ),
        (
            ["podman", "run", "--label=a=b", "--name", RESOLVED, f"docker://{RESOLVED}"],
            RESOLVED,
            f"docker://{RESOLVED}",
        ),
        # No creating command (a container made through the API): the resolved name.
        ([], RESOLVED, RESOLVED),
        (["podman", "run", "something/else:1"], RESOLVED, RESOLVED),
    ],
)
def test_raw_image_name(command: list[str], resolved: str, raw: str) -> None:
    assert raw_image_name(command, resolved) == raw
