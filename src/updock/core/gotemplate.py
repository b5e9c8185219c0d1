"""The subset of Go's `text/template` that podman users write in `--format`.

No maintained Python library renders Go templates, so this one renders fields (`.Unit`), `.`,
`{{range .}}`, pipelines, comments, trim markers and the functions `json`, `upper` and `lower`
(podman's own), and words its errors as Go does. Anything else is refused with a message that
says so, never rendered differently from podman.

Templates run on a list of structs of one type (`StructType`), or on a list holding one map
(podman's table header). Every field and function is checked against that type before the
template runs (`Template.check`), so a bad template fails before any output is written, even
when there are no rows to run it on.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from updock.core.policy import go_quote
from updock.errors import UsageError

# --- Go string helpers ------------------------------------------------------------------------


def go_case(text: str, *, upper: bool) -> str:
    """Go's `strings.ToUpper`/`ToLower`: one rune maps to one rune (`ß` stays `ß`)."""
    out = []
    for char in text:
        mapped = char.upper() if upper else char.lower()
        out.append(mapped if len(mapped) == 1 else char)
    return "".join(out)


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


# --- values -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StructType:
    """The Go struct type a template's rows have.

    Attributes:
        name: its Go name, as Go's errors print it (`main.autoUpdateOutput`).
        fields: its string fields, in declaration order.
    """

    name: str
    fields: tuple[str, ...]


@dataclass(frozen=True)
class Struct:
    """A row: a Go struct of string fields (in declaration order)."""

    fields: Mapping[str, str]


@dataclass(frozen=True)
class Map:
    """A Go `map[string]string` (printed and encoded with sorted keys)."""

    items: Mapping[str, str]


@dataclass(frozen=True)
class List:
    """What a template is executed on: a Go slice of rows (or of one map)."""

    items: tuple[Struct | Map, ...]


Value = str | Struct | Map | List


def _go_print(value: Value) -> str:
    """Go's `fmt.Print` of a template value (`{a b}`, `map[k:v]`, `[...]`)."""
    if isinstance(value, str):
        return value
    if isinstance(value, Struct):
        return "{" + " ".join(value.fields.values()) + "}"
    if isinstance(value, Map):
        return "map[" + " ".join(f"{k}:{v}" for k, v in sorted(value.items.items())) + "]"
    return "[" + " ".join(_go_print(item) for item in value.items) + "]"


def _go_json(value: Value) -> str:
    """podman's `json` template function: compact JSON, HTML characters unescaped."""
    if isinstance(value, str):
        return go_json_string(value, escape_html=False)
    if isinstance(value, List):
        return "[" + ",".join(_go_json(item) for item in value.items) + "]"
    pairs = value.fields.items() if isinstance(value, Struct) else sorted(value.items.items())
    return (
        "{"
        + ",".join(
            f"{go_json_string(k, escape_html=False)}:{go_json_string(v, escape_html=False)}"
            for k, v in pairs
        )
        + "}"
    )


# --- parsing ----------------------------------------------------------------------------------

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


class _Source:
    """A template's text and name, for errors worded like Go's."""

    def __init__(self, text: str, name: str) -> None:
        self.text = text
        self.name = name

    def _line(self, pos: int) -> int:
        return self.text.count("\n", 0, pos) + 1

    def parse_error(self, pos: int, message: str) -> UsageError:
        return UsageError(f"template: {self.name}:{self._line(pos)}: {message}")

    def exec_error(self, pos: int, context: str, message: str) -> UsageError:
        column = pos - (self.text.rfind("\n", 0, pos) + 1)
        return UsageError(
            f"template: {self.name}:{self._line(pos)}:{column}: executing "
            f"{go_quote(self.name)} at <{context}>: {message}"
        )


