"""The webhook unit of work: one Twilio webhook, one statement (its database function), once
per idempotency token, and the answer from the spool path when the database cannot do it
now."""

from __future__ import annotations

import logging
import time

from flask import Response, current_app, request
from twilio.twiml.voice_response import VoiceResponse

from ivr.web.current import current_context, database, drain_if_pending, spool

from ...domain import twilio_form
from ...domain.times import utcnow
from ...services import webhooks
from ...services.audit_sequencer import leaves_committed
from ...services.offline import OfflineError
from ...storage import db_errors
from ...storage import deadline as db_deadline
from ..metrics import count_facts, observe_webhook
from .twiml import apology_twiml

log = logging.getLogger("ivr.voice.routes")  # the name logs have always carried
EMPTY_TWIML = str(VoiceResponse())
ATTEMPTS = 3  # a statement that lost a race (duplicate, serialization, deadlock) runs again


def xml_response(body: str, code: int = 200) -> Response:
    """A TwiML (XML) answer."""
    return Response(body, status=code, mimetype="text/xml")


def _acknowledged() -> Response:
    """A callback was taken: 200 with an empty TwiML document, which any client accepts."""
    return xml_response(EMPTY_TWIML)


def _bad_request(message: str) -> Response:
    return Response(message + "\n", status=400, mimetype="text/plain")


def webhook(verb, parse, *, twiml: bool, offline=None):
    """Run one webhook as one statement, once per idempotency token.

    `parse(form)` turns Twilio's form into the typed value the verb and the spool take
    (ivr/domain/twilio_form.py); a form it refuses gets a 400. `verb(ctx, parsed, now,
    token, path)` is the webhook's verb in ivr/services/webhooks.py.

    A Twilio retry (same I-Twilio-Idempotency-Token) gets the stored answer and stores
    nothing new. A statement that lost a race (a concurrent duplicate, a serialization
    failure, a deadlock) wrote nothing and is run again. If the database cannot do it now
    (refused, reset, frozen past IVR_DB_CONNECT_TIMEOUT, shutting down, out of
    connections), `offline(ctx, parsed, now)` answers from the state in the URL and the
    parsed request is spooled to disk for later.
    """
    try:
        sid = twilio_form.call_sid(request.form)
        parsed = parse(request.form)
    except twilio_form.BadWebhook as exc:
        log.warning("webhook refused on %s: %s", request.path, exc)
        return _bad_request(str(exc))
    with db_deadline.deadline(database().connect_timeout):
        return _run_webhook(verb, twiml, offline, sid, parsed)


def _keys_checked() -> None:
    """A process's first webhook proves the data keys (ivr/storage/keycheck.py) before it
    stores anything: a wrong IVR_PII_KEY fails here, not on a later decryption."""
    guard = current_app.extensions.get("ivr_keyguard")
    if guard is not None and not guard.verified:
        with database().sessionmaker() as s, s.begin():
            s.connection()  # the guard's after_begin hook checks the keys


def _answer_once(verb, parsed, now, token) -> webhooks.Answer:
    for attempt in range(ATTEMPTS):
        try:
            _keys_checked()
            return verb(current_context(), parsed, now, token, request.path)
        except Exception as exc:
            if not (db_errors.lost_race(exc) or db_errors.retryable(exc)) \
                    or attempt == ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable: the last attempt returns or raises")


def _run_webhook(verb, twiml: bool, offline, sid: str, parsed):
    started = time.perf_counter()
    now = (current_app.config.get("CLOCK") or utcnow)()  # CLOCK: tests inject one
    token = (request.headers.get("I-Twilio-Idempotency-Token") or "")[:200] or None
    outcome = "error"
    try:
        try:
            drain_if_pending()
            answer = _answer_once(verb, parsed, now, token)
            outcome = answer.outcome
            if outcome != "retry":
                count_facts(answer.facts)
                leaves_committed(current_app)
            if twiml:
                return xml_response(answer.body or apology_twiml())
            return _acknowledged()
        except webhooks.RunBehind:
            outcome = "spooled-behind"
            return _spool(offline, parsed, now, token, twiml)
        except Exception as exc:
            # The database cannot do it now, or a race was lost ATTEMPTS times: not the
            # request's fault, so it is answered from the spool and applied later.
            if not (db_errors.away(exc) or db_errors.retryable(exc)
                    or db_errors.lost_race(exc)):
                raise
            log.error("database unavailable on %s call_sid=%s: %s (SQLSTATE %s); spooling",
                      request.path, sid[:64], type(db_errors.driver_error(exc) or exc).__name__,
                      db_errors.sqlstate(exc))
            outcome = "spooled"
            return _spool(offline, parsed, now, token, twiml)
    except webhooks.UnknownRun:
        if spool().pending():  # the run may start in a record still waiting there
            outcome = "spooled-behind"
            return _spool(offline, parsed, now, token, twiml)
        outcome = "unknown-run"
        return xml_response(apology_twiml()) if twiml else _bad_request("Unknown run.")
    except Exception as exc:
        if not db_errors.database_error(exc):
            raise
        outcome = "db-error"
        log.error("database error on %s call_sid=%s: %s (SQLSTATE %s)", request.path,
                  sid[:64], type(exc).__name__, db_errors.sqlstate(exc))
        if twiml:
            return xml_response(apology_twiml())
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
            return xml_response(apology_twiml())
        return Response("Service unavailable\n", status=503, mimetype="text/plain")
    record.update(received_at=now.isoformat(), token=token, path=request.path)
    spool().write(record)
    return xml_response(body) if twiml else _acknowledged()
