"""Webhooks already answered: found by Twilio's idempotency token, and recorded once."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import WebhookRequest


def prior_answer(s: Session, token: str | None) -> WebhookRequest | None:
    """The stored webhook with this I-Twilio-Idempotency-Token, if there is one."""
    if not token:
        return None
    return s.scalar(select(WebhookRequest).where(WebhookRequest.idempotency_token == token))


def record_webhook(s: Session, *, path: str, call_sid: str, token: str | None,
                   received_at: datetime, outcome: str, response: str | None) -> None:
    """Keep one answered webhook (with the TwiML it got, if any) in this transaction."""
    s.add(WebhookRequest(path=path[:200], call_sid=call_sid[:64], idempotency_token=token,
                         received_at=received_at, outcome=outcome, status_code=200,
                         response=response))
