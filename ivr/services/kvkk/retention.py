"""Retention and destruction: what is due under the policy, and destroying it with a log.

The periodic job and a subject's erasure request share this code. `plan` lists what is
due; `apply` deletes or anonymises those rows, writes one destruction-log row per act and
appends one audit entry. The audit log itself is never touched: it holds keyed HMACs, not
personal data, and stays verifiable.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from ivr.domain.kvkk.policy import Policy
from ivr.domain.vocabulary import DECISIVE, Decision
from ivr.storage import audit_store
from ivr.storage.kvkk_models import DestructionLog, IysBatch, IysRecord, SubjectRequest
from ivr.storage.models import (
    AuditEntry,
    AuditQueue,
    Call,
    CallEvent,
    Consent,
    Recording,
    WebhookRequest,
)
from ivr.storage.results import rows_affected

_CHUNK = 500
# Rows destroyed per transaction by a batched run: each commits in tens of milliseconds,
# so a webhook that needs one of those rows never waits long.
BATCH = 2000
# A batched run pauses this many times as long as each batch took (half the time idle).
PACE = 1.0


def _chunks(items: list, n: int = _CHUNK):
    for i in range(0, len(items), n):
        yield items[i:i + n]


def consent_expiry(events: list[Consent], proof) -> dict[int, datetime | None]:
    """When each of one person's events (oldest first) may lose its personal data.

    A grant is kept while it is the latest decision for any of its channels (None), then
    `proof` after the last of those channels moved on; any other event `proof` after it.
    """
    out: dict[int, datetime | None] = {}
    for i, ev in enumerate(events):
        if ev.decision != Decision.GRANTED:
            out[ev.id] = ev.captured_at + proof
            continue
        ends: list[datetime] = []
        open_ended = False  # a channel no later event settles: the grant still stands
        for ch in ev.channels or ():
            nxt = next((later.captured_at for later in events[i + 1:]
                        if later.decision in DECISIVE and ch in (later.channels or ())), None)
            if nxt is None:
                open_ended = True
                break
            ends.append(nxt)
        out[ev.id] = None if open_ended else max(ends, default=ev.captured_at) + proof
    return out


@dataclass
class Plan:
    """What is due, by category; `kept` says what stays and why (for erasure requests)."""

    consents: list[int] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    recordings: list[str] = field(default_factory=list)
    webhook_logs: list[int] = field(default_factory=list)
    subject_requests: list[int] = field(default_factory=list)
    iys_files: list[tuple[str, str]] = field(default_factory=list)
    log_cutoff: datetime | None = None
    log_prune: int = 0
    kept: list[dict] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Acts per category."""
        return {"consent_records": len(self.consents), "transaction_security": len(self.calls),
                "recording_metadata": len(self.recordings),
                "webhook_logs": len(self.webhook_logs),
                "subject_requests": len(self.subject_requests),
                "iys_batch_files": len(self.iys_files)}

    @property
    def empty(self) -> bool:
        """Nothing to destroy."""
        return not any(self.counts().values()) and not self.log_prune


def _consents(session: Session, policy: Policy, now: datetime, subject: str | None):
    """(ids due, [(consent, kept until or None)] kept), person by person."""
    # Only the columns the rule reads: a retention run reads every consent event.
    q = (select(Consent.id, Consent.phone_hmac, Consent.decision, Consent.channels,
                Consent.captured_at).where(Consent.phone_hmac.is_not(None))
         .order_by(Consent.phone_hmac, Consent.captured_at, Consent.id))
    if subject:
        q = q.where(Consent.phone_hmac == subject)
    due: list[int] = []
    kept: list[tuple] = []  # (the event's row, kept until or None)
    group: list = []

    def settle():
        expiry = consent_expiry(group, policy.consent_proof)
        for ev in group:
            until = expiry[ev.id]
            if until is not None and until <= now:
                due.append(ev.id)
            else:
                kept.append((ev, until))

    for ev in session.execute(q.execution_options(yield_per=1000)):
        if group and group[0].phone_hmac != ev.phone_hmac:
            settle()
            group = []
        group.append(ev)
    if group:
        settle()
    return due, kept


