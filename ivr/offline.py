"""Calls go on while the database is unreachable.

Every gather URL carries the engine state (signed by Twilio together with the URL), so a
webhook can step the pure engine without reading the database. The turn is answered at
once and the request is spooled to local disk (ivr/spool.py); when the database is back,
the spool is replayed through the normal verbs, in order, so consents and the audit chain
come out exactly as if nothing had happened.
"""

from __future__ import annotations

import base64
import json
import zlib
from datetime import datetime

from .flow import engine as e


class OfflineError(Exception):
    """The request cannot be answered without the database."""


def state_token(flow_version: str, state: e.State) -> str:
    """A compact, URL-safe form of (flow version, engine state)."""
    raw = json.dumps({"v": flow_version, "s": state.to_dict()}, separators=(",", ":"),
                     sort_keys=True).encode()
    return base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode().rstrip("=")


def read_state_token(token: str) -> tuple[str, e.State]:
    """The inverse of `state_token`; raises OfflineError for anything malformed."""
    try:
        raw = zlib.decompress(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)),
                              bufsize=4096)
        data = json.loads(raw)
        return data["v"], e.State.from_dict(data["s"])
    except (ValueError, KeyError, TypeError, zlib.error) as exc:
        raise OfflineError(f"unreadable state token: {type(exc).__name__}") from None


def incoming(ctx, fields, now: datetime) -> tuple[str, dict]:
    """Answer an incoming call without the database; returns (TwiML, spool record)."""
    from .calls import run_id_for

    flow = ctx.flows.default
    context: dict = {}  # who the caller is cannot be looked up now: no withdrawal offer
    state, actions = e.start(flow, context, None)
    run_id = run_id_for(fields.call_sid, "incoming")
    rendered = ctx.renderer.render(actions, ctx.next_url(run_id, 1, flow.version, state))
    return rendered.twiml, {"kind": "incoming", "form": fields.form(), "context": context}


def gather(ctx, target, result, now: datetime) -> tuple[str, dict]:
    """Step the engine from the state in the URL; returns (TwiML, spool record)."""
    from .calls import digits_input

    if not target.token or target.step is None:
        raise OfflineError("no state token in the gather URL")
    version, state = read_state_token(target.token)
    flow = ctx.flows.in_memory(version)
    if flow is None:
        raise OfflineError(f"flow version {version[:12]} is not loaded")
    if state.ended:
        raise OfflineError("the run had already ended")
    state, actions = e.advance(flow, state, digits_input(result.digits))
    rendered = ctx.renderer.render(actions, ctx.next_url(target.run, target.step + 1,
                                                         flow.version, state))
    record = {"kind": "gather", "run": target.run, "step": target.step, "form": result.form()}
    return rendered.twiml, record


def callback(kind: str, parsed) -> dict:
    """A status or recording callback to keep until the database is back."""
    return {"kind": kind, "form": parsed.form()}


def apply_record(record: dict) -> None:
    """Replay one spooled webhook through the normal verbs, in its own transaction.

    The record's form goes through the edge parser again: records written before the
    parser existed (plain JSON with Twilio's whole form) get the same ranges as new ones.
    Raises spool.Later when the record must wait for an earlier one."""
    from flask import current_app
    from sqlalchemy import select

    from . import calls
    from .calls import RunBehind, UnknownRun
    from .db import session
    from .flowstore import flows
    from .models import WebhookRequest
    from .pii import personal_data
    from .spool import Later
    from .voice import twilio_form
    from .voice.twilio_form import INT32_MAX

    ctx = calls.Context(flows=flows(), pii=personal_data(),
                        renderer=current_app.extensions["ivr_renderer"])
    now = datetime.fromisoformat(record["received_at"])
    kind = record["kind"]
    if kind not in twilio_form.PARSERS:
        raise ValueError(f"unknown spool record kind {kind!r}")
    parsed = twilio_form.PARSERS[kind](record["form"])
    sid = parsed.call_sid if kind == "incoming" else parsed.call.call_sid
    s = session()
    try:
        with s.begin():
            if kind == "incoming":
                result = calls.incoming(s, ctx, parsed, now, exact_context=record["context"])
            elif kind == "gather":
                step = twilio_form.integer({"step": record.get("step")}, "step", sid)
                if step is None:  # without its step a replay could apply the keys twice
                    raise ValueError(f"gather record without a step in 0..{INT32_MAX}")
                result = calls.gather(s, ctx, str(record.get("run") or "")[:32], step, parsed,
                                      now)
            elif kind == "status":
                result = calls.status(s, ctx, parsed, now)
            else:
                result = calls.recording(s, ctx, parsed, now)
            token = str(record.get("token") or "")[:200] or None
            if token and s.scalar(select(WebhookRequest.id).where(
                    WebhookRequest.idempotency_token == token)) is not None:
                token = None
            twiml = kind in ("incoming", "gather")
            s.add(WebhookRequest(path=str(record.get("path") or f"/voice/{kind}")[:200],
                                 call_sid=sid, idempotency_token=token,
                                 received_at=now, outcome="spooled",
                                 status_code=200,
                                 response=result if twiml else None))
    except (RunBehind, UnknownRun) as exc:
        s.rollback()
        raise Later(f"{type(exc).__name__}: the run has not reached this step") from None


def record_call_sid(record: dict) -> str | None:
    """The call SID a spool record is about, for logs and the quarantine list."""
    form = record.get("form") if isinstance(record, dict) else None
    sid = form.get("CallSid") if isinstance(form, dict) else None
    return sid[:64] if isinstance(sid, str) else None
