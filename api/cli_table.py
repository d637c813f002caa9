"""Tables of the `herald` CLI that fit the terminal without ever breaking an id.

An id (a UUID) must stay whole on one line so it can be copied into the next command. When a table is wider than
the terminal, the other columns are shortened instead, widest first, and cut with an ellipsis; when even that
cannot fit, the columns named in `hide_first` are left out and a note says so (`--json` always has everything).
Rows stay one line each.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from typing import Any

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

# A shortened column keeps at least this many cells (or its full width if narrower), ellipsis included; below
# that a column is unreadable, and the next of `hide_first` is left out instead.
MIN_COLUMN_CELLS = 10


def _new_table(title: str, columns: Sequence[str], ids: set[str], widths: dict[str, int]) -> Table:
    t = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True)
    for column in columns:
        if column in ids:
            # Never folded, wrapped nor cut: min_width holds even if Rich has to shrink the table.
            t.add_column(column, no_wrap=True, overflow="ignore", min_width=widths[column])
        else:
            t.add_column(column, no_wrap=True, overflow="ellipsis", max_width=widths[column])
    return t


def _overhead(columns: Sequence[str]) -> int:
    """Cells the table itself takes (padding, separators) beyond its columns' contents."""
    probe = Console(width=10_000, file=io.StringIO())
    t = _new_table("", columns, set(), dict.fromkeys(columns, 1))
    t.add_row(*("x" for _ in columns))
    probe.print(t)
    lines = [line for line in probe.file.getvalue().splitlines() if "x" in line]  # type: ignore[attr-defined]
    return cell_len(lines[0].rstrip()) - len(columns) if lines else 0


def _fit(natural: dict[str, int], shrinkable: list[str], budget: int) -> dict[str, int] | None:
    """Widths for the shrinkable columns within `budget` cells; None if impossible.

    Each column keeps its floor plus a share of the rest in proportion to what it lacks, so a long column (a
    cause) keeps more of its text than a short one loses."""
    floors = {c: min(natural[c], MIN_COLUMN_CELLS) for c in shrinkable}
    if sum(floors.values()) > budget:
        return None
    if sum(natural[c] for c in shrinkable) <= budget:
        return {c: natural[c] for c in shrinkable}
    spare = budget - sum(floors.values())
    wanted = sum(natural[c] - floors[c] for c in shrinkable)
    widths = {c: floors[c] + (natural[c] - floors[c]) * spare // wanted for c in shrinkable}
    # Integer division leaves a few cells: give them to the columns that lack the most.
    left = budget - sum(widths.values())
    for c in sorted(shrinkable, key=lambda c: widths[c] - natural[c])[:left]:
        widths[c] += 1
    return widths


def render_table(
    console: Console,
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    ids: Iterable[str] = ("id",),
    hide_first: Sequence[str] = (),
) -> int:
    """Print the table (or one "no <title>" line when empty) and return the number of rows."""
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    if not cells:
        console.print(f"[dim]no {title.lower()}[/dim]")
        return 0
    id_columns = set(ids) & set(columns)
    shown = list(columns)
    hidden: list[str] = []
    natural = {c: max([cell_len(c), *(cell_len(r[i]) for r in cells)]) for i, c in enumerate(columns)}
    while True:
        budget = console.width - _overhead(shown) - sum(natural[c] for c in shown if c in id_columns)
        widths = _fit(natural, [c for c in shown if c not in id_columns], budget)
        candidates = [c for c in hide_first if c in shown]
        if widths is not None or not candidates:
            break
        shown.remove(candidates[0])
        hidden.append(candidates[0])
    if widths is None:
        # Nothing left to hide: every other column gets an equal share (at least one cell); the ids stay whole.
        others = [c for c in shown if c not in id_columns]
        widths = {c: max(1, min(natural[c], budget // max(1, len(others)))) for c in others}
    widths |= {c: natural[c] for c in shown if c in id_columns}
    t = _new_table(title, shown, id_columns, widths)
    index = {c: i for i, c in enumerate(columns)}
    for row in cells:
        t.add_row(*(row[index[c]] for c in shown))
    console.print(t, crop=False)
    if hidden:
        console.print(f"[dim]hidden at this width: {', '.join(hidden)} (--json shows all)[/dim]")
    return len(cells)
