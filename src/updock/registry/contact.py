"""The first-contact wait: one request goes first to learn what the others need, the others wait.

The first request of a run to a registry learns which scheme works and which authentication it
wants (`hosts.py` keeps both); while it is in flight the others wait for it instead of each
meeting the same 401 (and each trying HTTPS first). The same turn-taking confirms a token server
that only the hints file names before any credentials go there (`confirmation`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from updock.registry.hosts import HostState


class Turn:
    """Lets one thread at a time go first until what it goes to learn is known.

    Guarded by the lock of the host table. `event` is set when the thread that went first ends.
    """

    def __init__(self) -> None:
        self.event: threading.Event | None = None


@contextlib.contextmanager
def take_turn(lock: threading.Lock, turn: Turn, known: Callable[[], bool]) -> Iterator[bool]:
    """Go first (yields True) while `known()` is false and no other thread goes first; wait for
    the one that does; go on at once (yields False) once `known()` holds.

    `known` is called under `lock`. When the thread that went first ends without making
    `known()` true (it failed), the next waiting thread goes first.
    """
    while True:
        with lock:
            if known():
                lead = False
                break
            if turn.event is None:
                event = turn.event = threading.Event()
                lead = True
                break
            event = turn.event
        event.wait()
    if not lead:
        yield False
        return
    try:
        yield True
    finally:
        with lock:
            turn.event = None
        event.set()


@contextlib.contextmanager
def first_contact(lock: threading.Lock, state: HostState) -> Iterator[None]:
    """Let one request at a time meet a registry until one of them has ended.

    The first request learns the scheme and the authentication the registry wants; the others
    wait for it, then use what it learned. A registry known from the hints has no first contact.
    """
    with take_turn(lock, state.first_contact, lambda: state.contacted) as lead:
        try:
            yield
        finally:
            if lead:
                with lock:
                    state.contacted = True


def confirmation(
    lock: threading.Lock, state: HostState, with_credentials: bool
) -> contextlib.AbstractContextManager[bool]:
    """Whether this request must first ask the registry for its token server (True: it goes
    unauthenticated, and the other requests with credentials wait for its answer).

    A token server named only by the hints file gets no credentials: a hints file that someone
    changed must not lead them elsewhere. The registry's own 401 in this run confirms (or
    replaces) it: one request per registry and run pays that round trip. Anonymous requests use
    the remembered token server at once.
    """

    def confirmed() -> bool:
        challenge = state.challenge
        return (
            not with_credentials
            or not state.challenge_hinted
            or challenge is None
            or challenge.scheme != "bearer"
        )

    return take_turn(lock, state.confirmation, confirmed)
