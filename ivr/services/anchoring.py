"""Anchoring checkpoints outside the controller: RFC 3161 time-stamps and witness cosignatures.

Two halves, so that nothing here ever waits on the network inside a webhook or the
sequencer's integration:
- `mark_wanted` runs inside the sequencer's transaction (no network): every new checkpoint
  is wanted by each witness of IVR_WITNESSES; the latest checkpoint is wanted by each
  authority of IVR_TSA_URLS when the newest time-stamped one is IVR_AUDIT_TIMESTAMP_INTERVAL
  old, or from an earlier Istanbul day (the sequencer also signs a checkpoint at the first
  pass after Istanbul midnight, so each day's last leaves are stamped soon after it ends).
- `run_anchoring` runs in a background thread of its own (`AnchorThread`, one holder of an
  advisory lock at a time) or from `audit anchor`: for each authority and witness, oldest
  checkpoint first, it fetches the token or cosignature, verifies it, and stores it. A
  target that is down, slow or answers garbage gets its retries backed off (doubling from
  ANCHOR_RETRY seconds up to ANCHOR_RETRY_MAX), and the rows stay wanted until they are
  had: a gap is filled afterwards, checkpoint by checkpoint.

`check_published` is the sequencer's guard against a forked history: a new checkpoint must
extend the latest one published (the database's, and the copy kept outside it in
instance/audit_published_checkpoint).
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from flask import Flask
from sqlalchemy.engine import Connection

from ivr.adapters import tsa_client, witness_client
from ivr.audit import cosignature, merkle, note, timestamps
from ivr.audit import witness as protocol
from ivr.domain.config import ConfigError
from ivr.domain.times import LOCAL, utcnow
from ivr.storage import anchor_store as store
from ivr.storage.audit_store import _PG_LOCK_KEY, try_lock
from ivr.storage.audit_tree import StoredTree, latest_head
from ivr.storage.db import database
from ivr.storage.models import AuditTreeHead

log = logging.getLogger(__name__)

ANCHOR_LOCK_KEY = _PG_LOCK_KEY + 1
PUBLISHED_FILE = "audit_published_checkpoint"
_SETTINGS = "ivr_anchor_settings"


# --- settings --------------------------------------------------------------------------


@dataclass(frozen=True)
class Witness:
    """A witness of IVR_WITNESSES: its cosignature/v1 key and its submission URL."""

    cosigner: cosignature.Cosigner
    url: str

    @property
    def target(self) -> str:
        """How its anchors are filed: its vkey."""
        return self.cosigner.vkey()


@dataclass(frozen=True)
class Settings:
    """The anchoring settings of an app."""

    tsa_urls: tuple[str, ...] = ()
    roots: tuple[x509.Certificate, ...] = ()
    interval: float = 3600.0
    witnesses: tuple[Witness, ...] = ()
    timeout: float = 10.0
    retry: float = 5.0
    retry_max: float = 600.0
    period: float = 5.0
    published_file: Path | None = None

    @property
    def enabled(self) -> bool:
        """Whether there is anything to anchor with."""
        return bool(self.tsa_urls or self.witnesses)


def parse_witnesses(value: str | None) -> tuple[Witness, ...]:
    """IVR_WITNESSES: `VKEY URL` entries separated by ';'."""
    out = []
    for entry in (value or "").split(";"):
        entry = entry.strip()
        if not entry:
            continue
        parts = entry.split()
        if len(parts) != 2 or not parts[1].startswith(("http://", "https://")):
            raise ConfigError(f"IVR_WITNESSES: an entry is 'VKEY URL', not {entry!r}")
        try:
            out.append(Witness(cosignature.parse_vkey(parts[0]), parts[1].rstrip("/")))
        except note.NoteError as e:
            raise ConfigError(f"IVR_WITNESSES: {e}") from None
    return tuple(out)


def load_settings(cfg: dict) -> Settings:
    """Anchoring settings from an app's config; ConfigError names a bad one."""
    urls = tuple(u.strip() for u in (cfg.get("TSA_URLS") or "").split(",") if u.strip())
    roots: tuple = ()
    ca = cfg.get("TSA_CA_FILE")
    if ca:
        try:
            roots = tuple(timestamps.load_roots(Path(ca).read_bytes()))
        except (OSError, ValueError) as e:
            raise ConfigError(f"IVR_TSA_CA_FILE ({ca}): {e}") from None
    if urls and not roots:
        raise ConfigError("IVR_TSA_URLS is set but IVR_TSA_CA_FILE is not: every token is "
                          "verified against the authorities' roots before it is stored")
    try:
        interval = float(cfg.get("AUDIT_TIMESTAMP_INTERVAL") or 3600)
    except ValueError:
        raise ConfigError("IVR_AUDIT_TIMESTAMP_INTERVAL: seconds, a number") from None
    if interval <= 0:
        raise ConfigError("IVR_AUDIT_TIMESTAMP_INTERVAL: a positive number of seconds")
    published = cfg.get("AUDIT_PUBLISHED_FILE") or os.path.join(cfg["INSTANCE_DIR"],
                                                                 PUBLISHED_FILE)
    return Settings(tsa_urls=urls, roots=roots, interval=interval,
                    witnesses=parse_witnesses(cfg.get("WITNESSES")),
                    timeout=float(cfg.get("ANCHOR_TIMEOUT") or 10.0),
                    retry=float(cfg.get("ANCHOR_RETRY") or 5.0),
                    retry_max=float(cfg.get("ANCHOR_RETRY_MAX") or 600.0),
                    period=float(cfg.get("ANCHOR_PERIOD") or 5.0),
                    published_file=Path(published))


