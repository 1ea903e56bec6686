"""The rules for client input shared by the JSON API and the auditor pages: dates, limits
and text, each refused with a message that says what is wanted.

Dates must lie where Python and both databases can hold them, with a day's margin so that
time-zone and calendar-day arithmetic never leaves that range. An open end given far out
("since 0001-01-01", "until 9999-12-31") is clamped to the first or last instant held,
which is what it obviously means; a start after the last instant, or an end before the
first, can match nothing and is refused.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)
FIRST_DAY = EARLIEST.date()
LAST_DAY = LATEST.date()
RANGE = f"{FIRST_DAY.isoformat()} to {LAST_DAY.isoformat()}"

ISO_HINT = "an ISO 8601 date or date-time (2025-01-31 or 2025-01-31T09:00:00Z)"
DIGITS = re.compile(r"[0-9]{1,7}")
# A note a person typed: something visible, and no control character but tab and line
# breaks (PostgreSQL cannot store NUL). The OpenAPI document quotes this same pattern.
NOTE_PATTERN = (r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]*"
                r"[^\s\u0000-\u001f\u007f]"
                r"[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]*$")
NOTE = re.compile(NOTE_PATTERN)
# A one-line name (a queue's, say): something visible, no control character (C0, DEL, C1)
# and none of the two non-characters XML cannot carry. Spaces around it are trimmed.
LABEL_PATTERN = (r"^[^\u0000-\u001f\u007f-\u009f\ufffe\uffff]*"
                 r"[^\s\u0000-\u001f\u007f-\u009f\ufffe\uffff]"
                 r"[^\u0000-\u001f\u007f-\u009f\ufffe\uffff]*$")
LABEL = re.compile(LABEL_PATTERN)


class InvalidInput(ValueError):
    """One input is not acceptable; `field` names it and `message` says what is wanted."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _clamp_instant(dt: datetime | None, field: str, *, end: bool, too_late: bool
                   ) -> datetime:
    """`dt` within [EARLIEST, LATEST]; an open end beyond the range becomes its edge."""
    if dt is not None and EARLIEST <= dt <= LATEST:
        return dt
    late = too_late if dt is None else dt > LATEST
    if late == end:
        return LATEST if end else EARLIEST
    which = "after the last" if late else "before the first"
    raise InvalidInput(field, f"{which} date this service can hold; use {RANGE}")


def instant(raw: str, field: str, *, end: bool = False) -> datetime:
    """An ISO 8601 date (its midnight UTC) or date-time (UTC when it names no zone), as an
    aware UTC datetime within the range held; `end` says the value closes a range."""
    text = raw.upper().replace("Z", "+00:00")
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            dt = datetime(d.year, d.month, d.day, tzinfo=UTC)
        else:
            dt = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(field, f"not {ISO_HINT}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    try:
        return _clamp_instant(dt.astimezone(UTC), field, end=end, too_late=False)
    except OverflowError:
        # The zone pushes the instant past year 1 or 9999: past the range on that side.
        return _clamp_instant(None, field, end=end, too_late=dt.year > 5000)


def day(raw: str, field: str, *, end: bool = False) -> date:
    """A calendar day written YYYY-MM-DD, within the range held (an open end clamped)."""
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", raw):
        raise InvalidInput(field, "not a date (YYYY-MM-DD)")
    try:
        d = date.fromisoformat(raw)
    except ValueError:
        raise InvalidInput(field, "not a date (YYYY-MM-DD)") from None
    return held_day(d, field, end=end)


def held_day(d: date, field: str, *, end: bool = False) -> date:
    """A calendar day within the range held: an open end beyond it becomes its edge; a
    start after the last day, or an end before the first, is refused."""
    if FIRST_DAY <= d <= LAST_DAY:
        return d
    if (d > LAST_DAY) == end:
        return LAST_DAY if end else FIRST_DAY
    which = "after the last" if d > LAST_DAY else "before the first"
    raise InvalidInput(field, f"{which} date this service can hold; use {RANGE}")


def whole_number(raw: str, field: str, *, low: int, high: int) -> int:
    """A whole number written in ASCII digits, from `low` to `high`."""
    if not DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
        raise InvalidInput(field, f"a whole number from {low} to {high}")
    return int(raw)


def is_unicode(value: str) -> bool:
    """True when the string can be written as UTF-8 (no lone surrogate from a JSON escape)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def note(value: object, field: str, *, max_length: int) -> str:
    """A person's free text: a string of 1 to `max_length` characters, valid Unicode, with
    something visible and no control character but tab and line breaks."""
    wanted = f"a text of 1 to {max_length} characters, not blank, with no control characters"
    if not isinstance(value, str) or not 1 <= len(value) <= max_length:
        raise InvalidInput(field, wanted)
    if not is_unicode(value):
        raise InvalidInput(field, "not valid Unicode text (a lone surrogate such as \\ud800)")
    if not NOTE.fullmatch(value):
        raise InvalidInput(field, wanted)
    return value


def label(value: object, field: str, *, max_length: int) -> str:
    """A one-line name of 1 to `max_length` characters (as sent), valid Unicode, with
    something visible and no control character; returned without surrounding spaces."""
    wanted = (f"a name of 1 to {max_length} characters, not blank, with no control "
              "characters")
    if not isinstance(value, str) or not 1 <= len(value) <= max_length:
        raise InvalidInput(field, wanted)
    if not is_unicode(value):
        raise InvalidInput(field, "not valid Unicode text (a lone surrogate such as \\ud800)")
    if not LABEL.fullmatch(value):
        raise InvalidInput(field, wanted)
    return value.strip()
