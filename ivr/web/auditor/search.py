"""The search form's criteria: a query string parsed into a CallSearch, every bad field
named. The search itself is ivr/services/auditor/call_search.py."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date

from ivr.domain import inputs
from ivr.domain.pii import PersonalData, normalise_phone
from ivr.domain.vocabulary import DECISIONS
from ivr.services.auditor.call_search import CALL_SID, CallSearch, SearchError
from ivr.services.consent_origin import ORIGINS

PHONE = re.compile(r"\+[1-9][0-9]{5,14}")
DECISION_CHOICES = (*DECISIONS, "none")
# The dashboard's breakdowns, as search criteria on the call's consent.
CONSENT_FILTERS = ("language", "origin", "agent", "flow_version", "notice_version")
BASES = ("call", "consent")


def phone_fingerprint(raw: str, pii: PersonalData) -> str:
    """The keyed HMAC of a phone number typed in any usual form; SearchError if it is none."""
    e164 = normalise_phone(raw[:64])
    if not e164 or not PHONE.fullmatch(e164):
        raise SearchError({"phone": "not a phone number (try +905321234567 or 0532 123 45 67)"})
    fingerprint = pii.fingerprint(e164)
    assert fingerprint is not None  # a number's fingerprint is never None
    return fingerprint


def _day(value: str, name: str, errors: dict[str, str]) -> date | None:
    try:
        return inputs.day(value, name, end=name == "until") if value else None
    except inputs.InvalidInput as e:
        errors[name] = e.message
        return None


def parse_search(args: Mapping[str, str], pii: PersonalData) -> CallSearch:
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


def parse_consent_criteria(args: Mapping[str, str],
                           errors: dict[str, str]) -> tuple[tuple[str, str], ...]:
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


def masked(phone: str) -> str:
    """A number with its middle digits hidden, for lists."""
    if len(phone) < 8:
        return phone
    return phone[:6] + "•" * (len(phone) - 8) + phone[-2:]
