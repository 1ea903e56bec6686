"""CSV that a spreadsheet opens as data, never as formulas (OWASP, "CSV Injection").

A cell that begins with `=`, `+`, `-`, `@`, a tab or a carriage return may be run as a
formula by Excel, LibreOffice or Google Sheets (`=HYPERLINK(...)`, `@SUM(...)`, DDE). Such a
cell is written with a leading apostrophe, which spreadsheets show as text and do not
display; the value is otherwise unchanged. So an E.164 number reads `'+905321234567` in
the CSV file; the JSON exports carry every value as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

V = TypeVar("V")

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: V) -> V | str:
    """A CSV cell that cannot start a formula: text beginning with one of FORMULA_STARTS
    gets a leading apostrophe; anything else is returned as it is."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def safe_row(row: Mapping[str, V]) -> dict[str, V | str]:
    """Every cell of a CSV row through `safe_cell`."""
    return {k: safe_cell(v) for k, v in row.items()}
