"""The auditor's search: calls and consents by phone HMAC, CallSid, Istanbul days, decision
and the dashboard's consent breakdowns; a page at a time (keyset, newest call first), and
the rows of an export.

A phone number is found through its keyed HMAC (the stored fingerprint), never by
decrypting stored numbers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import ColumnElement, Select, exists, false, func, literal, select, tuple_
from sqlalchemy.orm import InstrumentedAttribute, Session

from ivr.domain.pii import PersonalData
from ivr.domain.times import EXPORT, utc_iso_or_none
from ivr.services.calls import ordered_times
from ivr.services.consent_origin import origin_condition
from ivr.services.consents import export_record
from ivr.services.daily_aggregates import day_bounds
from ivr.services.reports import call_duration, consents_query
from ivr.storage.models import Call, Consent

NONE_VALUE = "-"  # a consent criterion's value for "none recorded"
PAGE_LIMIT = 200
EXPORT_LIMIT = 20000
CHUNK = 500
# The longest a call lasts (Twilio's limit is 4 hours by default, 24 at most).
CALL_SPAN = timedelta(hours=24)
CALL_SID = re.compile(r"[A-Za-z0-9_-]{1,64}")

EXPORT_FIELDS = ["call_sid", "started_at", "ended_at", "direction", "status", "duration",
                 "phone", "decision", "digits", "language", "purpose", "channels",
                 "notice_version", "flow_version", "captured_at", "agent_id", "transfer_id",
                 "source"]


class SearchError(ValueError):
    """One or more search parameters are not valid; `errors` maps field to message."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def local_day_bounds(since: date | None,
                     until: date | None) -> tuple[datetime | None, datetime | None]:
    """UTC instants for Istanbul calendar days: [start of `since`, end of `until`), an end
    left open when its day is not given."""
    lo = day_bounds(since, since)[0].astimezone(UTC) if since else None
    hi = day_bounds(until, until)[1].astimezone(UTC) if until else None
    return lo, hi


@dataclass(frozen=True)
class CallSearch:
    """Validated search criteria; days are Istanbul calendar days, both inclusive."""

    phone_hmac: str | None = None
    call_sid: str | None = None
    since: date | None = None
    until: date | None = None
    decision: str | None = None
    # Consent criteria (the dashboard's breakdowns); "-" means none recorded.
    consent: tuple[tuple[str, str], ...] = ()
    # "consent": the days select consents by capture time, as the dashboard counts them.
    basis: str = "call"

    @property
    def empty(self) -> bool:
        """True when no criterion is set."""
        return not any((self.phone_hmac, self.call_sid, self.since, self.until, self.decision,
                        self.consent))

    def audit_query(self) -> dict[str, str]:
        """The criteria as recorded in the access entry (the phone only as its HMAC)."""
        return {k: v for k, v in {
            "phone": self.phone_hmac, "call_sid": self.call_sid,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "decision": self.decision, **dict(self.consent),
            "basis": "consent" if self.basis == "consent" else None}.items() if v is not None}

    def bounds(self) -> tuple[datetime | None, datetime | None]:
        """The UTC instants the days cover: [since 00:00, the day after until 00:00)."""
        return local_day_bounds(self.since, self.until)


def _consent_column(name: str) -> InstrumentedAttribute[str | None]:
    return {"language": Consent.language, "agent": Consent.agent_id,
            "flow_version": Consent.flow_version,
            "notice_version": Consent.notice_version}[name]


def consent_conditions(c: CallSearch) -> list[ColumnElement[bool]]:
    """SQL conditions on Consent for the consent criteria (and the dates, by consent)."""
    out = []
    for name, value in c.consent:
        if name == "origin":
            out.append(origin_condition(value))
        else:
            col = _consent_column(name)
            out.append(col.is_(None) if value == NONE_VALUE else col == value)
    if c.basis == "consent":
        lo, hi = c.bounds()
        out += [Consent.captured_at >= lo] if lo else []
        out += [Consent.captured_at < hi] if hi else []
    return out


def _call_time() -> ColumnElement[datetime]:
    # The expression of the index ix_calls_time: keep the two in step.
    return func.coalesce(Call.started_at, Call.created_at)


@dataclass(frozen=True)
class Cursor:
    """Where a page starts: after this call (time, CallSid) and after this call-less
    consent (capture time, id); `done` marks a list the earlier pages finished."""

    call: tuple[datetime, str] | None = None
    loose: tuple[datetime, int] | None = None
    calls_done: bool = False
    loose_done: bool = False


# A cursor travels in the query string as "end" or "microseconds since EPOCH.key".
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
GARBLED = "not a page of this search (start again from the first page)"


