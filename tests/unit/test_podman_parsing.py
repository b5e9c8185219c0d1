"""Pure parsing in the podman engine: the raw image name from the creating command, and which
containers join another's network namespace."""

from __future__ import annotations

import os
from typing import Any

import pytest

from updock.engines.podman import (
    joining_candidates,
    net_namespace,
    parse_listing,
    raw_image_name,
)

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


def listed(name: str, net: str, **more: Any) -> dict[str, Any]:
    """A running container's `ps` entry (`Net`: its network namespace, for `net` below); its ID
    is its name repeated."""
    return {"Id": (name * 64)[:64], "Names": [name], "State": "running", "Net": net, **more}


def net(entry: Any) -> str:
    return str(entry["Net"])


def test_only_unlabelled_containers_in_a_recreated_ones_namespace_are_inspected() -> None:
    policy = {"io.containers.autoupdate": "registry"}
    vpn = listed("vpn", "41", Labels=policy)
    served = listed("served", "42", Labels={**policy, "PODMAN_SYSTEMD_UNIT": "served.service"})
    entries = [
        vpn,
        served,
        listed("app", "41"),  # in vpn's namespace
        listed("own", "41", Labels=policy),  # labelled: inspected anyway
        listed("member", "41", Pod="p" * 64),  # a pod's: never a follower
        listed("byunit", "41", Labels={"PODMAN_SYSTEMD_UNIT": "x.service"}),
        listed("near", "42"),  # in the namespace of a unit's container: its unit restarts it
        listed("other", "43"),
        listed("unknown", ""),
    ]
    labelled = [vpn, served, entries[3]]
    assert [c["Names"][0] for c in joining_candidates(entries, labelled, net)] == ["app"]
    # No namespace known (not running any more, say): nothing more is inspected.
    unknown = [{**c, "Net": ""} for c in entries]
    assert joining_candidates(unknown, [unknown[0], unknown[1], unknown[3]], net) == []


def test_the_network_namespace_is_read_where_podman_reads_it() -> None:
    # This process's own: podman's `ps --ns` reads the same link of each container's process.
    mine = {"Pid": os.getpid()}
    assert net_namespace(mine) == os.readlink(f"/proc/{os.getpid()}/ns/net")
    assert net_namespace({"Pid": 0}) == net_namespace({}) == ""


def inspected(name: str, mode: str, **more: Any) -> dict[str, Any]:
    return {
        "Id": (name * 64)[:64],
        "Name": name,
        "Image": "i" * 64,
        "HostConfig": {"NetworkMode": mode},
        "State": {"Running": True},
        **more,
    }


def test_the_container_whose_namespace_one_joins_is_named() -> None:
    vpn_id = "vpn" * 21 + "v"
    entries = [
        {"Id": vpn_id, "Names": ["vpn"], "State": "running"},
        *(
            {"Id": (n * 64)[:64], "Names": [n], "State": "running"}
            for n in ("app", "gone", "member", "unit", "own")
        ),
    ]
    found = parse_listing(
        entries,
        [
            inspected("app", f"container:{vpn_id}"),
            inspected("gone", "container:" + "f" * 64),  # not listed: by its ID
            inspected("member", f"container:{vpn_id}", Pod="p" * 64),
            inspected(
                "unit", f"container:{vpn_id}", Config={"Labels": {"PODMAN_SYSTEMD_UNIT": "u"}}
            ),
            inspected("own", "none"),
        ],
    )
    assert {c.name: (c.network_of, c.depends_on) for c in found} == {
        "vpn": ("", ()),
        "app": ("vpn", ("vpn",)),
        "gone": ("f" * 64, ("f" * 64,)),
        "member": ("", ()),
        "unit": ("", ()),
        "own": ("", ()),
    }
