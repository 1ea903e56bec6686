"""A development stand-in for Twilio's REST API: call updates (`simulate --transfer`) and
recordings' media (the call page's player), so that development needs no Twilio account.

It is not Twilio and never pretends to reach it: a real `http.server` on 127.0.0.1 that
answers as Twilio does, with Basic auth (the account SID and auth token; error 20003 when
they are wrong):

- `POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`: error 20404 for an
  unknown call, 21220 for a call no longer in progress. An accepted redirect is kept for
  the simulated caller, who then fetches the new TwiML as Twilio would.
- `GET /2010-04-01/Accounts/{AccountSid}/Recordings/{RecordingSid}.wav`: a short WAV it
  makes itself (two tones, 8 kHz mono, `audio/wav`), for any well-formed RecordingSid that
  was not deleted: the simulator's calls have no real audio.
- `DELETE /2010-04-01/Accounts/{AccountSid}/Recordings/{RecordingSid}.json`: 204, and the
  recording is gone (20404) from then on, as retention expects.

`ivr serve` hosts one when IVR_TWILIO_API_URL names a local port (`make run` sets
http://127.0.0.1:5099 when no Twilio account is configured). A `simulate --transfer`
against that server then finds the port taken and drives the server's stand-in through
two development-only paths (`RemoteStandIn`): `PUT /_standin/calls/{CallSid}` with the
call's status as the body, and `GET /_standin/calls/{CallSid}` for {status, redirect}.
"""

from __future__ import annotations

import base64
import io
import json
import math
import queue
import re
import struct
import threading
import time
import wave
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import requests

CALL_PATH = re.compile(r"/2010-04-01/Accounts/(?P<account>[^/]+)/Calls/(?P<call>[^/]+)\.json")
RECORDING_PATH = re.compile(r"/2010-04-01/Accounts/(?P<account>[^/]+)/Recordings/"
                            r"(?P<recording>RE[0-9a-f]{32})\.(?P<ext>wav|json)")
CONTROL_PATH = re.compile(r"/_standin/calls/(?P<call>[^/]+)")
LIVE = ("queued", "ringing", "in-progress")


def _error(status: int, code: int, message: str) -> tuple[int, dict]:
    return status, {"code": code, "message": message, "status": status,
                    "more_info": f"https://www.twilio.com/docs/errors/{code}"}


def recording_wav(seconds: float = 2.0, rate: int = 8000) -> bytes:
    """The stand-in's recording: two tones (440 Hz, then 660 Hz), 16-bit mono PCM WAV."""
    frames = bytearray()
    n = int(seconds * rate)
    for i in range(n):
        freq = 440 if i < n // 2 else 660
        fade = min(1.0, i / 400, (n - i) / 400)  # no click at the start and the end
        frames += struct.pack("<h", int(6000 * fade * math.sin(2 * math.pi * freq * i / rate)))
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(frames))
    return buf.getvalue()


