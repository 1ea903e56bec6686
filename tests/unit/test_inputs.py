"""The shared input rules (ivr.inputs): dates, limits and text, without a server."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from ivr.domain import inputs

LATEST = inputs.LATEST
EARLIEST = inputs.EARLIEST


@pytest.mark.parametrize("raw,end,expected", [
    ("2025-01-31", False, datetime(2025, 1, 31, tzinfo=UTC)),
    ("2025-01-31T09:00:00Z", False, datetime(2025, 1, 31, 9, tzinfo=UTC)),
    ("2025-01-31t09:00:00z", False, datetime(2025, 1, 31, 9, tzinfo=UTC)),
    ("2025-01-31T12:00:00+03:00", True, datetime(2025, 1, 31, 9, tzinfo=UTC)),
    ("2025-01-31T09:00:00", False, datetime(2025, 1, 31, 9, tzinfo=UTC)),
    ("2025-01-31T09:00:00.1234567Z", False, datetime(2025, 1, 31, 9, 0, 0, 123456, tzinfo=UTC)),
    # An open end far out is clamped to the range held.
    ("9999-12-31T23:59:59-01:00", True, LATEST),
    ("9999-12-31", True, LATEST),
    ("0001-01-01T00:00:00+01:00", False, EARLIEST),
    ("0001-01-01", False, EARLIEST),
])
def test_instant_accepts_and_clamps(raw, end, expected):
    assert inputs.instant(raw, "since", end=end) == expected


@pytest.mark.parametrize("raw,end,message", [
    ("9999-12-31T23:59:59-01:00", False, "after the last date"),
    ("9999-12-31", False, "after the last date"),
    ("0001-01-01T00:00:00+01:00", True, "before the first date"),
    ("0001-01-01", True, "before the first date"),
    ("å", False, "not an ISO 8601"),
    ("10000-01-01", False, "not an ISO 8601"),
    ("0000-01-01", False, "not an ISO 8601"),
    ("2025-02-30", False, "not an ISO 8601"),
    ("2025-01-31T24:00:00Z", False, "not an ISO 8601"),
])
def test_instant_refuses(raw, end, message):
    with pytest.raises(inputs.InvalidInput) as e:
        inputs.instant(raw, "until" if end else "since", end=end)
    assert message in e.value.message and e.value.field == ("until" if end else "since")


@pytest.mark.parametrize("raw,end,expected", [
    ("2025-01-31", False, date(2025, 1, 31)),
    ("9999-12-31", True, inputs.LAST_DAY),
    ("0001-01-01", False, inputs.FIRST_DAY),
])
def test_day_accepts_and_clamps(raw, end, expected):
    assert inputs.day(raw, "d", end=end) == expected


@pytest.mark.parametrize("raw,end", [
    ("9999-12-31", False), ("0001-01-01", True), ("20250131", False), ("2025-13-01", False),
    ("²⁰²⁵-01-01", False), ("", False),
])
def test_day_refuses(raw, end):
    with pytest.raises(inputs.InvalidInput):
        inputs.day(raw, "d", end=end)


@pytest.mark.parametrize("raw,ok", [
    ("1", 1), ("25", 25), (" 25 ", None), ("10000", 10000), ("0", None), ("10001", None),
    ("²", None), ("٣", None), ("-1", None), ("+5", None), ("1e3", None), ("9" * 5000, None),
    ("", None),
])
def test_whole_number(raw, ok):
    if ok is None:
        with pytest.raises(inputs.InvalidInput, match="a whole number from 1 to 10000"):
            inputs.whole_number(raw, "limit", low=1, high=10000)
    else:
        assert inputs.whole_number(raw, "limit", low=1, high=10000) == ok


@pytest.mark.parametrize("value,ok", [
    ("istemiyor", True), ("KVKK başvurusu", True), ("line one\nline two\ttab", True),
    (" x ", True), ("\ud800", False), ("a\udfffb", False), ("", False), ("   ", False),
    ("\n", False), ("bell\x07", False), ("nul\x00", False), ("x" * 41, False), (5, False),
    (None, False), (["x"], False),
])
def test_note(value, ok):
    if ok:
        assert inputs.note(value, "reason", max_length=40) == value
    else:
        with pytest.raises(inputs.InvalidInput):
            inputs.note(value, "reason", max_length=40)
