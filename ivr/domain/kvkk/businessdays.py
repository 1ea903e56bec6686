"""Business days in Turkey: weekends, public holidays, and the İYS 3-business-day limit."""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml

ISTANBUL = ZoneInfo("Europe/Istanbul")
IYS_BUSINESS_DAYS = 3


class HolidayConfigError(Exception):
    """The holidays file cannot be used."""


@dataclass
class Calendar:
    """Working days: Monday to Friday, except public holidays."""

    use_package: bool = True
    added: frozenset[date] = frozenset()
    removed: frozenset[date] = frozenset()

    def __post_init__(self) -> None:
        self._package: Container[date] | None = None
        if self.use_package:
            import holidays  # late import: the package loads only when the calendar uses it

            self._package = holidays.country_holidays("TR")

    def is_holiday(self, d: date) -> bool:
        """True on a public holiday (from the package and the file's additions)."""
        if d in self.removed:
            return False
        return d in self.added or (self._package is not None and d in self._package)

    def is_business_day(self, d: date) -> bool:
        """True on a working day."""
        return d.weekday() < 5 and not self.is_holiday(d)

    def add_business_days(self, start: date, n: int) -> date:
        """The n-th business day after `start` (start itself is not counted)."""
        d, left = start, n
        while left > 0:
            d += timedelta(days=1)
            if self.is_business_day(d):
                left -= 1
        return d

    def business_days_between(self, start: date, end: date) -> int:
        """Business days after `start` up to and including `end` (0 when end <= start)."""
        count, d = 0, start
        while d < end:
            d += timedelta(days=1)
            if self.is_business_day(d):
                count += 1
        return count


def _date(value: object, source: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise HolidayConfigError(f"{source}: {value!r} is not a date (YYYY-MM-DD)") from None


def load_calendar(path: str | Path | None) -> Calendar:
    """The calendar described by a holidays file; the package's calendar if there is none."""
    if not path or not Path(path).exists():
        return Calendar()
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError, ValueError) as e:
        # PyYAML raises ValueError for impossible dates such as 2026-13-01.
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise HolidayConfigError(f"{path}: cannot read holidays file: {first}") from None
    if not isinstance(doc, dict):
        raise HolidayConfigError(f"{path}: must hold a mapping (package, add, remove)")
    unknown = set(doc) - {"package", "add", "remove"}
    if unknown:
        raise HolidayConfigError(f"{path}: unknown key {sorted(unknown)[0]!r}")
    use_package = doc.get("package", True)
    if not isinstance(use_package, bool):
        raise HolidayConfigError(f"{path}: 'package' must be true or false")

    def dates(key: str) -> frozenset[date]:
        items = doc.get(key) or []
        if not isinstance(items, list):
            raise HolidayConfigError(f"{path}: '{key}' must be a list")
        return frozenset(_date(i.get("date") if isinstance(i, dict) else i, str(path))
                         for i in items)

    return Calendar(use_package, dates("add"), dates("remove"))


def local_date(dt: datetime) -> date:
    """The Europe/Istanbul calendar date of a moment."""
    return dt.astimezone(ISTANBUL).date()


def iys_deadline(captured_at: datetime, cal: Calendar, days: int = IYS_BUSINESS_DAYS) -> datetime:
    """The last moment to register a consent in İYS: the end of the 3rd business day
    after the day it was collected (Istanbul time)."""
    last = cal.add_business_days(local_date(captured_at), days)
    return datetime.combine(last + timedelta(days=1), time(0), ISTANBUL) - timedelta(microseconds=1)


def deadline_state(deadline: datetime, now: datetime, cal: Calendar) -> str:
    """'overdue' once past, 'due' when at most one business day is left, else 'ok'."""
    if now > deadline:
        return "overdue"
    today, last = local_date(now), deadline.astimezone(ISTANBUL).date()
    if cal.business_days_between(today, last) <= 1:
        return "due"
    return "ok"
