"""The webhook unit of work: one Twilio webhook, one statement (its database function), once
per idempotency token, and the answer from the spool path when the database cannot do it
now."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from flask import Response, current_app, request
from twilio.twiml.voice_response import VoiceResponse

from ivr.domain import twilio_form
from ivr.domain.times import utcnow
from ivr.services import webhooks
from ivr.services.audit_sequencer import leaves_committed
from ivr.services.offline import OfflineError
from ivr.storage import db_errors
from ivr.storage import deadline as db_deadline
from ivr.web.current import current_context, database, drain_if_pending, spool
from ivr.web.metrics import count_facts, observe_webhook

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


@dataclass
class _Webhook:
    """One webhook request on its way: what it answers and how it ended (for the metrics)."""

    verb: Callable
    twiml: bool
    offline: Callable | None
    sid: str
    parsed: object
    now: datetime
    token: str | None
    outcome: str = "error"

    def spool(self, outcome: str) -> Response:
        """Answer from the spool path, counted as `outcome`."""
        self.outcome = outcome
        return _spool(self.offline, self.parsed, self.now, self.token, self.twiml)


def _run_webhook(verb, twiml: bool, offline, sid: str, parsed):
    started = time.perf_counter()
    now = (current_app.config.get("CLOCK") or utcnow)()  # CLOCK: tests inject one
    token = (request.headers.get("I-Twilio-Idempotency-Token") or "")[:200] or None
    w = _Webhook(verb, twiml, offline, sid, parsed, now, token)
    try:
        return _answer_or_refuse(w)
    finally:
        observe_webhook(request.path, sid[:64], w.outcome, time.perf_counter() - started)


def _answer_or_refuse(w: _Webhook) -> Response:
    """The webhook's answer; an unknown run or a database error answered as such."""
    try:
        return _answer_or_spool(w)
    except webhooks.UnknownRun:
        if spool().pending():  # the run may start in a record still waiting there
            return w.spool("spooled-behind")
        w.outcome = "unknown-run"
        return xml_response(apology_twiml()) if w.twiml else _bad_request("Unknown run.")
    except Exception as exc:
        if not db_errors.database_error(exc):
            raise
        w.outcome = "db-error"
        log.error("database error on %s call_sid=%s: %s (SQLSTATE %s)", request.path,
                  w.sid[:64], type(exc).__name__, db_errors.sqlstate(exc))
        if w.twiml:
            return xml_response(apology_twiml())
        return Response("Service unavailable: database error\n", status=503,
                        mimetype="text/plain")


def _answer_or_spool(w: _Webhook) -> Response:
    """The webhook's one statement and its answer; the spool's answer when the database
    cannot do it now or the run is behind a spooled record."""
    try:
        drain_if_pending()
        answer = _answer_once(w.verb, w.parsed, w.now, w.token)
        w.outcome = answer.outcome
        if w.outcome != "retry":
            count_facts(answer.facts)
            leaves_committed(current_app)
        if w.twiml:
            return xml_response(answer.body or apology_twiml())
        return _acknowledged()
    except webhooks.RunBehind:
        return w.spool("spooled-behind")
    except Exception as exc:
        # The database cannot do it now, or a race was lost ATTEMPTS times: not the
        # request's fault, so it is answered from the spool and applied later.
        if not (db_errors.away(exc) or db_errors.retryable(exc)
                or db_errors.lost_race(exc)):
            raise
        log.error("database unavailable on %s call_sid=%s: %s (SQLSTATE %s); spooling",
                  request.path, w.sid[:64], type(db_errors.driver_error(exc) or exc).__name__,
                  db_errors.sqlstate(exc))
        return w.spool("spooled")


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
