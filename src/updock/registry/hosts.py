"""What the client knows of each host for the run: per registry the scheme it speaks and the
authentication it wants (learned by the first contact, or remembered from an earlier run in the
hints file), and per host what its requests share (`attempts.HostPacing`).

One lock (`Hosts.lock`) guards every `HostState` but its pacing, which guards itself.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from updock.registry.attempts import HostPacing
from updock.registry.challenge import Challenge
from updock.registry.contact import Turn
from updock.registry.hints import Hint


@dataclass
class HostState:
    """What the client knows of one registry host for the run.

    Attributes:
        pacing: what the requests to it share (slots, a 429's pause, unreachable).
        scheme: "https" or "http" once known.
        challenge: the authentication it asked for (None: none so far).
        first_contact: a first request is learning scheme and authentication: others wait.
        contacted: the first request has ended: later requests use what it learned.
        confirmation: a request is asking the registry whether a token server of the hints is
            still its own, before credentials go there: other requests with credentials wait.
        scheme_hinted: `scheme` comes from an earlier run, not from this one.
        challenge_hinted: `challenge` comes from an earlier run, not from this one.
    """

    pacing: HostPacing
    scheme: str | None = None
    challenge: Challenge | None = None
    first_contact: Turn = field(default_factory=Turn)
    contacted: bool = False
    confirmation: Turn = field(default_factory=Turn)
    scheme_hinted: bool = False
    challenge_hinted: bool = False


class Hosts:
    """The hosts of a run: registries (with what the hints say of them) and token servers.

    Args:
        concurrency: requests in flight to one host at most.
        hints: what earlier runs learned, by registry host.
    """

    def __init__(self, concurrency: int, hints: Mapping[str, Hint]) -> None:
        self.lock = threading.Lock()
        self._concurrency = concurrency
        self._hints = dict(hints)
        self._registries: dict[str, HostState] = {}
        self._token_servers: dict[str, HostPacing] = {}

    def registry(self, endpoint: str) -> HostState:
        """The state of the registry served at `endpoint`, made on first use (from its hint)."""
        with self.lock:
            state = self._registries.get(endpoint)
            if state is None:
                state = HostState(HostPacing(self._concurrency))
                hint = self._hints.get(endpoint)
                if hint is not None:  # no first contact to wait for: every request goes at once
                    state.scheme, state.scheme_hinted = hint.scheme, True
                    state.challenge = _challenge_of(hint)
                    state.challenge_hinted = state.challenge is not None
                    state.contacted = True
                self._registries[endpoint] = state
            return state

    def token_server(self, host: str) -> HostPacing:
        """What the requests to the token server `host` share."""
        with self.lock:
            return self._token_servers.setdefault(host, HostPacing(self._concurrency))

    def learned(self) -> dict[str, Hint]:
        """What this run knows of each registry whose scheme it knows, as hints to keep."""
        with self.lock:
            return {
                endpoint: _hint_of(state.scheme, state.challenge)
                for endpoint, state in self._registries.items()
                if state.scheme is not None
            }


def _challenge_of(hint: Hint) -> Challenge | None:
    if hint.auth == "basic":
        return Challenge("basic")
    if hint.auth == "bearer" and hint.realm:
        return Challenge("bearer", hint.realm, hint.service)
    return None


def _hint_of(scheme: str, challenge: Challenge | None) -> Hint:
    if challenge is None:
        return Hint(scheme)
    return Hint(scheme, challenge.scheme, challenge.realm, challenge.service)
