"""Article 11 requests: logged with the day they were received, answered within 30 days."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.domain.kvkk.businessdays import local_date
from ivr.domain.pii import PersonalData
from ivr.storage import audit_store
from ivr.storage.kvkk_models import SubjectRequest

DUE_DAYS = 30  # KVKK Art. 13: at the latest within thirty days, free of charge
SOON_DAYS = 7
KINDS = ("learn", "information", "purpose", "recipients", "rectification", "erasure",
         "notify_third_parties", "objection", "compensation", "other")
RECEIVED_BY = ("email", "post", "phone", "in_person", "other")


class RequestError(ValueError):
    """A request cannot be opened or closed as asked."""


def open_request(session: Session, pii: PersonalData, *, phone: str, kind: str, channel: str,
                 received_on: date, note: str | None, now: datetime) -> SubjectRequest:
    """Log a request; it is due 30 days after it was received."""
    if kind not in KINDS:
        raise RequestError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    if channel not in RECEIVED_BY:
        raise RequestError(f"unknown channel {channel!r}; use one of {', '.join(RECEIVED_BY)}")
    if received_on > local_date(now):
        raise RequestError(f"the received date {received_on} is in the future")
    req = SubjectRequest(phone_hmac=pii.fingerprint(phone), phone_enc=pii.encrypt(phone),
                         kind=kind, channel=channel, received_on=received_on,
                         due_on=received_on + timedelta(days=DUE_DAYS), status="open",
                         note_enc=pii.encrypt(note) if note else None, opened_at=now)
    session.add(req)
    session.flush()
    audit_store.append(session, [("subject.request.opened", f"request:{req.id}", {
        "request": req.id, "phone": req.phone_hmac, "kind": kind, "channel": channel,
        "received_on": received_on.isoformat(), "due_on": req.due_on.isoformat()})], at=now)
    return req


def close_request(session: Session, pii: PersonalData, request_id: int, *, outcome: str,
                  now: datetime) -> SubjectRequest:
    """Close a request with a summary of the answer given."""
    req = session.get(SubjectRequest, request_id, with_for_update=True)
    if req is None:
        raise RequestError(f"no request #{request_id}")
    if req.status == "closed":
        raise RequestError(f"request #{request_id} is already closed")
    req.status, req.closed_at = "closed", now
    req.outcome_enc = pii.encrypt(outcome) if outcome else None
    on_time = local_date(now) <= req.due_on
    audit_store.append(session, [("subject.request.closed", f"request:{req.id}", {
        "request": req.id, "phone": req.phone_hmac, "kind": req.kind,
        "closed_on": local_date(now).isoformat(), "due_on": req.due_on.isoformat(),
        "on_time": on_time})], at=now)
    return req


def due_state(req: SubjectRequest, today: date) -> str:
    """closed, overdue, due soon (within 7 days) or open."""
    if req.status == "closed":
        return "closed"
    if today > req.due_on:
        return "overdue"
    if (req.due_on - today).days <= SOON_DAYS:
        return "due soon"
    return "open"


def list_requests(session: Session, include_closed: bool = False) -> list[SubjectRequest]:
    """Requests by due date, open ones only unless asked."""
    q = select(SubjectRequest).order_by(SubjectRequest.due_on, SubjectRequest.id)
    if not include_closed:
        q = q.where(SubjectRequest.status == "open")
    return list(session.scalars(q))
