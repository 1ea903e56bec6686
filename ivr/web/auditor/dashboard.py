"""Consent outcomes over a period, counted from the daily aggregates of the consent records.

Each consent record counts once, on the Istanbul calendar day of its `captured_at`: the
same records, over the same instants, as `python -m ivr consents export --since --until`.
The counts come from the daily aggregates (ivr/services/daily_aggregates.py), which grow
with days, not with calls; only grouped counts reach Python. Beside them, the calls from a
hidden number ("numara gizli": no phone number, so no choice could be recorded) count once
each, on the day of their first run, so that every call that heard the notice is in the
figures.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from flask_babel import gettext as _
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ivr.domain import inputs
from ivr.services.daily_aggregates import Reader
from ivr.storage.transfer_models import Transfer

from .search import NONE_VALUE
from .timefmt import LOCAL, local_day_bounds

STEPS = ("day", "week")
DEFAULT_DAYS = 30
MAX_DAYS = {"day": 366, "week": 366 * 3}
# The breakdowns; each name is also the search parameter that lists its calls.
DIMENSIONS = ("language", "origin", "agent", "flow_version", "notice_version")


class PeriodError(ValueError):
    """The period form is not valid; `errors` maps field to message."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def parse_day(value: str) -> date:
    """A day written dd.mm.yyyy (as shown) or yyyy-mm-dd (as a date input sends it)."""
    value = value.strip()
    if "." in value:
        return datetime.strptime(value, "%d.%m.%Y").date()
    return date.fromisoformat(value)


def day_text(day: date) -> str:
    """A day as auditors read it: dd.mm.yyyy (four digits of year, 0001 too)."""
    return f"{day.day:02d}.{day.month:02d}.{day.year:04d}"


def local_today() -> date:
    """Today in Istanbul."""
    return datetime.now(LOCAL).date()


@dataclass(frozen=True)
class Period:
    """Istanbul calendar days from `since` to `until`, both inclusive, counted per `step`."""

    since: date
    until: date
    step: str = "day"

    def bounds(self) -> tuple[datetime, datetime]:
        """The UTC instants the days cover: [since 00:00, the day after until 00:00)."""
        return local_day_bounds(self.since, self.until)

    def buckets(self) -> list[tuple[date, date]]:
        """(first day, last day) of each day or ISO week (Monday first) in the period."""
        out = []
        start = self.since
        while start <= self.until:
            if self.step == "week":  # (counted so that no day past the year 9999 is made)
                end = start + timedelta(days=min(6 - start.weekday(),
                                                 (self.until - start).days))
            else:
                end = start
            out.append((start, end))
            start = end + timedelta(days=1)
        return out


def parse_period(args: Mapping[str, str], today: date) -> Period:
    """The period from a query's since/until/step; the last 30 days by default. Days follow
    the API's rules (ivr/domain/inputs.py): an open end far out is clamped to the first or
    last day held, a start after the last day or an end before the first is refused."""
    errors: dict[str, str] = {}
    days = {}
    for name, default in (("since", today - timedelta(days=DEFAULT_DAYS - 1)),
                          ("until", today)):
        raw = (args.get(name) or "").strip()
        try:
            days[name] = (inputs.held_day(parse_day(raw), name, end=name == "until")
                          if raw else default)
        except inputs.InvalidInput:
            errors[name] = _("Use a day from %(first)s to %(last)s.",
                             first=day_text(inputs.FIRST_DAY), last=day_text(inputs.LAST_DAY))
            days[name] = default
        except ValueError:
            errors[name] = _("Write the day as dd.mm.yyyy, for example 01.03.2026.")
            days[name] = default
    step = (args.get("step") or "day").strip()
    if step not in STEPS:
        errors["step"] = _("Choose per day or per week.")
        step = "day"
    if not errors and days["since"] > days["until"]:
        errors["until"] = _("The last day must not be before the first day.")
    if not errors and (days["until"] - days["since"]).days >= MAX_DAYS[step]:
        errors["since"] = _("The period is too long for this step: at most 366 days per day, "
                             "or about three years per week.")
    if errors:
        raise PeriodError(errors)
    return Period(days["since"], days["until"], step)


