"""A port of Go's `text/tabwriter`, with a space pad character and no flags (as podman uses it).

Cells are tab-terminated. A column block is a run of consecutive lines that have a cell in that
column; its width is the widest cell plus padding, at least `minwidth`. The last cell of a line
is not part of any column and is written unpadded. Widths count characters, as Go counts runes.
"""

from __future__ import annotations


class _TabWriter:
    """Go's `tabwriter.Writer`: text goes in with `write`, aligned text comes out of `flush`."""

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


def tabwrite(text: str, *, minwidth: int, padding: int) -> str:
    """Align tab-separated text the way Go's `text/tabwriter` does.

    Args:
        text: lines of tab-terminated cells; the text after a line's last tab is its last cell.
        minwidth: minimal width of a column, padding included.
        padding: spaces added to the widest cell of a column.

    Returns:
        The aligned text.
    """
    writer = _TabWriter(minwidth, padding)
    writer.write(text)
    return writer.flush()
