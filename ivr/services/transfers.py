"""The agent's transfer verbs. Each takes the caller's session; the caller owns the
transaction, and every fact about a transfer is appended to the audit log in the same
transaction.

The life of a transfer: `requested` (stored before Twilio is asked) → `in_flow` (Twilio
fetched our TwiML for it) → `decided` (the consent was recorded) → `returned` (the TwiML
that sends the caller back was served); or `failed`, with the reason. The moves that a
call's webhooks make (in_flow, decided, returned, and failed at the call's end) are made by
the webhooks' functions (ivr/services/webhooks.py), with the same transition table.
"""

from __future__ import annotations

import uuid
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from ivr.adapters.twilio_rest import RedirectFailed
from ivr.domain.times import utcnow
from ivr.domain.vocabulary import SETTLED, TERMINAL, TRANSFER_ACTIVE, transfer_move
from ivr.domain.vocabulary import TransferStatus as S
from ivr.storage import audit_store
from ivr.storage.models import Call, Consent, FlowRun
from ivr.storage.transfer_models import Transfer

from .transfer_request import TransferRequest

# A caller whose run has had no turn for this long has gone (no status callback said so).
FLOW_IDLE = timedelta(minutes=15)
# The call ended with a transfer on its way: by its status, why it failed (the status
# webhook's function fails them, ivr/services/webhooks.py).
END_OF_CALL_FAILURES: dict[str, tuple[str, str]] = {
    S.IN_FLOW.value: ("hung_up_in_flow",
                      "the caller hung up in the consent flow, before deciding"),
    S.REQUESTED.value: ("call_ended",
                        "the call ended before the caller reached the consent flow"),
}
# Any constant: the first half of the PostgreSQL advisory lock taken per call.
_PG_CALL_LOCK = 0x7A_4E5F


@dataclass(frozen=True)
class Agent:
    """Who asks for the transfer."""

    id: str
    name: str


class Refused(Exception):
    """The transfer cannot be made as asked; nothing was stored and Twilio was not called."""

    def __init__(self, reason: str, message: str, **details):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.details = details


def origin(transfer_id: str) -> str:
    """The FlowRun origin of a transfer's run."""
    return f"transfer:{transfer_id}"


def _lock_call(session: Session, call_sid: str) -> None:
    # Two requests for one call (different keys) must not both pass the checks below.
    session.execute(text("SELECT pg_advisory_xact_lock(CAST(:a AS integer), CAST(:b AS integer))"),
                    {"a": _PG_CALL_LOCK, "b": zlib.crc32(call_sid.encode()) - 2**31})


def _facts(t: Transfer, **more) -> dict:
    return {"transfer_id": t.id, "call_sid": t.call_sid, "agent_id": t.agent_id,
            "status": t.status, **more}


def _return_to_for_audit(return_to: dict, pii) -> dict:
    # The chain is permanent, so a number to dial appears only as its keyed fingerprint.
    if return_to.get("number"):
        return {"type": return_to["type"], "number_hmac": pii.fingerprint(return_to["number"])}
    return dict(return_to)


def find(session: Session, agent: Agent, key: str) -> Transfer | None:
    """The transfer this agent already asked for with this Idempotency-Key."""
    return session.scalar(select(Transfer).where(Transfer.agent_id == agent.id,
                                                 Transfer.idempotency_key == key))


def check_retry(existing: Transfer, req: TransferRequest) -> Transfer:
    """The transfer a retry refers to; a key reused for another request is refused."""
    if existing.request_hash != req.fingerprint():
        raise Refused("key_reused", "this Idempotency-Key was already used for a different "
                      "transfer request; use a new key for a new request",
                      transfer_id=existing.id)
    return existing


def _active(session: Session, call_sid: str, now: datetime,
            stale_after: timedelta) -> Transfer | None:
    """A transfer of this call still on its way, if any.

    The call's end fails its transfers; these time limits only matter when no status
    callback comes: a request Twilio never acted on, a caller who went silently.
    """
    for t in session.scalars(select(Transfer).where(
            Transfer.call_sid == call_sid, Transfer.status.in_(TRANSFER_ACTIVE))
            .order_by(Transfer.requested_at)):
        if t.status == S.REQUESTED and t.requested_at > now - stale_after:
            return t
        if t.status == S.IN_FLOW:
            run = session.get(FlowRun, t.run_id) if t.run_id else None
            since = run.updated_at if run else t.in_flow_at
            if since is not None and since > now - FLOW_IDLE:
                return t
    return None


def _decided(session: Session, call_sid: str) -> Consent | None:
    return session.scalar(select(Consent).where(Consent.call_sid == call_sid,
                                                Consent.decision.in_(SETTLED))
                          .order_by(Consent.captured_at.desc(), Consent.id.desc()).limit(1))


