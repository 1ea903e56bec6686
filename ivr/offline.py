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


def _form(form) -> dict:
    return {k: form.get(k) for k in form}


def incoming(ctx, form, now: datetime) -> tuple[str, dict]:
    """Answer an incoming call without the database; returns (TwiML, spool record)."""
    from .calls import run_id_for

    flow = ctx.flows.default
    context: dict = {}  # who the caller is cannot be looked up now: no withdrawal offer
    state, actions = e.start(flow, context, None)
    run_id = run_id_for(form["CallSid"], "incoming")
    rendered = ctx.renderer.render(actions, ctx.next_url(run_id, 1, flow.version, state))
    return rendered.twiml, {"kind": "incoming", "form": _form(form), "context": context}


def gather(ctx, run_id: str, step: int | None, token: str | None, form,
           now: datetime) -> tuple[str, dict]:
    """Step the engine from the state in the URL; returns (TwiML, spool record)."""
    if not token or step is None:
        raise OfflineError("no state token in the gather URL")
    version, state = read_state_token(token)
    flow = ctx.flows.in_memory(version)
    if flow is None:
        raise OfflineError(f"flow version {version[:12]} is not loaded")
    if state.ended:
        raise OfflineError("the run had already ended")
    digits = form.get("Digits")
    from .calls import MAX_DIGITS

    inp = e.Digits(digits[:MAX_DIGITS]) if digits else e.Timeout()
    state, actions = e.advance(flow, state, inp)
    rendered = ctx.renderer.render(actions, ctx.next_url(run_id, step + 1, flow.version, state))
    record = {"kind": "gather", "run": run_id, "step": step, "form": _form(form)}
    return rendered.twiml, record


def callback(kind: str, form) -> dict:
    """A status or recording callback to keep until the database is back."""
    return {"kind": kind, "form": _form(form)}


def apply_record(record: dict) -> None:
    """Replay one spooled webhook through the normal verbs, in its own transaction."""
    from flask import current_app
    from sqlalchemy import select

    from . import calls
    from .calls import RunBehind, UnknownRun
    from .db import session
    from .flowstore import flows
    from .models import WebhookRequest
    from .pii import personal_data
    from .spool import Later

    ctx = calls.Context(flows=flows(), pii=personal_data(),
                        renderer=current_app.extensions["ivr_renderer"])
    now = datetime.fromisoformat(record["received_at"])
    form = record["form"]
    kind = record["kind"]
    s = session()
    try:
        with s.begin():
            if kind == "incoming":
                result = calls.incoming(s, ctx, form, now, exact_context=record["context"])
            elif kind == "gather":
                result = calls.gather(s, ctx, record["run"], record["step"], form, now)
            elif kind == "status":
                result = calls.status(s, ctx, form, now)
            elif kind == "recording":
                result = calls.recording(s, ctx, form, now)
            else:
                raise ValueError(f"unknown spool record kind {kind!r}")
            token = record.get("token")
            if token and s.scalar(select(WebhookRequest.id).where(
                    WebhookRequest.idempotency_token == token)) is not None:
                token = None
            twiml = kind in ("incoming", "gather")
            s.add(WebhookRequest(path=record.get("path", f"/voice/{kind}"),
                                 call_sid=form.get("CallSid", "")[:64], idempotency_token=token,
                                 received_at=now, outcome="spooled",
                                 status_code=200,
                                 response=result if twiml else None))
    except (RunBehind, UnknownRun):
        s.rollback()
        raise Later() from None
