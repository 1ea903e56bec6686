"""Read models: a call's timeline and consent exports, for the CLI, the API and the auditors."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.domain import times
from ivr.domain.times import utc_iso_or_none
from ivr.storage.flowstore import StoredFlows
from ivr.storage.models import Call, CallEvent, Consent, FlowRun, Recording, Turn

from .calls import ordered_times
from .consents import export_record
from .timeline import build, notices

# Where a call's start comes from, for `calls show` (the call page says the same).
FIRST_SEEN = {"twilio": "", None: "",
              "flow": " (when the call reached the consent flow; Twilio reported no start)"}


def recording_dict(rec: Recording) -> dict:
    """Recording metadata as exported."""
    return {"recording_sid": rec.recording_sid, "status": rec.status, "duration": rec.duration,
            "channels": rec.channels, "source": rec.source, "track": rec.track,
            "start_time": utc_iso_or_none(rec.start_time), "url": rec.url,
            "error_code": rec.error_code}


def call_duration(call: Call) -> tuple[int | None, str | None]:
    """Seconds the call lasted and where that comes from: Twilio's CallDuration when it sent
    one ("twilio"), else our answer and end times ("timestamps"); (None, None) when unknown."""
    if call.duration is not None:
        return call.duration, "twilio"
    started, answered, ended = ordered_times(call.started_at, call.answered_at, call.ended_at)
    begin = answered or started
    if ended is None or begin is None:
        return None, None
    return round((ended - begin).total_seconds()), "timestamps"


def call_timeline(session: Session, call_sid: str, pii, registry=None) -> dict | None:
    """Everything known about one call, in order; None for an unknown call.

    `timeline` and `notices` are what the auditor's call page shows (from the audit log);
    `events` are the stored callbacks and turns.
    """
    call = session.get(Call, call_sid)
    if call is None:
        return None
    registry = registry if registry is not None else StoredFlows()
    story = build(session, call_sid, registry)
    started, answered, ended = ordered_times(call.started_at, call.answered_at, call.ended_at)
    # A call an agent transferred to us never passed /voice/incoming: Twilio told us nothing
    # of its start. The first moment we know of is when it reached the consent flow (the
    # timeline's "Call started" leaf), and a call in the flow was answered by then; every
    # surface shows that same moment, and says where it comes from.
    first_seen = next((ev.at for ev in story if ev.kind == "call.started"), None)
    started_source = "twilio" if started is not None else ("flow" if first_seen else None)
    if started is None and first_seen is not None:
        started = datetime.fromisoformat(first_seen.replace("Z", "+00:00"))
        answered = answered or started
        started, answered, ended = ordered_times(started, answered, ended)
    duration, duration_source = call_duration(call)
    events: list[dict] = []
    for ev in session.scalars(select(CallEvent).where(CallEvent.call_sid == call_sid)
                              .order_by(CallEvent.received_at, CallEvent.id)):
        item: dict[str, str | int | None] = {
            "type": f"{ev.kind}.{ev.status}" if ev.status else ev.kind,
            "kind": ev.kind, "status": ev.status,
            "timestamp": utc_iso_or_none(ev.twilio_timestamp),
            "received_at": utc_iso_or_none(ev.received_at)}
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
                           "timestamp": utc_iso_or_none(t.created_at),
                           "received_at": utc_iso_or_none(t.created_at)})
        if run.hangup_at:
            events.append({"type": "hangup", "run": run.id,
                           "timestamp": utc_iso_or_none(run.hangup_at),
                           "received_at": utc_iso_or_none(run.hangup_at)})
    events.sort(key=lambda e: e["received_at"] or "")
    consents = [export_record(c, pii) for c in session.scalars(
        select(Consent).where(Consent.call_sid == call_sid).order_by(Consent.id))]
    recordings = [recording_dict(r) for r in session.scalars(
        select(Recording).where(Recording.call_sid == call_sid)
        .order_by(Recording.recording_sid))]
    return {
        "call_sid": call.call_sid, "from": pii.decrypt(call.phone_enc), "to": call.to_number,
        "direction": call.direction, "status": call.status, "duration": duration,
        "duration_source": duration_source,
        "started_at": utc_iso_or_none(started), "answered_at": utc_iso_or_none(answered),
        "ended_at": utc_iso_or_none(ended),
        "started_source": started_source,
        "flow_version": runs[0].flow_version if runs else None,
        "runs": [{"run": r.id, "origin": r.origin, "flow_id": r.flow_id,
                  "flow_version": r.flow_version, "transfer_id": r.transfer_id,
                  "language": (r.state or {}).get("language"), "ended": r.ended,
                  "hangup_at": utc_iso_or_none(r.hangup_at)} for r in runs],
        "events": events,
        "timeline": [ev.to_dict() for ev in story],
        "notices": [n.to_dict() for n in notices(story)],
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


def timeline_text(doc: dict) -> str:  # noqa: C901 - the text's sections in reading order
    """`calls show` as text: what the auditor's call page shows, times in Europe/Istanbul with
    UTC in brackets, unknown values as "—"."""
    dash = times.value_or_dash
    source = {"twilio": "Twilio's CallDuration", "timestamps": "from our answer and end times"}
    out = [f"Call {doc['call_sid']}  {dash(doc['direction'])}  from {dash(doc['from'])} "
           f"to {dash(doc['to'])}",
           f"  status    {dash(doc['status'])}",
           f"  duration  {dash(doc['duration'], ' s')}"
           + (f" ({source[doc['duration_source']]})" if doc["duration_source"] else ""),
           f"  started   {times.text(doc['started_at'])}" + FIRST_SEEN[doc["started_source"]],
           f"  answered  {times.text(doc['answered_at'])}" + FIRST_SEEN[doc["started_source"]],
           f"  ended     {times.text(doc['ended_at'])}"]
    for r in doc["runs"]:
        out.append(f"  flow      {r['flow_id']} {r['flow_version']} ({r['origin']})")
    out.append("Timeline (from the audit log):")
    for ev in doc["timeline"]:
        line = f"  #{ev['seq']:<6} {times.text(ev['at'])}  {ev['title']}"
        out.append(line + (f" · {ev['detail']}" if ev["detail"] else ""))
        for p in ev["prompts"]:
            audio = f"audio sha256 {p['audio']}" if p["audio"] else "spoken by Twilio <Say>"
            out.append(f"      {p['prompt']} ({p['language']})  {audio}")
            out.append(f"        \"{p['text'] or '(text not available for this flow version)'}\"")
    if not doc["timeline"]:
        out.append("  — (no audit entries refer to this call)")
    out.append("Notice as heard (notice version = SHA-256 over every part heard in a language):")
    for n in doc["notices"]:
        rec = n["decision_records"]
        agree = ("the version the decision records" if rec == n["notice_version"]
                 else f"DIFFERS from the decision's {rec}" if rec else "no decision in it")
        out.append(f"  {n['language']}  notice version {n['notice_version']} ({agree})")
        for p in n["parts"]:
            out.append(f"      part {p['prompt']}  "
                       + (f"audio sha256 {p['audio']}" if p["audio"] else "spoken by Twilio <Say>"))
    if not doc["notices"]:
        out.append("  — (no notice was played)")
    out.append("Decision:")
    for c in doc["consents"]:
        out.append(f"  {c['decision']} (keys {dash(c['digits'])}, {dash(c['language'])}, "
                   f"captured {times.text(c['captured_at'])}) rests on notice version "
                   f"{dash(c['notice_version'])}")
    if not doc["consents"]:
        out.append("  — (no consent decision was recorded)")
    out.append("Recordings:")
    for r in doc["recordings"]:
        out.append(f"  {r['recording_sid']}  {dash(r['status'])}  {dash(r['duration'], ' s')}  "
                   f"{dash(r['channels'])} channel(s)  {dash(r['source'])}  "
                   f"started {times.text(r['start_time'])}")
    if not doc["recordings"]:
        out.append("  — (no recording callbacks were received)")
    return "\n".join(out)


def stored_call(s: Session, call_sid: str) -> Call | None:
    """The stored call with this CallSid, or None."""
    return s.get(Call, call_sid)


def consent_records(s: Session, since: datetime | None, until: datetime | None,
                    decision: str | None, phone_hmac: str | None, limit: int) -> list[Consent]:
    """At most `limit` consent records matching the API's criteria (`consents_query`)."""
    return list(s.scalars(consents_query(since, until, decision, phone_hmac).limit(limit)))
