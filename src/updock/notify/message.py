"""The message of a run: which runs notify (`--notify-on`), its title and body, from templates.

One message per run, only when something the user asked about happened (`EVENTS`). The title
says the host and the counts; the body has one line per container that matched, made from a
`str.format` template (`Templates`), and the run's errors. str.format rather than Jinja2: the
per-container template is the only loop a message needs, and it costs no dependency.

Fields of the title template: `host`, `engine`, `summary` ("1 updated, 1 rolled back"), and the
counts `updated`, `rolled_back`, `failed`, `available`, `unchanged`. Fields of the line
template: `host`, `engine`, `unit`, `container`, `image`, `old_digest`, `new_digest` (short),
`status` (the report's: true, false, failed, pending, rolled back), `outcome` (in words),
`duration` (e.g. "6.2s"), `error` (what was seen, for a failure or a rollback) and `seen` (the
error on a line of its own, indented; "" when there is none).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from updock.core.model import Status
from updock.record import RunRecord, TaskRecord, short_digest

#: The events a user may be notified of, and the report status each stands for.
EVENTS = {
    "updated": Status.UPDATED,
    "rolled-back": Status.ROLLED_BACK,
    "failed": Status.FAILED,
    "available": Status.PENDING,
}

#: Notified when the user does not choose (a dry run's `available` is asked for explicitly).
DEFAULT_EVENTS = frozenset({"updated", "rolled-back", "failed"})

_WORDS = {
    Status.UPDATED: "updated",
    Status.ROLLED_BACK: "rolled back",
    Status.FAILED: "failed",
    Status.PENDING: "update available",
    Status.NOT_UPDATED: "up to date",
}

#: The counts of the title, in the order they are said.
_COUNTED = (
    (Status.UPDATED, "updated", "updated"),
    (Status.ROLLED_BACK, "rolled_back", "rolled back"),
    (Status.FAILED, "failed", "failed"),
    (Status.PENDING, "available", "update(s) available"),
)

DEFAULT_TITLE = "updock on {host}: {summary}"
DEFAULT_LINE = "{container} ({unit}): {outcome}, {image} {old_digest} -> {new_digest}{seen}"


def parse_events(words: Iterable[str]) -> frozenset[str]:
    """The events named (`updated,failed` may come as one word or several).

    Raises:
        ValueError: a word names no event (the message lists them).
    """
    events = {w.strip() for word in words for w in word.split(",") if w.strip()}
    unknown = sorted(events - EVENTS.keys())
    if unknown:
        raise ValueError(
            f"{', '.join(map(repr, unknown))}: no such event (choose from {', '.join(EVENTS)})"
        )
    return frozenset(events)


@dataclass(frozen=True)
class Templates:
    """How a message reads (see the module's docstring for the fields).

    Attributes:
        title: the title's template.
        line: each listed container's template.
    """

    title: str = DEFAULT_TITLE
    line: str = DEFAULT_LINE

    def check(self) -> None:
        """Format both with sample values.

        Raises:
            ValueError: a template names a field that does not exist, or is malformed.
        """
        check_template("title", self.title)
        check_template("line", self.line)


def check_template(name: str, template: str) -> str:
    """`template` (of the title or of a line), once formatted with sample values.

    Raises:
        ValueError: it names a field that does not exist, or is malformed.
    """
    sample = TaskRecord("u.service", "c", "0" * 64, "podman", "i", "registry", Status.FAILED)
    if name == "title":
        fields = _title_fields(RunRecord(tasks=(sample,)))
    else:
        fields = _line_fields(sample, "host")
    try:
        template.format(**fields)
    except KeyError as exc:
        raise ValueError(
            f"the {name} template names {exc.args[0]!r}, which is no field (fields: "
            f"{', '.join(sorted(fields))})"
        ) from None
    except (ValueError, IndexError, AttributeError) as exc:
        raise ValueError(f"the {name} template is malformed: {exc}") from None
    return template


@dataclass(frozen=True)
class Message:
    """One run's message.

    Attributes:
        title: one line: host and counts.
        body: a line per container listed, then the run's errors.
        payload: the same as JSON, for the webhook (see `payload`).
    """

    title: str
    body: str
    payload: dict[str, object]


def wanted(record: RunRecord, events: Collection[str]) -> bool:
    """Whether the run did something the user asked to be told about (errors are failures)."""
    statuses = {EVENTS[e] for e in events}
    if "failed" in events and record.errors:
        return True
    return any(t.status in statuses for t in record.tasks)


def compose(record: RunRecord, events: Collection[str], templates: Templates) -> Message:
    """The message of a run: the containers whose outcome is among `events`, in report order."""
    statuses = {EVENTS[e] for e in events}
    listed = [t for t in record.tasks if t.status in statuses]
    title = templates.title.format(**_title_fields(record))
    lines = [templates.line.format(**_line_fields(t, record.host)) for t in listed]
    if record.errors and "failed" in events:
        lines.append("errors:" if lines else "errors of the run:")
        lines += [_indented(e, "  - ") for e in record.errors]
    return Message(title, "\n".join(lines), payload(record, title, "\n".join(lines), listed))


def payload(
    record: RunRecord, title: str, body: str, listed: Iterable[TaskRecord]
) -> dict[str, object]:
    """The webhook's JSON document: the title and body, and the same facts as fields."""
    return {
        "title": title,
        "body": body,
        "host": record.host,
        "engine": record.engine,
        "kind": record.kind,
        "dry_run": record.dry_run,
        "started": record.started,
        "duration": round(record.duration, 3),
        "counts": {key: record.count(status) for status, key, _ in _COUNTED}
        | {"unchanged": record.count(Status.NOT_UPDATED)},
        "containers": [
            {
                "unit": t.unit,
                "container": t.container,
                "engine": t.engine,
                "image": t.image,
                "old_digest": short_digest(t.old_digest),
                "new_digest": short_digest(t.new_digest),
                "status": str(t.status),
                "outcome": _WORDS[t.status],
                "duration": round(t.duration, 3),
                "error": t.error,
            }
            for t in listed
        ],
        "errors": list(record.errors),
    }


def summary(record: RunRecord) -> str:
    """`1 updated, 1 rolled back` (the counts that are not 0), or "nothing changed"."""
    parts = [f"{record.count(s)} {words}" for s, _, words in _COUNTED if record.count(s)]
    if record.errors and not record.count(Status.FAILED):
        parts.append(f"{len(record.errors)} error{'s' if len(record.errors) > 1 else ''}")
    return ", ".join(parts) or "nothing changed"


def _title_fields(record: RunRecord) -> dict[str, object]:
    fields: dict[str, object] = {key: record.count(s) for s, key, _ in _COUNTED}
    return fields | {
        "host": record.host,
        "engine": record.engine,
        "summary": summary(record),
        "unchanged": record.count(Status.NOT_UPDATED),
    }


def _line_fields(task: TaskRecord, host: str) -> dict[str, object]:
    return {
        "unit": task.unit,
        "container": task.container,
        "engine": task.engine,
        "image": task.image,
        "old_digest": short_digest(task.old_digest) or "-",
        "new_digest": short_digest(task.new_digest) or "-",
        "status": str(task.status),
        "outcome": _WORDS[task.status],
        "duration": f"{task.duration:.1f}s",
        "error": task.error,
        "seen": _indented(task.error, "\n    seen: ") if task.error else "",
        "host": host,
    }


def _indented(text: str, first: str) -> str:
    """`text` after `first`, its further lines indented as far."""
    pad = "\n" + " " * len(first.lstrip("\n"))
    return first + text.replace("\n", pad)
