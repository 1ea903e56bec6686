"""Pushing İYS batches: the adapter sends one (ivr/adapters/iys_push.py), and the answer is
recorded here against the stored batch and its records, with its audit entry."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ivr.adapters.iys_push import Answer, safe_url, send
from ivr.storage import audit_store
from ivr.storage.kvkk_models import IysBatch, IysPushAnswer, IysRecord

__all__ = ["Answer", "record_answer", "send"]  # the push's two halves, for the CLI and the page

log = logging.getLogger("ivr.kvkk.iys_push")  # the name logs have always carried


def record_answer(session: Session, batch: IysBatch, answer: Answer, url: str,
                  now: datetime) -> None:
    """Store the answer and what it means for the batch and its records.

    Rejected: records İYS named get outcome 'rejected' with the code; the others lose
    their row, so the next export sends them again. Failed: the batch waits for `iys push`.
    """
    session.add(IysPushAnswer(batch_id=batch.id, at=now, url=safe_url(url),
                              http_status=answer.http_status, outcome=answer.outcome,
                              transaction_id=answer.transaction_id, errors=answer.errors))
    batch.pushed_at = now
    if answer.outcome == "accepted":
        batch.status, batch.transaction_id = "accepted", answer.transaction_id
    elif answer.outcome == "failed":
        batch.status = "push_failed"
    else:
        batch.status = "rejected"
        named: dict[int, str] = {}  # the rejected record's index in the batch: why
        for e in answer.errors:
            if e.get("index") is not None:
                named.setdefault(e["index"], f"{e['code']}: {e['message']}"[:1000])
        records = list(session.scalars(select(IysRecord).where(IysRecord.batch_id == batch.id)
                                       .order_by(IysRecord.position)))
        for rec in records:
            if rec.position in named:
                rec.outcome, rec.reason, rec.decided_at = "rejected", named[rec.position], now
        requeue = [r.id for r in records if r.position not in named]
        if requeue:
            session.execute(delete(IysRecord).where(IysRecord.id.in_(requeue)))
    session.flush()
    audit_store.append(session, [("iys.pushed", None, {
        "batch": batch.id, "url": safe_url(url), "http_status": answer.http_status,
        "outcome": answer.outcome, "transaction_id": answer.transaction_id,
        "error_codes": sorted({e["code"] for e in answer.errors if e.get("code")}),
    })], at=now)
    log.info("iys batch %s pushed: %s (HTTP %s)", batch.id, answer.outcome, answer.http_status)
