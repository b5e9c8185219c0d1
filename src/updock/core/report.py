"""The report of a run, formatted byte for byte like `podman auto-update` (podman >= 4.3).

Three outputs, chosen by `--format`:

- "" (and "table"): podman's own template, `\\t{{.Unit}}\\t{{.Container}}\\t{{.Image}}\\t...`,
  written with a header through Go's `text/tabwriter`. The template starts with a tab, so every
  line starts with an empty 12-column cell: podman prints that indentation too.
- "json": Go's `json.MarshalIndent(rows, "", "    ")`.
- anything else: a Go template run once per row. With a `table ` prefix a header comes first and
  the output goes through the tabwriter; without it the output is written as is.

No maintained Python library renders Go's `text/template`, so the subset podman users write
(fields, `range .`, pipelines, the `json`, `upper` and `lower` functions) is implemented here,
along with the parts of `containers/common/pkg/report` and `text/tabwriter` podman relies on.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from updock.core.model import ReportRow
from updock.core.policy import go_quote
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
_ROW_TYPE = "main.autoUpdateOutput"  # the Go type names podman's errors mention
_LIST_TYPE = "[]" + _ROW_TYPE


# --- text/tabwriter ---------------------------------------------------------------------------


class _TabWriter:
    """A port of Go's `text/tabwriter` with a space pad character and no flags.

    Cells are tab-terminated. A column block is a run of consecutive lines that have a cell in
    that column; its width is the widest cell plus padding, at least `minwidth`. The last cell of
    a line is not part of any column and is written unpadded.
    """

    def __init__(self, minwidth: int, padding: int) -> None:
        self.minwidth = minwidth
        self.padding = padding
        self.out: list[str] = []
        self.lines: list[list[str]] = [[]]
        self.cell: list[str] = []
        self.widths: list[int] = []

    def write(self, text: str) -> None:
        start = 0
        for i, char in enumerate(text):
            if char not in "\t\v\n\f":
                continue
            self.cell.append(text[start:i])
            start = i + 1
            ncells = self._terminate_cell()
            if char in "\n\f":
                self.lines.append([])
                # A line of one cell cannot influence later columns, and `\f` ends a section
                # by definition: Go formats what it has at these points.
                if char == "\f" or ncells == 1:
                    self._flush_lines()
        self.cell.append(text[start:])

    def flush(self) -> str:
        if "".join(self.cell):
            self._terminate_cell()
        self._flush_lines()
        return "".join(self.out)

    def _terminate_cell(self) -> int:
        line = self.lines[-1]
        line.append("".join(self.cell))
        self.cell = []
        return len(line)

    def _flush_lines(self) -> None:
        self._format(0, len(self.lines))
        self.lines = [[]]

    def _format(self, line0: int, line1: int) -> None:
        column = len(self.widths)
        this = line0
        while this < line1:
            if column >= len(self.lines[this]) - 1:
                this += 1
                continue
            # The lines before this one have no cell in this column: they are done.
            self._write_lines(line0, this)
            line0 = this
            width = self.minwidth
            while this < line1 and column < len(self.lines[this]) - 1:
                width = max(width, len(self.lines[this][column]) + self.padding)
                this += 1
            self.widths.append(width)
            self._format(line0, this)
            self.widths.pop()
            line0 = this
        self._write_lines(line0, line1)

    def _write_lines(self, line0: int, line1: int) -> None:
        for i in range(line0, line1):
            for j, cell in enumerate(self.lines[i]):
                self.out.append(cell)
                if j < len(self.widths):
                    self.out.append(" " * (self.widths[j] - len(cell)))
            # The last buffered line is the unterminated one: it gets no newline.
            if i + 1 < len(self.lines):
                self.out.append("\n")


def tabwrite(text: str, minwidth: int = TAB_MINWIDTH, padding: int = TAB_PADDING) -> str:
    """Align tab-separated text the way Go's `text/tabwriter` does with podman's settings.

    Args:
        text: lines of tab-terminated cells; the text after a line's last tab is its last cell.
        minwidth: minimal width of a column, padding included.
        padding: spaces added to the widest cell of a column.

    Returns:
        The aligned text (widths count characters, as Go counts runes).
    """
    writer = _TabWriter(minwidth, padding)
    writer.write(text)
    return writer.flush()


# --- Go string helpers ------------------------------------------------------------------------


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


def _go_case(text: str, *, upper: bool) -> str:
    """Go's `strings.ToUpper`/`ToLower`: one rune maps to one rune (`ß` stays `ß`)."""
    out = []
    for char in text:
        mapped = char.upper() if upper else char.lower()
        out.append(mapped if len(mapped) == 1 else char)
    return "".join(out)


