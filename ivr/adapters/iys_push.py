"""Sending İYS batches to an İYS-compatible endpoint and recording every answer."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

import requests
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ivr.storage import audit_store

from ..storage.kvkk_models import IysBatch, IysPushAnswer, IysRecord

log = logging.getLogger("ivr.kvkk.iys_push")  # the name logs have always carried
# Worth another try later: the endpoint, the network or the token is the problem.
RETRYABLE = {401, 403, 408, 429}


@dataclass
class Answer:
    """What the endpoint said about one batch."""

    outcome: str  # accepted | rejected | failed
    http_status: int | None
    transaction_id: str | None = None
    errors: list[dict] = field(default_factory=list)


def safe_url(url: str) -> str:
    """The URL as recorded: no credentials, query or fragment."""
    p = urlsplit(url)
    host = p.hostname or ""
    if p.port:
        host += f":{p.port}"
    return urlunsplit((p.scheme, host, p.path, "", ""))[:500]


def _errors(payload) -> list[dict]:
    items = payload.get("errors") if isinstance(payload, dict) else None
    out = []
    for e in items if isinstance(items, list) else []:
        if isinstance(e, dict):
            idx = e.get("index")
            out.append({"code": str(e.get("code") or "")[:32],
                        "message": str(e.get("message") or "")[:300],
                        "index": idx if isinstance(idx, int) else None})
    return out


def send(url: str, token: str, body: bytes, timeout: float) -> Answer:
    """POST one batch with a bearer token; never raises for HTTP or network failures."""
    try:
        r = requests.post(url, data=body, timeout=timeout, allow_redirects=False,
                          headers={"Authorization": f"Bearer {token}",
                                   "Content-Type": "application/json; charset=utf-8",
                                   "Accept": "application/json"})
    except requests.RequestException as e:
        return Answer("failed", None, errors=[{"code": "NETWORK", "index": None,
                                               "message": type(e).__name__}])
    try:
        payload = r.json()
    except ValueError:
        payload = None
    if 200 <= r.status_code < 300:
        tid = payload.get("transactionId") or payload.get("requestId") \
            if isinstance(payload, dict) else None
        if tid:
            return Answer("accepted", r.status_code, str(tid)[:100])
        return Answer("failed", r.status_code, errors=[
            {"code": "NO_TRANSACTION_ID", "index": None,
             "message": "a 2xx answer without transactionId"}])
    errors = _errors(payload) or [{"code": f"HTTP{r.status_code}", "index": None,
                                   "message": r.reason or ""}]
    if r.status_code >= 500 or r.status_code in RETRYABLE:
        return Answer("failed", r.status_code, errors=errors)
    return Answer("rejected", r.status_code, errors=errors)


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
        named = {}
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
