"""The webhooks' application verbs: each works out in Python what its webhook writes (the
engine's step, the TwiML, the audit leaves) and hands it to the webhook's database function
(ivr/storage/webhook_functions.py, sql/webhook_functions.sql), which checks the stored rows
and writes everything in one autocommitted statement. There is no other write path: live
webhooks and the spool's replays (ivr/services/spool_replay.py) call these same verbs.

Where a turn depends on what is stored, the verb plans each possibility (a caller with a
standing grant or without; each language a transferred caller may have spoken) and the
function picks. A value only the database knows stands in a leaf as a hole (`hole(key)`),
which the function fills. A run that is not where the URL says (or a URL that carries no
state, as a spooled gather or one made before the state travelled in URLs) is answered
'stale' with the stored run, and the turn is planned again from it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from ivr.domain.flow import Flow
from ivr.domain.flow import engine as e
from ivr.domain.flow.model import HIDDEN_CALLER
from ivr.domain.runs import digits_input, run_id_for
from ivr.domain.state_token import StateTokenError, read_token, read_transfer_token
from ivr.domain.times import AUDIT, utc_iso
from ivr.domain.twilio_form import CallFields, GatherInput, RecordingCallback, StatusCallback
from ivr.domain.vocabulary import (
    CHANNELS,
    DECISIVE,
    TERMINAL,
    TRANSFER_ACTIVE,
    TRANSFER_MOVES,
    Decision,
)
from ivr.domain.vocabulary import TransferStatus as T
from ivr.storage import webhook_functions as fn
from ivr.storage.audit_store import leaf_columns

from . import run_memory, turns
from .calls import RANK, RECORDING_ORDER, Context, clip, parties, start_context
from .transfers import END_OF_CALL_FAILURES, origin

_RANKS = {**RANK, **{status: 9 for status in TERMINAL}}
_DECISIVE = list(DECISIVE)
_CHANNELS = list(CHANNELS)
_TERMINAL = sorted(TERMINAL)
_STARTING = ["initiated", "ringing", "queued"]
_ANSWERING = ["in-progress", "answered"]
_MOVES = {status.value: sorted(m.value for m in moves) for status, moves in TRANSFER_MOVES.items()}
_RETURNS = (e.Enqueue, e.Dial, e.Hangup)
_PLANS_TRIED = 3  # a run found 'stale' is planned again from what is stored, this often


class UnknownRun(Exception):
    """A gather for a run (or a transfer) that does not exist or belongs to another call."""


class RunBehind(Exception):
    """A gather for a step the stored run has not reached yet (earlier steps are still in a
    spool somewhere): it must wait, never be dropped."""


def hole(key: str) -> str:
    """A leaf value only the database knows: the function writes `"key":<its JSON>` there."""
    return f"@@{key}@@"


@dataclass(frozen=True)
class Answer:
    """What the statement did: 'ok' (TwiML in `body`), 'retry' (the stored answer in
    `body`), or a callback's 'applied' | 'stored' | 'duplicate'; and the committed facts the
    metrics count (ivr/web/metrics.py: count_facts)."""

    outcome: str
    body: str | None
    facts: list[tuple] = field(default_factory=list)


def _leaves(entries: list[tuple], now: datetime) -> list[dict]:
    """The leaves as their function queues them (ivr_queue_leaves): kind, ref, body."""
    kinds, refs, bodies = leaf_columns(entries, now)
    return [{"k": k, "r": r, "b": b} for k, r, b in zip(kinds, refs, bodies, strict=True)]


def _run(ctx: Context, args: fn.Webhook):
    return fn.call(ctx.engine, args)


# --- starting a run: /voice/incoming and /voice/transfer ---------------------------------

def _start_plan(ctx: Context, flow: Flow, *, sid: str, run_id: str, origin_: str,
                context: dict, language: str | None, now: datetime,
                transfer_id: str | None = None) -> dict:
    """The first turn of a run as its function takes it."""
    state, actions = e.start(flow, context, language)
    if any(isinstance(a, (e.Decide, *_RETURNS)) for a in actions):
        raise e.EngineError(f"flow {flow.id}: the first turn cannot decide or end the call")
    plan = turns.plan_turn(ctx, flow, run_id=run_id, call_sid=sid, state=state,
                           actions=actions, inp=None, heard={}, notice={})
    started = ("call.started", sid, {
        "call_sid": sid, "run": run_id, "origin": origin_, "phone": hole("phone"),
        "direction": hole("direction"), "to": hole("to"), "flow_id": flow.id,
        "flow_version": flow.version, "language": state.language, "context": context,
        "transfer_id": transfer_id, "agent_id": hole("agent_id") if transfer_id else None})
    return {"state": state.to_dict(), "ended": state.ended, "heard": plan.heard,
            "notice": plan.notice, "actions": plan.actions, "twiml": plan.twiml,
            "leaves": _leaves([started, *plan.audit], now)}


# Most turns are the same for every caller but for the CallSid, the run and the time: every
# caller's first turn of a flow, and each turn a gather URL's state leads to. Each is planned
# once per (flow, state, input, audio set) with a mark where those three go, kept as JSON,
# and filled in by replacing the marks. A CallSid of letters and digits (as Twilio's are;
# another is planned in full), a run's hex id and a time's ISO text need no escaping.
_MARK_SID, _MARK_RUN = "CAivrMarkOfTheCallSid", "ivrMarkOfTheRun"
_MARK_TIME = datetime(1901, 2, 3, 4, 5, 6, 789012, tzinfo=UTC)
_MARK_ISO = utc_iso(_MARK_TIME, AUDIT)
_PLAIN_SID = re.compile(r"[A-Za-z0-9]{1,64}")
_TEMPLATES_MAX = 1024
_templates: dict[tuple, tuple] = {}


def _kept(ctx: Context, flow: Flow, key: tuple, plan):
    """The template kept under `key` for this renderer and flow, planned by `plan()` (which
    returns the JSON-able plan first, then what else the turn keeps) if missing."""
    key = (id(ctx.renderer), id(flow), ctx.renderer.audio.current_generation(), *key)
    kept = _templates.get(key)
    if kept is None or kept[0] is not ctx.renderer or kept[1] is not flow:
        planned, *rest = plan()
        if len(_templates) >= _TEMPLATES_MAX:
            _templates.clear()
        kept = _templates[key] = (ctx.renderer, flow, orjson.dumps(planned).decode(), *rest)
    return kept


def _filled(template: str, sid: str, run_id: str, now: datetime) -> orjson.Fragment:
    return orjson.Fragment(template.replace(_MARK_SID, sid).replace(_MARK_RUN, run_id)
                           .replace(_MARK_ISO, utc_iso(now, AUDIT)))


def _first_turn(ctx: Context, flow: Flow, *, sid: str, run_id: str, context: dict,
                now: datetime) -> orjson.Fragment:
    """`_start_plan` of an incoming call as JSON, from the flow's template."""
    def plan(sid_: str, run_: str, now_: datetime) -> tuple[dict]:
        return (_start_plan(ctx, flow, sid=sid_, run_id=run_, origin_="incoming",
                            context=context, language=None, now=now_),)

    if not _PLAIN_SID.fullmatch(sid):
        return orjson.Fragment(orjson.dumps(plan(sid, run_id, now)[0]))
    kept = _kept(ctx, flow, ("start", orjson.dumps(context, option=orjson.OPT_SORT_KEYS)),
                 lambda: plan(_MARK_SID, _MARK_RUN, _MARK_TIME))
    return _filled(kept[2], sid, run_id, now)