def settings(app: Flask) -> Settings:
    """The app's anchoring settings (read once)."""
    s = app.extensions.get(_SETTINGS)
    if s is None:
        s = app.extensions[_SETTINGS] = load_settings(app.config)
    return s


# --- the sequencer's side: what is wanted, and the fork guard --------------------------


def _day(t: datetime):
    return t.astimezone(LOCAL).date()


def new_day(last: datetime, now: datetime) -> bool:
    """Whether an Istanbul midnight lies between two instants."""
    return _day(last) != _day(now)


def mark_wanted(conn: Connection, s: Settings, head: AuditTreeHead | None, now: datetime) -> None:
    """Inside the sequencer's transaction: file the anchors the latest checkpoint needs
    (`head`, when this pass signed one, is new and wanted by every witness)."""
    if head is not None and s.witnesses:
        store.want(conn, head, store.COSIGNATURE, [w.target for w in s.witnesses], now)
    if not s.tsa_urls:
        return
    latest = head or latest_head(conn)
    if latest is None or store.has_kind(conn, latest.id, store.TIMESTAMP):
        return
    last = store.last_stamped_at(conn)
    if last is None or (now - last).total_seconds() >= s.interval or new_day(last, now):
        store.want(conn, latest, store.TIMESTAMP, list(s.tsa_urls), now)


def read_published(s: Settings, verifier: note.Verifier) -> note.Checkpoint | None:
    """The checkpoint kept outside the database, if its signature is the log's."""
    if s.published_file is None:
        return None
    try:
        text = s.published_file.read_text("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    try:
        return note.open_checkpoint(text, [verifier], verifier.name)
    except merkle.VerificationError:
        log.warning("%s does not hold a checkpoint signed by this log's key; ignored",
                    s.published_file)
        return None


def write_published(s: Settings, text: str, size: int) -> None:
    """Keep the newest signed checkpoint outside the database (never a smaller one)."""
    path = s.published_file
    if path is None:
        return
    try:
        old = note.parse_checkpoint(note.parse_note(path.read_text("utf-8")).text).size
    except (OSError, UnicodeDecodeError, note.NoteError):
        old = -1
    if size < old:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, "utf-8")
    os.replace(tmp, path)


def check_published(tree: StoredTree, size: int, known: list[tuple[str, int, bytes]]
                    ) -> str | None:
    """Why a checkpoint of the tree at `size` would fork from a published one (None if it
    extends each of them): `known` holds (where, size, root) of published checkpoints."""
    for where, k_size, k_root in sorted(known, key=lambda k: -k[1]):
        if k_size == 0:
            continue
        if size < k_size:
            return (f"the tree has {size} leaves, fewer than the {k_size} of {where}: leaves "
                    "were lost (an old backup restored, or a failover that lost integrated "
                    "leaves)")
        try:
            root = tree.root(k_size)
        except LookupError as e:
            return f"the tree cannot be read at size {k_size} ({e})"
        if root != k_root:
            return (f"the tree's root at size {k_size} is {root.hex()[:16]}…, but {where} "
                    f"signs {k_root.hex()[:16]}…: this history is not the published one (an "
                    "old backup restored, or lost leaves)")
    return None


# --- the worker's side: fetching ---------------------------------------------------------


@dataclass
class Report:
    """What one anchoring pass did."""

    stamped: int = 0
    cosigned: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)


def _backoff(s: Settings, attempts: int) -> timedelta:
    return timedelta(seconds=min(s.retry_max, s.retry * 2 ** max(0, attempts - 1)))


def _fail(conn, s: Settings, row, now: datetime, why: str, report: Report) -> None:
    attempts = row.attempts + 1
    with conn.begin():
        store.settle(conn, row.id, attempts=attempts, next_try_at=now + _backoff(s, attempts),
                     last_error=why[:1000])
    report.failures.append(why)
    log.warning("audit anchoring: %s (attempt %d; next try in %.0f s)", why, attempts,
                _backoff(s, attempts).total_seconds())


