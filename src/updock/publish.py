"""What a run did, told: the history, the metrics, the notifications (after the report).

`Publisher` is made before the run, from the user's settings (`PublishSettings`), so that a
notify URL or template that cannot work is an error before anything changes (exit 125). After
the run, `publish` takes the run's record (`record.RunRecord`) and, in this order:

1. appends its updates, rollbacks and failures to the history, and adds it to the metrics'
   totals, in the state folder (both under the history's lock);
2. writes the metrics textfile, if asked (`--metrics-file`);
3. sends one message, if the run did something the user asked to be told about.

None of this changes the run's outcome or exit status: what fails is a warning, shown at every
log level.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from updock.errors import ConfigError, UpdockError
from updock.logs import show_warnings
from updock.notify import DEFAULT_TIMEOUT, Notifier, notifiers, send
from updock.notify.message import DEFAULT_EVENTS, Templates, compose, wanted
from updock.record import RunRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublishSettings:
    """What to do with a run's record.

    Attributes:
        notify_urls: webhook (http, https) and apprise URLs.
        notify_on: the events that make a run notify (`notify.message.EVENTS`).
        notify_timeout: seconds all notifiers have, together.
        templates: how the message reads.
        metrics_file: the node_exporter textfile to write, or None.
        state_dir: the state folder (the history and the metrics' totals); None: the default.
        history: append the run to the history (and its totals).
    """

    notify_urls: tuple[str, ...] = ()
    notify_on: frozenset[str] = DEFAULT_EVENTS
    notify_timeout: float = DEFAULT_TIMEOUT
    templates: Templates = field(default_factory=Templates)
    metrics_file: Path | None = None
    state_dir: Path | None = None
    history: bool = True


class Publisher:
    """Publishes runs' records as `settings` say.

    Raises:
        ConfigError: a notify URL cannot be sent to, or a template is broken.
    """

    def __init__(self, settings: PublishSettings) -> None:
        self.settings = settings
        try:
            settings.templates.check()
        except ValueError as exc:
            raise ConfigError(f"notification template: {exc}") from exc
        self._notifiers: list[Notifier] = notifiers(settings.notify_urls)

    def publish(self, record: RunRecord) -> None:
        """History and totals, the metrics file, the notification; never raises (warns)."""
        show_warnings(log)  # now: the log level is configured
        totals = None
        if self.settings.history:
            totals = self._ledger(record)
        if self.settings.metrics_file is not None and totals is not None:
            from updock.metrics import write_textfile

            try:
                write_textfile(self.settings.metrics_file, totals)
            except OSError as exc:
                log.warning("metrics file %s not written: %s", self.settings.metrics_file, exc)
        if self._notifiers and wanted(record, self.settings.notify_on):
            message = compose(record, self.settings.notify_on, self.settings.templates)
            send(message, self._notifiers, self.settings.notify_timeout)

    def _ledger(self, record: RunRecord) -> dict[str, object] | None:
        """Append the record to the history and to the totals; the new totals."""
        from updock.history import History, entries_of
        from updock.metrics import add_run, load_totals, save_totals
        from updock.state import default_state_dir

        history = History(self.settings.state_dir or default_state_dir())
        try:
            with history.locked() as folder:
                try:
                    history.append(folder, entries_of(record))
                except ConfigError as exc:
                    log.warning("%s", exc)
                totals = add_run(load_totals(folder), record, time.time())
                try:
                    save_totals(folder, totals)
                except OSError as exc:
                    log.warning("metrics totals in %s not saved: %s", history.folder, exc)
                return totals
        except ConfigError as exc:
            log.warning("history and metrics not written: %s", exc)
            return None


def failed_run(errors: Sequence[BaseException], *, dry_run: bool, started: float) -> RunRecord:
    """The record of a run that ended with errors before it had a record of its own (it could
    not take the lock, list containers, ...)."""
    return RunRecord(
        host=socket.gethostname(),
        dry_run=dry_run,
        started=started,
        duration=time.time() - started,
        errors=tuple(str(e) for e in errors),
    )


__all__ = ["PublishSettings", "Publisher", "UpdockError", "failed_run"]