def plan(session: Session, policy: Policy, now: datetime, subject: str | None = None) -> Plan:
    """Everything due now; with `subject` (a phone HMAC), that person's erasure request."""
    p = Plan()
    p.consents, kept = _consents(session, policy, now, subject)
    due = set(p.consents)
    # A call (and its recording) that proves a consent still kept is kept with it.
    held = {sid for cid, sid in session.execute(
        select(Consent.id, Consent.call_sid).where(Consent.phone_hmac.is_not(None),
                                                   Consent.call_sid.is_not(None)))
            if cid not in due}
    if subject:
        calls = list(session.scalars(select(Call.call_sid).where(Call.phone_hmac == subject)
                                     .order_by(Call.created_at)))
        p.calls = [c for c in calls if c not in held]
        p.recordings = [r for part in _chunks(p.calls) for r in session.scalars(
            select(Recording.recording_sid).where(Recording.call_sid.in_(part))
            .order_by(Recording.recording_sid))]
        p.webhook_logs = [w for part in _chunks(calls) for w in session.scalars(
            select(WebhookRequest.id).where(WebhookRequest.call_sid.in_(part))
            .order_by(WebhookRequest.id))]
        for c, until in kept:
            p.kept.append({"category": "consent_records", "ref": f"consent {c.id}",
                           "until": until, "why": "proof of consent: a legal duty to keep"})
        for sid in calls:
            if sid in held:
                p.kept.append({"category": "transaction_security", "ref": f"call {sid}",
                               "until": None, "why": "the call proves a consent that is kept"})
        for r in session.scalars(select(SubjectRequest).where(
                SubjectRequest.phone_hmac == subject).order_by(SubjectRequest.id)):
            until = r.closed_at + policy.subject_requests if r.closed_at else None
            p.kept.append({"category": "subject_requests", "ref": f"request {r.id}",
                           "until": until, "why": "proof of how requests were handled"})
        return p
    call_time = func.coalesce(Call.started_at, Call.created_at)
    p.calls = [sid for sid in session.scalars(
        select(Call.call_sid).where(Call.phone_hmac.is_not(None), call_time < now - policy.calls)
        .order_by(Call.created_at)) if sid not in held]
    rec_time = func.coalesce(Call.started_at, Call.created_at, Recording.updated_at)
    p.recordings = [sid for sid, call_sid in session.execute(
        select(Recording.recording_sid, Recording.call_sid)
        .outerjoin(Call, Call.call_sid == Recording.call_sid)
        .where(rec_time < now - policy.recordings).order_by(Recording.recording_sid))
        if call_sid not in held]
    p.webhook_logs = list(session.scalars(select(WebhookRequest.id).where(
        WebhookRequest.received_at < now - policy.webhook_logs).order_by(WebhookRequest.id)))
    p.subject_requests = list(session.scalars(select(SubjectRequest.id).where(
        SubjectRequest.status == "closed", SubjectRequest.phone_hmac.is_not(None),
        SubjectRequest.closed_at < now - policy.subject_requests).order_by(SubjectRequest.id)))
    p.iys_files = [(b.id, b.file) for b in session.scalars(select(IysBatch).where(
        IysBatch.file.is_not(None), IysBatch.created_at < now - policy.iys_files)
        .order_by(IysBatch.id)) if b.file is not None]  # the query did: this tells mypy
    p.log_cutoff = now - policy.destruction_log
    p.log_prune = session.scalar(select(func.count()).select_from(DestructionLog).where(
        DestructionLog.at < p.log_cutoff)) or 0
    return p


@dataclass
class Outcome:
    """What a run did."""

    run_id: str
    counts: dict[str, int]
    pruned_log: int
    failures: dict[str, str]


def apply(session: Session, p: Plan, now: datetime, *, reason: str, kind: str,
          ref: str | None = None, gone_at_twilio: set[str] | None = None,
          failures: dict[str, str] | None = None, audit: dict | None = None,
          batch: int | None = None, pace: float = 0.0) -> Outcome:
    """Destroy what the plan lists, log every act, and append one audit entry.

    With `gone_at_twilio`, a recording's metadata is deleted only once the recording is
    gone at Twilio; the others wait for the next run (their reasons are in `failures`).

    Without `batch`, all of it happens in the caller's transaction. With `batch`, the
    session must have no transaction open: at most `batch` rows are destroyed (and their
    destruction-log rows written) per transaction, each committed on its own, so no lock is
    held for long; the audit entry with the run's totals is appended by the last one. After
    each batch it pauses `pace` times as long as the batch took.
    """
    run_id = uuid.uuid4().hex
    failures = dict(failures or {})
    recordings = [r for r in p.recordings if gone_at_twilio is None or r in gone_at_twilio]
    steps = _steps(p, recordings)
    counts: dict[str, int] = {k: 0 for k in p.counts()}

    def run(part: list[tuple[str, list]]) -> None:
        log = _destroy(session, part, run_id, now, reason, failures)
        for part_rows in _chunks(log, 1000):
            session.connection().execute(insert(DestructionLog), part_rows)
        for e in log:
            counts[e["category"]] += 1

    if batch is None:
        run(steps)
        return _finish(session, p, now, run_id, counts, failures, kind, ref, audit)
    for part in _batches(steps, batch):
        started = time.monotonic()
        with session.begin():
            run(part)
        # Leave the database and the cores to the webhooks as long again: the run is a
        # background job, and the webhooks' p99 must not feel it.
        time.sleep(pace * (time.monotonic() - started))
    with session.begin():
        return _finish(session, p, now, run_id, counts, failures, kind, ref, audit)


def _steps(p: Plan, recordings: list[str]) -> list[tuple[str, list]]:
    """The plan's acts, in the order they are done: (category, items)."""
    return [("consent_records", p.consents), ("recording_metadata", recordings),
            ("transaction_security", p.calls), ("webhook_logs", p.webhook_logs),
            ("subject_requests", p.subject_requests), ("iys_batch_files", p.iys_files)]


