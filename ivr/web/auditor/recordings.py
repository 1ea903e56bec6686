"""A call's recordings for the call page: the ones Twilio still holds (playable), and the
ones retention destroyed (when, and under which policy); and the media fetched from
Twilio's REST API with the account's credentials, streamed and never written to disk.

No Flask here: the view owns the transaction and the response.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

import requests
from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.adapters.twilio_recordings import TwilioAccount
from ivr.storage.kvkk_models import DestructionLog
from ivr.storage.models import AuditEntry, Recording

RECORDING_SID = re.compile(r"RE[0-9a-f]{32}")
CHUNK = 64 * 1024
# The media types a recording is served as, from the names Twilio (and others) give them;
# anything else is refused, never served from this origin (it could be a page or a script).
MEDIA_TYPES = {"audio/wav": "audio/wav", "audio/x-wav": "audio/wav", "audio/wave": "audio/wav",
               "audio/vnd.wave": "audio/wav", "audio/mpeg": "audio/mpeg",
               "audio/mp3": "audio/mpeg"}
EXTENSIONS = {"audio/wav": "wav", "audio/mpeg": "mp3"}
# Twilio's own statuses; only a completed recording has media to play.
PLAYABLE = ("completed",)


class MediaUnavailable(Exception):
    """Twilio did not hand the recording over; `status` is the HTTP status to answer,
    `reason` what the page says (`unreachable`, `gone`, `credentials`, `http`, `type`: the view
    translates it) and `detail` the program's own words (an exception's name, a status)."""

    def __init__(self, status: int, message: str, reason: str = "http", detail: str = ""):
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.detail = detail


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


def media_url(account: TwilioAccount, recording_sid: str) -> str:
    """Twilio's media URL of a recording, as WAV."""
    return (f"{account.api_url.rstrip('/')}/2010-04-01/Accounts/{account.account_sid}"
            f"/Recordings/{recording_sid}.wav")


@dataclass
class Media:
    """An open media download from Twilio: its headers now, its bytes as they come."""

    response: requests.Response
    content_type: str
    length: str | None

    def chunks(self) -> Iterator[bytes]:
        """The bytes, chunk by chunk; the connection is closed at the end or on abort."""
        try:
            yield from self.response.iter_content(CHUNK)
        finally:
            self.response.close()

    def close(self) -> None:
        """Give the download up without reading it."""
        self.response.close()


def open_media(account: TwilioAccount, recording_sid: str) -> Media:
    """Ask Twilio for a recording's WAV with Basic auth; raises MediaUnavailable."""
    try:
        r = requests.get(media_url(account, recording_sid), stream=True,
                         auth=(account.account_sid, account.auth_token),
                         timeout=account.timeout, allow_redirects=True)
    except requests.RequestException as e:
        raise MediaUnavailable(502, f"Twilio could not be reached ({type(e).__name__}).",
                               "unreachable", f"{type(e).__name__}: {e}"[:300]) from None
    if r.status_code == 200:
        given = r.headers.get("Content-Type", "").split(";")[0].strip().lower()
        media_type = MEDIA_TYPES.get(given)
        if media_type is None:
            r.close()
            raise MediaUnavailable(502, "Twilio did not answer with a WAV or MP3 recording; "
                                        "nothing was played.", "type",
                                   f"Content-Type: {given or '(none)'}"[:100])
        return Media(r, media_type, r.headers.get("Content-Length"))
    r.close()
    detail = f"HTTP {r.status_code} {r.reason or ''}".strip()
    if r.status_code == 404:
        raise MediaUnavailable(404, "Twilio no longer has this recording.", "gone", detail)
    if r.status_code in (401, 403):
        raise MediaUnavailable(502, "Twilio refused this server's credentials; an "
                                    "administrator must check TWILIO_ACCOUNT_SID and "
                                    "TWILIO_AUTH_TOKEN.", "credentials", detail)
    raise MediaUnavailable(502, f"Twilio answered HTTP {r.status_code} for the recording.",
                           "http", detail)