def _stamp(dt: datetime) -> str:
    return str((dt - EPOCH) // MICROSECOND)


def _instant(value: str) -> datetime:
    return EPOCH + int(value) * MICROSECOND


def encode_cursor(after: tuple[datetime, str | int] | None, done: bool) -> str:
    """A cursor as it travels in the query string: "end", or microseconds "." key."""
    return "end" if done or after is None else f"{_stamp(after[0])}.{after[1]}"


def parse_cursor(args: Mapping[str, str]) -> Cursor:
    """The page's start from `after` (calls) and `after_consent`; SearchError if garbled."""
    errors: dict[str, str] = {}
    calls: tuple[datetime, str] | None = None
    loose: tuple[datetime, int] | None = None
    done: dict[str, bool] = {}
    for name, key in (("after", CALL_SID), ("after_consent", re.compile(r"[0-9]{1,18}"))):
        raw = (args.get(name) or "").strip()
        done[name] = raw == "end"
        if not raw or done[name]:
            continue
        stamp, _, ref = raw.partition(".")
        if not (re.fullmatch(r"-?[0-9]{1,18}", stamp) and key.fullmatch(ref)):
            errors[name] = GARBLED
            continue
        try:
            if name == "after":
                calls = (_instant(stamp), ref)
            else:
                loose = (_instant(stamp), int(ref))
        except (OverflowError, ValueError, OSError):
            errors[name] = GARBLED
    if errors:
        raise SearchError(errors)
    return Cursor(calls, loose, done["after"], done["after_consent"])


def _call_span(lo: datetime | None,
               hi: datetime | None) -> tuple[datetime | None, datetime | None]:
    """The call times that can hold a consent captured in [lo, hi): a consent is captured
    during its call, and Twilio ends a call after at most CALL_SPAN. (The bound lets
    consent-day searches read calls through ix_calls_time, not the whole table.)"""
    floor = datetime.min.replace(tzinfo=UTC) + CALL_SPAN
    ceiling = datetime.max.replace(tzinfo=UTC) - CALL_SPAN
    return (lo - CALL_SPAN if lo and lo > floor else lo,
            hi + CALL_SPAN if hi and hi < ceiling else hi)


def calls_select(c: CallSearch, after: tuple[datetime, str] | None = None) -> Select[Call]:
    """The calls matching the criteria, newest first; after `after` (time, CallSid) if given.
    The order is the index ix_calls_time read backwards, so any page costs one index range."""
    q = select(Call)
    if c.phone_hmac:
        q = q.where(Call.phone_hmac == c.phone_hmac)
    if c.call_sid:
        q = q.where(Call.call_sid == c.call_sid)
    lo, hi = c.bounds() if c.basis == "call" else _call_span(*c.bounds())
    if lo:
        q = q.where(_call_time() >= lo)
    if hi:
        q = q.where(_call_time() < hi)
    if ("origin", "api") in c.consent:
        q = q.where(false())  # an API consent has no call
    if after:
        q = q.where(tuple_(_call_time(), Call.call_sid) < tuple_(*after))
    extra = consent_conditions(c)
    if c.decision == "none":
        q = q.where(~exists().where(Consent.call_sid == Call.call_sid))
    elif c.decision or extra:
        decided = [Consent.decision == c.decision] if c.decision else []
        # A per-call probe of ix_consents_call_sid, not an EXISTS: PostgreSQL turns an EXISTS
        # into a join that may read all of consents and calls for a common value; a probe
        # keeps the calls in ix_calls_time's order, so a page reads only what it shows.
        q = q.where(select(literal(1)).where(Consent.call_sid == Call.call_sid, *decided, *extra)
                    .limit(1).scalar_subquery().is_not(None))
    return q.order_by(_call_time().desc(), Call.call_sid.desc())


def loose_consents_select(c: CallSearch, after: tuple[datetime, int] | None = None
                          ) -> Select[Consent] | None:
    """Consent events not tied to a call (withdrawals through the API) matching the criteria,
    oldest first; after `after` (capture time, id) if given."""
    if c.call_sid or c.decision == "none":
        return None
    lo, hi = c.bounds()
    q = (consents_query(lo, hi, c.decision, c.phone_hmac)
         .where(Consent.call_sid.is_(None), *consent_conditions(c)))
    if after:
        q = q.where(tuple_(Consent.captured_at, Consent.id) > tuple_(*after))
    return q


@dataclass
class Found:
    """One page of results: calls with their consents, and consents without a call."""

    calls: list[Call] = field(default_factory=list)
    consents: dict[str, list[Consent]] = field(default_factory=dict)
    loose: list[Consent] = field(default_factory=list)
    more_calls: bool = False
    more_loose: bool = False

    @property
    def more(self) -> bool:
        """True when a next page has calls or call-less consents."""
        return self.more_calls or self.more_loose

    @property
    def call_sids(self) -> list[str]:
        """The CallSids on this page."""
        return [c.call_sid for c in self.calls]

    def next_cursor(self) -> dict[str, str]:
        """The query parameters of the next page (each list resumes after its last row)."""
        last_call = self.calls[-1] if self.calls else None
        last_loose = self.loose[-1] if self.loose else None
        return {
            "after": encode_cursor(
                (last_call.started_at or last_call.created_at, last_call.call_sid)
                if last_call else None, not self.more_calls),
            "after_consent": encode_cursor(
                (last_loose.captured_at, last_loose.id) if last_loose else None,
                not self.more_loose)}


def search(s: Session, c: CallSearch, limit: int | None = None,
           cursor: Cursor | None = None) -> Found:
    """One page of `limit` (PAGE_LIMIT) calls (and call-less consents) for these criteria,
    from `cursor`."""
    limit = limit or PAGE_LIMIT
    cursor = cursor or Cursor()
    found = Found()
    if not cursor.calls_done:
        found.calls = list(s.scalars(calls_select(c, cursor.call).limit(limit + 1)))
        found.more_calls = len(found.calls) > limit
        found.calls = found.calls[:limit]
    for rec in _consents_of(s, found.call_sids):
        if rec.call_sid is not None:
            found.consents.setdefault(rec.call_sid, []).append(rec)
    loose = None if cursor.loose_done else loose_consents_select(c, cursor.loose)
    if loose is not None:
        found.loose = list(s.scalars(loose.limit(limit + 1)))
        found.more_loose = len(found.loose) > limit
        found.loose = found.loose[:limit]
    return found


def _consents_of(s: Session, call_sids: list[str]) -> list[Consent]:
    out: list[Consent] = []
    for i in range(0, len(call_sids), CHUNK):
        out += s.scalars(select(Consent).where(Consent.call_sid.in_(call_sids[i:i + CHUNK]))
                         .order_by(Consent.captured_at, Consent.id))
    return out


def export_subjects(s: Session, c: CallSearch) -> tuple[list[str], list[int]]:
    """CallSids and call-less consent ids an export covers (at most EXPORT_LIMIT + 1 each),
    read a page at a time, as the search pages them, so each read uses the index."""
    sids: list[str] = []
    after = None
    while len(sids) <= EXPORT_LIMIT:
        page = s.execute(calls_select(c, after)
                         .with_only_columns(Call.call_sid, Call.started_at, Call.created_at)
                         .limit(CHUNK)).all()
        sids += [r.call_sid for r in page]
        if len(page) < CHUNK:
            break
        last = page[-1]
        after = (last.started_at or last.created_at, last.call_sid)
    ids: list[int] = []
    loose_after = None
    while len(ids) <= EXPORT_LIMIT:
        loose = loose_consents_select(c, loose_after)
        if loose is None:
            break
        rows = s.execute(loose.with_only_columns(Consent.id, Consent.captured_at)
                         .limit(CHUNK)).all()
        ids += [r.id for r in rows]
        if len(rows) < CHUNK:
            break
        loose_after = (rows[-1].captured_at, rows[-1].id)
    return sids[:EXPORT_LIMIT + 1], ids[:EXPORT_LIMIT + 1]


def safe_phone(pii: PersonalData, token: str | None) -> str:
    """A stored number decrypted, '' when none is stored (or it was erased)."""
    return (pii.decrypt(token) or "") if token else ""


def _call_part(call: Call, pii: PersonalData) -> dict[str, object]:
    started, _answered, ended = ordered_times(call.started_at, call.answered_at, call.ended_at)
    return {"call_sid": call.call_sid,
            "started_at": utc_iso_or_none(started or call.created_at, EXPORT) or "",
            "ended_at": utc_iso_or_none(ended, EXPORT) or "", "direction": call.direction or "",
            "status": call.status or "", "duration": call_duration(call)[0],
            "phone": safe_phone(pii, call.phone_enc)}


def _consent_part(rec: Consent, pii: PersonalData) -> dict[str, object]:
    r = export_record(rec, pii)
    return {k: r[k] for k in ("decision", "digits", "language", "purpose", "channels",
                              "notice_version", "flow_version", "captured_at", "agent_id",
                              "transfer_id", "source")}


def export_rows(s: Session, pii: PersonalData, call_sids: list[str],
                consent_ids: list[int]) -> Iterator[dict[str, object]]:
    """One row per (call, consent) — a call without a consent gets one row — then the
    consents without a call; every row has exactly EXPORT_FIELDS."""
    blank: dict[str, object] = dict.fromkeys(EXPORT_FIELDS, "")
    blank["channels"] = []
    for i in range(0, len(call_sids), CHUNK):
        chunk = call_sids[i:i + CHUNK]
        calls = {c.call_sid: c for c in s.scalars(select(Call).where(Call.call_sid.in_(chunk)))}
        by_call: dict[str, list[Consent]] = {}
        for rec in _consents_of(s, chunk):
            if rec.call_sid is not None:
                by_call.setdefault(rec.call_sid, []).append(rec)
        for sid in chunk:
            if sid not in calls:
                continue
            base = {**blank, **_call_part(calls[sid], pii)}
            recs: list[Consent | None] = list(by_call.get(sid, []))
            for one in recs or [None]:
                yield {**base, **(_consent_part(one, pii) if one else {})}
    for i in range(0, len(consent_ids), CHUNK):
        for rec in s.scalars(select(Consent).where(Consent.id.in_(consent_ids[i:i + CHUNK]))
                             .order_by(Consent.captured_at, Consent.id)):
            yield {**blank, "call_sid": "", "phone": safe_phone(pii, rec.phone_enc),
                   **_consent_part(rec, pii)}