def _caller(ctx: Context, fields: CallFields, sid: str, token: str | None, path: str,
            now: datetime, label: str) -> dict:
    who = parties(ctx, fields)
    return {"token": token, "path": path[:200], "now": now, "sid": sid, "label": label,
            "account": clip(fields.account_sid), "phone_hmac": who.phone_hmac,
            "phone_enc": who.phone_enc, "to": who.to_number, "direction": who.direction,
            "status": clip(fields.call_status, 32) or "in-progress"}


def _starts(ctx: Context, flow: Flow, run_id: str, origin_: str) -> dict:
    return {"run": run_id, "origin": origin_, "flow_id": flow.id,
            "flow_version": flow.version, "flow_row": ctx.flows.row_to_store(flow),
            "decisive": _DECISIVE, "channels": _CHANNELS, "granted": Decision.GRANTED.value}


def _started(ctx: Context, flow: Flow, row, origin_: str) -> Answer:
    if row.outcome == "retry":
        return Answer("retry", row.response)
    ctx.flows.stored(flow)
    if row.outcome == "repeat":
        return Answer("ok", row.response)
    return Answer("ok", row.response, [("call_started", origin_)])


def incoming(ctx: Context, fields: CallFields, now: datetime, token: str | None, path: str,
             label: str = "ok", exact_context: dict | None = None) -> Answer:
    """/voice/incoming: a call starts the default flow; a caller with a standing grant is
    offered the withdrawal, and a caller with no phone number (hidden, `Anonymous`, SIP)
    hears the notice and why no choice can be recorded. `exact_context` replays a start
    already answered (from the spool) with the context it was answered with."""
    flow = ctx.flows.default
    sid = fields.call_sid
    run_id = run_id_for(sid, "incoming")
    caller = _caller(ctx, fields, sid, token, path, now, label)
    # A caller with no phone number to hold a choice is planned one way only: the notice,
    # then why nothing can be recorded. No grant is looked up for them.
    context = start_context(fields)
    hidden = HIDDEN_CALLER in context

    def plan(context: dict) -> orjson.Fragment:
        return _first_turn(ctx, flow, sid=sid, run_id=run_id, context=context, now=now)

    plain = plan(dict(exact_context) if exact_context is not None else context)
    lookup = exact_context is None and not hidden
    consenter = plan({"has_consent": True}) if lookup else None
    args = fn.Incoming(**caller, **_starts(ctx, flow, run_id, "incoming"),
                       plain=plain, consenter=consenter, lookup=lookup)
    return _started(ctx, flow, _run(ctx, args), "incoming")


