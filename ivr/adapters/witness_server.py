"""A small C2SP tlog-witness: `python -m ivr witness serve` (ivr/cli/witness.py).

A data-protection officer or an outside auditor runs it with their own Ed25519 key and their
own state file, apart from the IVR service and its database. It answers
`POST <prefix>/add-checkpoint` (the checks and status codes of ivr/audit/witness.py, then a
cosignature/v1 line) and `GET <prefix>/<hex SHA-256 of the origin>/checkpoint` (the latest
checkpoint it cosigned, with the log's signatures and its own). For each log it keeps the
last size, root and note it cosigned in a JSON state file; the check against the stored size
and the write of the new one happen under one lock (a thread lock and an flock on the state
file's lock file), and the file is replaced atomically before the answer is sent.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ivr.audit import cosignature, note
from ivr.audit import witness as protocol

MAX_BODY = 64 * 1024


class StateFile:
    """The latest cosigned checkpoint per origin: {"origin": {"size", "root", "note"}}."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._thread_lock = threading.Lock()

    def read(self) -> dict:
        """The whole state ({} before the first cosignature)."""
        try:
            return json.loads(self.path.read_text("utf-8"))
        except FileNotFoundError:
            return {}

    @contextmanager
    def locked(self):
        """Hold the state for a check-then-write, across threads and processes."""
        with self._thread_lock:
            self.lock_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.lock_path, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)

    def write(self, state: dict) -> None:
        """Replace the file atomically (write, fsync, rename, fsync the folder)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(state, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass
class Answer:
    """An HTTP answer."""

    status: int
    body: str
    content_type: str = "text/plain; charset=utf-8"


class Witness:
    """The witness's behaviour, apart from HTTP."""

    def __init__(self, name: str, key: Ed25519PrivateKey, logs: list[note.Verifier],
                 state: StateFile, clock=time.time):
        self.cosigner = cosignature.cosigner(name, key)
        self.key = key
        self.logs: dict[str, list[note.Verifier]] = {}
        for v in logs:
            self.logs.setdefault(v.name, []).append(v)
        self.state = state
        self.clock = clock

    def add_checkpoint(self, body: bytes) -> Answer:
        """POST add-checkpoint."""
        try:
            req = protocol.parse_request(body)
            n, cp = protocol.open_trusted(req.note_text, self.logs)
            with self.state.locked():
                state = self.state.read()
                known = state.get(cp.origin) or {}
                size = int(known.get("size", 0))
                root = base64.b64decode(known["root"]) if "root" in known else None
                protocol.check(req, cp, size, root)
                line = cosignature.cosign(n.text, self.cosigner.name, self.key,
                                          int(self.clock()))
                mine = f"{note.DASH} {self.cosigner.name} "
                others = "".join(f"{x}\n" for x in req.note_text[len(n.text) + 1:].splitlines()
                                 if x and not x.startswith(mine))
                state[cp.origin] = {"size": cp.size, "root": base64.b64encode(cp.root).decode(),
                                    "note": f"{n.text}\n{others}{line}"}
                self.state.write(state)
        except protocol.Refusal as e:
            if e.status == 409:
                return Answer(409, f"{e.known_size}\n", protocol.SIZE_CONTENT_TYPE)
            return Answer(e.status, e.reason + "\n")
        return Answer(200, line)

    def checkpoint(self, origin_hash: str) -> Answer:
        """GET <origin hash>/checkpoint: the latest cosigned checkpoint of that log."""
        for origin, entry in self.state.read().items():
            if hashlib.sha256(origin.encode()).hexdigest() == origin_hash:
                return Answer(200, entry["note"])
        return Answer(404, "no checkpoint cosigned for that log\n")


def http_server(witness: Witness, host: str, port: int, prefix: str = "") -> ThreadingHTTPServer:
    """An HTTP server for the witness (not started: call serve_forever)."""
    prefix = prefix.rstrip("/")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the spec recommends

        def _send(self, a: Answer) -> None:
            data = a.body.encode()
            self.send_response(a.status)
            self.send_header("Content-Type", a.content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):  # the stdlib's name
            length = int(self.headers.get("Content-Length") or 0)
            if self.path != f"{prefix}/add-checkpoint":
                self.rfile.read(min(length, MAX_BODY))
                return self._send(Answer(404, "not found\n"))
            if length > MAX_BODY:
                self.close_connection = True
                return self._send(Answer(413, "request too large\n"))
            self._send(witness.add_checkpoint(self.rfile.read(length)))

        def do_GET(self):
            parts = self.path[len(prefix):].strip("/").split("/") \
                if self.path.startswith(prefix + "/") else []
            if len(parts) == 2 and parts[1] == "checkpoint":
                return self._send(witness.checkpoint(parts[0]))
            self._send(Answer(404, "not found\n"))

        def log_message(self, fmt, *args):
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server
