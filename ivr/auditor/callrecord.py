"""A call as the audit log recorded it, for the call page: the one timeline of
ivr.timeline, the audio files to play, and who has seen the call."""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import AuditEntry
from ..timeline import AUDITOR_KINDS, Event, build, fact_entries, notices, run_versions
from .access import KIND as ACCESS_KIND
from .audiofiles import AudioIndex

__all__ = ["AUDITOR_KINDS", "access_entries", "audio_files", "fact_entries", "notices",
           "run_versions", "timeline"]


def access_entries(s: Session, call_sid: str) -> list[dict]:
    """Earlier auditor views and exports of this call."""
    out = []
    for e in s.scalars(select(AuditEntry).where(AuditEntry.ref == call_sid,
                                                AuditEntry.kind == ACCESS_KIND)
                       .order_by(AuditEntry.seq)):
        body = json.loads(e.body)
        out.append({"seq": e.seq, "at": body["at"], **body["data"]})
    return out


def timeline(s: Session, call_sid: str, entries: list[AuditEntry], registry) -> list[Event]:
    """The call's events, exactly as `calls show` builds them."""
    return build(s, call_sid, registry, entries)


def audio_files(events: list[Event], index: AudioIndex) -> set[str]:
    """The recorded audio hashes whose file is still in the audio folder (so it can play)."""
    return set(index.find(p.audio for ev in events for p in ev.prompts))
