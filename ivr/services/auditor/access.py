"""Auditor access as audit entries: who saw or exported whose data, and when."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.storage import audit_store
from ivr.storage.accounts import User
from ivr.storage.models import AuditEntry

KIND = "auditor.access"
MAX_LISTED = 1000


@contextmanager
def transaction(s: Session) -> Iterator[Session]:
    """A transaction of the view's own, after ending the read the login check began."""
    if s.in_transaction():
        s.commit()
    with s.begin():
        yield s


def access_entry(user: User, action: str, *, via: str, call_sid: str | None = None,
                 phone_hmac: str | None = None, query: dict | None = None,
                 call_sids: list[str] | None = None, found: bool | None = None) -> tuple:
    """The (kind, ref, data) of one access; subjects by CallSid or phone HMAC, never a number."""
    data: dict = {"user_id": user.id, "user": user.name, "role": user.role, "action": action,
                  "via": via}
    if call_sid is not None:
        data["call_sid"] = call_sid
    if phone_hmac is not None:
        data["phone"] = phone_hmac
    if query is not None:
        data["query"] = query
    if call_sids is not None:
        data["count"] = len(call_sids)
        data["call_sids"] = call_sids[:MAX_LISTED]
        data["truncated"] = len(call_sids) > MAX_LISTED
    if found is not None:
        data["found"] = found
    return (KIND, call_sid, data)


def record_access(s: Session, user: User, action: str, **kwargs) -> None:
    """Append one access entry; call it last in the view's own transaction."""
    audit_store.append(s, [access_entry(user, action, **kwargs)])


def access_entries(s: Session, call_sid: str) -> list[dict]:
    """Earlier auditor views and exports of this call, for the call page."""
    out = []
    for e in s.scalars(select(AuditEntry).where(AuditEntry.ref == call_sid,
                                                AuditEntry.kind == KIND)
                       .order_by(AuditEntry.seq)):
        body = json.loads(e.body)
        out.append({"seq": e.seq, "at": body["at"], **body["data"]})
    return out
