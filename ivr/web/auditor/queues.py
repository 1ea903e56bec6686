"""The work queues as data: İYS records pending against the 3-business-day limit, open
subject requests against the 30-day limit, recent destruction runs with their logs, and
spooled webhooks in quarantine; and the queue actions, through the verbs the CLI uses.

No Flask here: each function takes the session (the caller owns the transaction) or the
spool, and every action appends the audit entry that says who did it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime

from flask_babel import gettext as _
from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.domain.kvkk import iys
from ivr.domain.kvkk.businessdays import Calendar, deadline_state, iys_deadline, local_date
from ivr.domain.pii import PersonalData
from ivr.services.accounts import User
from ivr.services.auditor.access import access_entry
from ivr.services.kvkk import iys_export, iys_push
from ivr.services.kvkk import subject_requests as sr
from ivr.storage import audit_store
from ivr.storage.kvkk_models import DestructionLog, IysBatch, IysPushAnswer
from ivr.storage.models import AuditEntry
from ivr.storage.spool import Spool

from .search import masked

RUN_KINDS = ("retention.run", "subject.erased")
RUNS_SHOWN = 20
LOG_ROWS_PER_RUN = 200


class QueueError(Exception):
    """An action cannot be done as asked; the message says why, for the page."""


def iys_pending(s: Session, pii: PersonalData, cal: Calendar, now: datetime) -> list[dict]:
    """Every pending İYS record with its deadline and state, as `iys pending` lists them."""
    rows = []
    for d in iys_export.preview(s, pii):
        c = d.candidate
        deadline = iys_deadline(c.consent_at, cal)
        rows.append({"consent_id": c.consent_id, "type": c.type, "status": c.status,
                     "recipient": masked(c.recipient or ""), "collected": c.consent_at,
                     "consent_date": iys.consent_date(c.consent_at), "deadline": deadline,
                     "state": deadline_state(deadline, now, cal) if d.outcome == "export"
                     else "-", "action": d.outcome, "reason": d.reason, "code": d.code,
                     "params": d.params})
    return rows


def failed_batches(s: Session) -> list[dict]:
    """İYS batches whose push failed, with the endpoint and answer of their last push."""
    out = []
    for b in s.scalars(select(IysBatch).where(IysBatch.status == "push_failed")
                       .order_by(IysBatch.created_at, IysBatch.id)):
        last = s.scalar(select(IysPushAnswer).where(IysPushAnswer.batch_id == b.id)
                        .order_by(IysPushAnswer.id.desc()).limit(1))
        out.append({"id": b.id, "created_at": b.created_at, "records": b.record_count,
                    "url": last.url if last else None, "at": last.at if last else None,
                    "http_status": last.http_status if last else None,
                    "outcome": last.outcome if last else None,
                    "errors": ", ".join(e.get("code", "") for e in last.errors) if last else ""})
    return out


def open_requests(s: Session, today: date) -> list[dict]:
    """Open subject requests by due date, with the days left (negative once overdue)."""
    return [{"id": r.id, "kind": r.kind, "channel": r.channel, "received_on": r.received_on,
             "due_on": r.due_on, "days_left": (r.due_on - today).days,
             "state": sr.due_state(r, today)} for r in sr.list_requests(s)]


def retention_runs(s: Session, limit: int = RUNS_SHOWN) -> list[dict]:
    """The latest destruction runs (periodic and erasures), newest first, with their log."""
    runs = []
    for e in s.scalars(select(AuditEntry).where(AuditEntry.kind.in_(RUN_KINDS))
                       .order_by(AuditEntry.seq.desc()).limit(limit)):
        body = json.loads(e.body)
        data = body["data"]
        log = list(s.scalars(select(DestructionLog).where(DestructionLog.run_id ==
                                                          data.get("run_id"))
                             .order_by(DestructionLog.id).limit(LOG_ROWS_PER_RUN + 1)))
        runs.append({"seq": e.seq, "kind": e.kind, "at": body["at"], "run_id": data.get("run_id"),
                     "counts": {k: v for k, v in (data.get("counts") or {}).items() if v},
                     "total": sum((data.get("counts") or {}).values()),
                     "not_done": data.get("not_done") or [],
                     "policy": data.get("policy_days"), "request": data.get("request"),
                     "log": log[:LOG_ROWS_PER_RUN], "more": len(log) > LOG_ROWS_PER_RUN})
    return runs


def _who(user: User, action: str, call_sid: str | None = None, **data) -> tuple:
    """The auditor.access entry of a queue action: who did what, through the web."""
    kind, ref, entry = access_entry(user, action, via="web", call_sid=call_sid)
    entry.update(data)
    return (kind, ref, entry)


def close_request(s: Session, pii: PersonalData, user: User, request_id: int, outcome: str,
                  now: datetime):
    """Close a subject request (`subject request close`), noting who closed it."""
    outcome = outcome.strip()
    if not outcome:
        raise QueueError(_("Write what was done or answered before closing the request."))
    try:
        req = sr.close_request(s, pii, request_id, outcome=outcome[:2000], now=now)
    except sr.RequestError as e:
        raise QueueError(_("The request cannot be closed: %(problem)s.", problem=e)) from None
    audit_store.append(s, [_who(user, "close.subject_request", request=req.id,
                                on_time=local_date(now) <= req.due_on)], at=now)
    return req


@dataclass
class PushTarget:
    """What a retried push needs, read in one short transaction."""

    batch_id: str
    url: str
    body: bytes


def push_target(s: Session, pii: PersonalData, batch_id: str) -> PushTarget:
    """A failed batch's bytes and the endpoint it was last pushed to (`iys push URL --batch`)."""
    batch = s.get(IysBatch, batch_id[:40])
    if batch is None:
        raise QueueError(_("There is no İYS batch %(batch)s.", batch=batch_id))
    if batch.status != "push_failed":
        raise QueueError(_("Batch %(batch)s is %(status)s; only a failed push is retried.",
                           batch=batch.id, status=batch.status))
    url = s.scalar(select(IysPushAnswer.url).where(IysPushAnswer.batch_id == batch.id)
                   .order_by(IysPushAnswer.id.desc()).limit(1))
    if not url:
        raise QueueError(_("Batch %(batch)s was never pushed, so there is no endpoint to "
                           "retry; push it with `python -m ivr iys push URL`.", batch=batch.id))
    try:
        body = iys_export.rebuild(s, pii, batch)
    except iys_export.BatchUnavailable as e:
        raise QueueError(str(e)) from None
    return PushTarget(batch.id, url, body)


