"""Calls go on while the database is unreachable.

Every gather URL carries the engine state (signed by Twilio together with the URL), so a
webhook can step the pure engine without reading the database. The turn is answered at
once and the request is spooled to local disk (ivr/storage/spool.py); when the database is back,
the spool is replayed through the normal verbs, in order (ivr/services/spool_replay.py), so
consents and the audit log come out exactly as if nothing had happened.
"""

from __future__ import annotations

from datetime import datetime

from ivr.domain.flow import engine as e
from ivr.domain.runs import digits_input, run_id_for
from ivr.domain.state_token import StateTokenError, read_token, read_transfer_token

from . import run_memory, turns
from .calls import start_context


class OfflineError(Exception):
    """The request cannot be answered without the database."""


def incoming(ctx, fields, now: datetime) -> tuple[str, dict]:
    """Answer an incoming call without the database; returns (TwiML, spool record)."""
    flow = ctx.flows.default
    # Who the caller is cannot be looked up now: no withdrawal offer. A hidden number is
    # known without the database, and is never asked, as when it is up.
    context = start_context(fields)
    state, actions = e.start(flow, context, None)
    run_id = run_id_for(fields.call_sid, "incoming")
    plan = turns.plan_turn(ctx, flow, run_id=run_id, call_sid=fields.call_sid, state=state,
                           actions=actions, inp=None, heard={}, notice={})
    return plan.twiml, {"kind": "incoming", "form": fields.form(), "context": context}


def gather(ctx, target, result, now: datetime) -> tuple[str, dict]:
    """Step the engine from the state in the URL; returns (TwiML, spool record)."""
    if not target.token or target.step is None:
        raise OfflineError("no state token in the gather URL")
    try:
        version, state, memory = read_token(target.token)
    except StateTokenError as exc:
        raise OfflineError(str(exc)) from None
    flow = ctx.flows.in_memory(version)
    if flow is None:
        raise OfflineError(f"flow version {version[:12]} is not loaded")
    if state.ended:
        raise OfflineError("the run had already ended")
    inp = digits_input(result.digits)
    state, actions = e.advance(flow, state, inp)
    known = run_memory.unpack(memory, ctx.renderer.audio)
    heard, notice = known or ({}, {})
    plan = turns.plan_turn(ctx, flow, run_id=target.run, call_sid=result.call.call_sid,
                           state=state, actions=actions, inp=inp, heard=heard, notice=notice,
                           remember=known is not None)
    record = {"kind": "gather", "run": target.run, "step": target.step, "form": result.form(),
              "state": target.token}
    return plan.twiml, record


def transfer(ctx, transfer_id: str, facts_token: str | None, fields,
             now: datetime) -> tuple[str, dict]:
    """Answer a transferred caller from the transfer's facts in the URL; returns (TwiML,
    spool record). The language spoken earlier and a standing grant cannot be looked up
    now: the transfer's own language (or the flow's) and no withdrawal offer."""
    if not facts_token:
        raise OfflineError("no transfer facts in the URL")
    try:
        facts = read_transfer_token(facts_token)
    except StateTokenError as exc:
        raise OfflineError(str(exc)) from None
    flow = ctx.flows.get(facts["flow_id"])
    if flow is None:
        raise OfflineError(f"flow {facts['flow_id']!r} is not loaded")
    context = {"return_to": facts["return_to"], "transfer_id": transfer_id,
               **start_context(fields)}
    state, actions = e.start(flow, context, facts["language"])
    run_id = run_id_for(fields.call_sid, f"transfer:{transfer_id}")
    plan = turns.plan_turn(ctx, flow, run_id=run_id, call_sid=fields.call_sid, state=state,
                           actions=actions, inp=None, heard={}, notice={})
    record = {"kind": "transfer", "transfer": transfer_id, "facts": facts_token,
              "form": fields.form(), "context": context, "language": state.language}
    return plan.twiml, record


def callback(kind: str, parsed) -> dict:
    """A status or recording callback to keep until the database is back."""
    return {"kind": kind, "form": parsed.form()}