def transfer(ctx: Context, transfer_id: str, url_token: str | None, fields: CallFields,
             now: datetime, token: str | None, path: str, label: str = "ok",
             exact: dict | None = None) -> Answer:
    """/voice/transfer: the transferred caller starts the transfer's flow (planned for each
    language they may have spoken), and the transfer is in the flow. `exact` ({"context",
    "language"}) replays a start already answered (from the spool) as it was answered."""
    sid = fields.call_sid
    caller = _caller(ctx, fields, sid, token, path, now, label)
    known = start_context(fields)
    hidden = HIDDEN_CALLER in known
    try:
        facts = read_transfer_token(url_token) if url_token else None
    except StateTokenError:
        facts = None
    for _ in range(_PLANS_TRIED):
        flow_id, language, return_to = (facts["flow_id"], facts["language"],
                                        facts["return_to"]) if facts else (None, None, None)
        flow = ctx.flows.get(flow_id) if flow_id else ctx.flows.default
        if flow is None:
            raise UnknownRun(f"transfer {transfer_id}: flow {flow_id!r} is not loaded")
        origin_ = origin(transfer_id)
        run_id = run_id_for(sid, origin_)
        context = {"return_to": return_to, "transfer_id": transfer_id, **known}
        languages = [language] if language else list(flow.languages)
        default = flow.default_language
        if exact is not None:
            context, languages = dict(exact["context"]), [exact["language"]]
            default = exact["language"]
        plain: dict[str, dict] = {}
        consenter: dict[str, dict] = {}
        if facts:
            for lang in languages:
                plain[lang] = _start_plan(ctx, flow, sid=sid, run_id=run_id, origin_=origin_,
                                          context=context, language=lang, now=now,
                                          transfer_id=transfer_id)
                if exact is None and not hidden:
                    consenter[lang] = _start_plan(
                        ctx, flow, sid=sid, run_id=run_id, origin_=origin_,
                        context={**context, "has_consent": True}, language=lang, now=now,
                        transfer_id=transfer_id)
        in_flow = ("transfer.in_flow", sid, {
            "transfer_id": transfer_id, "call_sid": sid, "agent_id": hole("agent_id"),
            "status": T.IN_FLOW.value, "run": run_id, "after_failure": hole("after_failure")})
        args = fn.Transfer(**caller, **_starts(ctx, flow, run_id, origin_),
                           plain=plain, consenter=consenter,
                           lookup=exact is None and not hidden,
                           transfer_id=transfer_id, language=language,
                           return_to=return_to if facts else None, default_language=default,
                           enters=[T.REQUESTED.value, T.FAILED.value], failed=T.FAILED.value,
                           in_flow=T.IN_FLOW.value, in_flow_leaves=_leaves([in_flow], now))
        row = _run(ctx, args)
        if row.outcome == "unknown":
            raise UnknownRun(f"transfer {transfer_id}")
        if row.outcome != "stale":
            return _started(ctx, flow, row, "transfer")
        facts = json.loads(row.response)
    raise RuntimeError(f"transfer {transfer_id}: its facts kept changing while planned")


