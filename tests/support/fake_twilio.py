"""A local HTTP server that answers the call-update endpoint as Twilio's REST API does, and
serves and deletes recordings' media.

It is a real `http.server` on 127.0.0.1 in a thread: the real twilio client talks to it
over HTTP, with Basic auth. It records every request, knows which calls are live, and can
be told to fail the next request with a Twilio-shaped error, a 5xx, or to stall.
Recordings: GET /2010-04-01/Accounts/{AccountSid}/Recordings/{RecordingSid}.wav answers
the bytes in `recordings` (Basic auth required, as at Twilio), DELETE ….json removes them.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

CALL_PATH = re.compile(r"/2010-04-01/Accounts/(?P<account>[^/]+)/Calls/(?P<call>[^/]+)\.json")
RECORDING_PATH = re.compile(r"/2010-04-01/Accounts/(?P<account>[^/]+)/Recordings/"
                            r"(?P<recording>RE[0-9a-f]{32})\.(?P<ext>wav|mp3|json)")


@dataclass
class Received:
    """One request as the fake saw it."""

    method: str
    path: str
    account_sid: str | None
    call_sid: str | None
    form: dict[str, str]
    authorized: bool
    answered: int = 0


@dataclass
class Failure:
    """What to answer instead of success: an HTTP status and a body (JSON or not)."""

    status: int
    body: str
    content_type: str = "application/json"


def twilio_error(status: int, code: int, message: str) -> Failure:
    """An error body exactly as Twilio shapes it."""
    return Failure(status, json.dumps({
        "code": code, "message": message, "status": status,
        "more_info": f"https://www.twilio.com/docs/errors/{code}"}))


@dataclass
class FakeTwilio:
    """The fake API: `calls` maps CallSid → status; unknown calls answer 20404."""

    account_sid: str
    auth_token: str
    calls: dict[str, str] = field(default_factory=dict)
    requests: list[Received] = field(default_factory=list)
    fail_next: list[Failure] = field(default_factory=list)
    stall: bool = False
    recordings: dict[str, bytes] = field(default_factory=dict)
    media_requests: list[Received] = field(default_factory=list)
    media_type: str = "audio/x-wav"  # the Content-Type recordings are served with

    def __post_init__(self):
        self.received = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                fake._handle(self)

            def do_GET(self):
                fake._recording(self)

            def do_DELETE(self):
                fake._recording(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # --- lifecycle ----------------------------------------------------------------

    def start(self) -> FakeTwilio:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    # --- what the tests look at ---------------------------------------------------

    def updates(self, call_sid: str | None = None) -> list[Received]:
        """The call-update requests received (for one call, if given)."""
        with self._lock:
            return [r for r in self.requests
                    if r.call_sid and (call_sid is None or r.call_sid == call_sid)]

    # --- the server ---------------------------------------------------------------

    def _authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return user == self.account_sid and password == self.auth_token

    def _reply(self, handler, failure: Failure) -> None:
        body = failure.body.encode()
        handler.send_response(failure.status)
        handler.send_header("Content-Type", failure.content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _handle(self, handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length).decode() if length else ""
        form = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}
        m = CALL_PATH.fullmatch(handler.path)
        rec = Received("POST", handler.path, m and m["account"], m and m["call"], form,
                       self._authorized(handler.headers.get("Authorization")))
        with self._lock:
            self.requests.append(rec)
            failure = self.fail_next.pop(0) if self.fail_next else None
        self.received.set()
        if self.stall:
            # Hold the answer until the test releases it (the client gives up first).
            self.release.wait(30)
        if m is None:
            answer = twilio_error(404, 20404, f"The requested resource {handler.path} was "
                                  "not found")
        elif not rec.authorized or rec.account_sid != self.account_sid:
            answer = twilio_error(401, 20003, "Authenticate")
        elif failure is not None:
            answer = failure
        elif rec.call_sid not in self.calls:
            answer = twilio_error(404, 20404, f"The requested resource {handler.path} was "
                                  "not found")
        elif self.calls[rec.call_sid] not in ("in-progress", "ringing", "queued"):
            answer = twilio_error(400, 21220, "Call is not in-progress. Cannot redirect.")
        else:
            answer = Failure(200, json.dumps(self._call_resource(rec)))
        rec.answered = answer.status
        try:
            self._reply(handler, answer)
        except OSError:
            pass  # the client gave up (a timeout): nothing to answer to

    def _recording(self, handler) -> None:
        """A recording's media (GET .wav) or its deletion (DELETE .json), with Basic auth."""
        m = RECORDING_PATH.fullmatch(handler.path)
        rec = Received(handler.command, handler.path, m and m["account"],
                       None, {}, self._authorized(handler.headers.get("Authorization")))
        with self._lock:
            self.media_requests.append(rec)
        if m is None or (handler.command, m["ext"]) not in (("GET", "wav"), ("DELETE", "json")):
            answer = twilio_error(405 if m else 404, 20004 if m else 20404,
                                  "Method not allowed" if m else "Not found")
        elif not rec.authorized or rec.account_sid != self.account_sid:
            answer = twilio_error(401, 20003, "Authenticate")
        elif m["recording"] not in self.recordings:
            answer = twilio_error(404, 20404, f"The requested resource {handler.path} was "
                                  "not found")
        elif handler.command == "DELETE":
            with self._lock:
                del self.recordings[m["recording"]]
            handler.send_response(204)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            rec.answered = 204
            return
        else:
            data = self.recordings[m["recording"]]
            handler.send_response(200)
            handler.send_header("Content-Type", self.media_type)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            rec.answered = 200
            return
        rec.answered = answer.status
        self._reply(handler, answer)

    def _call_resource(self, rec: Received) -> dict:
        sid = rec.call_sid
        return {
            "sid": sid, "account_sid": self.account_sid, "status": self.calls[sid],
            "direction": "inbound", "api_version": "2010-04-01",
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Calls/{sid}.json",
            "date_created": "Mon, 01 Jun 2026 10:00:00 +0000",
            "date_updated": "Mon, 01 Jun 2026 10:00:05 +0000",
            "start_time": "Mon, 01 Jun 2026 10:00:01 +0000", "end_time": None,
            "duration": None, "price": None, "price_unit": "USD",
            "from": "+905321234567", "to": "+902122223344", "subresource_uris": {},
        }
