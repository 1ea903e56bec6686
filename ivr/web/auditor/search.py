"""Search calls and consents by phone number, CallSid, date range and decision.

A phone number is found through its keyed HMAC (the stored fingerprint), never by
decrypting stored numbers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime

from sqlalchemy import and_, exists, func, select
from sqlalchemy.orm import Session

from ...domain import inputs
from ...domain.pii import PersonalData, normalise_phone
from ...domain.vocabulary import DECISIONS
from ...services.calls import ordered_times
from ...services.consents import export_record
from ...services.reports import call_duration, consents_query
from ...storage.models import Call, Consent
from .timefmt import local_day_bounds

PHONE = re.compile(r"\+[1-9][0-9]{5,14}")
CALL_SID = re.compile(r"[A-Za-z0-9_-]{1,64}")
DECISION_CHOICES = (*DECISIONS, "none")
# The dashboard's breakdowns, as search criteria on the call's consent.
CONSENT_FILTERS = ("language", "origin", "agent", "flow_version", "notice_version")
ORIGINS = ("inbound", "transfer", "api")
NONE_VALUE = "-"
BASES = ("call", "consent")
PAGE_LIMIT = 200
EXPORT_LIMIT = 20000
CHUNK = 500

EXPORT_FIELDS = ["call_sid", "started_at", "ended_at", "direction", "status", "duration",
                 "phone", "decision", "digits", "language", "purpose", "channels",
                 "notice_version", "flow_version", "captured_at", "agent_id", "transfer_id",
                 "source"]


class SearchError(ValueError):
    """One or more search parameters are not valid; `errors` maps field to message."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def phone_fingerprint(raw: str, pii: PersonalData) -> str:
    """The keyed HMAC of a phone number typed in any usual form; SearchError if it is none."""
    e164 = normalise_phone(raw[:64])
    if not e164 or not PHONE.fullmatch(e164):
        raise SearchError({"phone": "not a phone number (try +905321234567 or 0532 123 45 67)"})
    return pii.fingerprint(e164)


def _day(value: str, name: str, errors: dict) -> date | None:
    try:
        return inputs.day(value, name, end=name == "until") if value else None
    except inputs.InvalidInput as e:
        errors[name] = e.message
        return None


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

    def audit_query(self) -> dict:
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


def parse_search(args, pii: PersonalData) -> CallSearch:
    """Criteria from a query string; SearchError naming every bad field."""
    errors: dict[str, str] = {}
    phone_hmac = None
    raw_phone = (args.get("phone") or "").strip()
    if raw_phone:
        try:
            phone_hmac = phone_fingerprint(raw_phone, pii)
        except SearchError as e:
            errors.update(e.errors)
    sid = (args.get("call_sid") or "").strip() or None
    if sid and not CALL_SID.fullmatch(sid):
        errors["call_sid"] = "a CallSid is letters and digits only (CA followed by 32 hex digits)"
    since = _day((args.get("since") or "").strip(), "since", errors)
    until = _day((args.get("until") or "").strip(), "until", errors)
    if since and until and since > until:
        errors["until"] = "must not be before the start date"
    decision = (args.get("decision") or "").strip() or None
    if decision and decision not in DECISION_CHOICES:
        errors["decision"] = f"one of {', '.join(DECISION_CHOICES)}"
    consent = parse_consent_criteria(args, errors)
    basis = (args.get("basis") or "call").strip()
    if basis not in BASES:
        errors["basis"] = "call or consent"
    if decision == "none" and (consent or basis == "consent"):
        errors["decision"] = ("calls without a decision have no consent to match "
                              "consent criteria or consent days")
    if errors:
        raise SearchError(errors)
    return CallSearch(phone_hmac, sid, since, until, decision, consent, basis)


def parse_consent_criteria(args, errors: dict) -> tuple[tuple[str, str], ...]:
    """The consent criteria of a query string (language, origin, agent, versions)."""
    out = []
    for name in CONSENT_FILTERS:
        value = (args.get(name) or "").strip()
        if not value:
            continue
        if name == "origin" and value not in ORIGINS:
            errors[name] = f"one of {', '.join(ORIGINS)}"
        elif len(value) > 100:
            errors[name] = "too long"
        else:
            out.append((name, value))
    return tuple(out)


def _consent_column(name: str):
    return {"language": Consent.language, "agent": Consent.agent_id,
            "flow_version": Consent.flow_version,
            "notice_version": Consent.notice_version}[name]


def origin_conditions() -> dict:
    """Where a consent came from, as one SQL condition per origin (they exclude each other)."""
    return {"transfer": Consent.transfer_id.is_not(None),
            "api": and_(Consent.transfer_id.is_(None), Consent.call_sid.is_(None)),
            "inbound": and_(Consent.transfer_id.is_(None), Consent.call_sid.is_not(None))}


def consent_conditions(c: CallSearch) -> list:
    """SQL conditions on Consent for the consent criteria (and the dates, by consent)."""
    out = []
    for name, value in c.consent:
        if name == "origin":
            out.append(origin_conditions()[value])
        else:
            col = _consent_column(name)
            out.append(col.is_(None) if value == NONE_VALUE else col == value)
    if c.basis == "consent":
        lo, hi = c.bounds()
        out += [Consent.captured_at >= lo] if lo else []
        out += [Consent.captured_at < hi] if hi else []
    return out


def _call_time():
    return func.coalesce(Call.started_at, Call.created_at)


