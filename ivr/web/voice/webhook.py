"""The webhook unit of work: one Twilio webhook, one transaction, once per idempotency token,
and the answer from the spool path when the database cannot be reached."""

from __future__ import annotations

import logging
import time

from flask import Response, current_app, request
from sqlalchemy.exc import IntegrityError
from twilio.twiml.voice_response import VoiceResponse

from ...domain import twilio_form
from ...services import calls, fast_calls
from ...services.audit_sequencer import leaves_committed
from ...services.calls import current_context
from ...services.offline import OfflineError
from ...services.spool_replay import drain_if_pending
from ...storage import db_errors
from ...storage import deadline as db_deadline
from ...storage.db import database, session, utcnow
from ...storage.spool import spool
from ...storage.webhooks import prior_answer, record_webhook
from ..metrics import count_facts, observe_webhook
from .twiml import apology_twiml

log = logging.getLogger("ivr.voice.routes")  # the name logs have always carried
EMPTY_TWIML = str(VoiceResponse())


def xml_response(body: str, code: int = 200) -> Response:
    """A TwiML (XML) answer."""
    return Response(body, status=code, mimetype="text/xml")


def _acknowledged() -> Response:
    """A callback was taken: 200 with an empty TwiML document, which any client accepts."""
    return xml_response(EMPTY_TWIML)


def _bad_request(message: str) -> Response:
    return Response(message + "\n", status=400, mimetype="text/plain")


def webhook(verb, parse, *, twiml: bool, offline=None, fast=None):
    """Run one webhook in one transaction, once per idempotency token.

    `parse(form)` turns Twilio's form into the typed value the verb and the spool take
    (ivr/domain/twilio_form.py); a form it refuses gets a 400.

    A Twilio retry (same I-Twilio-Idempotency-Token) gets the stored answer and stores
    nothing new. A concurrent duplicate that loses the race is retried and then finds the
    winner's answer. If the database cannot be reached, or does not answer within
    IVR_DB_CONNECT_TIMEOUT, `offline(ctx, parsed, now)` answers from the state in the URL
    and the parsed request is spooled to disk for later.

    On PostgreSQL, `fast(ctx, parsed, now, token, path)` (ivr/services/fast_calls.py) first
    tries the whole webhook as one statement; when it declines (None), the ORM verb runs.
    """
    try:
        sid = twilio_form.call_sid(request.form)
        parsed = parse(request.form)
    except twilio_form.BadWebhook as exc:
        log.warning("webhook refused on %s: %s", request.path, exc)
        return _bad_request(str(exc))
    with db_deadline.deadline(database().connect_timeout):
        return _run_webhook(verb, twiml, offline, sid, parsed, fast)


def _one_statement(fast, twiml: bool, parsed, now, token):
    """The one-statement path: (outcome, response), or None for the ORM path."""
    ctx = current_context()
    if not fast_calls.enabled(ctx):
        return None
    try:
        answer = fast(ctx, parsed, now, token, request.path)
    except IntegrityError:
        return None  # a concurrent duplicate won the race: the ORM path finds its answer
    if answer is None:
        return None
    if answer.outcome != "retry":
        count_facts(answer.facts)
        leaves_committed(current_app)
    if twiml:
        return answer.outcome, xml_response(answer.body or apology_twiml())
    return answer.outcome, _acknowledged()


ATTEMPTS = 3  # a transaction that lost a race (duplicate, serialization, deadlock) runs again


def _answer_once(verb, twiml: bool, sid: str, parsed, now, token, fast):
    """(outcome, response) from the one-statement path, else from the ORM verb in one
    transaction; a transaction that lost a race is run again."""
    for attempt in range(ATTEMPTS):
        try:
            done = _one_statement(fast, twiml, parsed, now, token) if fast else None
            if done is not None:
                return done
            s = session()
            with s.begin():
                if token:
                    prior = prior_answer(s, token)
                    if prior is not None:
                        if twiml:
                            return "retry", xml_response(prior.response or apology_twiml())
                        return "retry", _acknowledged()
                result = verb(s, current_context(), parsed, now)
                outcome = "ok" if twiml else result
                record_webhook(s, path=request.path, call_sid=sid, token=token,
                               received_at=now, outcome=outcome,
                               response=result if twiml else None)
            return outcome, xml_response(result) if twiml else _acknowledged()
        except Exception as exc:
            if not (isinstance(exc, IntegrityError) or db_errors.retryable(exc)):
                raise
            session().rollback()
            if attempt == ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable: the last attempt returns or raises")


def _run_webhook(verb, twiml: bool, offline, sid: str, parsed, fast=None):
    started = time.perf_counter()
    now = utcnow()
    token = (request.headers.get("I-Twilio-Idempotency-Token") or "")[:200] or None
    outcome = "error"
    try:
        try:
            drain_if_pending()
            outcome, response = _answer_once(verb, twiml, sid, parsed, now, token, fast)
            return response
        except calls.RunBehind:
            outcome = "spooled-behind"
            return _spool(offline, parsed, now, token, twiml)
        except Exception as exc:
            # The database is away, or a race was lost ATTEMPTS times: not the request's
            # fault, so it is answered from the spool and applied later.
            if not (db_errors.away(exc) or db_errors.retryable(exc)):
                raise
            session().rollback()
            log.error("database unavailable on %s call_sid=%s: %s (SQLSTATE %s); spooling",
                      request.path, sid[:64], type(db_errors.driver_error(exc) or exc).__name__,
                      db_errors.sqlstate(exc))
            outcome = "spooled"
            return _spool(offline, parsed, now, token, twiml)
    except calls.UnknownRun:
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
        session().rollback()
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
