"""Consent withdrawals for agents and admins: POST /api/consents/withdrawals."""

from __future__ import annotations

import logging

from flask import current_app, jsonify, request
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from ivr.domain.vocabulary import CHANNELS
from ivr.services.kvkk import withdrawals as w
from ivr.services.kvkk.status import current_status
from ivr.web.current import personal_data, session
from ivr.web.tokens import require_token, token_user

from .blueprint import bp
from .errors import bad_request, error_response

log = logging.getLogger("ivr.api.consents_api")  # the name logs have always carried


def _event(record, pii) -> dict:
    return {
        "id": record.id, "phone": pii.decrypt(record.phone_enc), "purpose": record.purpose,
        "channels": list(record.channels), "decision": record.decision,
        "source": record.source, "agent_id": record.agent_id, "reason": record.reason,
        "captured_at": record.captured_at.isoformat().replace("+00:00", "Z"),
    }


def _status(s, phone_hmac: str) -> dict:
    return {c: {"status": st.status, "since": st.since.isoformat().replace("+00:00", "Z")
                if st.since else None, "source": st.source}
            for c, st in current_status(s, phone_hmac).items()}


def _answer(s, record, pii, code: int):
    body = {"events": [_event(record, pii)], "status": _status(s, record.phone_hmac),
            "agent": {"id": record.agent_id, "name": token_user().name}}
    response = jsonify(body)
    response.status_code = code
    return response


def _same_request(record, phone_hmac: str, channels: list[str], reason: str) -> bool:
    return (record.phone_hmac == phone_hmac and list(record.channels) == channels
            and (record.reason or "") == reason)


@bp.post("/consents/withdrawals")
@require_token("agent", "admin")
def create_withdrawal():
    """Record a withdrawal of marketing consent for a phone number (some or all channels)."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        return bad_request("the body must be a JSON object: "
                           '{"phone": ..., "channels": [...], "reason": ...}')
    unknown = sorted(set(data) - {"phone", "channels", "reason"})
    if unknown:
        return bad_request(f"unknown field {unknown[0]!r}")
    try:
        reason = w.parse_reason(data.get("reason"))
        key = w.idempotency_key(request.headers.get("Idempotency-Key"))
        phone = w.e164(data.get("phone"))
        channels = w.parse_channels(data["channels"]) if "channels" in data else list(CHANNELS)
    except w.WithdrawalError as e:
        return bad_request(str(e))
    user = token_user()
    pii = personal_data()
    scoped = w.idempotency_scope(user.id, key) if key else None
    purpose = current_app.extensions["ivr_flows"].default.purpose
    s = session()
    try:
        return _record(s, pii, phone, channels, reason, str(user.id), purpose, scoped)
    except SQLAlchemyError as exc:
        s.rollback()
        log.error("database error on withdrawal: %s", type(exc).__name__)
        return error_response(503, "the database is unavailable; retry with the same "
                              "Idempotency-Key")


def _record(s, pii, phone, channels, reason, agent_id, purpose, scoped):
    if s.in_transaction():
        # The bearer-token lookup opened a transaction; the withdrawal gets its own.
        s.commit()
    for attempt in range(2):
        try:
            with s.begin():
                prior = w.find_retry(s, scoped) if scoped else None
                if prior is not None:
                    if not _same_request(prior, pii.fingerprint(phone), channels, reason):
                        return error_response(422, "this Idempotency-Key was used for a "
                                              "different withdrawal")
                    return _answer(s, prior, pii, 201)
                record = w.withdraw(s, pii, phone=phone, channels=channels, reason=reason,
                                    agent_id=agent_id, purpose=purpose,
                                    idempotency_key=scoped)
                return _answer(s, record, pii, 201)
        except IntegrityError:
            # A concurrent retry with the same key won the race: answer with its record.
            s.rollback()
            if attempt == 1 or not scoped:
                raise
    raise RuntimeError("unreachable")
