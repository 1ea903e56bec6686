"""Twilio request signatures, checked against the canonical public URL."""

from __future__ import annotations

import functools
import logging
from urllib.parse import urlparse

from flask import current_app, request
from twilio.request_validator import RequestValidator, add_port, compare, remove_port

from ivr.web.metrics import count_signature_failure

log = logging.getLogger("ivr.voice.signature")  # the name logs have always carried


def public_url_of_request() -> str:
    """The URL Twilio requested: IVR_PUBLIC_URL + path + query, whatever proxy is in between."""
    url = current_app.config["PUBLIC_URL"] + request.path
    if request.query_string:
        url += "?" + request.query_string.decode("latin-1")
    return url


class _Form:
    """Flask's form as twilio's validator reads it: werkzeug's MultiDict has no `getall`,
    so the validator would raise and catch an AttributeError for every field."""

    __slots__ = ("form",)

    def __init__(self, form):
        self.form = form

    def __len__(self) -> int:
        return len(self.form)

    def __iter__(self):
        return iter(self.form)

    def getall(self, name: str) -> list[str]:
        return self.form.getlist(name)


def _validator() -> RequestValidator:
    """The app's validator, made once per auth token."""
    token = current_app.config["TWILIO_AUTH_TOKEN"]
    kept = current_app.extensions.get("ivr_twilio_validator")
    if kept is None or kept[0] != token:
        kept = (token, RequestValidator(token))
        current_app.extensions["ivr_twilio_validator"] = kept
    return kept[1]


def signature_is_valid() -> bool:
    """True when X-Twilio-Signature matches this request under the account's auth token.

    Twilio's `validate` always computes two HMACs: of the URL with its port and without.
    The URL as configured is tried first, so a genuine request costs one; the other form
    is tried only when that fails, so whatever `validate` accepts is still accepted."""
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature:
        return False
    validator = _validator()
    url = public_url_of_request()
    if "bodySHA256" in request.args:  # a JSON body's hash in the URL: Twilio's own check
        return validator.validate(url, request.form, signature)
    form = _Form(request.form)
    if compare(validator.compute_signature(url, form), signature):
        return True
    parsed = urlparse(url)
    other = remove_port(parsed) if parsed.port else add_port(parsed)
    return other != url and compare(validator.compute_signature(other, form), signature)


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
