"""CSV cells that cannot start a spreadsheet formula (OWASP, "CSV Injection")."""

from __future__ import annotations

import pytest

from ivr.domain.spreadsheet import safe_cell, safe_row


@pytest.mark.parametrize("value", ["=1+1", "+905321234567", "-2", "@SUM(A1)", "\t=1", "\r=1",
                                   '=HYPERLINK("http://evil/","x")'])
def test_a_cell_that_could_start_a_formula_gets_an_apostrophe(value):
    assert safe_cell(value) == "'" + value


@pytest.mark.parametrize("value", ["granted", "CA0123", "2026-01-31T09:00:00Z", "", " =1",
                                   "'=1", None, 42])
def test_other_cells_are_left_as_they_are(value):
    assert safe_cell(value) == value


def test_a_row():
    assert safe_row({"a": "=x", "b": "y", "c": None}) == {"a": "'=x", "b": "y", "c": None}