# --- a turn: /voice/gather -----------------------------------------------------------------

@dataclass
class _Before:
    """Where the run stands before this turn (from the URL, or as stored)."""

    step: int
    flow: Flow
    state: e.State
    heard: dict
    notice: dict
    transfer_id: str | None


def _from_url(ctx: Context, step: int | None, state_token: str | None) -> _Before | None:
    """Where the URL says the run stands, or None when it does not say (or is not read)."""
    if not state_token or step is None:
        return None
    try:
        version, state, memory = read_token(state_token)
    except StateTokenError:
        return None
    known = run_memory.unpack(memory, ctx.renderer.audio)
    flow = ctx.flows.in_memory(version)
    if known is None or flow is None:
        return None
    heard, notice = known
    return _Before(step, flow, state, heard, notice, state.context.get("transfer_id"))


def _from_stored(ctx: Context, step: int | None, stored: dict) -> _Before:
    return _Before(step if step is not None else stored["step"] + 1,
                   ctx.flows.load(ctx.engine, stored["flow_version"]),
                   e.State.from_dict(stored["state"]), stored["heard"] or {},
                   stored["notice"] or {}, stored["transfer_id"])


def _turn(ctx: Context, b: _Before, run_id: str, sid: str, result: GatherInput,
          now: datetime) -> tuple[dict, dict | None, list[str], list[dict], list[tuple]]:
    """Plan the turn: (plan, consent, transfer moves, transfer leaves, facts)."""
    flow = b.flow
    inp = digits_input(result.digits)
    state, actions = e.advance(flow, b.state, inp)
    plan = turns.plan_turn(ctx, flow, run_id=run_id, call_sid=sid, state=state,
                           actions=actions, inp=inp, heard=b.heard, notice=b.notice)
    facts: list[tuple] = []
    if isinstance(inp, e.Digits):
        facts.append(("gather", "digits", e.digits_chose(flow, b.state.to_dict(), inp.value)))
    else:  # a gather's input is keys or silence, never a hang-up
        facts.append(("gather", "timeout", False))
    audit = list(plan.audit)
    consent = None
    agent = hole("agent_id") if b.transfer_id else None
    if plan.decide is not None:
        if b.state.context.get(HIDDEN_CALLER):  # the engine refuses this first
            raise e.EngineError(f"run {run_id}: a hidden caller cannot decide")
        values = turns.consent_values(plan, flow, run_id=run_id, call_sid=sid,
                                      phone_hmac=hole("phone"), phone_enc=None,
                                      agent_id=agent, transfer_id=b.transfer_id,
                                      captured_at=now)
        audit[audit.index(turns.CONSENT_ENTRY)] = turns.consent_entry(values,
                                                                      hole("consent_id"))
        consent = {k: values[k] for k in ("decision", "purpose", "channels", "digits",
                                          "language", "notice_version", "audio")}
        facts.append(("consent", values["decision"]))
    moves: list[str] = []
    moved: list[tuple] = []
    if b.transfer_id:
        facts_of = {"transfer_id": b.transfer_id, "call_sid": sid, "agent_id": agent}
        for a in actions:
            if isinstance(a, e.Decide):
                moves.append(T.DECIDED.value)
                moved.append(("transfer.decided", sid, {
                    **facts_of, "status": T.DECIDED.value, "decision": a.decision,
                    "consent_id": hole("consent_id"), "run": run_id}))
            elif isinstance(a, _RETURNS):
                moves.append(T.RETURNED.value)
                moved.append(("transfer.returned", sid, {
                    **facts_of, "status": T.RETURNED.value,
                    "return_to": (state.context.get("return_to") or {}).get("type"),
                    "run": run_id}))
    payload = {"state": state.to_dict(), "ended": state.ended, "heard": plan.heard,
               "notice": plan.notice, "input": plan.input, "actions": plan.actions,
               "twiml": plan.twiml, "leaves": _leaves(audit, now)}
    return payload, consent, moves, _leaves(moved, now), facts


