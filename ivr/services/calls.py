"""Application verbs for a call: start a flow run, take a turn, apply status and recording
callbacks. Each verb takes the caller's session; the caller owns the transaction, so a
fact and its audit entries always commit together.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.audit import chain
from ivr.storage import audit_store

from ..domain.flow import Flow
from ..domain.flow import engine as e
from ..domain.notice import notice_version
from ..domain.pii import PersonalData, normalise_phone
from ..domain.runs import digits_input, run_id_for
from ..domain.twilio_form import CallFields, GatherInput, RecordingCallback, StatusCallback
from ..domain.vocabulary import TERMINAL
from ..storage.db import utcnow
from ..storage.flowstore import flows
from ..storage.models import Call, CallEvent, FlowRun, Recording, Turn
from . import consents
from .hooks import CallListener
from .keys import personal_data


class UnknownRun(Exception):
    """A gather result for a run that does not exist or belongs to another call."""


class RunBehind(Exception):
    """A gather result for a step the stored run has not reached yet (earlier steps are
    still in a spool somewhere): it must wait, never be dropped."""


@dataclass
class Context:
    """What a verb needs from the app: flows, personal-data keys, a TwiML renderer (which
    also names the URL of the next gather) and the listeners that follow each call."""

    flows: object
    pii: PersonalData
    renderer: object
    listeners: tuple[CallListener, ...] = ()


def current_context() -> Context:
    """The Context of the current app: its flows, keys, renderer and call listeners."""
    return Context(flows=flows(), pii=personal_data(),
                   renderer=current_app.extensions["ivr_renderer"],
                   listeners=tuple(current_app.extensions.get("ivr_call_listeners", ())))


def _clip(value: str | None, n: int = 64) -> str | None:
    return value[:n] if value else None


def get_or_create_call(session: Session, ctx: Context, fields: CallFields) -> Call:
    """The call row for a CallSid, created on first sight from any webhook."""
    call = session.get(Call, fields.call_sid, with_for_update=True)
    if call is None:
        call = Call(call_sid=fields.call_sid, created_at=utcnow())
        session.add(call)
    if not call.account_sid:
        call.account_sid = _clip(fields.account_sid)
    return call


def fill_parties(call: Call, ctx: Context, fields: CallFields) -> None:
    """Record the caller (encrypted and fingerprinted) and our number from a webhook, once."""
    direction = (fields.direction or "").lower()[:32] or None
    outbound = bool(direction and direction.startswith("outbound"))
    caller = fields.to_number if outbound else fields.from_number
    ours = fields.from_number if outbound else fields.to_number
    phone = normalise_phone(caller)
    if phone and not call.phone_hmac:
        call.phone_hmac = ctx.pii.fingerprint(phone)
        call.phone_enc = ctx.pii.encrypt(phone)
    call.to_number = call.to_number or _clip(normalise_phone(ours), 32)
    call.direction = call.direction or direction


def ordered_times(started, answered, ended):
    """Start, answer and end so that none is before the one it follows.

    Twilio's Timestamp has whole seconds while our own times have milliseconds, so an end
    stamped 07:39:51 can sort before a start we received at 07:39:51.367; the later
    moment is then the one we saw.
    """
    if answered is not None and started is not None and answered < started:
        answered = started
    floor = answered or started
    if ended is not None and floor is not None and ended < floor:
        ended = floor
    return started, answered, ended


def _order_times(call: Call) -> None:
    call.started_at, call.answered_at, call.ended_at = ordered_times(
        call.started_at, call.answered_at, call.ended_at)


def _apply(session: Session, ctx: Context, flow: Flow, run: FlowRun, call: Call,
           state: e.State, actions: list, inp: e.Input | None, now: datetime):
    """Store one turn: its TwiML, the run's new state, the consent and the audit entries."""
    step = state.step
    rendered = ctx.renderer.render(actions, ctx.renderer.next_url(run.id, step + 1,
                                                                  flow.version, state))
    heard = dict(run.heard or {})
    heard.update(rendered.audio)
    run.heard = heard
    # The run's new state and the turn before anything below can flush (a consent does):
    # the run is then written with one UPDATE, not one for `heard` and one for the state.
    run.state = state.to_dict()
    run.step = step
    run.ended = state.ended
    run.updated_at = now
    inp_data = e.input_to_dict(inp) if inp is not None else None
    action_data = [e.action_to_dict(a) for a in actions]
    session.add(Turn(run_id=run.id, step=step, input=inp_data, actions=action_data,
                     twiml=rendered.twiml, created_at=now))
    audit = []
    if inp is not None:
        audit.append(("input.received", call.call_sid,
                      {"call_sid": call.call_sid, "run": run.id, "step": step,
                       "input": inp_data}))
    audit.append(("prompts.played", call.call_sid,
                  {"call_sid": call.call_sid, "run": run.id, "step": step,
                   "played": rendered.played,
                   "actions": [a["kind"] for a in action_data
                               if a["kind"] not in ("play", "noticeplayed", "decide")]}))
    for a in actions:
        if isinstance(a, e.NoticePlayed):
            parts = [(p, flow.text(p, a.language), heard.get(p)) for p in a.prompts]
            version = notice_version(a.language, parts)
            notice = dict(run.notice or {})
            notice[a.language] = notice.get(a.language, []) + [
                {"prompt": p, "audio": h} for p, _t, h in parts]
            notice[a.language] = _dedupe(notice[a.language])
            run.notice = notice
            audit.append(("notice.played", call.call_sid,
                          {"call_sid": call.call_sid, "run": run.id, "step": step,
                           "language": a.language, "prompts": list(a.prompts),
                           "audio": [h for _p, _t, h in parts], "notice_version": version}))
        elif isinstance(a, e.Decide):
            record = consents.record_decision(session, run=run, call=call, flow=flow,
                                              decision=a, notice_version=_run_notice_version(
                                                  flow, run, a.language),
                                              captured_at=now)
            audit.append(consents.audit_entry(record))
    for listener in ctx.listeners:
        audit += listener.on_turn(session, run, actions, now)
    return rendered.twiml, audit


