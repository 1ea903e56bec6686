"""A local İYS-compatible endpoint for tests: a real HTTP server on 127.0.0.1, in a thread.

It checks the bearer token and each batch as İYS does, keeps what it accepted per recipient
and type, and answers like İYS: `{"transactionId": ..., "creationDate": ...}`, or HTTP 422
with `{"errors": [{"code": "H175", "message": ..., "index": i, ...}]}`. A batch with any
error is refused whole. Its rules are written here independently of ivr.kvkk.iys, so the
exporter is checked against them rather than against itself.

Codes: H118 unknown field, H175 first record is RET, H174 the same RET again, H178 an older
consentDate than the one held. `FAKE_*` codes are this fake's own (İYS's real codes for
those cases are not in our reference).
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FIELDS = {"recipient", "type", "source", "status", "consentDate", "recipientType"}
OPTIONAL = {"retailerCode", "retailerAccess"}
DATE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


class FakeIys:
    """The fake İYS: `.url`, `.requests` (what it received), `.state`, `.fail_next`."""

    def __init__(self, token: str, serve: bool = True):
        self.token = token
        self.requests: list[dict] = []
        self.state: dict[tuple[str, str], tuple[str, str]] = {}
        self.fail_next: list[int] = []  # HTTP statuses to answer with, before any check
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                status, answer = fake.handle(self.path, self.headers.get("Authorization"), raw)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        if not serve:  # the rules only, called through handle() (no socket)
            return
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/sps/123456/brands/654321/consents/request"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> FakeIys:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    # --- İYS's rules ---------------------------------------------------------------

    def _record_errors(self, i: int, rec) -> list[dict]:
        if not isinstance(rec, dict):
            return [{"code": "FAKE_NOT_OBJECT", "message": "a record must be an object",
                     "index": i}]
        errs = []
        for k in sorted(set(rec) - FIELDS - OPTIONAL):
            errs.append({"code": "H118", "message": f"unknown field {k}", "index": i,
                         "location": [k]})
        for k in sorted(FIELDS - set(rec)):
            errs.append({"code": "FAKE_MISSING", "message": f"{k} is required", "index": i,
                         "location": [k]})
        if errs:
            return errs
        checks = [
            (re.fullmatch(r"\+[1-9]\d{6,13}", str(rec["recipient"])), "recipient"),
            (rec["type"] in ("ARAMA", "MESAJ", "EPOSTA"), "type"),
            (rec["source"] == "HS_CAGRI_MERKEZI", "source"),
            (rec["status"] in ("ONAY", "RET"), "status"),
            (rec["recipientType"] in ("BIREYSEL", "TACIR"), "recipientType"),
            (isinstance(rec["consentDate"], str) and DATE.match(rec["consentDate"]), "consentDate"),
        ]
        for ok, name in checks:
            if not ok:
                errs.append({"code": "FAKE_INVALID", "message": f"invalid {name}", "index": i,
                             "location": [name], "value": rec.get(name)})
        if not errs:
            try:
                when = datetime.strptime(rec["consentDate"], "%Y-%m-%d %H:%M:%S")
            except ValueError:
                return [{"code": "FAKE_INVALID", "message": "invalid consentDate", "index": i}]
            if when < datetime(2015, 5, 1):
                errs.append({"code": "FAKE_TOO_OLD", "message": "consentDate before 2015-05-01",
                             "index": i})
        return errs

    def handle(self, path: str, auth: str | None, raw: bytes) -> tuple[int, dict]:  # noqa: C901 - one branch per İYS answer the fake gives
        """One request → (HTTP status, JSON answer)."""
        with self._lock:
            entry = {"path": path, "auth": auth, "body": raw}
            self.requests.append(entry)
            if self.fail_next:
                code = self.fail_next.pop(0)
                return code, {"errors": [{"code": "FAKE_UNAVAILABLE", "message": "try later"}]}
            if auth != f"Bearer {self.token}":
                return 401, {"errors": [{"code": "FAKE_AUTH", "message": "invalid token"}]}
            try:
                batch = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                return 400, {"errors": [{"code": "FAKE_JSON", "message": "body is not JSON"}]}
            entry["batch"] = batch
            if not isinstance(batch, list) or not 1 <= len(batch) <= 1000:
                return 422, {"errors": [{"code": "FAKE_BATCH_SIZE",
                                         "message": "a batch holds 1 to 1000 records"}]}
            errors = []
            for i, rec in enumerate(batch):
                errors += self._record_errors(i, rec)
            if errors:
                return 422, {"errors": errors}
            seen_status: dict[str, str] = {}
            seen_key: set[tuple[str, str]] = set()
            state = dict(self.state)
            for i, rec in enumerate(batch):
                key = (rec["recipient"], rec["type"])
                if seen_status.setdefault(rec["recipient"], rec["status"]) != rec["status"]:
                    errors.append({"code": "FAKE_MIXED_STATUS", "index": i,
                                   "message": "one recipient with two statuses in a batch"})
                if key in seen_key:
                    errors.append({"code": "FAKE_DUPLICATE", "index": i,
                                   "message": "recipient and type twice in a batch"})
                seen_key.add(key)
                held = state.get(key)
                if held is None and rec["status"] == "RET":
                    errors.append({"code": "H175", "index": i, "value": rec["recipient"],
                                   "message": "İlk kez eklenen izin RET olamaz."})
                elif held is not None and held[0] == "RET" and rec["status"] == "RET":
                    errors.append({"code": "H174", "index": i, "value": rec["recipient"],
                                   "message": "Aynı RET durumu tekrar gönderilemez."})
                elif held is not None and rec["consentDate"] < held[1]:
                    errors.append({"code": "H178", "index": i, "value": rec["consentDate"],
                                   "message": "İzin tarihi kayıtlı izinden eski olamaz."})
                else:
                    state[key] = (rec["status"], rec["consentDate"])
            if errors:
                return 422, {"errors": errors}
            self.state = state
            return 200, {"transactionId": uuid.uuid4().hex,
                         "creationDate": datetime.now().strftime("%Y-%m-%d %H:%M:%S")}
