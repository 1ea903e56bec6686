"""Consent outcomes over a period, counted from the stored consent records.

Each consent record counts once, on the Istanbul calendar day of its `captured_at`: the
same records, over the same instants, as `python -m ivr consents export --since --until`.
The counting is done by the database (GROUP BY over the `captured_at` index); only the
grouped counts reach Python. Beside them, the calls from a hidden number ("numara gizli":
no phone number, so no choice could be recorded) count once each, on the day their run
started, so that every call that heard the notice is in the figures.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from flask_babel import gettext as _
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from ivr.domain import inputs
from ivr.domain.flow.model import HIDDEN_CALLER
from ivr.storage.models import Consent, FlowRun
from ivr.storage.transfer_models import Transfer

from .search import NONE_VALUE, origin_conditions
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


def origin_expr():
    """Where a consent came from: an agent's transfer, an inbound call, or the API."""
    return case(*[(cond, name) for name, cond in origin_conditions().items()])


def _dimension(name: str):
    return {"language": Consent.language, "origin": origin_expr(), "agent": Consent.agent_id,
            "flow_version": Consent.flow_version,
            "notice_version": Consent.notice_version}[name]


def _time_key():
    """The consent's day in Istanbul."""
    return func.date(func.timezone(LOCAL.key, Consent.captured_at))


def _in_period(period: Period):
    lo, hi = period.bounds()
    return (Consent.captured_at >= lo, Consent.captured_at < hi)


def _day_criteria(first: date, last: date) -> dict[str, str]:
    return {"since": first.isoformat(), "until": last.isoformat(), "basis": "consent"}


def outcomes(s: Session, period: Period) -> Outcomes:
    """Count the period's consent records per day or week, and per breakdown value."""
    grouped = _grouped_counts(s, period)
    per_day: dict[date, dict[str, int]] = {}
    for k, decision, n in grouped["time"]:
        counts = per_day.setdefault(k, {})
        counts[decision] = counts.get(decision, 0) + n
    period_criteria = _day_criteria(period.since, period.until)
    series = []
    for first, last in period.buckets():
        label = day_text(first) if first == last else f"{day_text(first)}–{day_text(last)}"
        row = Row(label, _day_criteria(first, last))
        for d in range(((last - first).days) + 1):
            for decision, n in per_day.get(first + timedelta(days=d), {}).items():
                row.counts[decision] = row.counts.get(decision, 0) + n
        series.append(row)
    hidden = _hidden_per_day(s, period)
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


def _hidden_per_day(s: Session, period: Period) -> dict[date, int]:
    """Calls from a hidden number per Istanbul day their run started (a call sent into the
    flow twice counts once, on its first day)."""
    lo, hi = period.bounds()
    day = func.min(func.date(func.timezone(LOCAL.key, FlowRun.created_at)))
    first_days = (select(FlowRun.call_sid, day.label("day"))
                  .where(FlowRun.created_at >= lo, FlowRun.created_at < hi,
                         FlowRun.state[("context", HIDDEN_CALLER)].as_boolean())
                  .group_by(FlowRun.call_sid).subquery())
    return dict(s.execute(select(first_days.c.day, func.count())
                          .group_by(first_days.c.day)).all())


def agent_names(s: Session, agent_ids: list[str]) -> dict[str, str]:
    """The names the agents had on their transfers, by agent id."""
    if not agent_ids:
        return {}
    return dict(s.execute(select(Transfer.agent_id, func.max(Transfer.agent_name))
                          .where(Transfer.agent_id.in_(agent_ids))
                          .group_by(Transfer.agent_id)).all())


# Breakdowns counted together: each query groups by few values, so its rows stay few
# (days x languages x origins, versions x versions, agents), and the period's consents are
# read three times instead of six.
QUERIES = (("time", "language", "origin"), ("flow_version", "notice_version"), ("agent",))


def _grouped_counts(s: Session, period: Period) -> dict[str, list[tuple]]:
    """(value, decision, count) per grouping: the day key and each breakdown."""
    exprs = {"time": _time_key(),
             **{n: _dimension(n) for n in DIMENSIONS}}
    sums: dict[str, dict[tuple, int]] = {name: {} for name in exprs}
    for names in QUERIES:
        cols = [exprs[n] for n in names]
        for *values, decision, n in s.execute(select(*cols, Consent.decision, func.count())
                                              .where(*_in_period(period))
                                              .group_by(*cols, Consent.decision)):
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

