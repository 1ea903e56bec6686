"""The four webhooks in one statement each on PostgreSQL (issue 14).

Each function here works out in Python what the ORM verb of ivr/services/calls.py would
write (the engine's step, the TwiML, the audit leaves) and hands it to the webhook's
database function (ivr/storage/webhook_functions.py), which checks the stored rows and
writes everything in one autocommitted statement. It returns a FastAnswer, or None when the
webhook must take the ORM path: SQLite, a run the URL does not describe, a transfer, a
caller whose granted consent changes the flow, a listener that must always be asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from flask import current_app

from ..audit.chain import iso
from ..domain.flow import engine as e
from ..domain.runs import digits_input, run_id_for
from ..domain.state_token import StateTokenError, read_token
from ..domain.twilio_form import CallFields, GatherInput, RecordingCallback, StatusCallback
from ..domain.vocabulary import DECISIVE, TERMINAL, Decision
from ..storage import fast_webhooks
from ..storage.audit_store import leaf_columns
from ..storage.db import database
from . import run_memory, turns
from .calls import _RANK, RECORDING_ORDER, Context, _clip, parties
from .kvkk.status import CHANNELS

# Placeholders for what only the database knows; a JSON string value cannot hold them
# (its quotes would be escaped), so each is found exactly where it was put.
CONSENT_ID = -7_401_550_120_001
_CONSENT_NEEDLE = f'"consent_id":{CONSENT_ID}'
_RUN = "@@hung-up-run@@"
_RUN_NEEDLE = f'"run":"{_RUN}"'
_STEP = -7_401_550_120_002
_STEP_NEEDLE = f'"step":{_STEP}'
_RANKS = {**_RANK, **{status: 9 for status in TERMINAL}}
_RECORDING_ORDER = dict(RECORDING_ORDER)
_DECISIVE = list(DECISIVE)
_CHANNELS = list(CHANNELS)
_TERMINAL = list(TERMINAL)
_STARTING = ["initiated", "ringing", "queued"]
_ANSWERING = ["in-progress", "answered"]


@dataclass(frozen=True)
class FastAnswer:
    """What the statement did: 'ok' (TwiML in `body`), 'retry' (the stored answer in
    `body`), or a callback's 'applied' | 'stored' | 'duplicate'; and the committed facts the
    metrics count (ivr/web/metrics.py: count_facts)."""

    outcome: str
    body: str | None
    facts: list[tuple] = field(default_factory=list)


def enabled(ctx: Context) -> bool:
    """Whether this app's webhooks can take the one-statement path (IVR_WEBHOOK_FUNCTIONS
    on, the data keys checked, PostgreSQL at migration 0007, every call listener able to
    say when it is quiet)."""
    if current_app.config.get("WEBHOOK_FUNCTIONS", "on") == "off":
        return False
    # The data keys are checked at a process's first transaction (ivr/storage/keycheck.py):
    # until then the ORM path runs, so a wrong key still fails before anything is stored.
    guard = current_app.extensions.get("ivr_keyguard")
    if guard is not None and not guard.verified:
        return False
    if any(listener.quiet_without_transfers is None for listener in ctx.listeners):
        return False
    return fast_webhooks.available(database())


def _transfer_statuses(ctx: Context) -> list[str] | None:
    statuses = sorted({s for listener in ctx.listeners
                       for s in listener.quiet_without_transfers or ()})
    return statuses or None


def _leaves(entries: list[tuple], now: datetime, needle: str | None = None
            ) -> list[list] | None:
    """The [kind, ref, body] rows ivr_queue_leaves takes; None when `needle` is not in
    exactly one body."""
    kinds, refs, bodies = leaf_columns(entries, now)
    if needle is not None and sum(b.count(needle) for b in bodies) != 1:
        return None
    return [list(leaf) for leaf in zip(kinds, refs, bodies, strict=True)]


def _base(token: str | None, path: str, now: datetime, sid: str) -> dict:
    return {"p_token": token, "p_path": path[:200], "p_now": now, "p_sid": sid}


def _answer(row, facts: list[tuple], twiml: str | None = None) -> FastAnswer | None:
    """The row's answer: the stored response for a retry, else `twiml` (this turn's)."""
    if row.outcome == "slow":
        return None
    if row.outcome == "retry":
        return FastAnswer("retry", row.response, [])
    return FastAnswer(row.outcome, twiml, facts)


def _run(function: str, params: dict, facts: list[tuple],
         twiml: str | None = None) -> FastAnswer | None:
    return _answer(fast_webhooks.call(database().engine, function, params), facts, twiml)


def incoming(ctx: Context, fields: CallFields, now: datetime, token: str | None,
             path: str) -> FastAnswer | None:
    """/voice/incoming: a new call starts the default flow."""
    flow = ctx.flows.default
    sid = fields.call_sid
    state, actions = e.start(flow, {}, None)
    if any(isinstance(a, e.Decide) for a in actions):
        return None
    run_id = run_id_for(sid, "incoming")
    plan = turns.plan_turn(ctx, flow, run_id=run_id, call_sid=sid, state=state,
                           actions=actions, inp=None, heard={}, notice={})
    who = parties(ctx, fields)
    started = ("call.started", sid,
               {"call_sid": sid, "run": run_id, "origin": "incoming", "phone": who.phone_hmac,
                "direction": who.direction, "to": who.to_number, "flow_id": flow.id,
                "flow_version": flow.version, "language": state.language, "context": {},
                "transfer_id": None, "agent_id": None})
    params = _base(token, path, now, sid) | {
        "p_account": _clip(fields.account_sid), "p_phone_hmac": who.phone_hmac,
        "p_phone_enc": who.phone_enc, "p_to": who.to_number, "p_direction": who.direction,
        "p_status": _clip(fields.call_status, 32) or "in-progress",
        "p_decisive": _DECISIVE, "p_channels": _CHANNELS,
        "p_granted": Decision.GRANTED.value, "p_run": run_id, "p_origin": "incoming",
        "p_flow_id": flow.id, "p_flow_version": flow.version,
        "p_state": state.to_dict(), "p_ended": state.ended,
        "p_heard": plan.heard, "p_notice": plan.notice,
        "p_actions": plan.actions, "p_twiml": plan.twiml,
        "p_leaves": _leaves([started, *plan.audit], now)}
    return _run("ivr_webhook_incoming", params, [("call_started", "incoming")], plan.twiml)


def gather(ctx: Context, run_id: str, step: int | None, state_token: str | None,
           result: GatherInput, now: datetime, token: str | None,
           path: str) -> FastAnswer | None:
    """/voice/gather: the next turn of a run that is where its URL says."""
    if not state_token or step is None or not run_id:
        return None
    try:
        version, before, memory = read_token(state_token)
    except StateTokenError:
        return None
    known = run_memory.unpack(memory, ctx.renderer.audio)
    flow = ctx.flows.in_memory(version)
    if known is None or flow is None or before.ended:
        return None
    heard, notice = known
    sid = result.call.call_sid
    inp = digits_input(result.digits)
    state, actions = e.advance(flow, before, inp)
    if state.step != step:
        return None
    plan = turns.plan_turn(ctx, flow, run_id=run_id, call_sid=sid, state=state,
                           actions=actions, inp=inp, heard=heard, notice=notice)
    before_data = before.to_dict()
    facts: list[tuple] = []
    if isinstance(inp, e.Timeout):
        facts.append(("gather", "timeout", False))
    else:
        facts.append(("gather", "digits", e.digits_chose(flow, before_data, inp.value)))
    audit = list(plan.audit)
    consent = {"p_decision": None, "p_phone_hmac": None, "p_purpose": None,
               "p_channels": None, "p_digits": None, "p_language": None,
               "p_notice_version": None, "p_audio": None, "p_needle": None}
    if plan.decide is not None:
        phone_hmac = parties(ctx, result.call, encrypt=False).phone_hmac
        values = turns.consent_values(plan, flow, run_id=run_id, call_sid=sid,
                                      phone_hmac=phone_hmac, phone_enc=None, agent_id=None,
                                      transfer_id=None, captured_at=now)
        audit[audit.index(turns.CONSENT_ENTRY)] = turns.consent_entry(values, CONSENT_ID)
        consent = {"p_decision": values["decision"], "p_phone_hmac": phone_hmac,
                   "p_purpose": values["purpose"], "p_channels": values["channels"],
                   "p_digits": values["digits"], "p_language": values["language"],
                   "p_notice_version": values["notice_version"],
                   "p_audio": values["audio"], "p_needle": _CONSENT_NEEDLE}
        facts.append(("consent", values["decision"]))
    leaves = _leaves(audit, now, consent["p_needle"])
    if leaves is None:
        return None
    params = _base(token, path, now, sid) | consent | {
        "p_run": run_id, "p_step": step, "p_flow_version": flow.version,
        "p_state_before": before_data, "p_heard_before": heard,
        "p_notice_before": notice, "p_state": state.to_dict(),
        "p_ended": state.ended, "p_heard": plan.heard, "p_notice": plan.notice,
        "p_input": plan.input, "p_actions": plan.actions,
        "p_twiml": plan.twiml, "p_leaves": leaves}
    return _run("ivr_webhook_gather", params, facts, plan.twiml)


def status(ctx: Context, cb: StatusCallback, now: datetime, token: str | None,
           path: str) -> FastAnswer | None:
    """/voice/status: a call status callback."""
    sid = cb.call.call_sid
    # Its call almost always knows the caller already (the incoming webhook stored the
    # number): not encrypted here; the function sends the rare other case to the ORM verb.
    who = parties(ctx, cb.call, encrypt=False)
    st = _clip((cb.call.call_status or "").lower(), 32)
    seq, ts = cb.sequence_number, cb.timestamp
    key = f"status:{seq}:{st}" if seq is not None else f"status:{st}:{cb.timestamp_text}"
    data = {"call_sid": sid, "status": st, "sequence_number": seq,
            "timestamp": iso(ts) if ts else None, "duration": cb.call_duration}
    hangup = ("input.received", sid, {"call_sid": sid, "run": _RUN, "step": _STEP,
                                       "input": {"type": "hangup"}})
    _k, _r, (applied, hangup_body) = leaf_columns(
        [("call.status", sid, {**data, "applied": True}), hangup], now)
    # The same body with "applied": false (the key is written once, and no string value
    # can hold it unescaped); encoded afresh if that ever does not hold.
    if applied.count('"applied":true') == 1:
        stored = applied.replace('"applied":true', '"applied":false')
    else:
        _k, _r, (stored,) = leaf_columns([("call.status", sid, {**data, "applied": False})],
                                         now)
    if hangup_body.count(_RUN_NEEDLE) != 1 or hangup_body.count(_STEP_NEEDLE) != 1:
        return None
    params = _base(token, path, now, sid) | {
        "p_account": _clip(cb.call.account_sid), "p_phone_hmac": who.phone_hmac,
        "p_phone_enc": who.phone_enc, "p_to": who.to_number, "p_direction": who.direction,
        "p_status": st, "p_seq": seq, "p_ts": ts, "p_duration": cb.call_duration,
        "p_key": key[:200], "p_data": cb.evidence(), "p_ranks": _RANKS,
        "p_terminal": _TERMINAL, "p_starting": _STARTING, "p_answering": _ANSWERING,
        "p_active_transfers": _transfer_statuses(ctx), "p_body_applied": applied,
        "p_body_stored": stored, "p_hangup_kind": "input.received",
        "p_hangup_body": hangup_body, "p_run_needle": _RUN_NEEDLE,
        "p_step_needle": _STEP_NEEDLE}
    row = fast_webhooks.call(database().engine, "ivr_webhook_status", params)
    facts = [("call_completed", row.final_status)] if row.ended_now else []
    return _answer(row, facts)


def recording(ctx: Context, cb: RecordingCallback, now: datetime, token: str | None,
              path: str) -> FastAnswer | None:
    """/voice/recording: a recording status callback."""
    sid = cb.call.call_sid
    rsid = cb.recording_sid or "unknown"
    st = _clip((cb.status or "").lower(), 32)
    key = f"recording:{rsid}:{st}"
    _k, _r, (body,) = leaf_columns([("recording.status", sid, {
        "call_sid": sid, "recording_sid": rsid, "status": st, "duration": cb.duration,
        "channels": cb.channels, "source": cb.source, "track": cb.track,
        "start_time": cb.start_time_text, "url": cb.url, "error_code": cb.error_code})], now)
    params = _base(token, path, now, sid) | {
        "p_account": _clip(cb.call.account_sid), "p_recording": rsid, "p_status": st,
        "p_key": key[:200], "p_data": cb.evidence(), "p_order": _RECORDING_ORDER,
        "p_duration": cb.duration, "p_channels": cb.channels, "p_source": cb.source,
        "p_track": cb.track, "p_start": cb.start_time, "p_url": cb.url,
        "p_error": cb.error_code, "p_body": body}
    return _run("ivr_webhook_recording", params, [])