def calls_select(c: CallSearch):
    """The calls matching the criteria, newest first."""
    q = select(Call)
    if c.phone_hmac:
        q = q.where(Call.phone_hmac == c.phone_hmac)
    if c.call_sid:
        q = q.where(Call.call_sid == c.call_sid)
    lo, hi = c.bounds() if c.basis == "call" else (None, None)
    if lo:
        q = q.where(_call_time() >= lo)
    if hi:
        q = q.where(_call_time() < hi)
    extra = consent_conditions(c)
    if c.decision == "none":
        q = q.where(~exists().where(Consent.call_sid == Call.call_sid))
    elif c.decision or extra:
        decided = [Consent.decision == c.decision] if c.decision else []
        q = q.where(exists().where(Consent.call_sid == Call.call_sid, *decided, *extra))
    return q.order_by(_call_time().desc(), Call.call_sid)


def loose_consents_select(c: CallSearch):
    """Consent events not tied to a call (withdrawals through the API) matching the criteria."""
    if c.call_sid or c.decision == "none":
        return None
    lo, hi = c.bounds()
    return (consents_query(lo, hi, c.decision, c.phone_hmac)
            .where(Consent.call_sid.is_(None), *consent_conditions(c)))


@dataclass
class Found:
    """One page of results: calls with their consents, and consents without a call."""

    calls: list[Call] = field(default_factory=list)
    consents: dict[str, list[Consent]] = field(default_factory=dict)
    loose: list[Consent] = field(default_factory=list)
    more: bool = False

    @property
    def call_sids(self) -> list[str]:
        """The CallSids on this page."""
        return [c.call_sid for c in self.calls]


def search(s: Session, c: CallSearch, limit: int = PAGE_LIMIT) -> Found:
    """The first `limit` calls (and call-less consents) for these criteria."""
    found = Found()
    found.calls = list(s.scalars(calls_select(c).limit(limit + 1)))
    found.more = len(found.calls) > limit
    found.calls = found.calls[:limit]
    for rec in _consents_of(s, found.call_sids):
        found.consents.setdefault(rec.call_sid, []).append(rec)
    loose = loose_consents_select(c)
    if loose is not None:
        found.loose = list(s.scalars(loose.limit(limit + 1)))
        found.more = found.more or len(found.loose) > limit
        found.loose = found.loose[:limit]
    return found


def _consents_of(s: Session, call_sids: list[str]) -> list[Consent]:
    out = []
    for i in range(0, len(call_sids), CHUNK):
        out += s.scalars(select(Consent).where(Consent.call_sid.in_(call_sids[i:i + CHUNK]))
                         .order_by(Consent.captured_at, Consent.id))
    return out


def export_subjects(s: Session, c: CallSearch) -> tuple[list[str], list[int]]:
    """CallSids and call-less consent ids an export covers (at most EXPORT_LIMIT + 1 each)."""
    sids = list(s.scalars(calls_select(c).with_only_columns(Call.call_sid)
                          .limit(EXPORT_LIMIT + 1)))
    loose = loose_consents_select(c)
    ids = [] if loose is None else list(s.scalars(loose.with_only_columns(Consent.id)
                                                  .limit(EXPORT_LIMIT + 1)))
    return sids, ids


def safe_phone(pii: PersonalData, token: str | None) -> str:
    """A stored number decrypted, '' when none is stored (or it was erased)."""
    return (pii.decrypt(token) or "") if token else ""


def masked(phone: str) -> str:
    """A number with its middle digits hidden, for lists."""
    if len(phone) < 8:
        return phone
    return phone[:6] + "•" * (len(phone) - 8) + phone[-2:]


def _iso(dt: datetime | None) -> str:
    return dt.isoformat().replace("+00:00", "Z") if dt else ""


def _call_part(call: Call, pii: PersonalData) -> dict:
    started, _answered, ended = ordered_times(call.started_at, call.answered_at, call.ended_at)
    return {"call_sid": call.call_sid, "started_at": _iso(started or call.created_at),
            "ended_at": _iso(ended), "direction": call.direction or "",
            "status": call.status or "", "duration": call_duration(call)[0],
            "phone": safe_phone(pii, call.phone_enc)}


def _consent_part(rec: Consent, pii: PersonalData) -> dict:
    r = export_record(rec, pii)
    return {k: r[k] for k in ("decision", "digits", "language", "purpose", "channels",
                              "notice_version", "flow_version", "captured_at", "agent_id",
                              "transfer_id", "source")}


def export_rows(s: Session, pii: PersonalData, call_sids: list[str],
                consent_ids: list[int]) -> Iterator[dict]:
    """One row per (call, consent) — a call without a consent gets one row — then the
    consents without a call; every row has exactly EXPORT_FIELDS."""
    blank = dict.fromkeys(EXPORT_FIELDS, "")
    blank["channels"] = []
    for i in range(0, len(call_sids), CHUNK):
        chunk = call_sids[i:i + CHUNK]
        calls = {c.call_sid: c for c in s.scalars(select(Call).where(Call.call_sid.in_(chunk)))}
        by_call: dict[str, list[Consent]] = {}
        for rec in _consents_of(s, chunk):
            by_call.setdefault(rec.call_sid, []).append(rec)
        for sid in chunk:
            if sid not in calls:
                continue
            base = {**blank, **_call_part(calls[sid], pii)}
            recs = by_call.get(sid) or [None]
            for rec in recs:
                yield {**base, **(_consent_part(rec, pii) if rec else {})}
    for i in range(0, len(consent_ids), CHUNK):
        for rec in s.scalars(select(Consent).where(Consent.id.in_(consent_ids[i:i + CHUNK]))
                             .order_by(Consent.captured_at, Consent.id)):
            yield {**blank, "call_sid": "", "phone": safe_phone(pii, rec.phone_enc),
                   **_consent_part(rec, pii)}