def header_text(field: str) -> str:
    """The column header podman derives from a field name: `ContainerID` -> `CONTAINER ID`."""
    return _go_case(" ".join(camelcase_split(field)), upper=True)


def go_json_string(text: str, *, escape_html: bool) -> str:
    """Encode a string as Go's `encoding/json` does.

    Non-ASCII stays UTF-8; `<`, `>` and `&` become `\\u003c`, `\\u003e`, `\\u0026` when
    `escape_html` (`json.Marshal`, not an Encoder with `SetEscapeHTML(false)`); U+2028 and U+2029
    are always escaped; other control characters become `\\u00XX` (`\\n`, `\\r`, `\\t`, `\\b` and
    `\\f` keep their short forms, as since Go 1.22).

    Args:
        text: the string.
        escape_html: whether to escape `<`, `>` and `&`.

    Returns:
        The JSON string literal, quotes included.
    """
    out = ['"']
    for char in text:
        code = ord(char)
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif char in _JSON_SHORT_ESCAPES:
            out.append(_JSON_SHORT_ESCAPES[char])
        elif code < 0x20 or (escape_html and char in "<>&") or char in "\u2028\u2029":
            out.append(f"\\u{code:04x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\\ufffd")  # not valid UTF-8: Go substitutes U+FFFD
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


_JSON_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


# --- template values --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Struct:
    """A row: Go's `autoUpdateOutput` struct (fields in declaration order)."""

    fields: Mapping[str, str]


@dataclass(frozen=True)
class _Map:
    """The header: Go's `map[string]string` (printed and encoded with sorted keys)."""

    items: Mapping[str, str]


@dataclass(frozen=True)
class _List:
    """What a template is executed on: the rows, or a one-element list with the header."""

    items: tuple[_Struct | _Map, ...]


_Value = str | _Struct | _Map | _List


def _go_print(value: _Value) -> str:
    """Go's `fmt.Print` of a template value (`{a b}`, `map[k:v]`, `[...]`)."""
    if isinstance(value, str):
        return value
    if isinstance(value, _Struct):
        return "{" + " ".join(value.fields.values()) + "}"
    if isinstance(value, _Map):
        return "map[" + " ".join(f"{k}:{v}" for k, v in sorted(value.items.items())) + "]"
    return "[" + " ".join(_go_print(item) for item in value.items) + "]"


def _go_json(value: _Value) -> str:
    """podman's `json` template function: compact JSON, HTML characters unescaped."""
    if isinstance(value, str):
        return go_json_string(value, escape_html=False)
    if isinstance(value, _List):
        return "[" + ",".join(_go_json(item) for item in value.items) + "]"
    pairs = value.fields.items() if isinstance(value, _Struct) else sorted(value.items.items())
    return (
        "{"
        + ",".join(
            f"{go_json_string(k, escape_html=False)}:{go_json_string(v, escape_html=False)}"
            for k, v in pairs
        )
        + "}"
    )


# --- template parsing -------------------------------------------------------------------------

_SPACES = " \t\r\n"  # what Go's template lexer calls space
_FUNCTIONS = {"json", "upper", "lower"}
# Defined in Go or by podman, but not rendered here: say so rather than "not defined".
_UNSUPPORTED_FUNCTIONS = {
    "and", "call", "eq", "ge", "gt", "html", "index", "join", "js", "le", "len", "lt", "ne",
    "not", "or", "pad", "print", "printf", "println", "slice", "split", "title", "truncate",
    "urlquery",
}  # fmt: skip
_UNSUPPORTED_KEYWORDS = {
    "block", "break", "continue", "define", "else", "if", "template", "with", "nil", "true",
    "false",
}  # fmt: skip
_IDENTIFIER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FIELD_RE = re.compile(r"(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.")
_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.")


@dataclass(frozen=True)
class _Token:
    text: str
    pos: int


@dataclass(frozen=True)
class _Text:
    text: str


@dataclass(frozen=True)
class _Command:
    """One pipeline stage: an operand (`function` None, one field in `args`) or a call."""

    function: str | None
    args: tuple[_Token, ...]
    pos: int
    source: str


@dataclass(frozen=True)
class _Action:
    commands: tuple[_Command, ...]
    pos: int


@dataclass(frozen=True)
class _Range:
    body: tuple[_Node, ...]
    pos: int


_Node = _Text | _Action | _Range


class _TemplateError(Exception):
    """Internal: a parse or type error, already worded like Go's."""


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _parse_error(text: str, pos: int, message: str) -> _TemplateError:
    return _TemplateError(f"template: {_TEMPLATE_NAME}:{_line_of(text, pos)}: {message}")


