"""The report as podman prints it: the default table, JSON and `--format` templates, byte for
byte (the template engine itself is tested in test_gotemplate.py, the tabwriter in
test_tabwriter.py).

Expected tables are computed by hand from the tabwriter rules: a column is as wide as its widest
cell plus 2, and at least 12; the last cell of a line is not padded.
"""

from __future__ import annotations

import pytest

from updock.core.model import Policy, ReportRow, Status
from updock.core.report import (
    DEFAULT_FORMAT,
    FIELDS,
    camelcase_split,
    format_report,
    header_text,
    normalize_format,
)
from updock.core.tabwriter import tabwrite
from updock.errors import UsageError

WEB = ReportRow(
    unit="container-web.service",
    container_id="0123456789ab" + "c" * 52,
    container_name="web",
    image="quay.io/app/web:latest",
    policy=Policy.REGISTRY,
    updated=Status.UPDATED,
)
DB = ReportRow(
    unit="a.service",
    container_id="fedcba987654" + "d" * 52,
    container_name="db",
    image="localhost:5000/db:1",
    policy=Policy.LOCAL,
    updated=Status.NOT_UPDATED,
)
ROWS = [WEB, DB]  # deliberately unsorted: a.service comes first in every output


def sp(n: int) -> str:
    return " " * n


# --- headers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "parts"),
    [
        ("", []),
        ("lowercase", ["lowercase"]),
        ("Class", ["Class"]),
        ("MyClass", ["My", "Class"]),
        ("MyC", ["My", "C"]),
        ("HTML", ["HTML"]),
        ("PDFLoader", ["PDF", "Loader"]),
        ("AString", ["A", "String"]),
        ("SimpleXMLParser", ["Simple", "XML", "Parser"]),
        ("vimRPCPlugin", ["vim", "RPC", "Plugin"]),
        ("GL11Version", ["GL", "11", "Version"]),
        ("99Bottles", ["99", "Bottles"]),
        ("May5", ["May", "5"]),
        ("BFG9000", ["BFG", "9000"]),
        ("BöseÜberraschung", ["Böse", "Überraschung"]),
        ("Two  spaces", ["Two", "  ", "spaces"]),
    ],
)
def test_camelcase_split(word: str, parts: list[str]) -> None:
    assert camelcase_split(word) == parts


HEADERS = {
    "Unit": "UNIT",
    "Container": "CONTAINER",
    "ContainerName": "CONTAINER NAME",
    "ContainerID": "CONTAINER ID",
    "Image": "IMAGE",
    "Policy": "POLICY",
    "Updated": "UPDATED",
}


@pytest.mark.parametrize(("field", "header"), HEADERS.items())
def test_header_of_every_field(field: str, header: str) -> None:
    assert header_text(field) == header
    assert format_report(ROWS, f"table {{{{.{field}}}}}").splitlines()[0] == header


def test_fields_are_podmans() -> None:
    assert tuple(HEADERS) == FIELDS
    assert tuple(WEB.as_dict()) == FIELDS


# --- default table ----------------------------------------------------------------------------

# Column widths: 12 (the empty first cell), UNIT 21+2=23, CONTAINER 18+2=20, IMAGE 22+2=24,
# POLICY 8+2 -> 12; UPDATED is last and unpadded.
DEFAULT_TABLE = (
    sp(12) + "UNIT" + sp(19) + "CONTAINER" + sp(11) + "IMAGE" + sp(19) + "POLICY" + sp(6)
    + "UPDATED\n"
    + sp(12) + "a.service" + sp(14) + "fedcba987654 (db)" + sp(3) + "localhost:5000/db:1" + sp(5)
    + "local" + sp(7) + "false\n"
    + sp(12) + "container-web.service" + sp(2) + "0123456789ab (web)" + sp(2)
    + "quay.io/app/web:latest" + sp(2) + "registry" + sp(4) + "true\n"
)  # fmt: skip


def test_default_table() -> None:
    assert format_report(ROWS, "") == DEFAULT_TABLE


def test_table_keyword_alone_is_the_default_table() -> None:
    assert format_report(ROWS, "table") == DEFAULT_TABLE


def test_default_table_matches_podmans_documented_row() -> None:
    # The row of podman-auto-update(1), widths unchanged; podman >= 4.3 indents by 12.
    row = ReportRow(
        "container-test.service", "08fd34e533fd" + "0" * 52, "test", "localhost:5000/busybox",
        Policy.REGISTRY, Status.NOT_UPDATED,
    )  # fmt: skip
    assert format_report([row], "") == (
        sp(12) + "UNIT                    CONTAINER            IMAGE                   POLICY"
        "      UPDATED\n"
        + sp(12) + "container-test.service  08fd34e533fd (test)  localhost:5000/busybox  registry"
        "    false\n"
    )  # fmt: skip


