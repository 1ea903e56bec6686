"""Deleting call recordings at Twilio with the real REST client (base URL configurable)."""

from __future__ import annotations

from dataclasses import dataclass

import requests
from twilio.base.exceptions import TwilioException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client


@dataclass
class TwilioAccount:
    """Where and as whom to call Twilio's REST API."""

    api_url: str
    account_sid: str
    auth_token: str
    timeout: float = 10.0

    @classmethod
    def from_config(cls, config) -> TwilioAccount:
        """The account of an app's configuration."""
        try:
            timeout = float(config.get("TWILIO_TIMEOUT") or 10)
        except ValueError:
            timeout = 10.0
        return cls(config["TWILIO_API_URL"], config["TWILIO_ACCOUNT_SID"],
                   config["TWILIO_AUTH_TOKEN"], timeout)


def delete_recordings(account: TwilioAccount, sids: list[str]) -> tuple[set[str], dict[str, str]]:
    """Delete recordings at Twilio; returns (gone, {sid: why it failed}).

    A recording Twilio no longer has (404) counts as gone.
    """
    http = TwilioHttpClient(timeout=account.timeout)
    client = Client(account.account_sid, account.auth_token, http_client=http)
    client.api.base_url = account.api_url.rstrip("/")
    gone: set[str] = set()
    failed: dict[str, str] = {}
    try:
        for sid in sids:
            try:
                client.api.v2010.account.recordings(sid).delete()
                gone.add(sid)
            except TwilioException as e:
                if getattr(e, "status", None) == 404:
                    gone.add(sid)
                else:
                    failed[sid] = f"Twilio answered HTTP {getattr(e, 'status', '?')} " \
                                  f"(error {getattr(e, 'code', '?')})"
            except requests.RequestException as e:
                failed[sid] = f"Twilio could not be reached ({type(e).__name__})"
    finally:
        if http.session is not None:
            http.session.close()
    return gone, failed
