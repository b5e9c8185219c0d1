"""Notifications through apprise: mail, chat services, ntfy, ... (the `updock[notify]` extra).

Every URL that is not a plain webhook (`http://`, `https://`) goes to apprise, which knows some
hundred services (`mailto://`, `json://`, `ntfy://`, `slack://`, ...). apprise is imported only
when such a URL is given (it takes a tenth of a second).
"""

from __future__ import annotations

from collections.abc import Sequence

from updock.errors import ConfigError
from updock.notify import Notifier, NotifyError
from updock.notify.message import Message


def apprise_notifier(urls: Sequence[str], names: Sequence[str]) -> Notifier:
    """One notifier for all `urls` (apprise sends to them in turn).

    Raises:
        ConfigError: apprise is not installed, or does not take one of the URLs.
    """
    try:
        import apprise
    except ImportError:
        raise ConfigError(
            f"notify URL {names[0]}: only http:// and https:// webhooks are built in; other "
            "URLs need apprise (pip install 'updock[notify]')"
        ) from None
    client = apprise.Apprise()
    for url, name in zip(urls, names, strict=True):
        if not client.add(url):
            raise ConfigError(f"notify URL {name}: apprise cannot send to it (see its URL docs)")

    def deliver(message: Message, timeout: float) -> None:
        capture = apprise.LogCapture  # untyped in apprise
        level = apprise.logging.WARNING
        with capture(level=level, fmt="%(message)s") as captured:  # type: ignore[no-untyped-call]
            ok = client.notify(
                title=message.title, body=message.body, body_format=apprise.NotifyFormat.TEXT
            )
        if not ok:
            seen = [line for line in captured.getvalue().splitlines() if line.strip()]
            raise NotifyError(seen[-1] if seen else "apprise could not send it")

    return Notifier(" ".join(dict.fromkeys(names)), deliver)
