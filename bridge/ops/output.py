"""Plain aligned text tables: the operator commands' and the developer tools'."""

from __future__ import annotations

from collections.abc import Sequence


def table(
    header: Sequence[object],
    rows: Sequence[Sequence[object]],
    indent: str = "",
    *,
    align: str = "",
    rule: bool = False,
) -> str:
    """Columns padded to their widest cell; trailing spaces trimmed.

    ``align`` has an ``l`` or ``r`` per column (default: all left); ``rule`` puts a
    line of dashes under the header.
    """
    cells = [[str(cell) for cell in header], *([str(cell) for cell in row] for row in rows)]
    if any(len(row) != len(header) for row in cells):
        raise ValueError("a table needs one cell per column in every row")
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    sides = align or "l" * len(header)

    def line(row: Sequence[str]) -> str:
        padded = [
            cell.rjust(width) if side == "r" else cell.ljust(width)
            for cell, width, side in zip(row, widths, sides, strict=True)
        ]
        return (indent + "  ".join(padded)).rstrip()

    lines = [line(cells[0])]
    if rule:
        lines.append(indent + "  ".join("-" * width for width in widths))
    return "\n".join([*lines, *(line(row) for row in cells[1:])])
