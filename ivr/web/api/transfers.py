"""The agents' transfer API: POST /api/transfers and GET /api/transfers/<id>."""

from __future__ import annotations

import logging

from flask import current_app, jsonify, request
from sqlalchemy.exc import SQLAlchemyError

from ivr.domain.times import utc_iso_or_none
from ivr.domain.vocabulary import TransferStatus
from ivr.services import transfer_request
from ivr.services import transfers as service
from ivr.storage.transfer_models import Transfer
from ivr.web import transfer_start as start
from ivr.web.current import flows, personal_data, session
from ivr.web.tokens import require_token, token_user

from .blueprint import bp
from .errors import bad_request, error_response

log = logging.getLogger("ivr.transfers.api")  # the name logs have always carried

# The HTTP status of each refusal made before Twilio is called.
REFUSALS = {"call_ended": 409, "transfer_in_progress": 409, "already_decided": 409,
            "key_reused": 422}


def document(t: Transfer) -> dict:
    """A transfer as the API shows it."""
    error = None
    if t.status == TransferStatus.FAILED:
        error = {"reason": t.failure_reason, "message": t.failure_message,
                 "twilio_code": t.twilio_code}
    return {
        "id": t.id, "call_sid": t.call_sid, "status": t.status, "decision": t.decision,
        "return_to": t.return_to, "language": t.language, "flow": t.flow_id, "force": t.force,
        "agent": {"id": t.agent_id, "name": t.agent_name}, "consent_id": t.consent_id,
        "requested_at": utc_iso_or_none(t.requested_at),
        "redirected_at": utc_iso_or_none(t.redirected_at),
        "in_flow_at": utc_iso_or_none(t.in_flow_at), "decided_at": utc_iso_or_none(t.decided_at),
        "returned_at": utc_iso_or_none(t.returned_at), "failed_at": utc_iso_or_none(t.failed_at),
        "error": error,
        "status_url": f"/api/transfers/{t.id}", "page_url": f"/agent/transfers/{t.id}",
    }


def _answer(t: Transfer, replayed: bool = False):
    """201 with the transfer, or the error that made it fail (the same on every retry)."""
    if t.status == TransferStatus.FAILED:
        response = error_response(t.failure_status or 502, t.failure_message,
                                  reason=t.failure_reason, twilio_code=t.twilio_code,
                                  transfer_id=t.id, status_url=f"/api/transfers/{t.id}")
    else:
        response = jsonify(document(t))
        response.status_code = 201
        response.headers["Location"] = f"/api/transfers/{t.id}"
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def _end_read(s) -> None:
    # The bearer-token lookup opened a transaction: end it, so each step below runs in a
    # transaction of its own.
    if s.in_transaction():
        s.commit()


@bp.post("/transfers")
@require_token("agent")
def create_transfer():
    """Send a live call into the consent flow; the caller returns as `return_to` says."""
    user = token_user()
    agent = service.Agent(id=str(user.id), name=user.name)
    s = session()
    _end_read(s)
    try:
        key = transfer_request.idempotency_key(request.headers.get("Idempotency-Key"))
        if not request.is_json:
            raise transfer_request.InvalidRequest(
                "send the request as JSON (Content-Type: application/json)")
        body = request.get_json(silent=True)
        if body is None:
            raise transfer_request.InvalidRequest("the body is not valid JSON")
        req = transfer_request.parse(body, flows())
    except transfer_request.InvalidRequest as exc:
        return bad_request(exc.message, field=exc.field)
    settings = current_app.extensions["ivr_twilio_rest"]
    try:
        return _create(s, req, agent, key, settings)
    except service.Refused as exc:
        return error_response(REFUSALS[exc.reason], exc.message, reason=exc.reason,
                              **exc.details)
    except SQLAlchemyError as exc:
        s.rollback()
        log.error("database error on transfer call_sid=%s: %s", req.call_sid,
                  type(exc).__name__)
        return error_response(503, "the database is unavailable; retry with the same "
                              "Idempotency-Key", reason="database_unavailable")


def _create(s, req, agent, key, settings):
    url = current_app.extensions["ivr_renderer"].url
    try:
        t, new = start.start(s, req, agent, key, pii=personal_data(), settings=settings,
                             twiml_url=url)
    except start.StillWaiting as exc:
        response = error_response(409, "the first request with this Idempotency-Key is "
                                  "still waiting for Twilio; retry in a moment",
                                  reason="request_in_progress", transfer_id=exc.transfer.id)
        response.headers["Retry-After"] = "1"
        return response
    return _answer(t, replayed=not new)


@bp.get("/transfers/<transfer_id>")
@require_token("agent", "auditor")
def get_transfer(transfer_id: str):
    """A transfer's status: to the agent who made it, to auditors and admins."""
    user = token_user()
    s = session()
    _end_read(s)
    with s.begin():
        t = service.get(s, transfer_id[:32])
    if t is None or (user.role == "agent" and t.agent_id != str(user.id)):
        return error_response(404, "no such transfer")
    response = jsonify(document(t))
    response.headers["Cache-Control"] = "no-store"
    return response
