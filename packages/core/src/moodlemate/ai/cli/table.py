"""Tables for listings. On a terminal, with the ``cli`` extra (rich) installed: a drawn table
with a bold header. Otherwise (a pipe, a file, no rich): plain left-aligned columns, two
spaces apart, no trailing blanks, which ``cut``/``awk`` read easily. rich is imported only
here, and only for a terminal, so a piped command never pays for it.

Every cell passes :func:`~moodlemate.ai.cli.terminal.safe`: a model name or an error a server
chose must not drive the terminal."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from moodlemate.ai.cli.terminal import is_terminal, safe

__all__ = ["format_table", "print_table"]


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    cleaned = [[safe(str(cell)) for cell in row] for row in (headers, *rows)]
    widths = [max(len(cell) for cell in column) for column in zip(*cleaned, strict=True)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cleaned
    ]
    return "\n".join(lines)


def print_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], *, numeric: Sequence[int] = ()
) -> None:
    """Print a table to standard output; ``numeric`` columns are right-aligned on a terminal."""
    if is_terminal(sys.stdout):
        try:
            _print_rich(headers, rows, numeric)
            return
        except ImportError:
            pass
    print(format_table(headers, rows))


def _print_rich(
    headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int]
) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(header_style="bold", box=None, pad_edge=False, show_edge=False)
    for index, header in enumerate(headers):
        table.add_column(header, justify="right" if index in numeric else "left")
    for row in rows:
        # Text, not markup: a '[bold]' in a model's name is shown, not obeyed.
        table.add_row(*(Text(safe(str(cell))) for cell in row))
    Console(highlight=False, soft_wrap=False).print(table)
