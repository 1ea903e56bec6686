"""How every surface writes times and dates: Europe/Istanbul wall-clock time, dates as
30.11.2026, the UTC instant beside it, and "—" for a value we do not know."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

LOCAL = ZoneInfo("Europe/Istanbul")
LABEL = "Europe/Istanbul"
UNKNOWN = "—"
DAY_FORMAT = "%d.%m.%Y"
DAY_PATTERN = r"[0-9]{2}\.[0-9]{2}\.[0-9]{4}"  # what the web's date fields accept, 30.11.2026


def utcnow() -> datetime:
    """The current time, in UTC, timezone-aware."""
    return datetime.now(UTC)


def parse_utc(value: datetime | str | None) -> datetime | None:
    """A UTC datetime from a stored ISO string ("...Z") or a datetime; None when absent."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        dt = value
    else:
        try:
            dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


# How precise a written instant is (`utc_iso`'s `timespec`): pages show milliseconds, audit
# leaves always carry six digits, exports and API documents write what the value holds.
PAGE = "milliseconds"
AUDIT = "microseconds"
EXPORT = "auto"


def utc_iso(dt: datetime, timespec: str = PAGE) -> str:
    """An instant as UTC ISO 8601 with a Z (the one formatter every surface uses)."""
    return dt.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def utc_iso_or_none(dt: datetime | None, timespec: str = EXPORT) -> str | None:
    """`utc_iso` of a value that may be unknown (None stays None)."""
    return utc_iso(dt, timespec) if dt else None


def local_text(dt: datetime) -> str:
    """Istanbul wall-clock time to the second, 30.11.2026 10:39:51."""
    return dt.astimezone(LOCAL).strftime(f"{DAY_FORMAT} %H:%M:%S")


def local_day(value: date | str | None) -> str:
    """A date (or the Istanbul day of an instant) as 30.11.2026; "—" when unknown."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value.strftime(DAY_FORMAT)
    dt = parse_utc(value)
    return dt.astimezone(LOCAL).strftime(DAY_FORMAT) if dt else UNKNOWN


def text(value: datetime | str | None) -> str:
    """An instant for plain text: Istanbul time, its zone, and the UTC instant in brackets."""
    dt = parse_utc(value)
    if dt is None:
        return UNKNOWN
    return f"{local_text(dt)} {LABEL} (UTC {utc_iso(dt)})"


def value_or_dash(value: object, unit: str = "") -> str:
    """A value for plain text, or "—" when it is unknown (never "None")."""
    return UNKNOWN if value is None or value == "" else f"{value}{unit}"


def form_day(raw: str) -> str:
    """A date typed as 30.11.2026 rewritten as 2026-11-30 for the search; other text as is."""
    raw = raw.strip()
    if re.fullmatch(DAY_PATTERN, raw):
        d, m, y = raw.split(".")
        return f"{y}-{m}-{d}"
    return raw


def form_value(iso_day: str) -> str:
    """A day from a query (2026-11-30 or 30.11.2026) written back as 30.11.2026."""
    try:
        return date.fromisoformat(form_day(iso_day)).strftime(DAY_FORMAT)
    except ValueError:
        return iso_day
