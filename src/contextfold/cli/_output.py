"""What every subcommand prints with: tables, progress bars and messages, the same way everywhere.

Output goes through rich, which drops colour and animation by itself when stdout is not a terminal (a pipe, a file,
a test), honours NO_COLOR, and wraps tables to the terminal's width. Results go to stdout, so they can be piped;
progress, hints and errors go to stderr.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

Cell = str | int | float | None


PIPE_WIDTH = 200
"""Columns of a table printed to a pipe or a file (without $COLUMNS): wide, so rows are not folded for a script."""


def stdout() -> Console:
    """Results: what a script piping the command reads."""
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = PIPE_WIDTH
    return console


def stderr() -> Console:
    """Progress, hints and errors: what a person watching reads."""
    return Console(stderr=True, highlight=False)


def table(columns: Sequence[str], rows: Iterable[Sequence[Cell]], *, title: str | None = None) -> Table:
    """A plain table; numbers are right-aligned and grouped by thousands, None shows as a dash."""
    rows = [list(row) for row in rows]
    shown = Table(title=title, title_justify="left", header_style="bold", box=None, pad_edge=False)
    for i, column in enumerate(columns):
        numeric = bool(rows) and all(isinstance(row[i], int | float) or row[i] is None for row in rows)
        shown.add_column(column, justify="right" if numeric else "left", overflow="fold")
    for row in rows:
        shown.add_row(*(cell_text(cell) for cell in row))
    return shown


def cell_text(cell: Cell) -> str:
    if cell is None:
        return "-"
    if isinstance(cell, bool):
        return "yes" if cell else "no"
    if isinstance(cell, int):
        return f"{cell:,}"
    if isinstance(cell, float):
        return f"{cell:,.1f}"
    return cell


def progress(console: Console | None = None) -> Progress:
    """A bar for long work with a known total: `with progress() as bar: task = bar.add_task("turns", total=n)`."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console or stderr(),
    )
