"""The public webhook contract: /voice/incoming, /voice/gather, /voice/status, /voice/recording."""

from __future__ import annotations

import logging
import time

from flask import Blueprint, Response, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as SATimeoutError
from twilio.twiml.voice_response import VoiceResponse

from .. import calls, db_deadline, offline
from ..calls import current_context
from ..db import database, session, utcnow
from ..models import WebhookRequest
from ..observability import observe_webhook
from ..offline import OfflineError
from ..spool import spool
from ..spool_replay import drain_if_pending
from . import twilio_form
from .signature import twilio_signed
from .twiml import apology_twiml

log = logging.getLogger(__name__)
bp = Blueprint("voice", __name__, url_prefix="/voice")
EMPTY_TWIML = str(VoiceResponse())


def _xml(body: str, code: int = 200) -> Response:
    return Response(body, status=code, mimetype="text/xml")


def _acknowledged() -> Response:
    """A callback was taken: 200 with an empty TwiML document, which any client accepts."""
    return _xml(EMPTY_TWIML)


def _bad_request(message: str) -> Response:
    return Response(message + "\n", status=400, mimetype="text/plain")


def _unreachable(exc: SQLAlchemyError) -> bool:
    """True for "the database cannot be reached now", as opposed to a bug or bad schema."""
    if isinstance(exc, (InterfaceError, SATimeoutError)):
        return True
    if isinstance(exc, OperationalError):
        message = str(exc.orig).lower()
        return not any(m in message for m in ("no such table", "no such column", "syntax"))
    return False


def _webhook(verb, parse, *, twiml: bool, offline=None):
    """Run one webhook in one transaction, once per idempotency token.

    `parse(form)` turns Twilio's form into the typed value the verb and the spool take
    (ivr/voice/twilio_form.py); a form it refuses gets a 400.

    A Twilio retry (same I-Twilio-Idempotency-Token) gets the stored answer and stores
    nothing new. A concurrent duplicate that loses the race is retried and then finds the
    winner's answer. If the database cannot be reached, or does not answer within
    IVR_DB_CONNECT_TIMEOUT, `offline(ctx, parsed, now)` answers from the state in the URL
    and the parsed request is spooled to disk for later.
    """
    try:
        sid = twilio_form.call_sid(request.form)
        parsed = parse(request.form)
    except twilio_form.BadWebhook as exc:
        log.warning("webhook refused on %s: %s", request.path, exc)
        return _bad_request(str(exc))
    with db_deadline.deadline(database().connect_timeout):
        return _run_webhook(verb, twiml, offline, sid, parsed)


def _run_webhook(verb, twiml: bool, offline, sid: str, parsed):
    started = time.perf_counter()
    now = utcnow()
    token = (request.headers.get("I-Twilio-Idempotency-Token") or "")[:200] or None
    outcome = "error"
    try:
        try:
            drain_if_pending()
            for attempt in range(3):
                s = session()
                try:
                    with s.begin():
                        if token:
                            prior = s.scalar(select(WebhookRequest).where(
                                WebhookRequest.idempotency_token == token))
                            if prior is not None:
                                outcome = "retry"
                                if twiml:
                                    return _xml(prior.response or apology_twiml())
                                return _acknowledged()
                        result = verb(s, current_context(), parsed, now)
                        outcome = "ok" if twiml else result
                        s.add(WebhookRequest(path=request.path, call_sid=sid[:64],
                                             idempotency_token=token, received_at=now,
                                             outcome=outcome,
                                             status_code=200,
                                             response=result if twiml else None))
                    return _xml(result) if twiml else _acknowledged()
                except IntegrityError:
                    s.rollback()
                    if attempt == 2:
                        raise
        except SQLAlchemyError as exc:
            if not _unreachable(exc):
                raise
            session().rollback()
            log.error("database unreachable on %s call_sid=%s: %s; spooling", request.path,
                      sid[:64], type(exc).__name__)
            outcome = "spooled"
            return _spool(offline, parsed, now, token, twiml)
        except calls.RunBehind:
            outcome = "spooled-behind"
            return _spool(offline, parsed, now, token, twiml)
    except calls.UnknownRun:
        if spool().pending():  # the run may start in a record still waiting there
            outcome = "spooled-behind"
            return _spool(offline, parsed, now, token, twiml)
        outcome = "unknown-run"
        return _xml(apology_twiml()) if twiml else _bad_request("Unknown run.")
    except SQLAlchemyError as exc:
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


def _spool(offline, parsed, now, token, twiml: bool) -> Response:
    """Answer without the database and keep the request on disk until it is back."""
    try:
        if offline is None:
            raise OfflineError("this webhook has no offline path")
        body, record = offline(current_context(), parsed, now)
    except OfflineError as exc:
        log.error("cannot answer %s offline: %s", request.path, exc)
        if twiml:
            return _xml(apology_twiml())
        return Response("Service unavailable\n", status=503, mimetype="text/plain")
    record.update(received_at=now.isoformat(), token=token, path=request.path)
    spool().write(record)
    return _xml(body) if twiml else _acknowledged()


@bp.post("/incoming")
@twilio_signed
def incoming():
    """A call comes in: the greeting, then the notice and the consent question."""
    return _webhook(calls.incoming, twilio_form.call_fields, twiml=True,
                    offline=offline.incoming)


@bp.post("/gather")
@twilio_signed
def gather():
    """The caller's keys (or silence) for one step of a run."""
    sid = (request.form.get("CallSid") or "").strip()[:twilio_form.SID_MAX]
    target = twilio_form.gather_target(request.args, sid)
    return _webhook(lambda s, ctx, result, now: calls.gather(s, ctx, target.run, target.step,
                                                              result, now),
                    twilio_form.gather_input, twiml=True,
                    offline=lambda ctx, result, now: offline.gather(ctx, target, result, now))


@bp.post("/status")
@twilio_signed
def status():
    """Call status callback."""
    return _webhook(calls.status, twilio_form.status_callback, twiml=False,
                    offline=lambda ctx, cb, now: ("", offline.callback("status", cb)))


@bp.post("/recording")
@twilio_signed
def recording():
    """Recording status callback."""
    return _webhook(calls.recording, twilio_form.recording_callback, twiml=False,
                    offline=lambda ctx, cb, now: ("", offline.callback("recording", cb)))


@bp.route("/fallback", methods=["GET", "POST"])
def fallback():
    """Twilio's fallback URL: static TwiML that needs no database and no state."""
    return _xml(apology_twiml())


@bp.errorhandler(Exception)
def _unexpected(exc):
    """Whatever happens, a caller hears valid TwiML, never Twilio's application error."""
    from werkzeug.exceptions import HTTPException

    if isinstance(exc, HTTPException) and exc.code < 500:
        return exc
    log.exception("unexpected error on %s", request.path)
    if request.path in ("/voice/incoming", "/voice/gather", "/voice/transfer"):
        return _xml(apology_twiml())
    return Response("Internal error\n", status=500, mimetype="text/plain")
