"""A development stand-in for Twilio's call-update REST endpoint, for `simulate --transfer`.

It is not Twilio and never pretends to reach it: a real `http.server` on 127.0.0.1 that
answers `POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json` as Twilio does
(Basic auth with the account SID and auth token; error 20404 for an unknown call, 21220
for a call no longer in progress, 20003 for bad credentials). An accepted redirect is kept
for the simulated caller, who then fetches the new TwiML as Twilio would.
"""

from __future__ import annotations

import base64
import json
import queue
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

CALL_PATH = re.compile(r"/2010-04-01/Accounts/(?P<account>[^/]+)/Calls/(?P<call>[^/]+)\.json")
LIVE = ("queued", "ringing", "in-progress")


def _error(status: int, code: int, message: str) -> tuple[int, dict]:
    return status, {"code": code, "message": message, "status": status,
                    "more_info": f"https://www.twilio.com/docs/errors/{code}"}


class TwilioStandIn:
    """Twilio's call-update endpoint on 127.0.0.1; `calls` maps CallSid → call status."""

    def __init__(self, account_sid: str, auth_token: str, port: int = 0):
        self.account_sid, self.auth_token = account_sid, auth_token
        self.calls: dict[str, str] = {}
        self.redirects: queue.Queue[tuple[str, str]] = queue.Queue()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # the simulator prints what matters
                pass

            def do_POST(self):
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

    def next_redirect(self, timeout: float = 0) -> tuple[str, str] | None:
        """(CallSid, URL) of the next redirect Twilio accepted, if one came."""
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
        if form.get("Status") == "completed":
            self.calls[sid] = "completed"
        return 200, {"sid": sid, "account_sid": self.account_sid, "status": self.calls[sid],
                     "direction": "inbound", "api_version": "2010-04-01",
                     "uri": f"/2010-04-01/Accounts/{self.account_sid}/Calls/{sid}.json"}

    def _handle(self, handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length).decode() if length else ""
        form = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}
        status, doc = self._answer(handler.path, handler.headers, form)
        body = json.dumps(doc).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