def _dedupe(items: list[dict]) -> list[dict]:
    seen, out = set(), []
    for it in items:
        key = (it["prompt"], it["audio"])
        if key not in seen:
            seen.add(key)
            out.append(it)
    return out


def _run_notice_version(flow: Flow, run: FlowRun, language: str) -> str | None:
    heard = run.notice.get(language) if run.notice else None
    if not heard:
        return None
    return notice_version(language, [(h["prompt"], flow.text(h["prompt"], language), h["audio"])
                                     for h in heard])


def start_run(session: Session, ctx: Context, call: Call, flow: Flow, *, origin: str,
              context: dict | None = None, language: str | None = None,
              transfer_id: str | None = None, agent_id: str | None = None,
              now: datetime | None = None, exact_context: dict | None = None) -> str:
    """Start the flow for this call (or return the first turn again on a retry).

    `exact_context` replays a start that was already served (from the spool) with the
    context it was served with, instead of looking the caller up again.
    """
    now = now or utcnow()
    run = session.scalar(select(FlowRun).where(FlowRun.call_sid == call.call_sid,
                                               FlowRun.origin == origin))
    if run is not None:
        return session.get(Turn, (run.id, 0)).twiml
    ctx.flows.ensure_stored(session, flow)
    if exact_context is not None:
        ctx_data = dict(exact_context)
    else:
        ctx_data = dict(context or {})
        if call.phone_hmac and consents.has_granted(session, call.phone_hmac):
            ctx_data["has_consent"] = True
    state, actions = e.start(flow, ctx_data, language)
    run = FlowRun(id=run_id_for(call.call_sid, origin), call_sid=call.call_sid, origin=origin,
                  flow_id=flow.id,
                  flow_version=flow.version, transfer_id=transfer_id, agent_id=agent_id,
                  state=state.to_dict(), step=0, created_at=now, updated_at=now,
                  heard={}, notice={})
    session.add(run)
    audit = [("call.started", call.call_sid,
              {"call_sid": call.call_sid, "run": run.id, "origin": origin,
               "phone": call.phone_hmac, "direction": call.direction, "to": call.to_number,
               "flow_id": flow.id, "flow_version": flow.version, "language": state.language,
               "context": ctx_data, "transfer_id": transfer_id, "agent_id": agent_id})]
    twiml, more = _apply(session, ctx, flow, run, call, state, actions, None, now)
    audit_store.append(session, audit + more, at=now)
    return twiml


def incoming(session: Session, ctx: Context, fields: CallFields, now: datetime | None = None,
             exact_context: dict | None = None) -> str:
    """The inbound-call webhook: record the call and start the default flow."""
    now = now or utcnow()
    call = get_or_create_call(session, ctx, fields)
    fill_parties(call, ctx, fields)
    if not call.seen_incoming:
        call.seen_incoming = True
        call.started_at = call.started_at or now
        call.answered_at = call.answered_at or now
        if call.status is None:
            call.status = _clip(fields.call_status, 32) or "in-progress"
        _order_times(call)
    return start_run(session, ctx, call, ctx.flows.default, origin="incoming", now=now,
                     exact_context=exact_context)


def gather(session: Session, ctx: Context, run_id: str, step: int | None, result: GatherInput,
           now: datetime | None = None) -> str:
    """A gather result: apply the keys (or the silence) to the run, once per step."""
    now = now or utcnow()
    run = session.get(FlowRun, run_id, with_for_update=True) if run_id else None
    if run is None or run.call_sid != result.call.call_sid:
        raise UnknownRun(run_id)
    if step is not None and step <= run.step:
        # A retry of a step we already took: the same answer again, nothing stored.
        turn = session.get(Turn, (run.id, step)) or session.get(Turn, (run.id, run.step))
        return turn.twiml
    if step is not None and step > run.step + 1:
        raise RunBehind(run_id)
    flow = ctx.flows.version(session, run.flow_version)
    state = e.State.from_dict(run.state)
    if state.ended:
        return session.get(Turn, (run.id, run.step)).twiml
    inp = digits_input(result.digits)
    state, actions = e.advance(flow, state, inp)
    call = session.get(Call, run.call_sid)
    twiml, audit = _apply(session, ctx, flow, run, call, state, actions, inp, now)
    audit_store.append(session, audit, at=now)
    return twiml


