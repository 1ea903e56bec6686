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
from ..domain.pii import PersonalData, normalise_phone
from ..domain.runs import digits_input, run_id_for
from ..domain.twilio_form import CallFields, GatherInput, RecordingCallback, StatusCallback
from ..domain.vocabulary import TERMINAL
from ..storage.db import utcnow
from ..storage.flowstore import flows
from ..storage.models import Call, CallEvent, FlowRun, Recording, Turn
from . import consents, turns
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


@dataclass(frozen=True)
class Parties:
    """Who a webhook says the caller is (encrypted and fingerprinted) and our number."""

    phone_hmac: str | None
    phone_enc: str | None
    to_number: str | None
    direction: str | None


def parties(ctx: Context, fields: CallFields, encrypt: bool = True) -> Parties:
    """The caller and our number from a webhook's fields (the caller's number encrypted
    only when `encrypt`)."""
    direction = (fields.direction or "").lower()[:32] or None
    outbound = bool(direction and direction.startswith("outbound"))
    caller = fields.to_number if outbound else fields.from_number
    ours = fields.from_number if outbound else fields.to_number
    phone = normalise_phone(caller)
    return Parties(phone_hmac=ctx.pii.fingerprint(phone) if phone else None,
                   phone_enc=ctx.pii.encrypt(phone) if phone and encrypt else None,
                   to_number=_clip(normalise_phone(ours), 32), direction=direction)


def fill_parties(call: Call, ctx: Context, fields: CallFields) -> None:
    """Record the caller (encrypted and fingerprinted) and our number from a webhook, once."""
    p = parties(ctx, fields, encrypt=not call.phone_hmac)
    if p.phone_hmac and not call.phone_hmac:
        call.phone_hmac = p.phone_hmac
        call.phone_enc = p.phone_enc
    call.to_number = call.to_number or p.to_number
    call.direction = call.direction or p.direction


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
    plan = turns.plan_turn(ctx, flow, run_id=run.id, call_sid=call.call_sid, state=state,
                           actions=actions, inp=inp, heard=run.heard or {},
                           notice=run.notice or {})
    # The run's new state and the turn before anything below can flush (a consent does):
    # the run is then written with one UPDATE.
    run.heard = plan.heard
    run.notice = plan.notice
    run.state = state.to_dict()
    run.step = plan.step
    run.ended = state.ended
    run.updated_at = now
    session.add(Turn(run_id=run.id, step=plan.step, input=plan.input, actions=plan.actions,
                     twiml=plan.twiml, created_at=now))
    audit = list(plan.audit)
    if plan.decide is not None:
        values = turns.consent_values(plan, flow, run_id=run.id, call_sid=call.call_sid,
                                      phone_hmac=call.phone_hmac, phone_enc=call.phone_enc,
                                      agent_id=run.agent_id, transfer_id=run.transfer_id,
                                      captured_at=now)
        record = consents.record_decision(session, values)
        audit[audit.index(turns.CONSENT_ENTRY)] = turns.consent_entry(values, record.id)
    for listener in ctx.listeners:
        audit += listener.on_turn(session, run, actions, now)
    return plan.twiml, audit


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
                                                     FlowRun.hangup_at.is_(None))
                                              .order_by(FlowRun.created_at, FlowRun.id)):
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
