"""Go's text/tabwriter: expected tables computed by hand from its rules.

A column is as wide as its widest cell plus the padding, and at least the minimal width; the last
cell of a line is not padded. Most cases use podman's settings (minimal width 12, padding 2).
"""

from __future__ import annotations

from updock.core.tabwriter import tabwrite


def sp(n: int) -> str:
    return " " * n


def podman(text: str) -> str:
    """`tabwrite` with podman's settings."""
    return tabwrite(text, minwidth=12, padding=2)


def test_tabwrite_minwidth_applies() -> None:
    assert podman("a\tb\nccc\td\n") == "a" + sp(11) + "b\n" + "ccc" + sp(9) + "d\n"


def test_tabwrite_widest_cell_plus_padding() -> None:
    text = "UNIT\tX\ncontainer-web.service\tY\n"
    # 21 + 2 = 23 > 12
    assert podman(text) == "UNIT" + sp(19) + "X\n" + "container-web.service" + sp(2) + "Y\n"


def test_tabwrite_custom_settings() -> None:
    assert tabwrite("a\tb\nlonger\tc\n", minwidth=0, padding=1) == "a      b\nlonger c\n"


def test_tabwrite_blocks_with_different_cell_counts() -> None:
    # Column 0 spans the first two lines only (the third has no tab); column 1 only the first.
    # The fourth line starts a new block of its own.
    text = "a\tbb\tc\nccc\td\ne\nf\tg\th\n"
    assert tabwrite(text, minwidth=0, padding=1) == "a   bb c\nccc d\ne\nf g h\n"


def test_tabwrite_block_ends_where_a_line_lacks_the_column() -> None:
    text = "x\ty\tz\nlong-cell\tq\nk\tlonger-second\tw\n"
    # Column 0: all three lines, width 9 + 2 = 11 -> 12. Column 1: line 1 alone (line 2 has no
    # second tab), then line 3 alone: widths 12 and 15.
    assert podman(text) == (
        "x" + sp(11) + "y" + sp(11) + "z\n"
        "long-cell" + sp(3) + "q\n"
        "k" + sp(11) + "longer-second" + sp(2) + "w\n"
    )


def test_tabwrite_empty_cells_are_padded() -> None:
    assert podman("\tx\n\ty\n") == sp(12) + "x\n" + sp(12) + "y\n"


def test_tabwrite_tab_before_newline_pads_the_cell() -> None:
    assert podman("a\t\n") == "a" + sp(11) + "\n"


def test_tabwrite_trailing_text_without_newline() -> None:
    assert podman("a\tb\nc\td") == "a" + sp(11) + "b\n" + "c" + sp(11) + "d"


def test_tabwrite_trailing_tab_without_newline_is_dropped() -> None:
    # Go only terminates a non-empty pending cell on Flush: "b" becomes the unpadded last cell.
    assert podman("a\tb\t") == "a" + sp(11) + "b"


def test_tabwrite_counts_characters_not_bytes() -> None:
    assert tabwrite("ünï\tx\nabc\ty\n", minwidth=0, padding=2) == "ünï  x\nabc  y\n"


def test_tabwrite_form_feed_ends_a_section() -> None:
    text = "a\tb\f" + "a-much-longer-cell\tc\n"
    assert podman(text) == "a" + sp(11) + "b\n" + "a-much-longer-cell" + sp(2) + "c\n"


def test_tabwrite_no_tabs_is_identity() -> None:
    assert podman("one\ntwo\n\nthree") == "one\ntwo\n\nthree"
    assert podman("") == ""
