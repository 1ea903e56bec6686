"""Call recordings at Twilio: deleting them with the real REST client (base URL
configurable), and fetching one's media with the account's credentials, streamed and never
written to disk."""

from __future__ import annotations

from collections.abc import Iterator
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


CHUNK = 64 * 1024
# The media types a recording is served as, from the names Twilio (and others) give them;
# anything else is refused, never served from this origin (it could be a page or a script).
MEDIA_TYPES = {"audio/wav": "audio/wav", "audio/x-wav": "audio/wav", "audio/wave": "audio/wav",
               "audio/vnd.wave": "audio/wav", "audio/mpeg": "audio/mpeg",
               "audio/mp3": "audio/mpeg"}
EXTENSIONS = {"audio/wav": "wav", "audio/mpeg": "mp3"}


class MediaUnavailable(Exception):
    """Twilio did not hand the recording over; `status` is the HTTP status to answer,
    `reason` what the page says (`unreachable`, `gone`, `credentials`, `http`, `type`: the view
    translates it) and `detail` the program's own words (an exception's name, a status)."""

    def __init__(self, status: int, message: str, reason: str = "http", detail: str = ""):
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.detail = detail


def media_url(account: TwilioAccount, recording_sid: str) -> str:
    """Twilio's media URL of a recording, as WAV."""
    return (f"{account.api_url.rstrip('/')}/2010-04-01/Accounts/{account.account_sid}"
            f"/Recordings/{recording_sid}.wav")


@dataclass
class Media:
    """An open media download from Twilio: its headers now, its bytes as they come."""

    response: requests.Response
    content_type: str
    length: str | None

    def chunks(self) -> Iterator[bytes]:
        """The bytes, chunk by chunk; the connection is closed at the end or on abort."""
        try:
            yield from self.response.iter_content(CHUNK)
        finally:
            self.response.close()

    def close(self) -> None:
        """Give the download up without reading it."""
        self.response.close()


def open_media(account: TwilioAccount, recording_sid: str) -> Media:
    """Ask Twilio for a recording's WAV with Basic auth; raises MediaUnavailable."""
    try:
        r = requests.get(media_url(account, recording_sid), stream=True,
                         auth=(account.account_sid, account.auth_token),
                         timeout=account.timeout, allow_redirects=True)
    except requests.RequestException as e:
        raise MediaUnavailable(502, f"Twilio could not be reached ({type(e).__name__}).",
                               "unreachable", f"{type(e).__name__}: {e}"[:300]) from None
    if r.status_code == 200:
        given = r.headers.get("Content-Type", "").split(";")[0].strip().lower()
        media_type = MEDIA_TYPES.get(given)
        if media_type is None:
            r.close()
            raise MediaUnavailable(502, "Twilio did not answer with a WAV or MP3 recording; "
                                        "nothing was played.", "type",
                                   f"Content-Type: {given or '(none)'}"[:100])
        return Media(r, media_type, r.headers.get("Content-Length"))
    r.close()
    detail = f"HTTP {r.status_code} {r.reason or ''}".strip()
    if r.status_code == 404:
        raise MediaUnavailable(404, "Twilio no longer has this recording.", "gone", detail)
    if r.status_code in (401, 403):
        raise MediaUnavailable(502, "Twilio refused this server's credentials; an "
                                    "administrator must check TWILIO_ACCOUNT_SID and "
                                    "TWILIO_AUTH_TOKEN.", "credentials", detail)
    raise MediaUnavailable(502, f"Twilio answered HTTP {r.status_code} for the recording.",
                           "http", detail)