def test_the_default_table_is_the_default_format_with_a_header_aligned() -> None:
    # podman's default format given as --format prints the same cells, unaligned, no header.
    cells = format_report(ROWS, DEFAULT_FORMAT)
    assert cells == (
        "\ta.service\tfedcba987654 (db)\tlocalhost:5000/db:1\tlocal\tfalse\n"
        "\tcontainer-web.service\t0123456789ab (web)\tquay.io/app/web:latest\tregistry\ttrue\n"
    )
    header = "\tUNIT\tCONTAINER\tIMAGE\tPOLICY\tUPDATED\n"
    assert format_report(ROWS, "") == tabwrite(header + cells, minwidth=12, padding=2)


def test_rows_are_sorted_by_unit_then_container_name() -> None:
    rows = [
        ReportRow("b.service", "1" * 64, "zed", "quay.io/a:1", Policy.REGISTRY, Status.UPDATED),
        ReportRow("b.service", "2" * 64, "amy", "quay.io/a:1", Policy.REGISTRY, Status.FAILED),
        ReportRow("a.service", "3" * 64, "kim", "quay.io/b:1", Policy.LOCAL, Status.PENDING),
    ]
    assert format_report(rows, "{{.Unit}} {{.ContainerName}}") == (
        "a.service kim\nb.service amy\nb.service zed\n"
    )


# --- json -------------------------------------------------------------------------------------


def test_json() -> None:
    assert format_report(ROWS, "json") == (
        "[\n"
        "    {\n"
        '        "Unit": "a.service",\n'
        '        "Container": "fedcba987654 (db)",\n'
        '        "ContainerName": "db",\n'
        f'        "ContainerID": "{DB.container_id}",\n'
        '        "Image": "localhost:5000/db:1",\n'
        '        "Policy": "local",\n'
        '        "Updated": "false"\n'
        "    },\n"
        "    {\n"
        '        "Unit": "container-web.service",\n'
        '        "Container": "0123456789ab (web)",\n'
        '        "ContainerName": "web",\n'
        f'        "ContainerID": "{WEB.container_id}",\n'
        '        "Image": "quay.io/app/web:latest",\n'
        '        "Policy": "registry",\n'
        '        "Updated": "true"\n'
        "    }\n"
        "]\n"
    )


def test_json_empty() -> None:
    assert format_report([], "json") == "[]\n"


def test_json_escapes_like_go() -> None:
    row = ReportRow(
        "ü<&>.service", "e" * 64, "x", 'q"\\\u2028', Policy.REGISTRY, Status.ROLLED_BACK
    )
    out = format_report([row], "json")
    assert '"Unit": "ü\\u003c\\u0026\\u003e.service"' in out
    assert '"Image": "q\\"\\\\\\u2028"' in out
    assert '"Updated": "rolled back"' in out


# --- templates --------------------------------------------------------------------------------


def test_template_fields() -> None:
    assert format_report(ROWS, "{{.Unit}},{{.Updated}}") == (
        "a.service,false\ncontainer-web.service,true\n"
    )


def test_template_every_field() -> None:
    fmt = "|".join(f"{{{{.{field}}}}}" for field in FIELDS)
    assert format_report([DB], fmt) == (
        f"a.service|fedcba987654 (db)|db|{DB.container_id}|localhost:5000/db:1|local|false\n"
    )


def test_template_without_table_is_not_aligned() -> None:
    # A shell user's `\t` becomes a tab, but only `table` formats go through the tabwriter.
    assert format_report(ROWS, "{{.Unit}}\\t{{.Updated}}") == (
        "a.service\tfalse\ncontainer-web.service\ttrue\n"
    )


def test_template_keeps_its_own_newline() -> None:
    assert format_report([DB], "{{.Unit}}\n") == "a.service\n"
    assert format_report([DB], "{{.Unit}}\\n") == "a.service\n"
    assert format_report([DB], "{{.Unit}}\\n\\n") == "a.service\n\n"


def test_table_template() -> None:
    # Column 0: 21 + 2 = 23.
    expected = (
        "UNIT" + sp(19) + "UPDATED\n"
        "a.service" + sp(14) + "false\n"
        "container-web.service" + sp(2) + "true\n"
    )
    assert format_report(ROWS, "table {{.Unit}}\\t{{.Updated}}") == expected
    assert format_report(ROWS, "table {{.Unit}}\t{{.Updated}}") == expected
    # In a table format a space separates columns too.
    assert format_report(ROWS, "table {{.Unit}} {{.Updated}}") == expected


def test_table_template_with_two_word_headers() -> None:
    assert format_report([DB], "table {{.ContainerName}}\\t{{.ContainerID}}") == (
        "CONTAINER NAME  CONTAINER ID\n" + "db" + sp(14) + DB.container_id + "\n"
    )


def test_json_function() -> None:
    assert format_report([DB], "{{json .Unit}}") == '"a.service"\n'
    assert format_report([DB], "{{json .}}") == (
        '{"Unit":"a.service","Container":"fedcba987654 (db)","ContainerName":"db",'
        f'"ContainerID":"{DB.container_id}","Image":"localhost:5000/db:1","Policy":"local",'
        '"Updated":"false"}\n'
    )


