"""The public webhook contract: /voice/incoming, /voice/gather, /voice/status, /voice/recording."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, request
from werkzeug.exceptions import HTTPException

from ivr.domain import twilio_form
from ivr.services import offline, webhooks

from .signature import twilio_signed
from .twiml import apology_twiml
from .webhook import webhook, xml_response

log = logging.getLogger("ivr.voice.routes")  # the name logs have always carried
bp = Blueprint("voice", __name__, url_prefix="/voice")
@bp.post("/incoming")
@twilio_signed
def incoming():
    """A call comes in: the greeting, then the notice and the consent question."""
    return webhook(webhooks.incoming, twilio_form.call_fields, twiml=True,
                   offline=offline.incoming)


@bp.post("/gather")
@twilio_signed
def gather():
    """The caller's keys (or silence) for one step of a run."""
    sid = (request.form.get("CallSid") or "").strip()[:twilio_form.SID_MAX]
    target = twilio_form.gather_target(request.args, sid)
    return webhook(lambda ctx, result, now, token, path: webhooks.gather(
                       ctx, target.run, target.step, target.token, result, now, token, path),
                   twilio_form.gather_input, twiml=True,
                   offline=lambda ctx, result, now: offline.gather(ctx, target, result, now))


@bp.post("/status")
@twilio_signed
def status():
    """Call status callback."""
    return webhook(webhooks.status, twilio_form.status_callback, twiml=False,
                   offline=lambda ctx, cb, now: ("", offline.callback("status", cb)))


@bp.post("/recording")
@twilio_signed
def recording():
    """Recording status callback."""
    return webhook(webhooks.recording, twilio_form.recording_callback, twiml=False,
                   offline=lambda ctx, cb, now: ("", offline.callback("recording", cb)))


@bp.route("/fallback", methods=["GET", "POST"])
def fallback():
    """Twilio's fallback URL: static TwiML that needs no database and no state."""
    return xml_response(apology_twiml())


@bp.errorhandler(Exception)
def _unexpected(exc):
    """Whatever happens, a caller hears valid TwiML, never Twilio's application error."""

    if isinstance(exc, HTTPException) and exc.code < 500:
        return exc
    log.exception("unexpected error on %s", request.path)
    if request.path in ("/voice/incoming", "/voice/gather", "/voice/transfer"):
        return xml_response(apology_twiml())
    return Response("Internal error\n", status=500, mimetype="text/plain")
