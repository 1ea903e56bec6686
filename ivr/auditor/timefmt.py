"""Times for auditors: shown in Europe/Istanbul, with the exact UTC instant on hover."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from markupsafe import Markup, escape

LOCAL = ZoneInfo("Europe/Istanbul")


def parse_utc(value) -> datetime | None:
    """A datetime from a stored ISO string ("...Z") or a datetime; None when absent."""
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


def utc_iso(dt: datetime) -> str:
    """UTC ISO 8601 with a Z."""
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def local_text(dt: datetime) -> str:
    """Istanbul wall-clock time, to the second."""
    return dt.astimezone(LOCAL).strftime("%d.%m.%Y %H:%M:%S")


def time_tag(value) -> Markup:
    """<time> in Istanbul time with the UTC instant as its title (shown on hover)."""
    dt = parse_utc(value)
    if dt is None:
        return Markup('<span class="none">—</span>')
    iso = utc_iso(dt)
    return Markup('<time datetime="{0}" title="UTC {0}">{1}</time>').format(
        escape(iso), escape(local_text(dt)))


def local_day_bounds(since: date | None, until: date | None):
    """UTC instants for Istanbul calendar days: [start of `since`, end of `until`)."""
    lo = datetime.combine(since, time(), LOCAL).astimezone(UTC) if since else None
    hi = (datetime.combine(until + timedelta(days=1), time(), LOCAL).astimezone(UTC)
          if until else None)
    return lo, hi


def register_filters(app) -> None:
    """Make the time filters available to every template."""
    app.jinja_env.filters["istanbul"] = time_tag
    app.jinja_env.filters["utc_iso"] = lambda v: utc_iso(parse_utc(v)) if parse_utc(v) else ""