def _lex(src: _Source) -> Iterator[tuple[bool, str, int]]:
    """Yield `(is_action, content, position)`: text runs and action bodies, trims applied."""
    text = src.text
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
                raise src.parse_error(start, "unclosed comment")
            close = text.find("}}", comment_end + 2)
        else:
            close = text.find("}}", inner)
        if close < 0:
            raise src.parse_error(start, "unclosed action")
        body = text[inner:close]
        trim_next = len(body) >= 2 and body[-1] == "-" and body[-2] in _SPACES
        if trim_next:
            body = body[:-2]
        if not is_comment:
            yield True, body, inner
        pos = close + 2


def _tokenize(src: _Source, body: str, pos: int) -> list[_Token]:
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
            raise src.parse_error(
                pos + i,
                f"unsupported {go_quote(char)} in {go_quote('{{' + body + '}}')}: updock "
                "renders fields, range and the json, upper and lower functions only",
            )
    return tokens


def _parse_command(src: _Source, tokens: list[_Token], stage: int) -> _Command:
    """One pipeline stage, from its tokens (never empty)."""
    head = tokens[0]
    source = " ".join(t.text for t in tokens)
    for token in tokens[1:] if _IDENTIFIER_RE.fullmatch(head.text) else tokens:
        if not _FIELD_RE.fullmatch(token.text):
            raise src.parse_error(token.pos, f"unexpected {go_quote(token.text)} in operand")
    if head.text.startswith("."):
        if len(tokens) > 1:
            raise src.parse_error(head.pos, f"can't give argument to non-function {head.text}")
        if stage > 1:
            raise src.parse_error(head.pos, f"non executable command in pipeline stage {stage}")
        return _Command(None, (head,), head.pos, source)
    name = head.text
    if name in _UNSUPPORTED_KEYWORDS or name in ("range", "end"):
        raise src.parse_error(head.pos, f"unexpected {go_quote(name)} in command")
    if name in _UNSUPPORTED_FUNCTIONS:
        raise src.parse_error(head.pos, f"function {go_quote(name)} is not supported by updock")
    if name not in _FUNCTIONS:
        raise src.parse_error(head.pos, f"function {go_quote(name)} not defined")
    return _Command(name, tuple(tokens[1:]), head.pos, source)


def _parse_action(src: _Source, tokens: list[_Token], pos: int) -> _Action:
    commands: list[_Command] = []
    stage: list[_Token] = []
    for token in [*tokens, _Token("|", -1)]:
        if token.text != "|":
            stage.append(token)
            continue
        if not stage:
            raise src.parse_error(pos, "missing value for command")
        commands.append(_parse_command(src, stage, len(commands) + 1))
        stage = []
    return _Action(tuple(commands), pos)


def _parse(src: _Source) -> tuple[_Node, ...]:
    stack: list[tuple[list[_Node], int]] = [([], 0)]
    for is_action, content, pos in _lex(src):
        if not is_action:
            if content:
                stack[-1][0].append(_Text(content))
            continue
        tokens = _tokenize(src, content, pos)
        if not tokens:
            raise src.parse_error(pos, "missing value for command")
        keyword = tokens[0].text
        if keyword == "range":
            if [t.text for t in tokens[1:]] != ["."]:
                raise src.parse_error(pos, "updock supports {{range .}} only")
            stack.append(([], tokens[0].pos))
        elif keyword == "end":
            if len(tokens) > 1:
                raise src.parse_error(tokens[1].pos, f"unexpected {tokens[1].text} in end")
            if len(stack) == 1:
                raise src.parse_error(pos, "unexpected {{end}}")
            body, range_pos = stack.pop()
            stack[-1][0].append(_Range(tuple(body), range_pos))
        else:
            stack[-1][0].append(_parse_action(src, tokens, pos))
    if len(stack) > 1:
        raise src.parse_error(len(src.text), "unexpected EOF")
    return tuple(stack[0][0])


# --- static types -----------------------------------------------------------------------------

_STRING = "string"


