"""Starting a transfer end to end: record the request, ask Twilio to redirect the call,
record Twilio's answer. Shared by the JSON API (bearer token) and the agent desk (web
session), so both make exactly the same transfers.

Each step runs in a transaction of its own, and Twilio is asked outside any transaction:
the request is on record as "requested" first, so a retry finds it and never asks Twilio
a second time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ivr.adapters import twilio_rest
from ivr.domain.state_token import transfer_token
from ivr.services import transfers as service
from ivr.services.transfer_request import TransferRequest
from ivr.storage.transfer_models import Transfer

log = logging.getLogger(__name__)


class StillWaiting(Exception):
    """The first request with this key is still waiting for Twilio's answer."""

    def __init__(self, transfer: Transfer):
        super().__init__("the first request with this key is still waiting for Twilio")
        self.transfer = transfer


def stale_after(settings: twilio_rest.TwilioSettings) -> timedelta:
    """Longer than any request can wait for Twilio (connect and read timeouts, and slack)."""
    return timedelta(seconds=2 * settings.timeout + 10)


def transfer_path(t: Transfer) -> str:
    """The path Twilio fetches when the caller arrives: the transfer, and its facts (so the
    flow is planned without reading the transfer first; Twilio signs the whole URL)."""
    token = transfer_token(t.flow_id, t.language, t.return_to)
    return f"/voice/transfer?transfer={t.id}&t={token}"


def start(s: Session, req: TransferRequest, agent: service.Agent, key: str, *, pii,
          settings: twilio_rest.TwilioSettings, twiml_url: Callable[[str], str]) \
        -> tuple[Transfer, bool]:
    """Make the transfer (or find the one this key made); returns it and whether it is new.

    `twiml_url(path)` makes the absolute URL of one of our paths.
    Raises service.Refused before anything is stored, StillWaiting for a retry that
    arrives while the first request waits for Twilio. `s` must be outside a transaction.
    """
    wait = stale_after(settings)
    try:
        with s.begin():
            t, new = service.request(s, req, agent, key, pii=pii, stale_after=wait)
    except IntegrityError:
        # A concurrent request with the same key committed first: this is its retry.
        with s.begin():
            first = service.find(s, agent, key)
            if first is None:
                raise
            t, new = service.check_retry(first, req), False
    if not new:
        return replay(s, t, wait), False
    try:
        twilio_rest.redirect_call(settings, t.call_sid, twiml_url(transfer_path(t)))
    except twilio_rest.RedirectFailed as failure:
        log.warning("transfer %s call_sid=%s failed: %s (Twilio code %s)", t.id, t.call_sid,
                    failure.reason, failure.twilio_code)
        with s.begin():
            t = service.record_failure(s, t.id, failure)
    else:
        log.info("transfer %s call_sid=%s redirected by agent %s", t.id, t.call_sid, agent.id)
        with s.begin():
            t = service.record_redirect(s, t.id)
    return t, True


def replay(s: Session, t: Transfer, wait: timedelta) -> Transfer:
    """The first request's transfer for a retry, never a second redirect."""
    if service.in_flight(t):
        with s.begin():
            t = service.expire(s, t.id, wait)
        if service.in_flight(t):
            raise StillWaiting(t)
    return t
