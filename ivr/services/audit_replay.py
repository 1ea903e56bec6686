"""Replaying calls from the database: a call's flow runs, turns, consents and audit entries
read here, run again through the pure core in ivr/audit/replay.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ivr.audit.errors import AuditError
from ivr.audit.replay import CallEntries, Mismatch, ReplayResult, RunReplay, replay_run
from ivr.storage.models import AuditEntry, AuditTreeHead, Call, Consent, FlowRun, Turn

from .audit_verify import verify_entries


def replay_call(session: Session, registry, call_sid: str, *, public_keys=None,
                checkpoint: AuditTreeHead | None = None) -> ReplayResult:
    """Replay every flow run of one call and compare it with the record.

    With `checkpoint`, the call's audit leaves are those it covers, checked against it (an
    evidence package replays against the one checkpoint it is built on)."""
    runs = list(session.scalars(select(FlowRun).where(FlowRun.call_sid == call_sid)
                                .order_by(FlowRun.created_at, FlowRun.id)))
    if not runs and session.get(Call, call_sid) is None:
        raise AuditError(f"unknown call: {call_sid}")
    result = ReplayResult(call_sid)
    q = select(AuditEntry.seq, AuditEntry.body).where(AuditEntry.ref == call_sid)
    if checkpoint is not None:
        q = q.where(AuditEntry.seq <= checkpoint.tree_size)
    rows = list(session.execute(q.order_by(AuditEntry.seq)))
    result.chain = verify_entries(session, [r.seq for r in rows], public_keys=public_keys,
                                  checkpoint=checkpoint)
    if (p := result.chain.problem) is not None:  # set exactly when the entries fail (not ok)
        result.mismatches.append(Mismatch(None, None, f"the call's audit entries do not verify "
                                          f"({p.unit} {p.seq}: {p.problem})", p.expected, p.found,
                                          ("expected", "found")))
    audit = CallEntries([(r.seq, json.loads(r.body)) for r in rows])
    for orphan in sorted(set(audit.started) - {r.id for r in runs}):
        result.mismatches.append(Mismatch(orphan, None, "the audit log records a run that is "
                                          "not stored", "no flow run", f"run {orphan}",
                                          ("flow_runs:", "audit log:")))
    for run in runs:
        result.runs.append(_replay_run(session, registry, run, audit, result.mismatches))
    return result


def _replay_run(session: Session, registry, run: FlowRun, audit: CallEntries,
                problems: list[Mismatch]) -> RunReplay:
    turns = list(session.scalars(select(Turn).where(Turn.run_id == run.id).order_by(Turn.step)))
    consents = list(session.scalars(select(Consent).where(Consent.run_id == run.id)
                                    .order_by(Consent.id)))
    return replay_run(run, audit, problems, lambda version: registry.version(session, version),
                      turns, consents)


def replay_range(session: Session, registry, since: datetime | None,
                 until: datetime | None, *, public_keys=None) -> Iterator[ReplayResult]:
    """Replay every call whose first flow run started in [since, until)."""
    first = func.min(FlowRun.created_at)
    q = select(FlowRun.call_sid).group_by(FlowRun.call_sid)
    if since is not None:
        q = q.having(first >= since)
    if until is not None:
        q = q.having(first < until)
    for sid in list(session.scalars(q.order_by(first, FlowRun.call_sid))):
        yield replay_call(session, registry, sid, public_keys=public_keys)
