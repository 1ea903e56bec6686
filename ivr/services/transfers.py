"""Transfer verbs. Each takes the caller's session; the caller owns the transaction, and
every fact about a transfer is appended to the audit chain in the same transaction.

The life of a transfer: `requested` (stored before Twilio is asked) → `in_flow` (Twilio
fetched our TwiML for it) → `decided` (the consent was recorded) → `returned` (the TwiML
that sends the caller back was served); or `failed`, with the reason.
"""

from __future__ import annotations

import uuid
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from ivr.audit import chain
from ivr.storage import audit_store

from ..adapters.twilio_rest import RedirectFailed
from ..domain.flow import engine as e
from ..domain.vocabulary import SETTLED, TERMINAL, TRANSFER_ACTIVE, transfer_move
from ..domain.vocabulary import TransferStatus as S
from ..storage.db import utcnow
from ..storage.models import Call, Consent, FlowRun
from ..storage.transfer_models import Transfer
from . import calls
from .hooks import CallListener
from .transfer_request import TransferRequest

# A caller whose run has had no turn for this long has gone (no status callback said so).
FLOW_IDLE = timedelta(minutes=15)
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
    # SQLite serialises every transaction already (BEGIN IMMEDIATE).
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(CAST(:a AS integer), "
                             "CAST(:b AS integer))"),
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


def _active(session: Session, call_sid: str, now: datetime, stale_after: timedelta):
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
            if (run.updated_at if run else t.in_flow_at) > now - FLOW_IDLE:
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
    if not req.force:
        consent = _decided(session, req.call_sid)
        if consent is not None:
            raise Refused("already_decided",
                          f"the caller already decided on this call ({consent.decision}); "
                          'send "force": true to ask again',
                          decision=consent.decision,
                          decided_at=chain.iso(consent.captured_at),
                          consent_transfer_id=consent.transfer_id)
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
    t = session.get(Transfer, transfer_id, with_for_update=True)
    t.redirected_at = now
    audit_store.append(session, [("transfer.redirected", t.call_sid, _facts(t))], at=now)
    return t


def record_failure(session: Session, transfer_id: str, failure: RedirectFailed,
                   now: datetime | None = None) -> Transfer:
    """Twilio refused the redirect, or its answer never came: the transfer failed.

    If Twilio already fetched our TwiML (its answer was lost, not its action), the
    transfer carries on and the error is only noted in the audit chain.
    """
    now = now or utcnow()
    t = session.get(Transfer, transfer_id, with_for_update=True)
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
    t = session.get(Transfer, transfer_id, with_for_update=True)
    if in_flight(t) and t.requested_at <= now - stale_after:
        audit_store.append(session, [_fail(
            t, "interrupted", "the request was interrupted before Twilio's answer was "
            "recorded; the call may or may not have been redirected", 502, None, now)], at=now)
    return t


def enter_flow(session: Session, ctx: calls.Context, transfer_id: str, fields,
               now: datetime | None = None) -> str:
    """Twilio fetched the transfer's TwiML: start the consent flow for the caller.

    `fields` is the webhook's parsed call fields (ivr/domain/twilio_form.CallFields)."""
    now = now or utcnow()
    t = session.get(Transfer, transfer_id, with_for_update=True) if transfer_id else None
    sid = fields.call_sid
    flow = ctx.flows.get(t.flow_id) if t is not None else None
    if t is None or t.call_sid != sid or flow is None:
        raise calls.UnknownRun(f"transfer {transfer_id}")
    call = calls.get_or_create_call(session, ctx, fields)
    calls.fill_parties(call, ctx, fields)
    call.status = call.status or (fields.call_status or "in-progress")[:32]
    twiml = calls.start_run(session, ctx, call, flow, origin=origin(t.id),
                            context={"return_to": t.return_to, "transfer_id": t.id},
                            language=t.language or _spoken(session, sid),
                            transfer_id=t.id, agent_id=t.agent_id, now=now)
    if t.status in (S.REQUESTED, S.FAILED):
        # A "failed" transfer arriving here means Twilio acted although its answer to us
        # was lost (a timeout or 5xx): the caller is in the flow, so that is the truth.
        after = t.failure_reason if t.status == S.FAILED else None
        t.status, t.in_flow_at = transfer_move(t.status, S.IN_FLOW), now
        t.run_id = session.scalar(select(FlowRun.id).where(FlowRun.call_sid == sid,
                                                           FlowRun.origin == origin(t.id)))
        audit_store.append(session, [("transfer.in_flow", sid, _facts(
            t, run=t.run_id, after_failure=after))], at=now)
    return twiml


def _spoken(session: Session, call_sid: str) -> str | None:
    """The language the caller last chose in a flow on this call, if any."""
    state = session.scalar(select(FlowRun.state).where(FlowRun.call_sid == call_sid)
                           .order_by(FlowRun.updated_at.desc()).limit(1))
    return (state or {}).get("language")


def run_progressed(session: Session, run: FlowRun, actions: list,
                   now: datetime) -> list[tuple[str, str, dict]]:
    """Move a transfer on from its run's actions; returns the audit entries to append."""
    t = session.get(Transfer, run.transfer_id, with_for_update=True)
    if t is None:
        return []
    t.run_id = t.run_id or run.id
    out = []
    for a in actions:
        if isinstance(a, e.Decide):
            t.consent_id = session.scalar(select(Consent.id).where(Consent.run_id == run.id))
            t.status = transfer_move(t.status, S.DECIDED)
            t.decision, t.decided_at = a.decision, now
            t.in_flow_at = t.in_flow_at or now
            out.append(("transfer.decided", t.call_sid, _facts(
                t, decision=a.decision, consent_id=t.consent_id, run=run.id)))
        elif isinstance(a, (e.Enqueue, e.Dial, e.Hangup)):
            t.status, t.returned_at = transfer_move(t.status, S.RETURNED), now
            t.in_flow_at = t.in_flow_at or now
            out.append(("transfer.returned", t.call_sid, _facts(
                t, return_to=t.return_to["type"], run=run.id)))
    return out


def call_ended(session: Session, call_sid: str, now: datetime) -> list[tuple[str, str, dict]]:
    """The call ended: transfers still on their way fail; returns the audit entries."""
    out = []
    for t in session.scalars(select(Transfer).where(
            Transfer.call_sid == call_sid, Transfer.status.in_(TRANSFER_ACTIVE))
            .order_by(Transfer.requested_at).with_for_update()):
        if t.status == S.IN_FLOW:
            out.append(_fail(t, "hung_up_in_flow", "the caller hung up in the consent flow, "
                             "before deciding", 409, None, now))
        else:
            out.append(_fail(t, "call_ended", "the call ended before the caller reached the "
                             "consent flow", 409, None, now))
    return out


def _on_turn(session: Session, run: FlowRun, actions: list, now: datetime) -> list:
    return run_progressed(session, run, actions, now) if run.transfer_id else []


# Subscribed to the call verbs (ivr/services/hooks.py): a transfer follows its run and its call.
LISTENER = CallListener(on_turn=_on_turn, on_call_ended=call_ended,
                        quiet_without_transfers=tuple(TRANSFER_ACTIVE))
