"""The transfer webhook: Twilio fetches it when an agent's redirect takes the caller."""

from __future__ import annotations

from flask import request

from ivr.domain import twilio_form
from ivr.services import offline, webhooks

from .routes import bp
from .signature import twilio_signed
from .webhook import webhook


@bp.post("/transfer")
@twilio_signed
def transfer():
    """A transferred caller arrives: the notice and the consent question, as for an inbound
    call; the flow's end sends them back where the agent asked."""
    transfer_id = request.args.get("transfer", "")[:32]
    facts = request.args.get("t", "")[:4096] or None
    return webhook(lambda ctx, fields, now, token, path: webhooks.transfer(
                       ctx, transfer_id, facts, fields, now, token, path),
                   twilio_form.call_fields, twiml=True,
                   offline=lambda ctx, fields, now: offline.transfer(ctx, transfer_id, facts,
                                                                      fields, now))
