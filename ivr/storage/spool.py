"""A durable local spool for webhooks that arrive while the database is unreachable.

Each record is one file, encrypted with the personal-data key (IVR_PII_KEY, Fernet: it
holds the caller's number), written to a temporary name, fsynced, renamed and the folder
fsynced, so a record that was acknowledged survives a crash. Records are replayed in the
order they arrived (the file name starts with a nanosecond timestamp), each in its own
transaction through the normal verbs, and removed only after their commit. Replaying a
record twice is harmless: the verbs are idempotent per call and step.

No record can stop the drain. One that fails for any reason other than "the database
cannot be reached now" is moved, with its error, to the `quarantine/` folder, and the
drain goes on; so is one that waits for a step its run never reaches, after
IVR_SPOOL_MAX_WAIT seconds. `python -m ivr spool quarantine ...` lists, shows, retries
or discards them. Plain JSON records (`*.json`) from before encryption still drain.
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
from datetime import UTC, datetime
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from flask import Flask
from sqlalchemy.exc import IntegrityError, InterfaceError
from sqlalchemy.exc import TimeoutError as SATimeoutError

from ivr.domain.config import ConfigError

from . import db_errors

log = logging.getLogger("ivr.spool")  # the name logs have always carried

SUFFIX = ".spool"  # encrypted records
LEGACY_SUFFIX = ".json"  # plain records written before encryption
DEFAULT_MAX_WAIT = 600.0  # seconds a record may wait for its run's earlier step
_WAITING = ".waiting.json"  # record name -> when a drain first found it waiting


class Later(Exception):
    """This record cannot be applied yet (an earlier step is not in the database)."""


class UnreadableRecord(Exception):
    """A spool file that cannot be decrypted or is not a JSON record."""


def database_unreachable(exc: BaseException) -> bool:
    """True for "the database cannot do this now (or its schema is not ready)": the
    record is fine and must stay; anything else is about the record itself."""
    return (db_errors.away(exc) or db_errors.retryable(exc) or db_errors.schema_missing(exc)
            or isinstance(exc, (InterfaceError, SATimeoutError)))


def describe(exc: BaseException) -> str:
    """A one-line description of an error, without the SQL parameters SQLAlchemy adds."""
    first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {first[0] if first else ''}"[:300]


@dataclass
class DrainReport:
    """What one drain did."""

    applied: int = 0
    waiting: int = 0
    quarantined: list[str] = field(default_factory=list)
    stopped: str | None = None


@dataclass
class Quarantined:
    """One record in quarantine: its id, what it was, and why it is there."""

    id: str
    kind: str | None
    call_sid: str | None
    error: str
    quarantined_at: str
    received_at: str | None

    def as_dict(self) -> dict:
        """The fields, for JSON output and the audit entry."""
        return dict(self.__dict__)


class Spool:
    """The spool folder of this server."""

    def __init__(self, directory: str | Path, key: str | bytes,
                 max_wait: float = DEFAULT_MAX_WAIT):
        self.directory = Path(directory)
        self.quarantine_dir = self.directory / "quarantine"
        self.max_wait = max_wait
        self._fernet = Fernet(key.encode() if isinstance(key, str) else key)

    def _ensure(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    # --- records on disk ---------------------------------------------------------------

    def write(self, record: dict) -> Path:
        """Store one record durably, encrypted; returns its path."""
        self._ensure()
        name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"
        data = json.dumps(record, ensure_ascii=False, sort_keys=True).encode()
        return self._write_file(self.directory, name, self._fernet.encrypt(data))

    def _write_file(self, directory: Path, name: str, data: bytes) -> Path:
        tmp = directory / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        final = directory / name
        os.rename(tmp, final)
        _fsync_dir(directory)
        return final

    def read(self, path: Path) -> dict:
        """The record in a spool file; raises UnreadableRecord."""
        try:
            data = path.read_bytes()
            if path.name.endswith(SUFFIX):
                data = self._fernet.decrypt(data)
            record = json.loads(data.decode("utf-8"))
        except InvalidToken:
            raise UnreadableRecord("cannot decrypt: IVR_PII_KEY is not the key that wrote "
                                   "it") from None
        except (OSError, ValueError) as e:
            raise UnreadableRecord(f"not a spool record: {type(e).__name__}") from None
        if not isinstance(record, dict):
            raise UnreadableRecord("not a spool record: not a JSON object")
        return record

    def pending(self) -> list[Path]:
        """Records waiting, oldest first."""
        return _records(self.directory)

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

    # --- the drain ---------------------------------------------------------------------

    def drain(self, apply, wait: float = 5.0, budget: float | None = None) -> DrainReport:
        """Apply every record in order with `apply(record)`; keep the ones that must wait,
        quarantine the ones that cannot be applied, stop if the database is unreachable.

        With a `budget` (seconds), stop starting new records once it is spent; the rest
        stay for the next drain."""
        report = DrainReport()
        stop_at = None if budget is None else time.monotonic() + budget
        with self.lock(wait) as got:
            if not got:
                report.stopped = "another process is draining"
                return report
            waiting = self._waiting()
            seen = set()
            for path in self.pending():
                if stop_at is not None and time.monotonic() >= stop_at:
                    report.stopped = "time budget spent"
                    break
                seen.add(path.name)
                outcome, record = self._apply_one(path, apply, report)
                if outcome == "stop":
                    break
                if outcome == "later":
                    first = waiting.setdefault(path.name, time.time())
                    if time.time() - first >= self.max_wait:
                        self._quarantine(path, record, f"waited {self.max_wait:g} s for an "
                                         "earlier step of its run that never arrived", report)
                        waiting.pop(path.name, None)
                    else:
                        report.waiting += 1
                else:
                    waiting.pop(path.name, None)
            if report.stopped is None:
                waiting = {k: v for k, v in waiting.items() if k in seen}
            self._save_waiting(waiting)
            if report.applied:
                _fsync_dir(self.directory)
        return report

    def _apply_one(self, path: Path, apply, report: DrainReport) -> tuple[str, dict | None]:
        """Apply one record: "applied", "later", "quarantined" or "stop", and the record."""
        try:
            record = self.read(path)
        except UnreadableRecord as e:
            self._quarantine(path, None, str(e), report)
            return "quarantined", None
        for attempt in range(2):
            try:
                apply(record)
            except Later:
                return "later", record
            except IntegrityError as e:
                # A concurrent writer (a Twilio retry served live) may have stored the same
                # fact a moment ago: once more finds it and records nothing twice.
                if attempt == 0:
                    continue
                self._quarantine(path, record, describe(e), report)
                return "quarantined", record
            except Exception as e:  # no record may stop the drain
                if database_unreachable(e):
                    report.stopped = f"database error: {type(e).__name__}"
                    return "stop", record
                self._quarantine(path, record, describe(e), report)
                return "quarantined", record
            path.unlink()
            report.applied += 1
            return "applied", record
        raise AssertionError("unreachable: every attempt returns")

    def _waiting(self) -> dict[str, float]:
        try:
            data = json.loads((self.directory / _WAITING).read_text(encoding="utf-8"))
            return {str(k): float(v) for k, v in data.items()}
        except (OSError, ValueError, AttributeError, TypeError):
            return {}

    def _save_waiting(self, waiting: dict[str, float]) -> None:
        path = self.directory / _WAITING
        if not waiting:
            path.unlink(missing_ok=True)
            return
        tmp = self.directory / f".{_WAITING}.tmp"
        tmp.write_text(json.dumps(waiting), encoding="utf-8")
        os.replace(tmp, path)

    # --- quarantine --------------------------------------------------------------------

    def _quarantine(self, path: Path, record: dict | None, error: str,
                    report: DrainReport) -> None:
        """Move a record aside with its error, so the records behind it go on."""
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        rid = path.name.split(".")[0]
        meta = {"id": rid, "error": error, "quarantined_at": datetime.now(UTC).isoformat(),
                "kind": str(record.get("kind"))[:32] if record else None,
                "call_sid": record_call_sid(record) if record else None,
                "received_at": str(record.get("received_at"))[:40] if record else None,
                "file": path.name}
        self._write_file(self.quarantine_dir, f"{rid}.error",
                         json.dumps(meta, ensure_ascii=False).encode())
        if path.name.endswith(LEGACY_SUFFIX):
            # A plain file from before encryption may hold the caller's number in clear:
            # quarantine keeps its bytes encrypted.
            self._write_file(self.quarantine_dir, f"{rid}{SUFFIX}",
                             self._fernet.encrypt(path.read_bytes()))
            path.unlink()
        else:
            os.rename(path, self.quarantine_dir / path.name)
        _fsync_dir(self.quarantine_dir)
        _fsync_dir(self.directory)
        report.quarantined.append(rid)
        log.error("spool record %s quarantined call_sid=%s kind=%s: %s", rid,
                  meta["call_sid"] or "-", meta["kind"] or "-", error)

    def quarantined(self) -> list[Quarantined]:
        """The records in quarantine, oldest first."""
        out = []
        for path in sorted(self.quarantine_dir.glob("*.error")):
            try:
                meta = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                meta = {"error": "the error file cannot be read"}
            out.append(Quarantined(id=path.stem, kind=meta.get("kind"),
                                   call_sid=meta.get("call_sid"),
                                   error=meta.get("error", ""),
                                   quarantined_at=meta.get("quarantined_at", ""),
                                   received_at=meta.get("received_at")))
        return out

    def quarantine_depth(self) -> int:
        """How many records are in quarantine."""
        try:
            return sum(1 for e in os.scandir(self.quarantine_dir) if e.name.endswith(".error"))
        except (FileNotFoundError, NotADirectoryError):
            return 0

    def quarantine_entry(self, rid: str) -> tuple[Quarantined, Path]:
        """One quarantined record and its file; raises KeyError for an unknown id."""
        if not rid or "/" in rid or rid.startswith("."):
            raise KeyError(rid)
        for q in self.quarantined():
            if q.id == rid:
                files = [p for p in _records(self.quarantine_dir) if p.name.split(".")[0] == rid]
                if not files:
                    raise KeyError(rid)
                return q, files[0]
        raise KeyError(rid)

    def release(self, rid: str) -> Path:
        """Put a quarantined record back in the spool, at its place in the order."""
        _q, path = self.quarantine_entry(rid)
        target = self.directory / path.name
        os.rename(path, target)
        (self.quarantine_dir / f"{rid}.error").unlink()
        _fsync_dir(self.directory)
        _fsync_dir(self.quarantine_dir)
        return target

    def remove_quarantined(self, rid: str) -> None:
        """Delete a quarantined record and its error file."""
        _q, path = self.quarantine_entry(rid)
        path.unlink()
        (self.quarantine_dir / f"{rid}.error").unlink()
        _fsync_dir(self.quarantine_dir)


def record_call_sid(record: dict) -> str | None:
    """The call SID a spool record is about, for logs and the quarantine list."""
    form = record.get("form") if isinstance(record, dict) else None
    sid = form.get("CallSid") if isinstance(form, dict) else None
    return sid[:64] if isinstance(sid, str) else None


def _records(directory: Path) -> list[Path]:
    try:
        names = [e.name for e in os.scandir(directory)
                 if e.name.endswith((SUFFIX, LEGACY_SUFFIX)) and not e.name.startswith(".")]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [directory / n for n in sorted(names)]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def spool_of(app: Flask) -> Spool:
    """The app's spool (views and commands: ivr.web.current.spool)."""
    return app.extensions["ivr_spool"]


def max_wait(app: Flask) -> float:
    """IVR_SPOOL_MAX_WAIT: seconds a record may wait for its run's earlier step."""
    value = app.config.get("SPOOL_MAX_WAIT") or os.environ.get("IVR_SPOOL_MAX_WAIT")
    try:
        seconds = float(value) if value not in (None, "") else DEFAULT_MAX_WAIT
    except ValueError:
        raise ConfigError(f"IVR_SPOOL_MAX_WAIT must be a number of seconds, not {value!r}"
                          ) from None
    if not 0 <= seconds < float("inf"):
        raise ConfigError("IVR_SPOOL_MAX_WAIT must be a number of seconds, 0 or more")
    return seconds


def init_app(app: Flask) -> None:
    """Attach the spool (IVR_SPOOL_DIR, default instance/spool; IVR_SPOOL_MAX_WAIT)."""
    app.extensions["ivr_spool"] = Spool(
        app.config.get("SPOOL_DIR") or Path(app.config["INSTANCE_DIR"]) / "spool",
        app.config["PII_KEY"], max_wait=max_wait(app))
