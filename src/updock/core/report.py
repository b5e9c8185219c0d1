"""The report of a run, formatted byte for byte like `podman auto-update` (podman >= 4.3).

Three outputs, chosen by `--format`:

- "" (and "table"): podman's own template, `\\t{{.Unit}}\\t{{.Container}}\\t{{.Image}}\\t...`,
  written with a header through Go's `text/tabwriter`. The template starts with a tab, so every
  line starts with an empty 12-column cell: podman prints that indentation too.
- "json": Go's `json.MarshalIndent(rows, "", "    ")`.
- anything else: a Go template run once per row. With a `table ` prefix a header comes first and
  the output goes through the tabwriter; without it the output is written as is.

This module holds what podman's `containers/common/pkg/report` adds to Go's libraries (format
normalization, headers, the range podman wraps around a row template); the Go template engine
is `core.gotemplate`, the tabwriter `core.tabwriter`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from updock.core.gotemplate import List, Map, Struct, StructType, Template, go_case, go_json_string
from updock.core.model import ReportRow
from updock.core.tabwriter import tabwrite
from updock.errors import UsageError

#: The fields a template may use, in the order of podman's `autoUpdateOutput` struct.
FIELDS = ("Unit", "Container", "ContainerName", "ContainerID", "Image", "Policy", "Updated")

#: podman's default format (cmd/podman/auto-update.go since v4.3), leading tab included.
DEFAULT_FORMAT = (
    "{{range . }}\t{{.Unit}}\t{{.Container}}\t{{.Image}}\t{{.Policy}}\t{{.Updated}}\n{{end -}}"
)

# podman's tabwriter settings: NewWriter(w, minwidth=12, tabwidth=2, padding=2, ' ', flags).
TAB_MINWIDTH = 12
TAB_PADDING = 2

_TEMPLATE_NAME = "auto-update"
#: podman's row type, as Go's template errors name it.
_ROW_TYPE = StructType("main.autoUpdateOutput", FIELDS)


# --- headers ----------------------------------------------------------------------------------


def camelcase_split(word: str) -> list[str]:
    """Split a word at case changes like containers/common's `camelcase.Split`.

    `ContainerID` gives `["Container", "ID"]`, `PDFLoader` gives `["PDF", "Loader"]`,
    `GL11Version` gives `["GL", "11", "Version"]`.

    Args:
        word: the word.

    Returns:
        Its parts, in order.
    """
    # Runs of lower-case letters, upper-case letters, digits, and anything else.
    runs: list[list[str]] = []
    kinds: list[str] = []
    for char in word:
        category = unicodedata.category(char)
        kind = category if category in ("Ll", "Lu", "Nd") else "other"
        if kinds and kinds[-1] == kind:
            runs[-1].append(char)
        else:
            runs.append([char])
            kinds.append(kind)
    # "PDFL" + "oader" -> "PDF" + "Loader"
    for i in range(len(runs) - 1):
        if kinds[i] == "Lu" and kinds[i + 1] == "Ll":
            runs[i + 1].insert(0, runs[i].pop())
    return ["".join(run) for run in runs if run]


def header_text(field: str) -> str:
    """The column header podman derives from a field name: `ContainerID` -> `CONTAINER ID`."""
    return go_case(" ".join(camelcase_split(field)), upper=True)


# --- containers/common/pkg/report -------------------------------------------------------------

_TABLE_PREFIX = "table "
_TABLE_REPLACEMENTS = (("table ", ""), ("\\t", "\t"), (" ", "\t"), ("\\n", "\n"))
_ESCAPE_REPLACEMENTS = (("\\t", "\t"), ("\\n", "\n"))
_S = r"[\t\n\f\r ]*"  # Go's RE2 `\s*`; Python's `\s` would also match \v and Unicode spaces
# podman's EnforceRange pattern, `(?s){{\s*range\s*\.\s*}}.*{{\s*end\s*-?\s*}}`.
_RANGE_RE = re.compile(
    _S.join([r"\{\{", "range", r"\.", r"\}\}.*\{\{", "end", "-?", r"\}\}"]), re.DOTALL
)


def _replace_all(text: str, replacements: Sequence[tuple[str, str]]) -> str:
    """Go's `strings.Replacer`: one left-to-right pass, earlier pairs win at a position."""
    out: list[str] = []
    i = 0
    while i < len(text):
        for old, new in replacements:
            if text.startswith(old, i):
                out.append(new)
                i += len(old)
                break
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def normalize_format(fmt: str) -> str:
    """podman's `NormalizeFormat`: turn the `\\t` and `\\n` a shell user typed into tab and
    newline, and end the format with a newline.

    A `table ` format also loses the keyword, and its spaces become column separators.

    Args:
        fmt: the `--format` value.

    Returns:
        The template text.
    """
    if fmt.startswith(_TABLE_PREFIX):
        text = _replace_all(fmt, _TABLE_REPLACEMENTS)
    else:
        text = _replace_all(fmt, _ESCAPE_REPLACEMENTS)
    return text if text.endswith("\n") else text + "\n"