_RANK = {"queued": 0, "initiated": 1, "ringing": 2, "in-progress": 3, "answered": 3}


def _order_key(status: str | None, seq: int | None, ts: datetime | None):
    rank = 9 if status in TERMINAL else _RANK.get(status or "", 0)
    return (rank, seq if seq is not None else -1, ts.timestamp() if ts else 0.0)


def status(session: Session, ctx: Context, cb: StatusCallback,
           now: datetime | None = None) -> str:
    """A call status callback: keep the event, and move the call state in Twilio's order."""
    now = now or utcnow()
    sid = cb.call.call_sid
    call = get_or_create_call(session, ctx, cb.call)
    fill_parties(call, ctx, cb.call)
    st = _clip((cb.call.call_status or "").lower(), 32)
    seq = cb.sequence_number
    ts = cb.timestamp
    key = f"status:{seq}:{st}" if seq is not None else f"status:{st}:{cb.timestamp_text}"
    if session.scalar(select(CallEvent.id).where(CallEvent.call_sid == sid,
                                                 CallEvent.dedupe_key == key[:200])):
        return "duplicate"
    duration = cb.call_duration
    evidence = cb.evidence()
    session.add(CallEvent(call_sid=sid, kind="status", status=st, dedupe_key=key[:200],
                          sequence_number=seq, twilio_timestamp=ts, received_at=now,
                          data=evidence))
    event_time = ts or now
    if st in ("initiated", "ringing", "queued"):
        call.started_at = min(filter(None, [call.started_at, event_time]))
    if st in ("in-progress", "answered"):
        call.answered_at = min(filter(None, [call.answered_at, event_time]))
    if st in TERMINAL:
        call.ended_at = event_time
        if duration is not None:
            call.duration = duration
    _order_times(call)
    applied = _order_key(st, seq, ts) > _order_key(call.status, call.status_seq, call.status_at)
    if applied:
        call.status, call.status_seq, call.status_at = st, seq, ts
    audit = [("call.status", sid, {"call_sid": sid, "status": st, "sequence_number": seq,
                                   "timestamp": chain.iso(ts) if ts else None,
                                   "duration": duration, "applied": applied})]
    if st in TERMINAL:
        audit += _hang_up_runs(session, sid, now)
        for listener in ctx.listeners:
            audit += listener.on_call_ended(session, sid, now)
    audit_store.append(session, audit, at=now)
    return "applied" if applied else "stored"


def _hang_up_runs(session: Session, sid: str, now: datetime) -> list:
    """Mark the caller's open runs as hung up; a hang-up is never a consent."""
    out = []
    for run in session.scalars(select(FlowRun).where(FlowRun.call_sid == sid,
                                                     FlowRun.ended.is_(False),
                                                     FlowRun.hangup_at.is_(None))):
        run.hangup_at = now
        out.append(("input.received", sid, {"call_sid": sid, "run": run.id,
                                             "step": run.step + 1,
                                             "input": {"type": "hangup"}}))
    return out


RECORDING_ORDER = {"in-progress": 1, "completed": 2, "absent": 2, "failed": 2}


def recording(session: Session, ctx: Context, cb: RecordingCallback,
              now: datetime | None = None) -> str:
    """A recording status callback: keep its metadata (not the audio), even before the call."""
    now = now or utcnow()
    sid = cb.call.call_sid
    get_or_create_call(session, ctx, cb.call)
    rsid = cb.recording_sid or "unknown"
    st = _clip((cb.status or "").lower(), 32)
    key = f"recording:{rsid}:{st}"
    if session.scalar(select(CallEvent.id).where(CallEvent.call_sid == sid,
                                                 CallEvent.dedupe_key == key[:200])):
        return "duplicate"
    fields = cb.evidence()
    session.add(CallEvent(call_sid=sid, kind="recording", status=st, dedupe_key=key[:200],
                          received_at=now, data=fields))
    rec = session.get(Recording, rsid, with_for_update=True)
    if rec is None:
        rec = Recording(recording_sid=rsid, call_sid=sid)
        session.add(rec)
    if RECORDING_ORDER.get(st or "", 0) >= RECORDING_ORDER.get(rec.status or "", 0):
        rec.status = st
        rec.duration = cb.duration
        rec.channels = cb.channels
        rec.source = cb.source
        rec.track = cb.track
        rec.start_time = cb.start_time
        rec.url = cb.url
        rec.error_code = cb.error_code
        rec.updated_at = now
    audit_store.append(session, [("recording.status", sid, {
        "call_sid": sid, "recording_sid": rsid, "status": st, "duration": cb.duration,
        "channels": cb.channels, "source": cb.source, "track": cb.track,
        "start_time": cb.start_time_text, "url": cb.url, "error_code": cb.error_code})],
        at=now)
    return "stored"
