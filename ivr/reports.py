"""Read models: a call's timeline and consent exports, for the CLI, the API and the auditors."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from .consents import export_record
from .models import Call, CallEvent, Consent, FlowRun, Recording, Turn


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat().replace("+00:00", "Z") if dt else None


def recording_dict(rec: Recording) -> dict:
    """Recording metadata as exported."""
    return {"recording_sid": rec.recording_sid, "status": rec.status, "duration": rec.duration,
            "channels": rec.channels, "source": rec.source, "track": rec.track,
            "start_time": _iso(rec.start_time), "url": rec.url, "error_code": rec.error_code}


def call_timeline(session: Session, call_sid: str, pii) -> dict | None:
    """Everything known about one call, in order; None for an unknown call."""
    call = session.get(Call, call_sid)
    if call is None:
        return None
    events: list[dict] = []
    for ev in session.scalars(select(CallEvent).where(CallEvent.call_sid == call_sid)
                              .order_by(CallEvent.received_at, CallEvent.id)):
        item = {"type": f"{ev.kind}.{ev.status}" if ev.status else ev.kind,
                "kind": ev.kind, "status": ev.status,
                "timestamp": _iso(ev.twilio_timestamp), "received_at": _iso(ev.received_at)}
        if ev.kind == "status":
            item["sequence_number"] = ev.sequence_number
        else:
            item["recording_sid"] = ev.data.get("RecordingSid")
        events.append(item)
    runs = list(session.scalars(select(FlowRun).where(FlowRun.call_sid == call_sid)
                                .order_by(FlowRun.created_at)))
    for run in runs:
        for t in session.scalars(select(Turn).where(Turn.run_id == run.id).order_by(Turn.step)):
            inp = t.input or {"type": "call"}
            plays = [a for a in t.actions if a["kind"] in ("play", "gather")]
            prompts = []
            for a in plays:
                prompts += [p["prompt"] for p in a["prompts"]] if a["kind"] == "gather" \
                    else [a["prompt"]]
            kind = {"digits": "keys", "timeout": "timeout", "call": "flow.start"}[inp["type"]]
            events.append({"type": kind, "run": run.id, "step": t.step,
                           "digits": inp.get("digits"), "prompts": prompts,
                           "actions": [a["kind"] for a in t.actions],
                           "timestamp": _iso(t.created_at), "received_at": _iso(t.created_at)})
        if run.hangup_at:
            events.append({"type": "hangup", "run": run.id, "timestamp": _iso(run.hangup_at),
                           "received_at": _iso(run.hangup_at)})
    events.sort(key=lambda e: e["received_at"] or "")
    consents = [export_record(c, pii) for c in session.scalars(
        select(Consent).where(Consent.call_sid == call_sid).order_by(Consent.id))]
    recordings = [recording_dict(r) for r in session.scalars(
        select(Recording).where(Recording.call_sid == call_sid)
        .order_by(Recording.recording_sid))]
    return {
        "call_sid": call.call_sid, "from": pii.decrypt(call.phone_enc), "to": call.to_number,
        "direction": call.direction, "status": call.status, "duration": call.duration,
        "started_at": _iso(call.started_at), "answered_at": _iso(call.answered_at),
        "ended_at": _iso(call.ended_at),
        "flow_version": runs[0].flow_version if runs else None,
        "runs": [{"run": r.id, "origin": r.origin, "flow_id": r.flow_id,
                  "flow_version": r.flow_version, "transfer_id": r.transfer_id,
                  "language": (r.state or {}).get("language"), "ended": r.ended,
                  "hangup_at": _iso(r.hangup_at)} for r in runs],
        "events": events,
        "consent": consents[-1] if consents else None,
        "consents": consents,
        "recordings": recordings,
    }


def consents_query(since: datetime | None = None, until: datetime | None = None,
                   decision: str | None = None, phone_hmac: str | None = None):
    """A select of consent records in a time range, oldest first."""
    q = select(Consent).order_by(Consent.captured_at, Consent.id)
    if since:
        q = q.where(Consent.captured_at >= since)
    if until:
        q = q.where(Consent.captured_at < until)
    if decision:
        q = q.where(Consent.decision == decision)
    if phone_hmac:
        q = q.where(Consent.phone_hmac == phone_hmac)
    return q