def _planned_turn(ctx: Context, b: _Before, run_id: str, sid: str, result: GatherInput,
                  now: datetime, state_token: str | None) -> tuple:
    """`_turn` with the plan as JSON and the state before it: from the template of the
    turn the URL's state leads to (see _kept), if `b` came from that URL's `state_token`."""
    if state_token is None or b.transfer_id is not None or not _PLAIN_SID.fullmatch(sid):
        plan, *rest = _turn(ctx, b, run_id, sid, result, now)
        return orjson.Fragment(orjson.dumps(plan)), *rest, b.state.to_dict()
    kept = _kept(ctx, b.flow, ("turn", state_token, b.step, result.digits), lambda: (
        *_turn(ctx, b, _MARK_RUN, _MARK_SID, result, _MARK_TIME), b.state.to_dict()))
    return _filled(kept[2], sid, run_id, now), *kept[3:]


def gather(ctx: Context, run_id: str, step: int | None, state_token: str | None,
           result: GatherInput, now: datetime, token: str | None, path: str,
           label: str = "ok") -> Answer:
    """/voice/gather: the keys (or the silence) for one step of a run, once per step."""
    sid = result.call.call_sid
    before = _from_url(ctx, step, state_token)
    for attempt in range(_PLANS_TRIED):
        plan, consent, moves, moved, facts, state_before = (
            _planned_turn(ctx, before, run_id, sid, result, now,
                          state_token if attempt == 0 else None)
            if before is not None else (None, None, [], [], [], None))
        args = fn.Gather(
            token=token, path=path[:200], now=now, sid=sid, label=label, run=run_id,
            step=before.step if before is not None else step,
            flow_version=before.flow.version if before is not None else None,
            transfer_id=before.transfer_id if before is not None else None,
            state_before=state_before,
            heard_before=before.heard if before is not None else None,
            notice_before=before.notice if before is not None else None, plan=plan,
            consent=consent, transfer_moves=moves, transfer_leaves=moved, moves=_MOVES,
            decided=T.DECIDED.value, returned=T.RETURNED.value)
        row = _run(ctx, args)
        if row.outcome == "unknown":
            raise UnknownRun(run_id)
        if row.outcome == "behind":
            raise RunBehind(run_id)
        if row.outcome == "retry":
            return Answer("retry", row.response)
        if row.outcome == "repeat":
            return Answer("ok", row.response)
        if row.outcome != "stale":
            return Answer("ok", row.response, facts)
        before = _from_stored(ctx, step, json.loads(row.response))
    raise RuntimeError(f"run {run_id}: it kept moving while its turn was planned")


