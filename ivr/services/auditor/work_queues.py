"""The work queues as data: İYS records pending against the 3-business-day limit, open
subject requests against the 30-day limit, recent destruction runs with their logs, and
spooled webhooks in quarantine; and the queue actions, through the verbs the CLI uses.

Each function takes the session (the caller owns the transaction) or the spool, and every
action appends the audit entry that says who did it. A refusal is a QueueError naming the
problem; the page says it in the auditor's language.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.adapters.iys_push import Answer
from ivr.domain.kvkk import iys
from ivr.domain.kvkk.businessdays import Calendar, deadline_state, iys_deadline, local_date
from ivr.domain.pii import PersonalData
from ivr.services.auditor.access import access_entry
from ivr.services.kvkk import iys_export, iys_push
from ivr.services.kvkk import subject_requests as sr
from ivr.storage import audit_store
from ivr.storage.accounts import User
from ivr.storage.kvkk_models import DestructionLog, IysBatch, IysPushAnswer, SubjectRequest
from ivr.storage.models import AuditEntry
from ivr.storage.spool import Spool

RUN_KINDS = ("retention.run", "subject.erased")
RUNS_SHOWN = 20
LOG_ROWS_PER_RUN = 200


class Problem(StrEnum):
    """Why a queue action was refused."""

    NO_OUTCOME = "no_outcome"  # a request is closed only with what was done
    NOT_CLOSABLE = "not_closable"  # detail: the subject request verb's reason
    NO_BATCH = "no_batch"  # batch
    NOT_FAILED = "not_failed"  # batch, status
    NEVER_PUSHED = "never_pushed"  # batch
    BATCH_UNAVAILABLE = "batch_unavailable"  # detail: why its bytes cannot be rebuilt
    NO_RECORD = "no_record"  # record
    SPOOL_BUSY = "spool_busy"


class QueueError(Exception):
    """An action cannot be done as asked: `problem`, and the values its message names."""

    def __init__(self, problem: Problem, **values: str):
        super().__init__(problem.value, *values.values())
        self.problem = problem
        self.values = values


@dataclass(frozen=True)
class PendingIys:
    """One pending İYS record, its deadline and what an export would do with it."""

    consent_id: int
    type: str
    status: str
    recipient: str
    collected: datetime
    consent_date: str
    deadline: datetime
    state: str  # overdue | due | ok, "-" for a record an export would not send
    action: str  # export | skipped | superseded
    reason: str | None
    code: str | None
    params: Mapping[str, object]


@dataclass(frozen=True)
class FailedBatch:
    """An İYS batch whose push failed, with the endpoint and answer of its last push."""

    id: str
    created_at: datetime
    records: int
    url: str | None
    at: datetime | None
    http_status: int | None
    outcome: str | None
    errors: str


@dataclass(frozen=True)
class OpenRequest:
    """An open subject request and the days left to answer it (negative once overdue)."""

    id: int
    kind: str
    channel: str
    received_on: date
    due_on: date
    days_left: int
    state: str


@dataclass(frozen=True)
class DestructionRun:
    """A destruction run (periodic or an erasure) as its audit entry says, with its log."""

    seq: int
    kind: str
    at: str
    run_id: str | None
    counts: dict[str, int]
    total: int
    not_done: list[str]
    policy: dict[str, int] | None
    request: int | None
    log: list[DestructionLog] = field(default_factory=list)
    more: bool = False


@dataclass(frozen=True)
class WorkQueues:
    """Everything the work queues page lists, but the spool's quarantine."""

    pending: list[PendingIys]
    failed: list[FailedBatch]
    requests: list[OpenRequest]
    runs: list[DestructionRun]


def work_queues(s: Session, pii: PersonalData, cal: Calendar, now: datetime) -> WorkQueues:
    """The queues as of `now`."""
    return WorkQueues(iys_pending(s, pii, cal, now), failed_batches(s),
                      open_requests(s, local_date(now)), retention_runs(s))


def iys_pending(s: Session, pii: PersonalData, cal: Calendar, now: datetime) -> list[PendingIys]:
    """Every pending İYS record with its deadline and state, as `iys pending` lists them."""
    rows = []
    for d in iys_export.preview(s, pii):
        c = d.candidate
        deadline = iys_deadline(c.consent_at, cal)
        rows.append(PendingIys(
            c.consent_id, c.type, c.status, c.recipient or "", c.consent_at,
            iys.consent_date(c.consent_at), deadline,
            deadline_state(deadline, now, cal) if d.outcome == "export" else "-",
            d.outcome, d.reason, d.code, d.params))
    return rows


def failed_batches(s: Session) -> list[FailedBatch]:
    """İYS batches whose push failed, with the endpoint and answer of their last push."""
    out = []
    for b in s.scalars(select(IysBatch).where(IysBatch.status == "push_failed")
                       .order_by(IysBatch.created_at, IysBatch.id)):
        last = s.scalar(select(IysPushAnswer).where(IysPushAnswer.batch_id == b.id)
                        .order_by(IysPushAnswer.id.desc()).limit(1))
        out.append(FailedBatch(
            b.id, b.created_at, b.record_count, last.url if last else None,
            last.at if last else None, last.http_status if last else None,
            last.outcome if last else None,
            ", ".join(e.get("code", "") for e in last.errors) if last else ""))
    return out