def record_push(s: Session, user: User, target: PushTarget, answer: iys_push.Answer,
                now: datetime) -> str:
    """Store a retried push's answer (the `iys.pushed` entry) and who retried it."""
    batch = s.get(IysBatch, target.batch_id, with_for_update=True)
    iys_push.record_answer(s, batch, answer, target.url, now)
    audit_store.append(s, [_who(user, "retry.iys_push", batch=batch.id, outcome=answer.outcome,
                                http_status=answer.http_status)], at=now)
    return answer.outcome


def retry_quarantined(s: Session, spool: Spool, user: User, rid: str, apply,
                      now: datetime) -> str:
    """Put a quarantined record back and drain (`spool quarantine retry`); the outcome.

    The CLI's verb writes no audit entry of its own: `spool.retried` says who retried what
    and how it went. `s` must be outside a transaction (the drain opens its own).
    """
    try:
        q, _path = spool.quarantine_entry(rid)
    except KeyError:
        raise QueueError(_("There is no quarantined record %(id)s.", id=rid)) from None
    with spool.lock(5) as got:
        if not got:
            raise QueueError(_("Another process is draining the spool; try again in a moment."))
        spool.release(rid)
    report = spool.drain(apply)
    if rid in {x.id for x in spool.quarantined()}:
        outcome = "quarantined again"
    elif any(p.name.split(".")[0] == rid for p in spool.pending()):
        outcome = "waiting" if not report.stopped else f"waiting ({report.stopped})"
    else:
        outcome = "applied"
    with s.begin():
        audit_store.append(s, [("spool.retried", q.call_sid, {
            "record": q.id, "kind": q.kind, "call_sid": q.call_sid, "error": q.error,
            "outcome": outcome, "user_id": user.id, "user": user.name, "via": "web"})],
            at=now)
    return outcome


def discard_quarantined(s: Session, spool: Spool, user: User, rid: str, reason: str,
                        now: datetime) -> None:
    """Delete a quarantined record for good (`spool quarantine discard`), with its entry."""
    with spool.lock(5) as got:  # no retry or drain moves it meanwhile
        if not got:
            raise QueueError(_("Another process is draining the spool; try again in a moment."))
        try:
            q, path = spool.quarantine_entry(rid)
        except KeyError:
            raise QueueError(_("There is no quarantined record %(id)s.", id=rid)) from None
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        with s.begin():
            audit_store.append(s, [("spool.discarded", q.call_sid, {
                "record": q.id, "kind": q.kind, "call_sid": q.call_sid, "error": q.error,
                "received_at": q.received_at, "quarantined_at": q.quarantined_at,
                "file_sha256": digest, "reason": reason[:500]}),
                _who(user, "discard.spool_record", call_sid=q.call_sid, record=q.id)], at=now)
        spool.remove_quarantined(rid)