class TwilioStandIn:
    """Twilio's REST API on 127.0.0.1; `calls` maps CallSid → call status."""

    def __init__(self, account_sid: str, auth_token: str, port: int = 0):
        self.account_sid, self.auth_token = account_sid, auth_token
        self.calls: dict[str, str] = {}
        self.redirects: queue.Queue[tuple[str, str]] = queue.Queue()
        self.redirected: dict[str, str] = {}  # CallSid → the last URL, for RemoteStandIn
        self.deleted: set[str] = set()  # RecordingSids deleted through the API
        self._wav: bytes | None = None
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # the simulator prints what matters
                pass

            def do_POST(self):
                standin._handle(self)

            def do_GET(self):
                standin._handle(self)

            def do_PUT(self):
                standin._handle(self)

            def do_DELETE(self):
                standin._handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> TwilioStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def set_status(self, call_sid: str, status: str) -> None:
        """The call's status, as it would be at Twilio."""
        self.calls[call_sid] = status

    def next_redirect(self, timeout: float = 0, call_sid: str | None = None) \
            -> tuple[str, str] | None:
        """(CallSid, URL) of the next redirect Twilio accepted, if one came (`call_sid` is
        RemoteStandIn's: this process's simulator has one call at a time)."""
        try:
            return self.redirects.get(timeout=timeout)
        except queue.Empty:
            return None

    def _authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return user == self.account_sid and password == self.auth_token

    def _answer(self, path: str, headers, form: dict) -> tuple[int, dict]:
        m = CALL_PATH.fullmatch(path)
        if m is None:
            return _error(404, 20404, f"The requested resource {path} was not found")
        if not self._authorized(headers.get("Authorization")) or m["account"] != self.account_sid:
            return _error(401, 20003, "Authenticate")
        sid = m["call"]
        if sid not in self.calls:
            return _error(404, 20404, f"The requested resource {path} was not found")
        if self.calls[sid] not in LIVE:
            return _error(400, 21220, "Call is not in-progress. Cannot redirect.")
        if form.get("Url"):
            self.redirects.put((sid, form["Url"]))
            self.redirected[sid] = form["Url"]
        if form.get("Status") == "completed":
            self.calls[sid] = "completed"
        return 200, {"sid": sid, "account_sid": self.account_sid, "status": self.calls[sid],
                     "direction": "inbound", "api_version": "2010-04-01",
                     "uri": f"/2010-04-01/Accounts/{self.account_sid}/Calls/{sid}.json"}

    def _recording(self, handler, m) -> tuple[int, dict] | bytes | None:
        """A recording's media (GET .wav) or its deletion (DELETE .json)."""
        if (handler.command, m["ext"]) not in (("GET", "wav"), ("DELETE", "json")):
            return _error(405, 20004, "Method not allowed")
        if not self._authorized(handler.headers.get("Authorization")) \
                or m["account"] != self.account_sid:
            return _error(401, 20003, "Authenticate")
        if m["recording"] in self.deleted:
            return _error(404, 20404, f"The requested resource {handler.path} was not found")
        if handler.command == "DELETE":
            self.deleted.add(m["recording"])
            return None
        if self._wav is None:
            self._wav = recording_wav()
        return self._wav

    def _control(self, handler, sid: str, raw: str) -> tuple[int, dict]:
        """RemoteStandIn's paths: set a call's status (PUT), read it and its redirect (GET)."""
        if handler.command == "PUT":
            self.calls[sid] = raw.strip() or "in-progress"
        elif handler.command != "GET":
            return _error(405, 20004, "Method not allowed")
        return 200, {"status": self.calls.get(sid), "redirect": self.redirected.get(sid)}

    def _handle(self, handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length).decode() if length else ""
        path = handler.path
        if (m := RECORDING_PATH.fullmatch(path)) is not None:
            answer = self._recording(handler, m)
        elif (c := CONTROL_PATH.fullmatch(path)) is not None:
            answer = self._control(handler, c["call"], raw)
        elif handler.command == "POST":
            form = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}
            answer = self._answer(path, handler.headers, form)
        else:
            answer = _error(404, 20404, f"The requested resource {path} was not found")
        if answer is None:  # a deletion
            handler.send_response(204)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        if isinstance(answer, bytes):
            body, content_type, status = answer, "audio/wav", 200
        else:
            status, doc = answer
            body, content_type = json.dumps(doc).encode(), "application/json"
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


class RemoteStandIn:
    """A TwilioStandIn another process hosts (`ivr serve`), driven over its control paths."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")

    @classmethod
    def found_at(cls, url: str) -> RemoteStandIn | None:
        """The stand-in answering at `url`, or None if none does."""
        probe = "CA" + "0" * 32
        try:
            r = requests.get(f"{url.rstrip('/')}/_standin/calls/{probe}", timeout=2)
        except requests.RequestException:
            return None
        return cls(url) if r.status_code == 200 and "status" in r.json() else None

    def __enter__(self) -> RemoteStandIn:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def set_status(self, call_sid: str, status: str) -> None:
        requests.put(f"{self.url}/_standin/calls/{call_sid}", data=status,
                     timeout=5).raise_for_status()

    def next_redirect(self, timeout: float = 0, call_sid: str | None = None) \
            -> tuple[str, str] | None:
        """(CallSid, URL) once the call has been redirected, waiting up to `timeout` s."""
        if call_sid is None:  # the shared stand-in has many calls: it must be told which
            raise ValueError("RemoteStandIn.next_redirect needs the call_sid")
        deadline = time.monotonic() + timeout
        while True:
            doc = requests.get(f"{self.url}/_standin/calls/{call_sid}", timeout=5).json()
            if doc.get("redirect"):
                return call_sid, doc["redirect"]
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)
