"""The public webhook contract: /voice/incoming, /voice/gather, /voice/status, /voice/recording."""

from __future__ import annotations

import logging
import time

from flask import Blueprint, Response, current_app, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from .. import calls
from ..db import session, utcnow
from ..flowstore import flows
from ..models import WebhookRequest
from ..observability import observe_webhook
from ..pii import personal_data
from .signature import twilio_signed
from .twiml import apology_twiml

log = logging.getLogger(__name__)
bp = Blueprint("voice", __name__, url_prefix="/voice")


def _xml(body: str, code: int = 200) -> Response:
    return Response(body, status=code, mimetype="text/xml")


def _context() -> calls.Context:
    return calls.Context(flows=flows(), pii=personal_data(),
                         renderer=current_app.extensions["ivr_renderer"])


def _bad_request(message: str) -> Response:
    return Response(message + "\n", status=400, mimetype="text/plain")


def _webhook(verb, *, twiml: bool):
    """Run one webhook in one transaction, once per idempotency token.

    A Twilio retry (same I-Twilio-Idempotency-Token) gets the stored answer and stores
    nothing new. A concurrent duplicate that loses the race is retried once and then
    finds the winner's answer.
    """
    started = time.perf_counter()
    form = request.form
    sid = form.get("CallSid", "").strip()
    if not sid:
        return _bad_request("Bad request: the CallSid parameter is required.")
    token = (request.headers.get("I-Twilio-Idempotency-Token") or "")[:200] or None
    outcome = "error"
    try:
        for attempt in range(3):
            s = session()
            try:
                with s.begin():
                    if token:
                        prior = s.scalar(select(WebhookRequest).where(
                            WebhookRequest.idempotency_token == token))
                        if prior is not None:
                            outcome = "retry"
                            body = prior.response or ""
                            return _xml(body) if twiml else Response(status=prior.status_code)
                    result = verb(s, _context(), form)
                    outcome = "ok" if twiml else result
                    s.add(WebhookRequest(path=request.path, call_sid=sid[:64],
                                         idempotency_token=token, received_at=utcnow(),
                                         outcome=outcome, status_code=200 if twiml else 204,
                                         response=result if twiml else None))
                return _xml(result) if twiml else Response(status=204)
            except IntegrityError:
                s.rollback()
                if attempt == 2:
                    raise
        raise RuntimeError("unreachable")
    except calls.UnknownRun:
        outcome = "unknown-run"
        return _xml(apology_twiml()) if twiml else _bad_request("Unknown run.")
    except (OperationalError, SQLAlchemyError) as exc:
        outcome = "db-error"
        log.error("database error on %s call_sid=%s: %s", request.path, sid[:64],
                  type(exc).__name__)
        session().rollback()
        if twiml:
            return _xml(apology_twiml())
        return Response("Service unavailable: database error\n", status=503,
                        mimetype="text/plain")
    finally:
        observe_webhook(request.path, sid[:64], outcome, time.perf_counter() - started)


@bp.post("/incoming")
@twilio_signed
def incoming():
    """A call comes in: the greeting, then the notice and the consent question."""
    return _webhook(calls.incoming, twiml=True)


@bp.post("/gather")
@twilio_signed
def gather():
    """The caller's keys (or silence) for one step of a run."""
    run_id = request.args.get("run", "")[:32]
    step = calls.to_int(request.args.get("step"))
    return _webhook(lambda s, ctx, form: calls.gather(s, ctx, run_id, step, form), twiml=True)


@bp.post("/status")
@twilio_signed
def status():
    """Call status callback."""
    return _webhook(calls.status, twiml=False)


@bp.post("/recording")
@twilio_signed
def recording():
    """Recording status callback."""
    return _webhook(calls.recording, twiml=False)


@bp.errorhandler(Exception)
def _unexpected(exc):
    """Whatever happens, a caller hears valid TwiML, never Twilio's application error."""
    from werkzeug.exceptions import HTTPException

    if isinstance(exc, HTTPException) and exc.code < 500:
        return exc
    log.exception("unexpected error on %s", request.path)
    if request.path in ("/voice/incoming", "/voice/gather"):
        return _xml(apology_twiml())
    return Response("Internal error\n", status=500, mimetype="text/plain")
