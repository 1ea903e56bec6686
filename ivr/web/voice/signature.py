"""Twilio request signatures, checked against the canonical public URL."""

from __future__ import annotations

import functools
import logging

from flask import current_app, request
from twilio.request_validator import RequestValidator

from ..metrics import count_signature_failure

log = logging.getLogger("ivr.voice.signature")  # the name logs have always carried


def public_url_of_request() -> str:
    """The URL Twilio requested: IVR_PUBLIC_URL + path + query, whatever proxy is in between."""
    url = current_app.config["PUBLIC_URL"] + request.path
    if request.query_string:
        url += "?" + request.query_string.decode("latin-1")
    return url


def signature_is_valid() -> bool:
    """True when X-Twilio-Signature matches this request under the account's auth token."""
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature:
        return False
    validator = RequestValidator(current_app.config["TWILIO_AUTH_TOKEN"])
    return validator.validate(public_url_of_request(), request.form, signature)


def twilio_signed(view):
    """Reject, with 403 and before anything is stored, a request Twilio did not sign."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        if not signature_is_valid():
            log.warning("webhook signature rejected path=%s call_sid=%s",
                        request.path, request.form.get("CallSid", "-")[:64])

            count_signature_failure()
            return ("Forbidden: invalid Twilio signature\n", 403, {"Content-Type": "text/plain"})
        return view(*args, **kwargs)

    return wrapper
