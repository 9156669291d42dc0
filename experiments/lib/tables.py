"""Table cells, GitHub markdown tables, and reading them back (for tests and notebooks)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: floats with ``digits`` decimals (``nan``/``inf`` as words), None as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.{digits}f}" if math.isfinite(value) else str(float(value))
    return str(value)


def cell(value, digits: int = 3) -> str:
    """As :func:`fmt`, but a tiny nonzero float in scientific notation (``1.2e-05``)."""
    if isinstance(value, (float, np.floating)) and math.isfinite(value):
        if value != 0 and abs(value) < 10.0 ** (-digits):
            return f"{value:.1e}"
    return fmt(value, digits)


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; cells are formatted with :func:`fmt` unless already strings.

    Raises:
      ValueError: for a row whose number of cells is not the number of columns.
    """
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        cells = [c if isinstance(c, str) else fmt(c) for c in row]
        if len(cells) != len(columns):
            raise ValueError(f"expected {len(columns)} cells per row; got {len(cells)}: {cells}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_markdown_table(md: str, first_column: str) -> tuple[list[str], list[list[str]]]:
    """Header and body rows of the table in ``md`` whose header starts with ``| first_column |``.

    The inverse of :func:`markdown_table`, for tests and notebooks that read ``summary.md``.
    """
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_column} |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != len(header):
            raise ValueError(f"row has {len(cells)} cells, header {len(header)}: {line}")
        rows.append(cells)
    return header, rows