def _batches(steps: list[tuple[str, list]], size: int):
    """The steps cut into parts of at most `size` items, in order."""
    part: list[tuple[str, list]] = []
    room = size
    for category, items in steps:
        i = 0
        while i < len(items):
            take = items[i:i + room]
            part.append((category, take))
            i += len(take)
            room -= len(take)
            if room == 0:
                yield part
                part, room = [], size
    if part:
        yield part


def _anonymise_consents(session: Session, ids: list) -> None:
    session.execute(update(Consent).where(Consent.id.in_(ids))
                    .values(phone_hmac=None, phone_enc=None, reason=None))
    session.execute(update(IysRecord).where(IysRecord.consent_id.in_(ids))
                    .values(recipient_hmac=None))


def _delete_recordings(session: Session, sids: list) -> None:
    session.execute(delete(Recording).where(Recording.recording_sid.in_(sids)))
    session.execute(delete(CallEvent).where(CallEvent.kind == "recording", or_(
        *[CallEvent.dedupe_key.startswith(f"recording:{sid}:", autoescape=True)
          for sid in sids])))


def _anonymise_calls(session: Session, sids: list) -> None:
    session.execute(update(Call).where(Call.call_sid.in_(sids))
                    .values(phone_hmac=None, phone_enc=None))


def _delete_webhook_logs(session: Session, ids: list) -> None:
    session.execute(delete(WebhookRequest).where(WebhookRequest.id.in_(ids)))


def _anonymise_subject_requests(session: Session, ids: list) -> None:
    session.execute(update(SubjectRequest).where(SubjectRequest.id.in_(ids))
                    .values(phone_hmac=None, phone_enc=None, note_enc=None, outcome_enc=None))


# Each category of rows: what destroys a chunk of them, and how the destruction log names it.
_ROWS = {
    "consent_records": (_anonymise_consents, "anonymised", "consents"),
    "recording_metadata": (_delete_recordings, "deleted", "recordings"),
    "transaction_security": (_anonymise_calls, "anonymised", "calls"),
    "webhook_logs": (_delete_webhook_logs, "deleted", "webhook_requests"),
    "subject_requests": (_anonymise_subject_requests, "anonymised", "subject_requests"),
}


def _destroy(session: Session, steps: list[tuple[str, list]], run_id: str, now: datetime,
             reason: str, failures: dict[str, str]) -> list[dict]:
    """Delete or anonymise these items; the destruction-log rows of what was done."""
    log: list[dict] = []

    def act(category, action, table, row_ref):
        log.append({"at": now, "run_id": run_id, "category": category, "action": action,
                    "table_name": table, "row_ref": str(row_ref)[:100], "reason": reason[:200]})

    for category, items in steps:
        if category in _ROWS:
            destroy, action, table = _ROWS[category]
            for part in _chunks(items):
                destroy(session, part)
                for ref in part:
                    act(category, action, table, ref)
            continue
        for batch_id, path in items:  # İYS batch files
            try:
                Path(path).unlink(missing_ok=True)
            except OSError as e:
                failures[f"file:{batch_id}"] = f"cannot delete {path}: {e.strerror}"
                continue
            session.execute(update(IysBatch).where(IysBatch.id == batch_id).values(file=None))
            act(category, "deleted", "iys batch file", batch_id)
    return log


def _finish(session: Session, p: Plan, now: datetime, run_id: str, counts: dict[str, int],
            failures: dict[str, str], kind: str, ref: str | None,
            audit: dict | None) -> Outcome:
    """Prune the destruction log past its period and append the run's audit entry."""
    pruned = 0
    if p.log_cutoff is not None and p.log_prune:
        # Only records older than the kept period (the policy refuses less than 3 years).
        pruned = rows_affected(session.execute(delete(DestructionLog).where(
            DestructionLog.at < p.log_cutoff))) or 0
    audit_store.append(session, [(kind, ref or f"retention:{run_id}", {
        "run_id": run_id, "counts": counts, "pruned_destruction_log": pruned,
        "not_done": sorted(failures), **(audit or {}),
    })], at=now)
    return Outcome(run_id, counts, pruned, failures)


def finish_interrupted(session: Session, now: datetime) -> str | None:
    """The id of a batched run that stopped before its last transaction, whose audit entry
    is now appended (its counts from its destruction-log rows, marked interrupted); None
    when there is none. Only the latest run can be one: each run first finishes the last."""
    last = session.scalar(select(DestructionLog.run_id).order_by(DestructionLog.id.desc())
                          .limit(1))
    if last is None:
        return None
    marker = f'"run_id":"{last}"'
    for table in (AuditEntry, AuditQueue):
        if session.scalar(select(table.kind).where(
                table.kind.in_(("retention.run", "subject.erased")),
                table.body.contains(marker, autoescape=True)).limit(1)) is not None:
            return None
    done = dict(session.execute(select(DestructionLog.category, func.count())
                                .where(DestructionLog.run_id == last)
                                .group_by(DestructionLog.category)).all())
    audit_store.append(session, [("retention.run", f"retention:{last}", {
        "run_id": last, "counts": {k: done.get(k, 0) for k in Plan().counts()},
        "pruned_destruction_log": 0, "not_done": [], "interrupted": True})], at=now)
    return last