class _Checker:
    """Go's run-time type errors, found before running: everything a template can touch (the
    rows' fields, strings, the list) is known in advance."""

    def __init__(self, src: _Source, row: StructType) -> None:
        self.src = src
        self.row = row
        self.list_type = "[]" + row.name

    def operand(self, token: _Token, dot_type: str) -> str:
        if token.text == ".":
            return dot_type
        current = dot_type
        for name in token.text[1:].split("."):
            if current != self.row.name or name not in self.row.fields:
                raise self.src.exec_error(
                    token.pos, token.text, f"can't evaluate field {name} in type {current}"
                )
            current = _STRING
        return current

    def command(self, command: _Command, dot_type: str, piped: str | None) -> str:
        if command.function is None:
            return self.operand(command.args[0], dot_type)
        arg_types = [self.operand(token, dot_type) for token in command.args]
        if piped is not None:
            arg_types.append(piped)
        if len(arg_types) != 1:
            raise self.src.exec_error(
                command.pos,
                command.source,
                f"wrong number of args for {command.function}: want 1 got {len(arg_types)}",
            )
        if command.function != "json" and arg_types[0] != _STRING:
            raise self.src.exec_error(
                command.pos,
                command.source,
                f"wrong type for value; expected string; got {arg_types[0]}",
            )
        return _STRING

    def nodes(self, nodes: Sequence[_Node], dot_type: str) -> None:
        for node in nodes:
            if isinstance(node, _Range):
                if dot_type != self.list_type:
                    raise self.src.exec_error(
                        node.pos, "range .", f"range can't iterate over {dot_type}"
                    )
                self.nodes(node.body, self.row.name)
            elif isinstance(node, _Action):
                piped: str | None = None
                for command in node.commands:
                    piped = self.command(command, dot_type, piped)


# --- the template -----------------------------------------------------------------------------


class Template:
    """A parsed template; `check` it against the rows' type, then `execute` it."""

    def __init__(self, text: str, name: str) -> None:
        """Parse `text`.

        Args:
            text: the template.
            name: its name, for errors (`template: NAME:LINE: ...`).

        Raises:
            UsageError: the template is malformed or uses what updock does not render; the
                message is worded like Go's parser's.
        """
        self._src = _Source(text, name)
        self._nodes = _parse(self._src)

    def check(self, row: StructType) -> None:
        """Check the template against a list of `row` structs, as Go would find when running it.

        Raises:
            UsageError: an unknown field, a function given the wrong arguments, a range over
                what is no list; worded like Go's execution errors.
        """
        _Checker(self._src, row).nodes(self._nodes, "[]" + row.name)

    def execute(self, dot: List) -> str:
        """Run the (checked) template on `dot`; the text it writes."""
        out: list[str] = []
        self._run(self._nodes, dot, out)
        return "".join(out)

    def _run(self, nodes: Sequence[_Node], dot: Value, out: list[str]) -> None:
        for node in nodes:
            if isinstance(node, _Text):
                out.append(node.text)
            elif isinstance(node, _Range):
                assert isinstance(dot, List)
                for item in dot.items:
                    self._run(node.body, item, out)
            else:
                value: Value | None = None
                for command in node.commands:
                    value = self._call(command, dot, value)
                assert value is not None
                out.append(_go_print(value))

    @staticmethod
    def _operand(token: _Token, dot: Value) -> Value:
        if token.text == ".":
            return dot
        name = token.text[1:]
        if isinstance(dot, Struct):
            return dot.fields[name]
        assert isinstance(dot, Map)
        return dot.items.get(name, "<no value>")

    def _call(self, command: _Command, dot: Value, piped: Value | None) -> Value:
        args = [self._operand(token, dot) for token in command.args]
        if command.function is None:
            return args[0]
        if piped is not None:
            args.append(piped)
        (arg,) = args
        if command.function == "json":
            return _go_json(arg)
        assert isinstance(arg, str)
        return go_case(arg, upper=command.function == "upper")
