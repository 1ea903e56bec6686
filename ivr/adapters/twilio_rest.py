"""Redirecting a live call with the real twilio REST client, its failures made plain."""

from __future__ import annotations

from dataclasses import dataclass

import requests
from twilio.base.exceptions import TwilioException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client


@dataclass
class TwilioSettings:
    """Where and as whom to call Twilio's REST API."""

    api_url: str
    account_sid: str
    auth_token: str
    timeout: float


class RedirectFailed(Exception):
    """Twilio did not (or may not have) redirected the call; says why, for the agent."""

    def __init__(self, reason: str, http_status: int, message: str,
                 twilio_code: int | None = None):
        super().__init__(message)
        self.reason = reason
        self.http_status = http_status
        self.message = message
        self.twilio_code = twilio_code


# Twilio error code → (our reason, the HTTP status the agent gets, what it means).
KNOWN_ERRORS = {
    20404: ("call_not_found", 404, "Twilio has no call with this CallSid"),
    21220: ("call_not_in_progress", 409, "the call is not in progress (it has ended or not "
                                         "been answered), so it cannot be transferred"),
    20003: ("twilio_auth_failed", 502, "Twilio rejected this server's credentials; an "
                                       "administrator must check TWILIO_ACCOUNT_SID and "
                                       "TWILIO_AUTH_TOKEN"),
}


def _twilio_error(exc: TwilioException) -> RedirectFailed:
    code = getattr(exc, "code", None)
    status = getattr(exc, "status", None) or 0
    # Without a JSON body the client falls back to the HTTP status: not a Twilio code.
    code = code if isinstance(code, int) and code >= 10000 else None
    if code in KNOWN_ERRORS:
        reason, http_status, message = KNOWN_ERRORS[code]
        return RedirectFailed(reason, http_status, f"{message} (Twilio error {code})", code)
    if status >= 500:
        return RedirectFailed("twilio_unavailable", 502,
                              f"Twilio answered HTTP {status}; the call may or may not have "
                              "been redirected", code)
    return RedirectFailed("twilio_rejected", 502,
                          f"Twilio refused the redirect (HTTP {status}, error {code})", code)


def redirect_call(settings: TwilioSettings, call_sid: str, url: str) -> None:
    """Tell Twilio to fetch new TwiML for a live call from `url`; raise RedirectFailed."""
    http = TwilioHttpClient(timeout=settings.timeout)
    client = Client(settings.account_sid, settings.auth_token, http_client=http)
    client.api.base_url = settings.api_url
    try:
        client.calls(call_sid).update(url=url, method="POST")
    except TwilioException as exc:
        raise _twilio_error(exc) from exc
    except requests.Timeout as exc:
        raise RedirectFailed("twilio_timeout", 504,
                             f"Twilio did not answer within {settings.timeout:g} s; the call "
                             "may or may not have been redirected") from exc
    except requests.RequestException as exc:
        raise RedirectFailed("twilio_unreachable", 502,
                             f"Twilio's API could not be reached ({type(exc).__name__})") from exc
    except ValueError as exc:  # a 2xx answer that is not JSON
        raise RedirectFailed("twilio_bad_answer", 502,
                             "Twilio's answer could not be read; the call may or may not have "
                             "been redirected") from exc
    finally:
        if http.session is not None:
            http.session.close()