def _due(row, now: datetime, retry_now: bool) -> bool:
    return retry_now or row.next_try_at is None or row.next_try_at <= now


def _stamp(conn, s: Settings, url: str, report: Report, clock, retry_now: bool) -> None:
    """Every wanted time-stamp of one authority, page by page, until it fails."""
    while True:
        with conn.begin():
            rows = store.wanted(conn, store.TIMESTAMP, url)
        for row in rows:
            now = clock()
            if not _due(row, now, retry_now):
                return
            body = timestamps.signed_body(row.note)
            req = timestamps.make_request(body)
            try:
                der = tsa_client.request_token(url, req.der, s.timeout)
                tok = timestamps.verify(der, body, list(s.roots), request=req)
                timestamps.check_not_before(tok, row.at)
            except (tsa_client.AuthorityUnavailable, merkle.VerificationError) as e:
                _fail(conn, s, row, clock(), f"time-stamp authority {url}: {e}", report)
                return
            with conn.begin():
                store.settle(conn, row.id, state=store.DONE, data=base64.b64encode(der).decode(),
                             anchored_at=tok.gen_time, attempts=row.attempts + 1,
                             next_try_at=None, last_error=None)
            report.stamped += 1
        if len(rows) < store.PAGE:
            return


def _cosignature(reply: witness_client.Reply, text: str, w: Witness) -> tuple[str, int]:
    """The witness's verified cosignature line in a 200 answer, and its time."""
    try:
        lines = [x for x in reply.body.decode("utf-8").splitlines() if x]
    except UnicodeDecodeError:
        lines = []
    for line in lines:
        try:
            sig = note.parse_note(f"{text}\n{line}\n").signatures[0]
        except note.NoteError:
            continue
        if (sig.name, sig.hash) != (w.cosigner.name, w.cosigner.id):
            continue
        return f"{line}\n", cosignature.verify_cosignature(text, sig, w.cosigner)
    raise merkle.VerificationError(f"witness {w.cosigner.name}", "a cosignature line of its key",
                                   f"{len(lines)} lines, none of its key")


_STOP = -1


def _cosign_one(conn, s: Settings, w: Witness, row: store.Wanted, old: int, report: Report,
                clock) -> int:
    """Get one checkpoint cosigned; the size the witness has cosigned after, or _STOP when
    this witness is to be left alone until its retry time."""
    name = w.cosigner.name
    for _ in range(3):
        if old > row.tree_size:
            with conn.begin():
                top = latest_head(conn)
            top_size = top.tree_size if top is not None else 0
            if old > top_size:
                _fail(conn, s, row, clock(),
                      f"witness {name} has cosigned tree size {old}, beyond this log's newest "
                      f"checkpoint ({top_size}): an old backup restored, or lost leaves?",
                      report)
                return _STOP
            with conn.begin():
                store.settle(conn, row.id, state=store.SKIPPED,
                             last_error=f"witness {name} had cosigned size {old} first")
            report.skipped += 1
            return old
        with conn.begin():
            proof = StoredTree(conn).consistency(old, row.tree_size) if old else []
        body = protocol.format_request(old, proof, row.note)
        text = note.parse_note(row.note).text
        try:
            reply = witness_client.add_checkpoint(w.url, body, s.timeout)
            if reply.status == 409 and reply.content_type.startswith(protocol.SIZE_CONTENT_TYPE):
                known = int(reply.body.decode().strip())
                if known == old:
                    raise merkle.VerificationError(f"witness {name}", "a new size in its 409",
                                                   f"the size sent, {old}")
                old = known
                continue
            if reply.status != 200:
                raise witness_client.WitnessUnavailable(
                    f"HTTP {reply.status}: {reply.body[:200].decode('utf-8', 'replace')}".strip())
            line, ts = _cosignature(reply, text, w)
            floor = row.at.astimezone(UTC).replace(microsecond=0)
            if datetime.fromtimestamp(ts, UTC) < floor:
                raise merkle.VerificationError(
                    f"cosignature of {name}", f"a time no earlier than the checkpoint's "
                    f"({floor.isoformat()})", datetime.fromtimestamp(ts, UTC).isoformat())
        except (witness_client.WitnessUnavailable, merkle.VerificationError, ValueError) as e:
            _fail(conn, s, row, clock(), f"witness {name} ({w.url}): {e}", report)
            return _STOP
        with conn.begin():
            store.settle(conn, row.id, state=store.DONE, data=line,
                         anchored_at=datetime.fromtimestamp(ts, UTC),
                         attempts=row.attempts + 1, next_try_at=None, last_error=None)
        report.cosigned += 1
        return row.tree_size
    _fail(conn, s, row, clock(), f"witness {name}: its size kept changing", report)
    return _STOP