def test_json_function_in_table_header() -> None:
    # The header row is a map, so its JSON has sorted keys.
    out = format_report([DB], "table {{json .Unit}} {{json .}}")
    header = out.splitlines()[0]
    # Column 0: '"a.service"' is 11 wide, + 2 = 13.
    assert header.startswith('"UNIT"' + sp(7) + "{")
    assert header.endswith(
        '{"Container":"CONTAINER","ContainerID":"CONTAINER ID",'
        '"ContainerName":"CONTAINER NAME","Image":"IMAGE","Policy":"POLICY","Unit":"UNIT",'
        '"Updated":"UPDATED"}'
    )


def test_functions_apply_to_the_header_too() -> None:
    assert format_report([DB], "{{upper .Unit}} {{.Updated | upper}}") == "A.SERVICE FALSE\n"
    assert format_report([DB], "table {{lower .Unit}}") == "unit\na.service\n"


def test_explicit_range() -> None:
    assert format_report(ROWS, "{{range .}}{{.ContainerName}} {{end}}") == "db web \n"


def test_dot_prints_like_go() -> None:
    assert format_report([DB], "{{.}}") == (
        f"{{a.service fedcba987654 (db) db {DB.container_id} localhost:5000/db:1 local false}}\n"
    )


def test_header_uses_table_prefix_only() -> None:
    # "table" must be followed by a space to be the keyword; otherwise it is literal text.
    assert format_report([DB], "tables {{.Unit}}") == "tables a.service\n"


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        (
            "{{.Foo}}",
            'template: auto-update:1:13: executing "auto-update" at <.Foo>: '
            "can't evaluate field Foo in type main.autoUpdateOutput",
        ),
        (
            "table {{.Unit}} {{.Bar}}",
            'template: auto-update:1:23: executing "auto-update" at <.Bar>: '
            "can't evaluate field Bar in type main.autoUpdateOutput",
        ),
        (
            "{{json .Nope}}",
            'template: auto-update:1:18: executing "auto-update" at <.Nope>: '
            "can't evaluate field Nope in type main.autoUpdateOutput",
        ),
        (
            "{{.Unit.Name}}",
            'template: auto-update:1:13: executing "auto-update" at <.Unit.Name>: '
            "can't evaluate field Name in type string",
        ),
        (
            "{{.unit}}",
            'template: auto-update:1:13: executing "auto-update" at <.unit>: '
            "can't evaluate field unit in type main.autoUpdateOutput",
        ),
        (
            "{{range .}}{{end}}{{.Unit}}",
            'template: auto-update:1:20: executing "auto-update" at <.Unit>: '
            "can't evaluate field Unit in type []main.autoUpdateOutput",
        ),
        (
            "{{upper .}}",
            'template: auto-update:1:13: executing "auto-update" at <upper .>: '
            "wrong type for value; expected string; got main.autoUpdateOutput",
        ),
        (
            "{{json}}",
            'template: auto-update:1:13: executing "auto-update" at <json>: '
            "wrong number of args for json: want 1 got 0",
        ),
        ("{{foo .Unit}}", 'template: auto-update:1: function "foo" not defined'),
        (
            "{{printf .Unit}}",
            'template: auto-update:1: function "printf" is not supported by updock',
        ),
        (
            "{{.Unit | .Image}}",
            "template: auto-update:1: non executable command in pipeline stage 2",
        ),
        ("{{.Unit .Image}}", "template: auto-update:1: can't give argument to non-function .Unit"),
        ("{{}}", "template: auto-update:1: missing value for command"),
        ("{{range .}}", "template: auto-update:1: unexpected EOF"),
        ("{{end}}", "template: auto-update:1: unexpected {{end}}"),
        ("x\n{{if .Unit}}", 'template: auto-update:2: unexpected "if" in command'),
        ("{{/* open", "template: auto-update:1: unclosed comment"),
    ],
)
def test_template_errors(fmt: str, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        format_report(ROWS, fmt)
    assert str(caught.value) == message


def test_template_errors_without_rows() -> None:
    # Checked before running, so a bad format fails even when there is nothing to print.
    with pytest.raises(UsageError, match="can't evaluate field Foo"):
        format_report([], "{{.Foo}}")


@pytest.mark.parametrize(
    ("fmt", "normalized"),
    [
        ("{{.Unit}}", "{{.Unit}}\n"),
        ("{{.Unit}}\\t{{.Image}}\\n", "{{.Unit}}\t{{.Image}}\n"),
        ("{{.Unit}} {{.Image}}", "{{.Unit}} {{.Image}}\n"),
        ("table {{.Unit}} {{.Image}}", "{{.Unit}}\t{{.Image}}\n"),
        ("table {{ .Unit }}", "{{\t.Unit\t}}\n"),
        ("table {{.Unit}} stable x", "{{.Unit}}\tsx\n"),  # Go's replacer drops every "table "
    ],
)
def test_normalize_format(fmt: str, normalized: str) -> None:
    assert normalize_format(fmt) == normalized