@dataclass
class Row:
    """One line of a table: a label, its search criteria and a count per decision."""

    label: str
    criteria: dict[str, str]
    counts: dict[str, int] = field(default_factory=dict)
    hidden: int = 0  # calls from a hidden number: no decision could be theirs

    @property
    def total(self) -> int:
        """All decisions together."""
        return sum(self.counts.values())

    def share(self, decision: str) -> float:
        """This decision's share of the row, 0 for an empty row."""
        return self.counts.get(decision, 0) / self.total if self.total else 0.0


@dataclass
class Outcomes:
    """The consent outcomes of a period: per day or week, and per breakdown value."""

    period: Period
    series: list[Row]
    breakdowns: dict[str, list[Row]]
    totals: Row
    agent_names: dict[str, str] = field(default_factory=dict)


def _day_criteria(first: date, last: date) -> dict[str, str]:
    return {"since": first.isoformat(), "until": last.isoformat(), "basis": "consent"}


def outcomes(s: Session, period: Period, counts: Reader) -> Outcomes:
    """The period's consent outcomes per day or week, and per breakdown value, from the
    daily aggregates (`counts`, a Reader over the period's days)."""
    grouped = _grouped_counts(counts)
    per_day: dict[date, dict[str, int]] = {}
    for k, decision, n in grouped["time"]:
        day_counts = per_day.setdefault(k, {})
        day_counts[decision] = day_counts.get(decision, 0) + n
    period_criteria = _day_criteria(period.since, period.until)
    series = []
    for first, last in period.buckets():
        label = day_text(first) if first == last else f"{day_text(first)}–{day_text(last)}"
        row = Row(label, _day_criteria(first, last))
        for d in range(((last - first).days) + 1):
            for decision, n in per_day.get(first + timedelta(days=d), {}).items():
                row.counts[decision] = row.counts.get(decision, 0) + n
        series.append(row)
    hidden = {day: int(v["hidden"]) for (day,), v in counts.runs("day").items()}
    for (first, last), row in zip(period.buckets(), series, strict=True):
        row.hidden = sum(hidden.get(first + timedelta(days=d), 0)
                         for d in range(((last - first).days) + 1))
    totals = Row("all", period_criteria)
    for row in series:
        for decision, n in row.counts.items():
            totals.counts[decision] = totals.counts.get(decision, 0) + n
        totals.hidden += row.hidden
    breakdowns = {name: _breakdown(grouped[name], name, period_criteria)
                  for name in DIMENSIONS}
    agents = [r.label for r in breakdowns["agent"] if r.label]
    return Outcomes(period, series, breakdowns, totals, agent_names(s, agents))


def agent_names(s: Session, agent_ids: list[str]) -> dict[str, str]:
    """The names the agents had on their transfers, by agent id."""
    if not agent_ids:
        return {}
    return dict(s.execute(select(Transfer.agent_id, func.max(Transfer.agent_name))
                          .where(Transfer.agent_id.in_(agent_ids))
                          .group_by(Transfer.agent_id)).all())


# Breakdowns counted together: each query groups by few values, so its rows stay few
# (days x languages x origins, versions x versions, agents).
QUERIES = (("time", "language", "origin"), ("flow_version", "notice_version"), ("agent",))
# The aggregates' column of each grouping.
COLUMNS = {"time": "day", "agent": "agent_id"}


def _grouped_counts(counts: Reader) -> dict[str, list[tuple]]:
    """(value, decision, count) per grouping: the day key and each breakdown."""
    sums: dict[str, dict[tuple, int]] = {name: {} for name in ("time", *DIMENSIONS)}
    for names in QUERIES:
        for *values, decision, n in counts.consents(*[COLUMNS.get(n, n) for n in names]):
            for name, value in zip(names, values, strict=True):
                key = (value, decision)
                sums[name][key] = sums[name].get(key, 0) + n
    return {name: [(v, d, n) for (v, d), n in counted.items()]
            for name, counted in sums.items()}


def _breakdown(counted: list[tuple], name: str, base: dict) -> list[Row]:
    rows: dict[str, Row] = {}
    for value, decision, n in counted:
        param = value if value else NONE_VALUE
        row = rows.setdefault(param, Row(value or "", {**base, name: param}))
        row.counts[decision] = n
    return sorted(rows.values(), key=lambda r: (-r.total, r.label))

