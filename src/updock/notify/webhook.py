"""The built-in JSON webhook: the run's message POSTed as JSON (`message.payload`).

Any 2xx answer is a delivery; anything else, or no answer within the timeout, is a
`NotifyError`. requests is updock's own dependency: this needs no extra.
"""

from __future__ import annotations

import json

from updock import __version__
from updock.notify import Notifier, NotifyError
from updock.notify.message import Message

#: Seconds to wait for a connection, at most (the rest of the timeout is for the answer).
CONNECT_TIMEOUT = 5.0


def webhook(url: str, name: str) -> Notifier:
    """A notifier that POSTs the message's JSON payload to `url`."""

    def deliver(message: Message, timeout: float) -> None:
        import requests

        body = json.dumps(message.payload).encode()
        try:
            with requests.Session() as session:
                session.trust_env = False  # no ~/.netrc credentials sent to a webhook
                resp = session.post(
                    url,
                    data=body,
                    headers={
                        "Content-Type": "application/json",
                        "User-Agent": f"updock/{__version__}",
                    },
                    timeout=(min(CONNECT_TIMEOUT, timeout), timeout),
                    allow_redirects=False,
                )
        except requests.RequestException as exc:
            # The exception's text may repeat the URL, secrets and all: say only its kind.
            raise NotifyError(f"no answer ({type(exc).__name__})") from exc
        if not 200 <= resp.status_code < 300:
            raise NotifyError(f"answered {resp.status_code} {resp.reason}")

    return Notifier(name, deliver)
