"""The dashboard's figures: consent outcomes over a period, counted from the daily
aggregates, the notice drop-off, and the hang-ups behind one drop-off number.

Each consent record counts once, on the Istanbul calendar day of its `captured_at`: the
same records, over the same instants, as `python -m ivr consents export --since --until`.
The counts come from the daily aggregates (ivr/services/daily_aggregates.py), which grow
with days, not with calls; only grouped counts reach Python. Beside them, the calls from a
hidden number ("numara gizli": no phone number, so no choice could be recorded) count once
each, on the day of their first run, so that every call that heard the notice is in the
figures.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ivr.services.auditor.call_search import NONE_VALUE
from ivr.services.daily_aggregates import Reader, day_bounds, notice_dropoff
from ivr.services.notice_dropoff import Dropoff, HangUp, hang_ups_before
from ivr.storage.transfer_models import Transfer

# The breakdowns; each name is also the search parameter that lists its calls.
DIMENSIONS = ("language", "origin", "agent", "flow_version", "notice_version")


def day_text(day: date) -> str:
    """A day as auditors read it: dd.mm.yyyy (four digits of year, 0001 too)."""
    return f"{day.day:02d}.{day.month:02d}.{day.year:04d}"


@dataclass(frozen=True)
class Period:
    """Istanbul calendar days from `since` to `until`, both inclusive, counted per `step`."""

    since: date
    until: date
    step: str = "day"

    def bounds(self) -> tuple[datetime, datetime]:
        """The UTC instants the days cover: [since 00:00, the day after until 00:00)."""
        lo, hi = day_bounds(self.since, self.until)
        return lo.astimezone(UTC), hi.astimezone(UTC)

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


@dataclass(frozen=True)
class Figures:
    """What the dashboard shows of a period: the consent outcomes and the notice drop-off."""

    outcomes: Outcomes
    dropoff: Dropoff


def figures(s: Session, period: Period, durations: dict[str, float],
            notice_parts: Iterable[str]) -> Figures:
    """The period's outcomes and drop-off (`durations`: each prompt's length, by audio hash;
    `notice_parts`: the default flow's notice prompts, in order)."""
    counts = Reader(s, period.since, period.until, durations)
    return Figures(outcomes(s, period, counts), notice_dropoff(counts, notice_parts))


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
    rows = s.execute(select(Transfer.agent_id, func.max(Transfer.agent_name))
                     .where(Transfer.agent_id.in_(agent_ids))
                     .group_by(Transfer.agent_id))
    return {agent: name for agent, name in rows}


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


def _breakdown(counted: list[tuple], name: str, base: dict[str, str]) -> list[Row]:
    rows: dict[str, Row] = {}
    for value, decision, n in counted:
        param = value if value else NONE_VALUE
        row = rows.setdefault(param, Row(value or "", {**base, name: param}))
        row.counts[decision] = n
    return sorted(rows.values(), key=lambda r: (-r.total, r.label))


@dataclass(frozen=True)
class HangUpPage:
    """One page of the calls behind a drop-off number, and how many calls that number is."""

    calls: list[HangUp]
    total: int
    more: bool


def hang_up_page(s: Session, period: Period, durations: dict[str, float], *, language: str,
                 phase: str, before: tuple[datetime, str] | None, limit: int,
                 batch: int) -> HangUpPage:
    """The calls that hung up in `phase` (any phase for "") in `language`, newest first, up
    to `limit` from the `before` cursor (start, run id), read `batch` runs at a time."""
    lo, hi = period.bounds()
    counts = Reader(s, period.since, period.until, durations)
    total = sum(n for (lang, ph), n in counts.hangups().items()
                if lang == language and (not phase or ph == phase))
    found: list[HangUp] = []
    cursor: tuple[tuple[datetime, str] | None] | None = (before, )
    while cursor is not None and len(found) <= limit:
        got, after = hang_ups_before(s, lo, hi, durations, language=language,
                                     before=cursor[0], batch=batch)
        found += [h for h in got if not phase or h.phase == phase]
        cursor = (after, ) if after is not None else None
    return HangUpPage(found[:limit], total, len(found) > limit)
