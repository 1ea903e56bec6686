"""A call's recordings for the call page: the ones Twilio still holds (playable), and the
ones retention destroyed (when, and under which policy). The media itself comes from Twilio
(ivr/adapters/twilio_recordings.py)."""

from __future__ import annotations

import json
import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.storage.kvkk_models import DestructionLog
from ivr.storage.models import AuditEntry, Recording

RECORDING_SID = re.compile(r"RE[0-9a-f]{32}")
# Twilio's own statuses; only a completed recording has media to play.
PLAYABLE = ("completed",)


def _destroyed(s: Session, sid: str) -> dict | None:
    """When and under which policy retention destroyed a recording, from the destruction log."""
    row = s.scalar(select(DestructionLog).where(DestructionLog.table_name == "recordings",
                                                DestructionLog.row_ref == sid)
                   .order_by(DestructionLog.id.desc()).limit(1))
    if row is None:
        return None
    days = None
    run = s.scalar(select(AuditEntry.body).where(AuditEntry.ref == f"retention:{row.run_id}"))
    if run is not None:
        days = (json.loads(run)["data"].get("policy_days") or {}).get(row.category)
    return {"at": row.at, "category": row.category, "reason": row.reason, "days": days,
            "run_id": row.run_id}


def call_recordings(s: Session, call_sid: str) -> list[dict]:
    """Every recording the call had: stored metadata, or what destroyed it."""
    stored = {r.recording_sid: r for r in s.scalars(
        select(Recording).where(Recording.call_sid == call_sid))}
    # The audit log keeps the recording SIDs the call ever had, after retention too.
    seen = set(stored)
    for body in s.scalars(select(AuditEntry.body).where(AuditEntry.ref == call_sid,
                                                        AuditEntry.kind == "recording.status")):
        sid = json.loads(body)["data"].get("recording_sid")
        if sid:
            seen.add(sid)
    out = []
    for sid in sorted(seen):
        rec = stored.get(sid)
        item = {"recording_sid": sid, "stored": rec is not None,
                "playable": rec is not None and rec.status in PLAYABLE
                and bool(RECORDING_SID.fullmatch(sid))}
        if rec is not None:
            item.update(status=rec.status, duration=rec.duration, channels=rec.channels,
                        source=rec.source, track=rec.track, start_time=rec.start_time)
        else:
            item["destroyed"] = _destroyed(s, sid)
        out.append(item)
    return out


def playable(s: Session, call_sid: str, recording_sid: str) -> bool:
    """Whether this recording is the call's, still stored and complete."""
    rec = s.get(Recording, recording_sid)
    return rec is not None and rec.call_sid == call_sid and rec.status in PLAYABLE
