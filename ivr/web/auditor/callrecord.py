"""Who has seen a call: the auditor access entries shown on the call page. (The call's
own timeline is ivr.services.timeline, shared with `calls show` and the API.)"""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from ...services.auditor.access import KIND as ACCESS_KIND
from ...storage.models import AuditEntry


def access_entries(s: Session, call_sid: str) -> list[dict]:
    """Earlier auditor views and exports of this call."""
    out = []
    for e in s.scalars(select(AuditEntry).where(AuditEntry.ref == call_sid,
                                                AuditEntry.kind == ACCESS_KIND)
                       .order_by(AuditEntry.seq)):
        body = json.loads(e.body)
        out.append({"seq": e.seq, "at": body["at"], **body["data"]})
    return out
