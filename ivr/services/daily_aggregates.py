"""The daily aggregates: computed from the stored calls, kept per Istanbul day, read by the
dashboard, the flow registry and the drop-off.

One function counts a span of days from the stored rows (`compute`). It serves three ends:

- **maintenance**: every write that can change a day's counts marks the day, inside the
  writing statement (triggers, ivr/storage/sql/daily_aggregates.sql; a webhook stays one
  round trip). The sequencer's pass (`refresh`) deletes the marks it sees and counts those
  days again, in one transaction: a write committed meanwhile leaves a mark for the next
  pass, and a failed pass leaves every mark where it was.
- **rebuild**: `python -m ivr db rebuild-aggregates` counts every day again (`recount`).
- **reading**: a day still marked is counted from the stored rows by the reader itself, the
  other days come from the aggregates; so a page is never stale, only slower while a day is
  marked (normally today, for at most one pass).

Late and out-of-order status callbacks, transfers, withdrawals: each is a write to a call,
run or consent, so it marks the day it changes, and that day is counted again from what is
stored, whatever order the writes came in. Retention anonymises calls and consent records
and deletes recordings and webhook logs; it deletes no run or consent and changes none of
the counted fields, so it leaves the historical counts as they were.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import and_, delete, exists, func, insert, select, tuple_
from sqlalchemy.orm import Session, aliased

from ivr.domain.flow.model import HIDDEN_CALLER
from ivr.domain.times import LOCAL
from ivr.storage.daily_aggregates import (
    AggregateMark,
    DailyConsents,
    DailyHangups,
    DailyNotices,
    DailyRuns,
)
from ivr.storage.models import Consent, FlowRun

from .consent_origin import origin_expr
from .notice_dropoff import AFTER, BEFORE, Dropoff, LanguageDropoff, hang_ups

CHUNK_DAYS = 31  # days counted in one statement by a rebuild
CONSENT_DIMENSIONS = ("decision", "language", "origin", "agent_id", "flow_version",
                      "notice_version")
RUN_DIMENSIONS = ("flow_version", "language")


def day_bounds(first: date, last: date) -> tuple[datetime, datetime]:
    """The UTC instants Istanbul days cover: [first 00:00, the day after last 00:00)."""
    return (datetime.combine(first, time(), LOCAL),
            datetime.combine(last + timedelta(days=1), time(), LOCAL))


def _istanbul_day(column):
    return func.date(func.timezone(LOCAL.key, column))


@dataclass
class Counts:
    """The aggregate rows of some days, as the tables hold them (dicts of column values)."""

    consents: list[dict] = field(default_factory=list)
    notices: list[dict] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)
    hangups: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.consents) + len(self.notices) + len(self.runs) + len(self.hangups)


def _run_language():
    return func.coalesce(FlowRun.state["language"].as_string(), "")


def _hidden(run):
    return run.state[("context", HIDDEN_CALLER)].as_boolean().is_(True)


def compute(s: Session, first: date, last: date,
            durations: dict[str, float] | None) -> Counts:
    """Count the days [first, last] from the stored consents, runs, turns and calls (the
    hang-ups only with `durations`, the prompts' lengths that place them in the notice)."""
    lo, hi = day_bounds(first, last)
    out = Counts()
    day = _istanbul_day(Consent.captured_at).label("day")
    cols = [day, Consent.decision, func.coalesce(Consent.language, ""), origin_expr(),
            func.coalesce(Consent.agent_id, ""), func.coalesce(Consent.flow_version, ""),
            func.coalesce(Consent.notice_version, "")]
    for row in s.execute(select(*cols, func.count())
                         .where(Consent.captured_at >= lo, Consent.captured_at < hi)
                         .group_by(*cols)):
        out.consents.append(dict(zip(("day", *CONSENT_DIMENSIONS, "consents"), row,
                                     strict=True)))
    notices: dict[tuple, int] = {}
    for r in out.consents:
        key = (r["day"], r["flow_version"], r["language"], r["notice_version"])
        notices[key] = notices.get(key, 0) + r["consents"]
    out.notices = [dict(zip(("day", "flow_version", "language", "notice_version", "consents"),
                            (*key, n), strict=True)) for key, n in notices.items()]
    earlier = aliased(FlowRun)
    before = (earlier.call_sid == FlowRun.call_sid,
              tuple_(earlier.created_at, earlier.id) < tuple_(FlowRun.created_at, FlowRun.id))
    first_of_version = ~exists().where(*before, earlier.flow_version == FlowRun.flow_version)
    first_hidden = and_(_hidden(FlowRun), ~exists().where(*before, _hidden(earlier)))
    day = _istanbul_day(FlowRun.created_at).label("day")
    lang = _run_language()
    for row in s.execute(
            select(day, FlowRun.flow_version, lang, func.count(),
                   func.count().filter(first_of_version), func.count().filter(first_hidden),
                   func.min(FlowRun.created_at), func.max(FlowRun.created_at))
            .where(FlowRun.created_at >= lo, FlowRun.created_at < hi)
            .group_by(day, FlowRun.flow_version, lang)):
        out.runs.append(dict(zip(("day", "flow_version", "language", "runs", "calls", "hidden",
                                  "first_at", "last_at"), row, strict=True)))
    hung: dict[tuple, int] = {}
    for h in hang_ups(s, lo, hi, durations) if durations is not None else ():
        at = (h.started_at.astimezone(LOCAL).date(), h.language, h.phase)
        hung[at] = hung.get(at, 0) + 1
    out.hangups = [{"day": d, "language": lang_, "phase": phase, "hangups": n}
                   for (d, lang_, phase), n in hung.items()]
    return out


def store(s: Session, first: date, last: date, counts: Counts) -> None:
    """Replace the aggregates of the days [first, last] with `counts`."""
    for model, rows in ((DailyConsents, counts.consents), (DailyNotices, counts.notices),
                        (DailyRuns, counts.runs), (DailyHangups, counts.hangups)):
        s.execute(delete(model).where(model.day >= first, model.day <= last))
        if rows:
            s.execute(insert(model), rows)


def recount(s: Session, first: date, last: date, durations: dict[str, float]) -> int:
    """Count the days [first, last] again from the stored rows, and clear their marks;
    returns the aggregate rows stored."""
    s.execute(delete(AggregateMark).where(AggregateMark.day >= first, AggregateMark.day <= last))
    counts = compute(s, first, last, durations)
    store(s, first, last, counts)
    return len(counts)


def held_days(s: Session) -> tuple[date, date] | None:
    """The first and last Istanbul day with a stored consent or run, if any."""
    spans = [s.execute(select(func.min(col), func.max(col))).one()
             for col in (Consent.captured_at, FlowRun.created_at)]
    instants = [t for span in spans for t in span if t is not None]
    if not instants:
        return None
    return (min(instants).astimezone(LOCAL).date(), max(instants).astimezone(LOCAL).date())


def chunks(first: date, last: date, days: int = CHUNK_DAYS) -> Iterator[tuple[date, date]]:
    """[first, last] in spans of at most `days` days."""
    while first <= last:
        end = min(last, first + timedelta(days=days - 1))
        yield first, end
        first = end + timedelta(days=1)


def drop_outside(s: Session, span: tuple[date, date] | None) -> None:
    """Delete the aggregates (and marks) of days outside `span` (all of them for None)."""
    for model in (DailyConsents, DailyNotices, DailyRuns, DailyHangups, AggregateMark):
        if span is None:
            s.execute(delete(model))
        else:
            s.execute(delete(model).where((model.day < span[0]) | (model.day > span[1])))


def rebuild(s: Session, durations: dict[str, float]) -> int:
    """Count every day again in this transaction; returns the aggregate rows stored. (The
    CLI does the same a chunk of days per transaction.)"""
    span = held_days(s)
    drop_outside(s, span)
    if span is None:
        return 0
    return sum(recount(s, a, b, durations) for a, b in chunks(*span))


def marked_days(s: Session, first: date | None = None, last: date | None = None) -> list[date]:
    """The marked days (in [first, last] if given), oldest first."""
    query = select(AggregateMark.day).distinct().order_by(AggregateMark.day)
    if first is not None:
        query = query.where(AggregateMark.day >= first)
    if last is not None:
        query = query.where(AggregateMark.day <= last)
    return list(s.scalars(query))


def runs_of(days: Iterable[date]) -> list[tuple[date, date]]:
    """Consecutive days as (first, last) spans."""
    out: list[list[date]] = []
    for d in sorted(days):
        if out and out[-1][1] + timedelta(days=1) == d:
            out[-1][1] = d
        else:
            out.append([d, d])
    return [(a, b) for a, b in out]


def refresh(s: Session, durations: dict[str, float], before: date | None = None) -> int:
    """Count the marked days again (the sequencer's pass), only those before `before` if
    given; returns how many days."""
    days = marked_days(s, last=before - timedelta(days=1) if before is not None else None)
    for a, b in runs_of(days):
        for c, d in chunks(a, b):
            recount(s, c, d, durations)
    return len(days)


# --- reading --------------------------------------------------------------------------------

class Reader:
    """Sums of the aggregates over a span of days, the marked days counted from the stored
    rows. `first`/`last` None: every day. Without `durations`, no hang-ups."""

    def __init__(self, s: Session, first: date | None, last: date | None,
                 durations: dict[str, float] | None):
        self.s, self.first, self.last, self.durations = s, first, last, durations
        self.marked = marked_days(s, first, last)
        self.live = Counts()
        for a, b in runs_of(self.marked):
            counts = compute(s, a, b, durations)
            self.live.consents += counts.consents
            self.live.notices += counts.notices
            self.live.runs += counts.runs
            self.live.hangups += counts.hangups

    def _where(self, model) -> list:
        out = []
        if self.first is not None:
            out.append(model.day >= self.first)
        if self.last is not None:
            out.append(model.day <= self.last)
        if self.marked:
            out.append(model.day.not_in(self.marked))
        return out

    def _sums(self, model, names: tuple[str, ...], sums: dict[str, str],
              live: list[dict]) -> dict[tuple, dict[str, Any]]:
        """{values of `names`: {column: sum, min or max}} over the span."""
        agg: dict[str, Any] = {"sum": func.sum, "min": func.min, "max": func.max}
        keys = [getattr(model, n) for n in names]
        out: dict[tuple, dict[str, Any]] = {}
        for row in self.s.execute(
                select(*keys, *[agg[how](getattr(model, col)) for col, how in sums.items()])
                .where(*self._where(model)).group_by(*keys)):
            out[tuple(row[:len(names)])] = dict(zip(sums, row[len(names):], strict=True))
        for r in live:
            key = tuple(r[n] for n in names)
            acc = out.setdefault(key, {col: None for col in sums})
            for col, how in sums.items():
                value, have = r[col], acc[col]
                if have is None:
                    acc[col] = value
                elif how == "sum":
                    acc[col] = have + value
                elif how == "min":
                    acc[col] = min(have, value)
                else:
                    acc[col] = max(have, value)
        return out

    def consents(self, *names: str) -> list[tuple]:
        """(values of `names`..., decision, count) of the consent records."""
        sums = self._sums(DailyConsents, (*names, "decision"), {"consents": "sum"},
                          self.live.consents)
        return [(*key, int(v["consents"])) for key, v in sums.items()]

    def notices(self) -> dict[tuple[str, str, str], int]:
        """{(flow version, language, notice version): consent records}."""
        sums = self._sums(DailyNotices, ("flow_version", "language", "notice_version"),
                          {"consents": "sum"}, self.live.notices)
        return {key: int(v["consents"]) for key, v in sums.items()}

    def runs(self, *names: str) -> dict[tuple, dict[str, Any]]:
        """{values of `names`: runs, calls, hidden, first_at, last_at} of the flow runs."""
        return self._sums(DailyRuns, names, {"runs": "sum", "calls": "sum", "hidden": "sum",
                                             "first_at": "min", "last_at": "max"},
                          self.live.runs)

    def hangups(self) -> dict[tuple[str, str], int]:
        """{(language, phase): hang-ups}."""
        if self.durations is None:
            raise ValueError("a Reader made without durations counts no hang-ups")
        sums = self._sums(DailyHangups, ("language", "phase"), {"hangups": "sum"},
                          self.live.hangups)
        return {key: int(v["hangups"]) for key, v in sums.items()}




def notice_dropoff(counts: Reader, parts: Iterable[str]) -> Dropoff:
    """Hang-ups per notice phase and language over the reader's days (runs by their start)."""
    by_lang = {}
    for (language,), v in counts.runs("language").items():
        by_lang[language] = LanguageDropoff(language, int(v["runs"]))
    order = list(parts)
    for (language, phase), n in sorted(counts.hangups().items()):
        if phase not in (BEFORE, AFTER) and phase not in order:
            order.append(phase)
        row = by_lang.setdefault(language, LanguageDropoff(language, 0))
        row.hangups[phase] = row.hangups.get(phase, 0) + n
    return Dropoff(order, sorted(by_lang.values(), key=lambda r: (-r.runs, r.language)))