def _cosign(conn, s: Settings, w: Witness, report: Report, clock, retry_now: bool) -> None:
    """Every wanted cosignature of one witness, page by page, until it fails."""
    while True:
        with conn.begin():
            rows = store.wanted(conn, store.COSIGNATURE, w.target)
            old = store.done_size(conn, store.COSIGNATURE, w.target)
        for row in rows:
            if not _due(row, clock(), retry_now):
                return
            old = _cosign_one(conn, s, w, row, old, report, clock)
            if old == _STOP:
                return
        if len(rows) < store.PAGE:
            return


def run_anchoring(app: Flask, *, clock=utcnow, retry_now: bool = False,
                  wait: float = 0.0) -> Report | None:
    """One pass over every authority and witness; None when another process is anchoring.

    It first asks for the latest checkpoint's time-stamp when one is due, as the sequencer's
    pass does: with no new calls no pass runs, and the last checkpoint before a quiet spell
    (or before the servers stop) must not wait for the next call. `retry_now` (an operator's
    `audit anchor --once`) tries every wanted anchor now, whatever its back-off says; `wait`
    is how long to wait for another process's pass to end."""
    s = settings(app)
    report = Report()
    if not s.enabled:
        return report
    with database(app).engine.connect() as conn:
        if not try_lock(conn, ANCHOR_LOCK_KEY, wait):
            return None
        try:
            with conn.begin():
                mark_wanted(conn, s, None, clock())
            for url in s.tsa_urls:
                _stamp(conn, s, url, report, clock, retry_now)
            for w in s.witnesses:
                _cosign(conn, s, w, report, clock, retry_now)
        finally:
            conn.rollback()
            conn.exec_driver_sql(f"SELECT pg_advisory_unlock({ANCHOR_LOCK_KEY})")
            conn.commit()
    return report


# --- the thread --------------------------------------------------------------------------


class AnchorThread(threading.Thread):
    """The background anchoring worker of one server process (it holds its app weakly)."""

    def __init__(self, app: Flask):
        super().__init__(name="ivr-audit-anchoring", daemon=True)
        self.app_ref = weakref.ref(app)
        self.period = settings(app).period
        self.stopping = threading.Event()

    def run(self) -> None:
        failing = ""
        while not self.stopping.wait(self.period):
            app = self.app_ref()
            if app is None:
                return
            try:
                run_anchoring(app)
                failing = ""
            except Exception as e:  # the rows stay wanted; the next pass retries
                if str(e) != failing:
                    log.exception("audit anchoring pass failed; retrying")
                failing = str(e)
            del app

    def stop(self, timeout: float = 5.0) -> None:
        """End the thread."""
        self.stopping.set()
        self.join(timeout)


_THREAD = "ivr_audit_anchoring"
_lock = threading.Lock()


def ensure_thread(app: Flask) -> None:
    """Start this process's anchoring thread once (when anything is configured)."""
    if not settings(app).enabled:
        return
    pid = os.getpid()
    running = app.extensions.get(_THREAD)
    if running is not None and running[0] == pid:
        return
    with _lock:
        running = app.extensions.get(_THREAD)
        if running is None or running[0] != pid:
            t = AnchorThread(app)
            t.start()
            app.extensions[_THREAD] = (pid, t)


def stop_thread(app: Flask) -> None:
    """Stop the app's anchoring thread in this process, if it runs."""
    running = app.extensions.pop(_THREAD, None)
    if running is not None and running[0] == os.getpid():
        running[1].stop()


# --- what /readyz and /metrics say ---------------------------------------------------------


def readiness(app: Flask, engine, now: datetime | None = None) -> tuple[str, list[str]]:
    """The /readyz line (always 'ok': anchoring never stops calls) and its warnings."""
    st = store.status(engine)
    if not st.readable:
        return "ok (anchors unreadable)", []
    now = now or utcnow()
    warnings = []
    if st.refused:
        warnings.append(f"the audit sequencer refuses to sign checkpoints: {st.refused}")
    parts = []
    for kind, p in st.pending.items():
        if not p.count:
            continue
        age = (now - p.oldest).total_seconds() if p.oldest else 0.0
        parts.append(f"{p.count} {kind}s wanted, oldest {age:.0f} s")
        if p.failing:
            warnings.append(f"{p.count} checkpoint {kind}(s) waiting for {age:.0f} s; "
                            f"retrying with back-off: {p.last_error}")
    line = "; ".join(parts) if parts else ("none wanted" if settings(app).enabled
                                           else "not configured")
    return f"ok ({line})", warnings


def verifier_roots(app: Flask) -> list[x509.Certificate]:
    """The authorities' roots of IVR_TSA_CA_FILE."""
    return list(settings(app).roots)


def init_app(app: Flask) -> None:
    """Read the anchoring settings now, so a bad one stops start-up with one line."""
    settings(app)

