"""The agents' transfer API: POST /api/transfers and GET /api/transfers/<id>."""

from __future__ import annotations

import logging
from datetime import timedelta

from flask import current_app, jsonify, request
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from ...adapters import twilio_rest
from ...domain.vocabulary import TransferStatus
from ...services import transfer_request
from ...services import transfers as service
from ...services.keys import personal_data
from ...storage.db import session
from ...storage.flowstore import flows
from ...storage.transfer_models import Transfer
from ..tokens import bearer_user, require_token
from .blueprint import bp
from .errors import bad_request, error_response

log = logging.getLogger("ivr.transfers.api")  # the name logs have always carried

# The HTTP status of each refusal made before Twilio is called.
REFUSALS = {"call_ended": 409, "transfer_in_progress": 409, "already_decided": 409,
            "key_reused": 422}


def _iso(dt):
    return dt.isoformat().replace("+00:00", "Z") if dt else None


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
        "requested_at": _iso(t.requested_at), "redirected_at": _iso(t.redirected_at),
        "in_flow_at": _iso(t.in_flow_at), "decided_at": _iso(t.decided_at),
        "returned_at": _iso(t.returned_at), "failed_at": _iso(t.failed_at),
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
    # The bearer-token lookup opened a transaction (on SQLite it holds the write lock):
    # end it, so each step below runs in a transaction of its own.
    if s.in_transaction():
        s.commit()


def _stale_after(settings: twilio_rest.TwilioSettings) -> timedelta:
    # Longer than any request can wait for Twilio (connect and read timeouts, and slack).
    return timedelta(seconds=2 * settings.timeout + 10)


@bp.post("/transfers")
@require_token("agent")
def create_transfer():
    """Send a live call into the consent flow; the caller returns as `return_to` says."""
    user = bearer_user()
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
    stale_after = _stale_after(settings)
    try:
        with s.begin():
            t, new = service.request(s, req, agent, key, pii=personal_data(),
                                     stale_after=stale_after)
    except IntegrityError:
        # A concurrent request with the same key committed first: this is its retry.
        with s.begin():
            first = service.find(s, agent, key)
            if first is None:
                raise
            t, new = service.check_retry(first, req), False
    if not new:
        return _replay(s, t, stale_after)
    url = current_app.extensions["ivr_renderer"].url(f"/voice/transfer?transfer={t.id}")
    try:
        # Outside any transaction: the request is already on record as "requested", so
        # a retry finds it and never asks Twilio a second time.
        twilio_rest.redirect_call(settings, t.call_sid, url)
    except twilio_rest.RedirectFailed as failure:
        log.warning("transfer %s call_sid=%s failed: %s (Twilio code %s)", t.id, t.call_sid,
                    failure.reason, failure.twilio_code)
        with s.begin():
            t = service.record_failure(s, t.id, failure)
    else:
        log.info("transfer %s call_sid=%s redirected by agent %s", t.id, t.call_sid, agent.id)
        with s.begin():
            t = service.record_redirect(s, t.id)
    return _answer(t)


def _replay(s, t: Transfer, stale_after: timedelta):
    """The answer to a retry: the first request's outcome, never a second redirect."""
    if service.in_flight(t):
        with s.begin():
            t = service.expire(s, t.id, stale_after)
        if service.in_flight(t):
            response = error_response(409, "the first request with this Idempotency-Key is "
                                      "still waiting for Twilio; retry in a moment",
                                      reason="request_in_progress", transfer_id=t.id)
            response.headers["Retry-After"] = "1"
            return response
    return _answer(t, replayed=True)


@bp.get("/transfers/<transfer_id>")
@require_token("agent", "auditor")
def get_transfer(transfer_id: str):
    """A transfer's status: to the agent who made it, to auditors and admins."""
    user = bearer_user()
    s = session()
    _end_read(s)
    with s.begin():
        t = s.get(Transfer, transfer_id[:32])
    if t is None or (user.role == "agent" and t.agent_id != str(user.id)):
        return error_response(404, "no such transfer")
    response = jsonify(document(t))
    response.headers["Cache-Control"] = "no-store"
    return response
