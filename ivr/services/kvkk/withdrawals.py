"""Withdrawing consent outside a call (an agent or admin, through the API).

A withdrawal is a new consent event, never an update: the grant it ends stays on record.
"""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.domain.inputs import InvalidInput, note
from ivr.domain.pii import PersonalData, normalise_phone
from ivr.domain.times import utcnow
from ivr.domain.vocabulary import CHANNELS
from ivr.services import consents
from ivr.storage import audit_store
from ivr.storage.models import Consent

MAX_REASON = 1000
MAX_IDEMPOTENCY_KEY = 150
# Printable ASCII, no space at either end (HTTP drops them); the OpenAPI document quotes
# the same pattern.
IDEMPOTENCY_KEY = re.compile(r"[!-~]([ -~]*[!-~])?")


class WithdrawalError(ValueError):
    """The withdrawal request is not valid; the message says why."""


def e164(raw) -> str:
    """A phone number in E.164 form, or WithdrawalError."""
    if not isinstance(raw, str) or not raw.strip() or len(raw) > 64:
        raise WithdrawalError("'phone' must be a phone number, e.g. +905321234567")
    phone = normalise_phone(raw)
    if not phone or not phone.startswith("+") or not phone[1:].isdigit() or len(phone) > 16:
        raise WithdrawalError("'phone' is not a valid phone number; use E.164, "
                              "e.g. +905321234567")
    return phone


def parse_reason(value) -> str:
    """The reason a person gave: 1 to MAX_REASON characters of text, or WithdrawalError."""
    try:
        return note(value, "reason", max_length=MAX_REASON)
    except InvalidInput as e:
        raise WithdrawalError(f"'reason' is required: {e.message}") from None


def idempotency_key(header: str | None) -> str | None:
    """The Idempotency-Key header's value (None without one), or WithdrawalError: 1 to
    MAX_IDEMPOTENCY_KEY printable ASCII characters."""
    if header is None:
        return None
    key = header.strip(" \t")
    if len(key) > MAX_IDEMPOTENCY_KEY or not IDEMPOTENCY_KEY.fullmatch(key):
        raise WithdrawalError(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable "
                              "ASCII characters")
    return key


def parse_channels(value) -> list[str]:
    """The channels to withdraw (a request that leaves them out means all), or
    WithdrawalError."""
    if not isinstance(value, list) or not value or len(value) > len(CHANNELS):
        raise WithdrawalError(f"'channels' must be a non-empty list of {', '.join(CHANNELS)}")
    bad = [c for c in value if c not in CHANNELS]
    if bad:
        raise WithdrawalError(f"unknown channel {bad[0]!r}; use {', '.join(CHANNELS)}")
    return [c for c in CHANNELS if c in value]


def idempotency_scope(user_id: int, key: str) -> str:
    """The stored idempotency key: scoped to the user, so two users never collide."""
    return f"withdrawal:{user_id}:{key}"


def find_retry(session: Session, scoped_key: str) -> Consent | None:
    """The withdrawal already recorded under this idempotency key, if any."""
    return session.scalar(select(Consent).where(Consent.idempotency_key == scoped_key))


def withdraw(session: Session, pii: PersonalData, *, phone: str, channels: list[str],
             reason: str, agent_id: str, purpose: str = "marketing",
             idempotency_key: str | None = None, now: datetime | None = None) -> Consent:
    """Record a withdrawal event and its audit entry in the caller's transaction."""
    now = now or utcnow()
    record = Consent(
        run_id=None, call_sid=None, phone_hmac=pii.fingerprint(phone),
        phone_enc=pii.encrypt(phone), purpose=purpose, channels=list(channels),
        decision="withdrawn", digits="", language=None, notice_version=None,
        flow_version=None, captured_at=now, agent_id=agent_id, transfer_id=None,
        source="api", reason=reason, audio={}, idempotency_key=idempotency_key,
    )
    session.add(record)
    session.flush()
    kind, ref, data = consents.audit_entry(record)
    # The free-text reason may name people, so the chain keeps only that one was given.
    audit_store.append(session, [(kind, f"consent:{record.id}",
                                  {**data, "reason_given": bool(reason)})], at=now)
    return record
