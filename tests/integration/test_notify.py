"""Notifications against real receivers on 127.0.0.1: the built-in JSON webhook, apprise's
`json://` and `mailto://` (a real SMTP server, aiosmtpd), and notifiers that fail: down, slow,
answering 500. A failure is a warning, never raised, and never holds the caller longer than the
timeout. (A real run with notifications is in test_publish.py.)"""

from __future__ import annotations

import email
import email.policy
import logging
import re
import time
from collections.abc import Iterator
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.unit.test_notify_message import RUN
from updock.errors import ConfigError
from updock.notify import notifiers, send
from updock.notify.message import DEFAULT_EVENTS, Templates, compose
from updock.testing.lab import free_port
from updock.testing.receiver import Receiver

MESSAGE = compose(RUN, DEFAULT_EVENTS, Templates())


class _Inbox:
    """An aiosmtpd handler that keeps every mail."""

    def __init__(self) -> None:
        self.mails: list[tuple[str, list[str], EmailMessage]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content if isinstance(envelope.content, bytes) else b""
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.mails.append((str(envelope.mail_from), list(envelope.rcpt_tos), parsed))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[int, _Inbox]]:
    """A real SMTP server on 127.0.0.1 (aiosmtpd), stopped after the test."""
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller.port, inbox
    finally:
        controller.stop()


def test_the_webhook_posts_the_run_as_json() -> None:
    with Receiver() as receiver:
        delivered = send(MESSAGE, notifiers([f"{receiver.url}/hooks/updock"]), timeout=5)
        (got,) = receiver.wait(1)
    assert delivered == 1
    assert (got.method, got.path) == ("POST", "/hooks/updock")
    assert got.headers["Content-Type"] == "application/json"
    doc = got.json()
    assert isinstance(doc, dict)
    assert doc["title"] == "updock on web01: 1 updated, 1 rolled back"
    assert [c["container"] for c in doc["containers"]] == ["api", "web"]
    assert doc["containers"][0]["error"].startswith("verifying unit container-api.service")
    assert doc["body"] == MESSAGE.body


def test_apprise_json_url_gets_the_title_and_body() -> None:
    with Receiver() as receiver:
        delivered = send(MESSAGE, notifiers([f"json://127.0.0.1:{receiver.port}/apprise"]))
        (got,) = receiver.wait(1)
    assert delivered == 1
    assert got.path == "/apprise"
    doc = got.json()
    assert isinstance(doc, dict)
    assert (doc["title"], doc["message"]) == (MESSAGE.title, MESSAGE.body)


def test_apprise_mailto_sends_a_mail_to_a_real_smtp_server(smtp: tuple[int, _Inbox]) -> None:
    port, inbox = smtp
    url = f"mailto://127.0.0.1:{port}?from=updock@example.org&to=ops@example.org&mode=insecure"
    assert send(MESSAGE, notifiers([url])) == 1
    ((sender, recipients, mail),) = inbox.mails
    assert (sender, recipients) == ("updock@example.org", ["ops@example.org"])
    assert mail["Subject"] == MESSAGE.title
    body = mail.get_body(("plain",))
    assert body is not None
    assert "api (container-api.service): rolled back" in body.get_content()


def test_failing_notifiers_are_warnings_within_the_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    down = f"http://127.0.0.1:{free_port()}/down"
    with (
        Receiver(status=500) as broken,
        Receiver(delay=30) as slow,
        Receiver() as good,
        caplog.at_level(logging.WARNING, logger="updock.notify"),
    ):
        urls = [down, f"{broken.url}/500", f"{slow.url}/slow", f"json://127.0.0.1:{broken.port}/a"]
        targets = notifiers([*urls, f"{good.url}/ok"])
        started = time.monotonic()
        delivered = send(MESSAGE, targets, timeout=2)
        took = time.monotonic() - started
        assert len(good.wait(1)) == 1
    assert delivered == 1  # the good one
    assert took < 4  # the slow one was not waited for
    text = caplog.text
    assert "notification to http://127.0.0.1:" in text
    assert "failed: no answer (ConnectionError)" in text
    assert "failed: answered 500 Internal Server Error" in text
    # Its own read timeout or the wait for all: either way, no answer.
    assert re.search(f"notification to http://127.0.0.1:{slow.port}[: ].*no answer", text)
    assert (
        f"notification to json://127.0.0.1:{broken.port} failed: Failed to send JSON POST "
        "notification: Internal server error., error=500." in text
    )
    assert "/down" not in text  # URLs are named by scheme and host only


def test_urls_nothing_can_send_to_are_errors_before_the_run() -> None:
    with pytest.raises(ConfigError, match="has no scheme"):
        notifiers(["127.0.0.1:8080/hook"])
    with pytest.raises(ConfigError, match=r"notify URL nosuch://host: apprise cannot send"):
        notifiers(["nosuch://user:secret@host/path"])
