"""A durable local spool for webhooks that arrive while the database is unreachable.

Each record is one JSON file, written to a temporary name, fsynced, renamed and the
folder fsynced, so a record that was acknowledged survives a crash. Records are replayed
in the order they arrived (the file name starts with a nanosecond timestamp), each in its
own transaction through the normal verbs, and removed only after their commit. Replaying
a record twice is harmless: the verbs are idempotent per call and step.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from flask import Flask, current_app
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger(__name__)


class Later(Exception):
    """This record cannot be applied yet (an earlier step is not in the database)."""


@dataclass
class DrainReport:
    """What one drain did."""

    applied: int = 0
    waiting: int = 0
    failed: list[str] = field(default_factory=list)
    stopped: str | None = None


class Spool:
    """The spool folder of this server."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def _ensure(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> Path:
        """Store one record durably; returns its path."""
        self._ensure()
        name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}.json"
        tmp = self.directory / f".{name}.tmp"
        data = json.dumps(record, ensure_ascii=False, sort_keys=True).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        final = self.directory / name
        os.rename(tmp, final)
        self._fsync_dir()
        return final

    def _fsync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def pending(self) -> list[Path]:
        """Records waiting, oldest first."""
        try:
            names = [e.name for e in os.scandir(self.directory)
                     if e.name.endswith(".json") and not e.name.startswith(".")]
        except FileNotFoundError:
            return []
        return [self.directory / n for n in sorted(names)]

    def depth(self) -> int:
        """How many records wait."""
        return len(self.pending())

    @contextmanager
    def lock(self, wait: float):
        """The drain lock (one drainer per server); yields False if not had within `wait`."""
        self._ensure()
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        yield False
                        return
                    time.sleep(0.02)
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def drain(self, apply, wait: float = 5.0, budget: float | None = None) -> DrainReport:
        """Apply every record in order with `apply(record)`; keep the ones that must wait.

        With a `budget` (seconds), stop starting new records once it is spent; the rest
        stay for the next drain."""
        report = DrainReport()
        stop_at = None if budget is None else time.monotonic() + budget
        with self.lock(wait) as got:
            if not got:
                report.stopped = "another process is draining"
                return report
            for path in self.pending():
                if stop_at is not None and time.monotonic() >= stop_at:
                    report.stopped = "time budget spent"
                    break
                try:
                    record = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError) as e:
                    report.failed.append(f"{path.name}: unreadable ({e})")
                    path.rename(path.with_suffix(".bad"))
                    continue
                try:
                    apply(record)
                except Later:
                    report.waiting += 1
                    continue
                except SQLAlchemyError as e:
                    report.stopped = f"database error: {type(e).__name__}"
                    break
                path.unlink()
                report.applied += 1
            if report.applied:
                self._fsync_dir()
        return report


def spool() -> Spool:
    """The current app's spool."""
    return current_app.extensions["ivr_spool"]


def drain_if_pending(wait: float = 0.2, budget: float = 0.5) -> DrainReport | None:
    """Replay waiting records before serving a request (cheap when the spool is empty).

    A caller is waiting, so this drains for at most about `budget` seconds (and waits at
    most `wait` for another process's drain); the next requests go on where it stopped.
    A request whose call still has records waiting is spooled behind them
    (calls.RunBehind), so the order holds."""
    sp = spool()
    if not sp.pending():
        return None
    from .offline import apply_record

    report = sp.drain(apply_record, wait=wait, budget=budget)
    if report.applied or report.stopped:
        log.info("spool drain applied=%d waiting=%d stopped=%s", report.applied,
                 report.waiting, report.stopped)
    return report


def init_app(app: Flask) -> None:
    """Attach the spool (IVR_SPOOL_DIR, default instance/spool)."""
    app.extensions["ivr_spool"] = Spool(app.config.get("SPOOL_DIR")
                                        or Path(app.config["INSTANCE_DIR"]) / "spool")