def _exec_error(text: str, pos: int, context: str, message: str) -> _TemplateError:
    column = pos - (text.rfind("\n", 0, pos) + 1)
    return _TemplateError(
        f"template: {_TEMPLATE_NAME}:{_line_of(text, pos)}:{column}: executing "
        f"{go_quote(_TEMPLATE_NAME)} at <{context}>: {message}"
    )


def _lex(text: str) -> Iterator[tuple[bool, str, int]]:
    """Yield `(is_action, content, position)`: text runs and action bodies, trims applied."""
    pos = 0
    trim_next = False
    while True:
        start = text.find("{{", pos)
        chunk = text[pos:] if start < 0 else text[pos:start]
        if trim_next:
            chunk = chunk.lstrip(_SPACES)
        if start < 0:
            yield False, chunk, pos
            return
        inner = start + 2
        if text.startswith("-", inner) and text[inner + 1 : inner + 2] in tuple(_SPACES):
            chunk = chunk.rstrip(_SPACES)
            inner += 2
        yield False, chunk, pos
        body_start = inner
        while body_start < len(text) and text[body_start] in _SPACES:
            body_start += 1
        is_comment = text.startswith("/*", body_start)
        if is_comment:
            comment_end = text.find("*/", body_start + 2)
            if comment_end < 0:
                raise _parse_error(text, start, "unclosed comment")
            close = text.find("}}", comment_end + 2)
        else:
            close = text.find("}}", inner)
        if close < 0:
            raise _parse_error(text, start, "unclosed action")
        body = text[inner:close]
        trim_next = len(body) >= 2 and body[-1] == "-" and body[-2] in _SPACES
        if trim_next:
            body = body[:-2]
        if not is_comment:
            yield True, body, inner
        pos = close + 2


def _tokenize(text: str, body: str, pos: int) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(body):
        char = body[i]
        if char in _SPACES:
            i += 1
        elif char == "|":
            tokens.append(_Token("|", pos + i))
            i += 1
        elif char in _TOKEN_CHARS:
            j = i
            while j < len(body) and body[j] in _TOKEN_CHARS:
                j += 1
            tokens.append(_Token(body[i:j], pos + i))
            i = j
        else:
            raise _parse_error(
                text,
                pos + i,
                f"unsupported {go_quote(char)} in {go_quote('{{' + body + '}}')}: updock "
                "renders fields, range and the json, upper and lower functions only",
            )
    return tokens


def _parse_command(text: str, tokens: list[_Token], stage: int) -> _Command:
    if not tokens:
        raise _parse_error(text, 0, "missing value for command")
    head = tokens[0]
    source = " ".join(t.text for t in tokens)
    for token in tokens[1:] if _IDENTIFIER_RE.fullmatch(head.text) else tokens:
        if not _FIELD_RE.fullmatch(token.text):
            raise _parse_error(text, token.pos, f"unexpected {go_quote(token.text)} in operand")
    if head.text.startswith("."):
        if len(tokens) > 1:
            raise _parse_error(text, head.pos, f"can't give argument to non-function {head.text}")
        if stage > 1:
            raise _parse_error(text, head.pos, f"non executable command in pipeline stage {stage}")
        return _Command(None, (head,), head.pos, source)
    name = head.text
    if name in _UNSUPPORTED_KEYWORDS or name in ("range", "end"):
        raise _parse_error(text, head.pos, f"unexpected {go_quote(name)} in command")
    if name in _UNSUPPORTED_FUNCTIONS:
        raise _parse_error(text, head.pos, f"function {go_quote(name)} is not supported by updock")
    if name not in _FUNCTIONS:
        raise _parse_error(text, head.pos, f"function {go_quote(name)} not defined")
    return _Command(name, tuple(tokens[1:]), head.pos, source)


def _parse_action(text: str, tokens: list[_Token], pos: int) -> _Action:
    commands: list[_Command] = []
    stage: list[_Token] = []
    for token in [*tokens, _Token("|", -1)]:
        if token.text != "|":
            stage.append(token)
            continue
        if not stage:
            raise _parse_error(text, pos, "missing value for command")
        commands.append(_parse_command(text, stage, len(commands) + 1))
        stage = []
    return _Action(tuple(commands), pos)


