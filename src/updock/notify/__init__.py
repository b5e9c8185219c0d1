"""Notifications: one message per run, to webhooks and apprise URLs, never failing the run.

    message.py     which runs notify (`--notify-on`), the title and body (templates), the JSON
    webhook.py     the built-in JSON webhook (`http://`, `https://`): a POST with requests
    apprise.py     every other URL, through apprise (the `updock[notify]` extra)

`notifiers` turns the user's URLs into senders, checking each before the run (a URL nothing can
send to is an error, exit 125, and nothing changes). `send` delivers one message to all of them
side by side, each in a thread of its own, and waits at most its timeout for all together: a
notifier that fails or is slow is a warning in the run's output (shown at every log level: it is
part of the run's result, not a diagnostic), never a failed update, and never holds the run
longer. A notifier still busy then is left behind (its thread is a daemon).

URLs are named in messages by scheme and host only: their paths, users and passwords often are
secrets (a Slack webhook's path, a mail password).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from updock.errors import ConfigError, UpdockError
from updock.logs import show_warnings
from updock.notify.message import Message

log = logging.getLogger(__name__)

#: Seconds all notifiers of a run have, together, unless the user says otherwise.
DEFAULT_TIMEOUT = 10.0

WEBHOOK_SCHEMES = ("http", "https")


class NotifyError(UpdockError):
    """Raised by a notifier that could not deliver a message (its message says why)."""


@dataclass(frozen=True)
class Notifier:
    """Sends messages to one place (or to several, for apprise).

    Attributes:
        name: what messages call it (scheme and host only: no secret).
        deliver: sends one message within the seconds given; raises `NotifyError`.
    """

    name: str
    deliver: Callable[[Message, float], None]


def safe_name(url: str) -> str:
    """`scheme://host[:port]` of a URL, without user, password, path or query."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return url.partition(":")[0] + "://..."
    return f"{parts.scheme}://{host}{port}"


def notifiers(urls: Sequence[str]) -> list[Notifier]:
    """A notifier per webhook URL, and one for all apprise URLs together.

    Raises:
        ConfigError: a URL has no scheme, an apprise URL is given without apprise installed,
            or apprise cannot send to it (the message names the URL by scheme and host).
    """
    found: list[Notifier] = []
    others: list[str] = []
    for url in urls:
        scheme = urlsplit(url).scheme.lower() if "://" in url else ""
        if not scheme:
            raise ConfigError(f"notify URL {safe_name(url)!r} has no scheme (such as https://)")
        if scheme in WEBHOOK_SCHEMES:
            from updock.notify.webhook import webhook

            found.append(webhook(url, safe_name(url)))
        else:
            others.append(url)
    if others:
        from updock.notify.apprise import apprise_notifier

        found.append(apprise_notifier(others, [safe_name(u) for u in others]))
    return found


def send(message: Message, targets: Sequence[Notifier], timeout: float = DEFAULT_TIMEOUT) -> int:
    """Deliver `message` to every target, side by side, waiting at most `timeout` seconds.

    Failures and targets still busy after the timeout are logged as warnings (shown at every
    log level) and never raised.

    Returns:
        How many targets took the message.
    """
    show_warnings(log)  # a notification that failed is part of the run's result
    done: dict[str, BaseException | None] = {}
    lock = threading.Lock()

    def deliver(target: Notifier) -> None:
        try:
            target.deliver(message, timeout)
            error: BaseException | None = None
        except Exception as exc:  # any failure of a notifier is only a warning
            error = exc
        with lock:
            done[target.name] = error

    threads = []
    for target in targets:
        thread = threading.Thread(target=deliver, args=(target,), name="notify", daemon=True)
        thread.start()
        threads.append((target, thread))
    deadline = time.monotonic() + timeout
    delivered = 0
    for target, thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
        with lock:
            finished, error = target.name in done, done.get(target.name)
        if not finished:
            log.warning(
                "notification to %s: no answer within %gs; the run's result is unchanged",
                target.name,
                timeout,
            )
        elif error is not None:
            log.warning(
                "notification to %s failed: %s; the run's result is unchanged", target.name, error
            )
        else:
            delivered += 1
            log.info("notification to %s sent", target.name)
    return delivered