def request(session: Session, req: TransferRequest, agent: Agent, key: str, *, pii,
            stale_after: timedelta, now: datetime | None = None) -> tuple[Transfer, bool]:
    """Record a transfer request once per (agent, key); returns it and whether it is new.

    Refuses (raising Refused, storing nothing) a call that has ended, a call with another
    transfer on its way, and a call whose consent is already decided unless `force`.
    """
    now = now or utcnow()
    _lock_call(session, req.call_sid)
    existing = find(session, agent, key)
    if existing is not None:
        return check_retry(existing, req), False
    call = session.get(Call, req.call_sid)
    if call is not None and call.status in TERMINAL:
        raise Refused("call_ended", f"the call has already ended (status {call.status})",
                      call_status=call.status)
    active = _active(session, req.call_sid, now, stale_after)
    if active is not None:
        raise Refused("transfer_in_progress", "another transfer of this call is on its way",
                      transfer_id=active.id, transfer_status=active.status)
    if not req.force and _decided(session, req.call_sid) is not None:
        # Only that the call cannot go now: what the caller decided, and when, is theirs,
        # and any agent who knows a CallSid could ask.
        raise Refused("already_decided", "this call cannot be transferred now; "
                      'send "force": true to ask the caller again')
    t = Transfer(id=uuid.uuid4().hex, call_sid=req.call_sid, agent_id=agent.id,
                 agent_name=agent.name, idempotency_key=key, request_hash=req.fingerprint(),
                 return_to=req.return_to, language=req.language, flow_id=req.flow_id,
                 force=req.force, status=S.REQUESTED.value, requested_at=now)
    session.add(t)
    session.flush()
    audit_store.append(session, [("transfer.requested", t.call_sid, _facts(
        t, agent_name=agent.name, return_to=_return_to_for_audit(t.return_to, pii),
        language=t.language, flow_id=t.flow_id, force=t.force))], at=now)
    return t, True


def _fail(t: Transfer, reason: str, message: str, http_status: int, code: int | None,
          now: datetime) -> tuple:
    t.status, t.failed_at = transfer_move(t.status, S.FAILED), now
    t.failure_reason, t.failure_message = reason, message
    t.twilio_code, t.failure_status = code, http_status
    return ("transfer.failed", t.call_sid, _facts(t, reason=reason, message=message,
                                                  twilio_code=code))


def record_redirect(session: Session, transfer_id: str, now: datetime | None = None) -> Transfer:
    """Twilio accepted the redirect; the status moves on when Twilio fetches our TwiML."""
    now = now or utcnow()
    t = session.get_one(Transfer, transfer_id, with_for_update=True)
    t.redirected_at = now
    audit_store.append(session, [("transfer.redirected", t.call_sid, _facts(t))], at=now)
    return t


def record_failure(session: Session, transfer_id: str, failure: RedirectFailed,
                   now: datetime | None = None) -> Transfer:
    """Twilio refused the redirect, or its answer never came: the transfer failed.

    If Twilio already fetched our TwiML (its answer was lost, not its action), the
    transfer carries on and the error is only noted in the audit log.
    """
    now = now or utcnow()
    t = session.get_one(Transfer, transfer_id, with_for_update=True)
    if t.status == S.REQUESTED:
        entry = _fail(t, failure.reason, failure.message, failure.http_status,
                      failure.twilio_code, now)
    else:
        entry = ("transfer.redirect_error", t.call_sid, _facts(
            t, reason=failure.reason, message=failure.message, twilio_code=failure.twilio_code))
    audit_store.append(session, [entry], at=now)
    return t


def in_flight(t: Transfer) -> bool:
    """True while the request that created it may still be waiting for Twilio."""
    return t.status == S.REQUESTED and t.redirected_at is None


def expire(session: Session, transfer_id: str, stale_after: timedelta,
           now: datetime | None = None) -> Transfer:
    """Fail a request whose process stopped before Twilio's answer was stored."""
    now = now or utcnow()
    t = session.get_one(Transfer, transfer_id, with_for_update=True)
    if in_flight(t) and t.requested_at <= now - stale_after:
        audit_store.append(session, [_fail(
            t, "interrupted", "the request was interrupted before Twilio's answer was "
            "recorded; the call may or may not have been redirected", 502, None, now)], at=now)
    return t


def get(session: Session, transfer_id: str) -> Transfer | None:
    """The transfer with this id, or None."""
    return session.get(Transfer, transfer_id)


def recent(session: Session, agent_id: str | None, limit: int) -> list[Transfer]:
    """The newest transfers, first the latest: one agent's, or everyone's (agent_id None)."""
    q = select(Transfer).order_by(Transfer.requested_at.desc(), Transfer.id).limit(limit)
    if agent_id is not None:
        q = q.where(Transfer.agent_id == agent_id)
    return list(session.scalars(q))