def _parse(text: str) -> tuple[_Node, ...]:
    """Parse a template into nodes; raise `_TemplateError` worded like Go's parser."""
    stack: list[tuple[list[_Node], int]] = [([], 0)]
    for is_action, content, pos in _lex(text):
        if not is_action:
            if content:
                stack[-1][0].append(_Text(content))
            continue
        tokens = _tokenize(text, content, pos)
        if not tokens:
            raise _parse_error(text, pos, "missing value for command")
        keyword = tokens[0].text
        if keyword == "range":
            if [t.text for t in tokens[1:]] != ["."]:
                raise _parse_error(text, pos, "updock supports {{range .}} only")
            stack.append(([], tokens[0].pos))
        elif keyword == "end":
            if len(tokens) > 1:
                raise _parse_error(text, tokens[1].pos, f"unexpected {tokens[1].text} in end")
            if len(stack) == 1:
                raise _parse_error(text, pos, "unexpected {{end}}")
            body, range_pos = stack.pop()
            stack[-1][0].append(_Range(tuple(body), range_pos))
        else:
            stack[-1][0].append(_parse_action(text, tokens, pos))
    if len(stack) > 1:
        raise _parse_error(text, len(text), "unexpected EOF")
    return tuple(stack[0][0])


# Static types: everything a template can touch is known before it runs, so every error is
# found before any output is written, even when there are no rows to run it on.
_STRING = "string"


def _check_operand(text: str, token: _Token, dot_type: str) -> str:
    if token.text == ".":
        return dot_type
    names = token.text[1:].split(".")
    current = dot_type
    for name in names:
        if current != _ROW_TYPE or name not in FIELDS:
            raise _exec_error(
                text, token.pos, token.text, f"can't evaluate field {name} in type {current}"
            )
        current = _STRING
    return current


def _check_command(text: str, command: _Command, dot_type: str, piped: str | None) -> str:
    if command.function is None:
        return _check_operand(text, command.args[0], dot_type)
    arg_types = [_check_operand(text, token, dot_type) for token in command.args]
    if piped is not None:
        arg_types.append(piped)
    if len(arg_types) != 1:
        raise _exec_error(
            text,
            command.pos,
            command.source,
            f"wrong number of args for {command.function}: want 1 got {len(arg_types)}",
        )
    if command.function != "json" and arg_types[0] != _STRING:
        raise _exec_error(
            text,
            command.pos,
            command.source,
            f"wrong type for value; expected string; got {arg_types[0]}",
        )
    return _STRING


def _check(text: str, nodes: Sequence[_Node], dot_type: str) -> None:
    for node in nodes:
        if isinstance(node, _Range):
            if dot_type != _LIST_TYPE:
                raise _exec_error(text, node.pos, "range .", f"range can't iterate over {dot_type}")
            _check(text, node.body, _ROW_TYPE)
        elif isinstance(node, _Action):
            piped: str | None = None
            for command in node.commands:
                piped = _check_command(text, command, dot_type, piped)


@dataclass(frozen=True)
class _Template:
    nodes: tuple[_Node, ...]

    def execute(self, dot: _List) -> str:
        out: list[str] = []
        self._run(self.nodes, dot, out)
        return "".join(out)

    def _run(self, nodes: Sequence[_Node], dot: _Value, out: list[str]) -> None:
        for node in nodes:
            if isinstance(node, _Text):
                out.append(node.text)
            elif isinstance(node, _Range):
                assert isinstance(dot, _List)
                for item in dot.items:
                    self._run(node.body, item, out)
            else:
                value: _Value | None = None
                for command in node.commands:
                    value = self._call(command, dot, value)
                assert value is not None
                out.append(_go_print(value))

    @staticmethod
    def _operand(token: _Token, dot: _Value) -> _Value:
        if token.text == ".":
            return dot
        name = token.text[1:]
        if isinstance(dot, _Struct):
            return dot.fields[name]
        assert isinstance(dot, _Map)
        return dot.items.get(name, "<no value>")

    def _call(self, command: _Command, dot: _Value, piped: _Value | None) -> _Value:
        args = [self._operand(token, dot) for token in command.args]
        if command.function is None:
            return args[0]
        if piped is not None:
            args.append(piped)
        (arg,) = args
        if command.function == "json":
            return _go_json(arg)
        assert isinstance(arg, str)
        return _go_case(arg, upper=command.function == "upper")


def _compile(text: str, fallback: str) -> _Template:
    """Parse like podman's Formatter.Parse: the normalized text, else the text as given."""
    try:
        nodes = _parse(text)
    except _TemplateError:
        try:
            nodes = _parse(fallback)
        except _TemplateError as exc:
            raise UsageError(str(exc)) from None
        text = fallback
    try:
        _check(text, nodes, _LIST_TYPE)
    except _TemplateError as exc:
        raise UsageError(str(exc)) from None
    return _Template(nodes)


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


def _enforce_range(text: str) -> str:
    return text if _RANGE_RE.search(text) else "{{range .}}" + text + "{{end -}}"


def _headers() -> _Map:
    return _Map({field: header_text(field) for field in FIELDS})


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
        text += template.execute(_List((_headers(),)))
    text += template.execute(_List(tuple(_Struct(row.as_dict()) for row in ordered)))
    return tabwrite(text) if tabular else text