def _compile(text: str, fallback: str) -> Template:
    """Parse like podman's Formatter.Parse (the normalized text, else the text as given), then
    check the template against podman's rows."""
    try:
        template = Template(text, _TEMPLATE_NAME)
    except UsageError:
        template = Template(fallback, _TEMPLATE_NAME)
    template.check(_ROW_TYPE)
    return template


def _enforce_range(text: str) -> str:
    return text if _RANGE_RE.search(text) else "{{range .}}" + text + "{{end -}}"


def _headers() -> Map:
    return Map({field: header_text(field) for field in FIELDS})


def _json_report(rows: Sequence[ReportRow]) -> str:
    if not rows:
        return "[]\n"
    objects = []
    for row in rows:
        members = ",\n".join(
            f"        {go_json_string(k, escape_html=True)}: {go_json_string(v, escape_html=True)}"
            for k, v in row.as_dict().items()
        )
        objects.append("    {\n" + members + "\n    }")
    return "[\n" + ",\n".join(objects) + "\n]\n"


def format_report(rows: Sequence[ReportRow], fmt: str) -> str:
    """Format the report of a run as `podman auto-update --format FMT` prints it.

    podman prints nothing at all when a run had no tasks; callers do the same and do not call
    this with no rows (it would print the header alone).

    Args:
        rows: the rows, in any order; they are sorted by `ReportRow.sort_key`.
        fmt: "" or "table" for the default table, "json", or a Go template (`table ` prefix
            for a header and aligned columns).

    Returns:
        The text to write to stdout.

    Raises:
        UsageError: the template is malformed or uses something unknown (the message names the
            template, the position and the field or function).
    """
    ordered = sorted(rows, key=ReportRow.sort_key)
    if fmt == "json":
        return _json_report(ordered)
    if fmt in ("", "table"):
        # podman's own template: Formatter.Parse with OriginPodman.
        template = _compile(normalize_format(DEFAULT_FORMAT), DEFAULT_FORMAT)
        tabular = True
    elif fmt.startswith(_TABLE_PREFIX):
        template = _compile(
            "{{range .}}" + normalize_format(fmt) + "{{end -}}",
            "{{range .}}" + fmt.removeprefix(_TABLE_PREFIX) + "{{end -}}",
        )
        tabular = True
    else:
        template = _compile(_enforce_range(normalize_format(fmt)), _enforce_range(fmt))
        tabular = False
    text = ""
    if tabular:
        text += template.execute(List((_headers(),)))
    text += template.execute(List(tuple(Struct(row.as_dict()) for row in ordered)))
    return tabwrite(text, minwidth=TAB_MINWIDTH, padding=TAB_PADDING) if tabular else text