# --- callbacks: /voice/status and /voice/recording ------------------------------------------

def status(ctx: Context, cb: StatusCallback, now: datetime, token: str | None, path: str,
           label: str = "ok") -> Answer:
    """/voice/status: keep the event, move the call in Twilio's order; at its end, hang up
    its open runs and fail its transfers on their way."""
    sid = cb.call.call_sid
    st = clip((cb.call.call_status or "").lower(), 32)
    seq, ts = cb.sequence_number, cb.timestamp
    key = f"status:{seq}:{st}" if seq is not None else f"status:{st}:{cb.timestamp_text}"
    data = {"call_sid": sid, "status": st, "sequence_number": seq,
            "timestamp": utc_iso(ts, AUDIT) if ts else None, "duration": cb.call_duration}
    _k, _r, (applied, stored) = leaf_columns([("call.status", sid, {**data, "applied": True}),
                                              ("call.status", sid, {**data, "applied": False})],
                                             now)
    hangup_body, failures = None, None
    if st in TERMINAL:  # the end of the call: its open runs hang up, its transfers fail
        hangup = ("input.received", sid, {"call_sid": sid, "run": hole("run"),
                                           "step": hole("step"), "input": {"type": "hangup"}})
        ends = {status_: ("transfer.failed", sid, {
            "transfer_id": hole("transfer_id"), "call_sid": sid, "agent_id": hole("agent_id"),
            "status": T.FAILED.value, "reason": reason, "message": message,
            "twilio_code": None}) for status_, (reason, message) in END_OF_CALL_FAILURES.items()}
        _k, _r, (hangup_body, *bodies) = leaf_columns([hangup, *ends.values()], now)
        failures = {s: {"reason": r, "message": m, "body": b} for (s, (r, m)), b
                    in zip(END_OF_CALL_FAILURES.items(), bodies, strict=True)}
    args = fn.Status(
        **_caller(ctx, cb.call, sid, token, path, now, label) | {"status": st},
        seq=seq, ts=ts, duration=cb.call_duration, key=key[:200], data=cb.evidence(),
        ranks=_RANKS, terminal=_TERMINAL, starting=_STARTING, answering=_ANSWERING,
        body_applied=applied, body_stored=stored, hangup_body=hangup_body,
        active_transfers=list(TRANSFER_ACTIVE), failed=T.FAILED.value,
        transfer_failures=failures)
    row = _run(ctx, args)
    if row.outcome == "retry":
        return Answer("retry", None)
    return Answer(row.outcome, None,
                  [("call_completed", row.final_status)] if row.ended_now else [])


def recording(ctx: Context, cb: RecordingCallback, now: datetime, token: str | None,
              path: str, label: str = "ok") -> Answer:
    """/voice/recording: keep the recording's metadata (not the audio), even before the
    call is known."""
    sid = cb.call.call_sid
    rsid = cb.recording_sid or "unknown"
    st = clip((cb.status or "").lower(), 32)
    _k, _r, (body,) = leaf_columns([("recording.status", sid, {
        "call_sid": sid, "recording_sid": rsid, "status": st, "duration": cb.duration,
        "channels": cb.channels, "source": cb.source, "track": cb.track,
        "start_time": cb.start_time_text, "url": cb.url, "error_code": cb.error_code})], now)
    args = fn.Recording(
        token=token, path=path[:200], now=now, sid=sid, label=label,
        account=clip(cb.call.account_sid), recording=rsid, status=st,
        key=f"recording:{rsid}:{st}"[:200], data=cb.evidence(), order=RECORDING_ORDER,
        duration=cb.duration, channels=cb.channels, source=cb.source, track=cb.track,
        start=cb.start_time, url=cb.url, error=cb.error_code, body=body)
    row = _run(ctx, args)
    return Answer(row.outcome, None)