def open_requests(s: Session, today: date) -> list[OpenRequest]:
    """Open subject requests by due date, with the days left (negative once overdue)."""
    return [OpenRequest(r.id, r.kind, r.channel, r.received_on, r.due_on,
                        (r.due_on - today).days, sr.due_state(r, today))
            for r in sr.list_requests(s)]


def retention_runs(s: Session, limit: int = RUNS_SHOWN) -> list[DestructionRun]:
    """The latest destruction runs (periodic and erasures), newest first, with their log."""
    runs = []
    for e in s.scalars(select(AuditEntry).where(AuditEntry.kind.in_(RUN_KINDS))
                       .order_by(AuditEntry.seq.desc()).limit(limit)):
        body = json.loads(e.body)
        data = body["data"]
        log = list(s.scalars(select(DestructionLog).where(DestructionLog.run_id ==
                                                          data.get("run_id"))
                             .order_by(DestructionLog.id).limit(LOG_ROWS_PER_RUN + 1)))
        counts = data.get("counts") or {}
        runs.append(DestructionRun(
            e.seq, e.kind, body["at"], data.get("run_id"),
            {k: v for k, v in counts.items() if v}, sum(counts.values()),
            data.get("not_done") or [], data.get("policy_days"), data.get("request"),
            log[:LOG_ROWS_PER_RUN], len(log) > LOG_ROWS_PER_RUN))
    return runs


def _who(user: User, action: str, call_sid: str | None = None,
         **data: object) -> tuple[str, str | None, dict[str, object]]:
    """The auditor.access entry of a queue action: who did what, through the web."""
    kind, ref, entry = access_entry(user, action, via="web", call_sid=call_sid)
    entry.update(data)
    return (kind, ref, entry)


def close_request(s: Session, pii: PersonalData, user: User, request_id: int, outcome: str,
                  now: datetime) -> SubjectRequest:
    """Close a subject request (`subject request close`), noting who closed it."""
    outcome = outcome.strip()
    if not outcome:
        raise QueueError(Problem.NO_OUTCOME)
    try:
        req = sr.close_request(s, pii, request_id, outcome=outcome[:2000], now=now)
    except sr.RequestError as e:
        raise QueueError(Problem.NOT_CLOSABLE, detail=str(e)) from None
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
        raise QueueError(Problem.NO_BATCH, batch=batch_id)
    if batch.status != "push_failed":
        raise QueueError(Problem.NOT_FAILED, batch=batch.id, status=batch.status)
    url = s.scalar(select(IysPushAnswer.url).where(IysPushAnswer.batch_id == batch.id)
                   .order_by(IysPushAnswer.id.desc()).limit(1))
    if not url:
        raise QueueError(Problem.NEVER_PUSHED, batch=batch.id)
    try:
        body = iys_export.rebuild(s, pii, batch)
    except iys_export.BatchUnavailable as e:
        raise QueueError(Problem.BATCH_UNAVAILABLE, detail=str(e)) from None
    return PushTarget(batch.id, url, body)


def record_push(s: Session, user: User, target: PushTarget, answer: Answer,
                now: datetime) -> str:
    """Store a retried push's answer (the `iys.pushed` entry) and who retried it."""
    batch = s.get(IysBatch, target.batch_id, with_for_update=True)
    if batch is None:  # push_target read it; batches are never deleted
        raise QueueError(Problem.NO_BATCH, batch=target.batch_id)
    iys_push.record_answer(s, batch, answer, target.url, now)
    audit_store.append(s, [_who(user, "retry.iys_push", batch=batch.id, outcome=answer.outcome,
                                http_status=answer.http_status)], at=now)
    return answer.outcome


def retry_quarantined(s: Session, spool: Spool, user: User, rid: str,
                      apply: Callable[[dict[str, object]], None], now: datetime) -> str:
    """Put a quarantined record back and drain (`spool quarantine retry`); the outcome.

    The CLI's verb writes no audit entry of its own: `spool.retried` says who retried what
    and how it went. `s` must be outside a transaction (the drain opens its own).
    """
    try:
        q, _path = spool.quarantine_entry(rid)
    except KeyError:
        raise QueueError(Problem.NO_RECORD, record=rid) from None
    with spool.lock(5) as got:
        if not got:
            raise QueueError(Problem.SPOOL_BUSY)
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
            raise QueueError(Problem.SPOOL_BUSY)
        try:
            q, path = spool.quarantine_entry(rid)
        except KeyError:
            raise QueueError(Problem.NO_RECORD, record=rid) from None
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        with s.begin():
            audit_store.append(s, [("spool.discarded", q.call_sid, {
                "record": q.id, "kind": q.kind, "call_sid": q.call_sid, "error": q.error,
                "received_at": q.received_at, "quarantined_at": q.quarantined_at,
                "file_sha256": digest, "reason": reason[:500]}),
                _who(user, "discard.spool_record", call_sid=q.call_sid, record=q.id)], at=now)
        spool.remove_quarantined(rid)
