"""The Go template engine on its own: what it renders, and errors worded like Go's.

(podman's use of it, `--format` with its normalization and headers, is in test_report.py.)
"""

from __future__ import annotations

import pytest

from updock.core.gotemplate import List, Map, Struct, StructType, Template, go_json_string
from updock.errors import UsageError

ROW = StructType("main.row", ("Name", "Kind"))
WEB = Struct({"Name": "web", "Kind": "<svc>"})
DB = Struct({"Name": "db", "Kind": "store"})
ROWS = List((WEB, DB))


def render(text: str, dot: List = ROWS) -> str:
    template = Template(text, "t")
    template.check(ROW)
    return template.execute(dot)


def error_of(text: str) -> str:
    with pytest.raises(UsageError) as caught:
        render(text)
    return str(caught.value)


def test_fields_and_text_in_a_range() -> None:
    assert render("{{range .}}{{.Name}}={{.Kind}};{{end}}") == "web=<svc>;db=store;"


def test_spaces_inside_actions() -> None:
    assert render("{{range .}}{{ .Name }} {{  .Kind\t}}\n{{end}}") == "web <svc>\ndb store\n"


def test_functions_and_pipelines() -> None:
    assert render("{{range .}}{{upper .Name}} {{.Kind | upper | lower}},{{end}}") == (
        "WEB <svc>,DB store,"
    )
    # Go maps one rune to one rune: ß has no one-rune upper case and stays.
    street = List((Struct({"Name": "Straße", "Kind": "ÜBER"}),))
    assert render("{{range .}}{{upper .Name}} {{lower .Kind}}{{end}}", street) == "STRAßE über"


def test_trim_markers_and_comments() -> None:
    # `-}}` eats the spaces after it, `{{-` those before it; a space must separate the marker.
    assert render("{{range .}} {{- .Name -}} ; {{.Kind}} {{end}}") == "web; <svc> db; store "
    assert render("{{range .}}<{{- .Name}} \n {{- .Kind -}} >{{end}}") == "<web<svc>><dbstore>"
    assert render("{{/* a comment */}}{{range .}}{{.Name}}{{end}}") == "webdb"


def test_values_print_like_go() -> None:
    assert render("{{range .}}{{.}}|{{end}}") == "{web <svc>}|{db store}|"
    assert render("{{.}}") == "[{web <svc>} {db store}]"
    header = List((Map({"Name": "NAME", "Kind": "KIND"}),))
    assert render("{{range .}}{{.}} {{.Name}}{{end}}", header) == "map[Kind:KIND Name:NAME] NAME"
    # A map without the key: Go's "<no value>".
    assert render("{{range .}}{{.Kind}}{{end}}", List((Map({}),))) == "<no value>"


def test_json_function() -> None:
    assert render("{{range .}}{{json .Kind}}{{end}}") == '"<svc>""store"'  # HTML unescaped
    assert render("{{json .}}") == '[{"Name":"web","Kind":"<svc>"},{"Name":"db","Kind":"store"}]'
    header = List((Map({"Name": "NAME", "Kind": "KIND"}),))
    assert render("{{range .}}{{json .}}{{end}}", header) == '{"Kind":"KIND","Name":"NAME"}'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{{.Name", "template: t:1: unclosed action"),
        ("{{/* open", "template: t:1: unclosed comment"),
        ("{{range .}}{{.Name 1}}{{end}}", 'template: t:1: unexpected "1" in operand'),
        ("{{range .}}{{.Name |}}{{end}}", "template: t:1: missing value for command"),
        ("{{ }}", "template: t:1: missing value for command"),
        ("{{range .Name}}{{end}}", "template: t:1: updock supports {{range .}} only"),
        ("{{range .}}{{end x}}", "template: t:1: unexpected x in end"),
        ("{{end}}", "template: t:1: unexpected {{end}}"),
        ("{{range .}}", "template: t:1: unexpected EOF"),
        ("\n\n{{with .}}", 'template: t:3: unexpected "with" in command'),
        ("{{.Name | .Kind}}", "template: t:1: non executable command in pipeline stage 2"),
        ("{{.Name .Kind}}", "template: t:1: can't give argument to non-function .Name"),
        ("{{nope .}}", 'template: t:1: function "nope" not defined'),
        ("{{printf .}}", 'template: t:1: function "printf" is not supported by updock'),
        (
            '{{printf "%s" .}}',
            "template: t:1: unsupported "
            '"\\"" in "{{printf \\"%s\\" .}}": updock renders fields, range and the json, '
            "upper and lower functions only",
        ),
        (
            "{{range .}}{{.Size}}{{end}}",
            'template: t:1:13: executing "t" at <.Size>: can\'t evaluate field Size in type '
            "main.row",
        ),
        (
            "{{range .}}\n {{.Name.Len}}{{end}}",
            'template: t:2:3: executing "t" at <.Name.Len>: can\'t evaluate field Len in type '
            "string",
        ),
        (
            "{{.Name}}",
            'template: t:1:2: executing "t" at <.Name>: can\'t evaluate field Name in type '
            "[]main.row",
        ),
        (
            "{{range .}}{{range .}}{{end}}{{end}}",
            'template: t:1:13: executing "t" at <range .>: range can\'t iterate over main.row',
        ),
        (
            "{{range .}}{{upper .}}{{end}}",
            'template: t:1:13: executing "t" at <upper .>: wrong type for value; expected '
            "string; got main.row",
        ),
        (
            "{{range .}}{{.Name | json .Kind}}{{end}}",
            'template: t:1:21: executing "t" at <json .Kind>: wrong number of args for json: '
            "want 1 got 2",
        ),
    ],
)
def test_errors_are_worded_like_gos(text: str, message: str) -> None:
    assert error_of(text) == message


def test_errors_are_found_before_running_on_no_rows() -> None:
    template = Template("{{range .}}{{.Size}}{{end}}", "t")  # parses
    with pytest.raises(UsageError, match="can't evaluate field Size"):
        template.check(ROW)


@pytest.mark.parametrize(
    ("text", "html", "encoded"),
    [
        ("plain", True, '"plain"'),
        ("<a&b>", True, '"\\u003ca\\u0026b\\u003e"'),
        ("<a&b>", False, '"<a&b>"'),
        ("ü✓😀", True, '"ü✓😀"'),
        ("\n\r\t\b\f\x01\x1f", False, '"\\n\\r\\t\\b\\f\\u0001\\u001f"'),
        ("\u2028\u2029", False, '"\\u2028\\u2029"'),
        ("\ud800", False, '"\\ufffd"'),
        ('q"\\', False, '"q\\"\\\\"'),
    ],
)
def test_go_json_string(text: str, html: bool, encoded: str) -> None:
    assert go_json_string(text, escape_html=html) == encoded
