"""Run `ServiceManager` calls on one connection and print their outcomes as JSON.

The lab's systemd socket exists only inside the lab's mount namespace, so test_systemd.py runs
this file there (`lab.run`). Standard input: `{"timeout": SECONDS, "calls": [[METHOD, UNIT], ...],
"connections": N, "parallel": BOOL}` with METHOD "restart", "active_state" or "job_pending": the
calls run on one connection (each in a thread of its own, all at once, when "parallel" is true),
then again on a new one, N times in all (default 1). Standard output: a JSON list,
one object per call: `{"value": ..., "seconds": ...}` or
`{"error": MESSAGE, "cause": EXCEPTION_TYPE, "seconds": ...}`.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from updock.errors import ServiceError
from updock.systemd import ServiceManager, connect


def call(manager: ServiceManager, method: str, unit: str) -> dict[str, Any]:
    """One call, timed; a ServiceError becomes its message and the type of its cause."""
    start = time.monotonic()
    outcome: dict[str, Any]
    try:
        if method == "restart":
            manager.restart(unit)
            outcome = {"value": None}
        elif method == "active_state":
            outcome = {"value": manager.active_state(unit)}
        elif method == "job_pending":
            outcome = {"value": manager.job_pending(unit)}
        else:
            raise ValueError(f"unknown method {method!r}")
    except ServiceError as exc:
        cause = type(exc.__cause__).__name__ if exc.__cause__ else None
        outcome = {"error": str(exc), "cause": cause}
    outcome["seconds"] = round(time.monotonic() - start, 3)
    return outcome


def run_all(
    manager: ServiceManager, calls: list[list[str]], *, parallel: bool
) -> list[dict[str, Any]]:
    """Each call's outcome, in the order of `calls`."""
    if not parallel:
        return [call(manager, method, unit) for method, unit in calls]
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(lambda c: call(manager, c[0], c[1]), calls))


def main() -> None:
    request = json.load(sys.stdin)
    outcomes = []
    for _ in range(request.get("connections", 1)):
        manager = connect(timeout=request.get("timeout", 300))
        try:
            outcomes += run_all(manager, request["calls"], parallel=request.get("parallel", False))
        finally:
            manager.close()
    json.dump(outcomes, sys.stdout)


if __name__ == "__main__":
    main()
