"""Which scheme a registry speaks: HTTPS, and for an insecure registry plain HTTP when HTTPS
fails (containers/image tries the same two, in that order).

The first request learns it and records it in the host's state (`hosts.py`); a scheme
remembered from an earlier run that no longer works (the registry moved to TLS, or away from it)
is forgotten, and both are tried again as without hints.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from updock.errors import RegistryError
from updock.registry.call import Call
from updock.registry.exchange import ExchangeFailure, Reply, TLSFailure, TransientFailure
from updock.registry.hosts import HostState

log = logging.getLogger(__name__)

#: Sends one request to a URL: (method, url, headers, verify) -> the reply (the transport's).
Exchange = Callable[[str, str, Mapping[str, str], bool], Reply]


def exchange_at(
    call: Call,
    state: HostState,
    lock: threading.Lock,
    exchange: Exchange,
    method: str,
    path: str,
    headers: Mapping[str, str],
) -> Reply:
    """One attempt of `method path`, over the scheme the registry speaks.

    Args:
        call: the check (its endpoint and TLS settings).
        state: what is known of the registry (its scheme is read and recorded).
        lock: the lock that guards `state`.
        exchange: sends one request.
        method: "HEAD" or "GET".
        path: the path of the URL.
        headers: the request's headers.

    Raises:
        TransientFailure: the connection failed or timed out (over each scheme tried).
        RegistryError: anything else that went wrong (TLS, a broken URL, too big a body).
    """
    with lock:
        known, hinted = state.scheme, state.scheme_hinted
    if not call.tls.allow_http:
        schemes = ["https"]
    elif known is not None:
        schemes = [known]
    else:
        schemes = ["https", "http"]
    https_failure: ExchangeFailure | None = None
    for scheme in schemes:
        url = f"{scheme}://{call.endpoint}{path}"
        try:
            reply = exchange(method, url, headers, call.tls.verify)
            if hinted and scheme == "http" and reply.status == 400:
                # What a TLS server answers to plain HTTP: the registry moved to TLS.
                raise TLSFailure("plain HTTP refused", "plain HTTP refused")
        except (TransientFailure, TLSFailure) as exc:
            if hinted and call.tls.allow_http and len(schemes) == 1:
                # An earlier run's scheme no longer works: try both, as without hints.
                log.debug("%s over %s failed (%s)", call.endpoint, scheme, exc.message)
                with lock:
                    if state.scheme == scheme and state.scheme_hinted:
                        state.scheme, state.scheme_hinted = None, False
                return exchange_at(call, state, lock, exchange, method, path, headers)
            if scheme == "https" and len(schemes) > 1:
                log.debug("HTTPS to %s failed (%s); trying HTTP", call.endpoint, exc.message)
                https_failure = exc
                continue
            if isinstance(exc, TLSFailure):
                raise RegistryError(f"checking {call.image}: {exc.message}") from exc.__cause__
            if https_failure is not None:
                raise TransientFailure(
                    f"cannot connect to {call.endpoint} over HTTPS ({https_failure.reason}) "
                    f"nor over HTTP ({exc.reason})"
                ) from exc.__cause__
            raise
        except ExchangeFailure as exc:
            raise RegistryError(f"checking {call.image}: {exc.message}") from exc.__cause__
        with lock:
            state.scheme, state.scheme_hinted = scheme, False
        return reply
    raise AssertionError("unreachable: the last scheme returns or raises")  # pragma: no cover
