"""Structured logs without phone numbers, and Prometheus metrics at /metrics.

Logs: one JSON object per line on stderr (IVR_LOG_FORMAT=text for people), one line per
webhook with its call SID, path, outcome and latency. Phone numbers are never logged on
purpose; as a safety net every record's message, every extra field and every traceback
is passed through `redact`, which replaces anything shaped like a phone number.

Metrics count committed facts: a flow run, a consent, a timed-out or refused key press, a
call that ended. They are counted by watching what each transaction writes and adding the
counts only when it commits, so a rolled-back or retried webhook counts nothing and a
spooled webhook counts when it is replayed. Under gunicorn, set PROMETHEUS_MULTIPROC_DIR
to an empty folder so /metrics adds up every worker.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import re
from collections.abc import Callable
from urllib.parse import unquote_plus

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from pythonjsonlogger.json import JsonFormatter
from sqlalchemy import event, inspect
from sqlalchemy.orm import Session
from werkzeug.serving import WSGIRequestHandler

from .domain.vocabulary import DECISIONS, TERMINAL

log = logging.getLogger("ivr.webhook")

# --- metrics ------------------------------------------------------------------------------

CALLS_STARTED = Counter("ivr_calls_started_total", "Consent flow runs started", ["origin"])
CALLS_COMPLETED = Counter("ivr_calls_completed_total",
                          "Calls that reached a final status, by that status", ["status"])
CONSENTS = Counter("ivr_consents_total", "Consent records stored, by decision", ["decision"])
GATHER_TIMEOUTS = Counter("ivr_gather_timeouts_total", "Menus the caller answered with silence")
GATHER_INVALID = Counter("ivr_gather_invalid_keys_total",
                         "Key presses that matched no option of the menu")
GATHER_INPUTS = Counter("ivr_gather_inputs_total", "Menu answers, by kind and validity",
                        ["input", "valid"])
SIGNATURE_FAILURES = Counter("ivr_signature_failures_total",
                             "Webhooks rejected for a bad Twilio signature")
WEBHOOK_LATENCY = Histogram(
    "ivr_webhook_seconds", "Webhook handling time, by path and outcome", ["path", "outcome"],
    # Twilio waits 15 s at most; the buckets that matter are well under 1 s.
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0))



def count_signature_failure() -> None:
    """Count one rejected signature."""
    SIGNATURE_FAILURES.inc()


def count_call_started(origin: str = "incoming") -> None:
    """Count one flow run started ('incoming' or the kind of origin, e.g. 'transfer')."""
    CALLS_STARTED.labels(origin=(origin or "other").split(":", 1)[0][:32]).inc()


def count_call_completed(status: str = "completed") -> None:
    """Count one call that reached a final status."""
    CALLS_COMPLETED.labels(status=status if status in TERMINAL else "other").inc()


def count_consent(decision: str) -> None:
    """Count one stored consent record."""
    CONSENTS.labels(decision=decision if decision in DECISIONS else "other").inc()


def count_gather(input_kind: str, valid: bool) -> None:
    """Count one menu answer: 'digits' (valid or not) or 'timeout'."""
    GATHER_INPUTS.labels(input=input_kind, valid="true" if valid else "false").inc()
    if input_kind == "timeout":
        GATHER_TIMEOUTS.inc()
    elif not valid:
        GATHER_INVALID.inc()


def observe_webhook(path: str, call_sid: str, outcome: str, seconds: float) -> None:
    """One log line and one latency sample per webhook (call SIDs only, never numbers)."""
    WEBHOOK_LATENCY.labels(path=path, outcome=outcome).observe(seconds)
    sid = safe_sid(call_sid)
    latency_ms = round(seconds * 1000, 1)
    log.info("webhook path=%s call_sid=%s outcome=%s latency_ms=%.1f", path, sid, outcome,
             latency_ms, extra={"event": "webhook", "path": path, "call_sid": sid,
                                "outcome": outcome, "latency_ms": latency_ms})


_SID = re.compile(r"[A-Z]{2}[0-9a-fA-F]{32}")


def safe_sid(value: str | None) -> str:
    """A Twilio SID as given; anything else (a forged form can send anything) redacted."""
    if not value:
        return "-"
    return value if _SID.fullmatch(value) else redact(value[:64])


# Spool depth: read when /metrics is scraped, from the source the spool sets (or the app's
# spool, when there is one).
def set_spool_depth_source(source: Callable[[], int], app: Flask | None = None) -> None:
    """Make /metrics report `source()` as ivr_spool_depth."""
    (app or current_app).extensions["ivr_spool_depth"] = source


def _spool_depth(app: Flask) -> float:
    source = app.extensions.get("ivr_spool_depth")
    if source is None and app.extensions.get("ivr_spool") is not None:
        source = app.extensions["ivr_spool"].depth
    if source is None:
        return 0.0
    try:
        return float(source())
    except Exception:  # noqa: BLE001 - a scrape must not fail because the disk did
        logging.getLogger(__name__).warning("spool depth unavailable", exc_info=True)
        return float("nan")


class _SpoolCollector:
    def __init__(self, app: Flask):
        self.app = app

    def collect(self):
        g = GaugeMetricFamily("ivr_spool_depth",
                              "Webhooks spooled on this server's disk, waiting for the database")
        g.add_metric([], _spool_depth(self.app))
        yield g
        q = GaugeMetricFamily("ivr_spool_quarantined",
                              "Spooled webhooks that could not be applied, kept in quarantine")
        q.add_metric([], _spool_quarantined(self.app))
        yield q


def _spool_quarantined(app: Flask) -> float:
    sp = app.extensions.get("ivr_spool")
    try:
        return float(sp.quarantine_depth()) if sp is not None else 0.0
    except OSError:
        return float("nan")


def metrics_text(app: Flask) -> bytes:
    """The exposition text: every worker's counters (multiprocess mode) and the spool depth."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    local = CollectorRegistry(auto_describe=False)
    local.register(_SpoolCollector(app))
    return generate_latest(registry) + generate_latest(local)


bp = Blueprint("metrics", __name__)


def _metrics_token(app: Flask) -> str | None:
    return app.config.get("METRICS_TOKEN") or os.environ.get("IVR_METRICS_TOKEN") or None


def _is_loopback(address: str | None) -> bool:
    try:
        return ipaddress.ip_address((address or "").split("%")[0]).is_loopback
    except ValueError:
        return False


@bp.get("/metrics")
def metrics():
    """Prometheus metrics: with IVR_METRICS_TOKEN a bearer token, otherwise loopback only."""
    app = current_app._get_current_object()
    token = _metrics_token(app)
    if token:
        header = request.headers.get("Authorization", "")
        given = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            return Response("Unauthorized: a metrics bearer token is required\n", 401,
                            {"WWW-Authenticate": 'Bearer realm="metrics"'},
                            mimetype="text/plain")
    elif not _is_loopback(request.remote_addr):
        return Response("Forbidden: /metrics answers loopback only (or set IVR_METRICS_TOKEN)"
                        "\n", 403, mimetype="text/plain")
    return Response(metrics_text(app), mimetype=CONTENT_TYPE_LATEST,
                    headers={"Cache-Control": "no-store"})


# --- counting committed facts -------------------------------------------------------------

_PENDING = "ivr_metrics_pending"


def _pending(session: Session) -> list:
    return session.info.setdefault(_PENDING, [])


def _after_flush(session: Session, _flush_context) -> None:
    # Counting must never break the write it watches.
    try:
        _collect(session)
    except Exception:  # noqa: BLE001
        logging.getLogger(__name__).warning("metrics: a flush was not counted", exc_info=True)


def _collect(session: Session) -> None:
    from .models import Call, Consent, FlowRun, Turn

    found = []
    for obj in session.new:
        if isinstance(obj, FlowRun):
            found.append((count_call_started, (obj.origin,)))
        elif isinstance(obj, Consent):
            found.append((count_consent, (obj.decision,)))
        elif isinstance(obj, Turn) and obj.input:
            kind = obj.input.get("type")
            if kind == "timeout":
                found.append((count_gather, ("timeout", False)))
            elif kind == "digits":
                found.append((count_gather, ("digits", _digits_were_valid(session, obj))))
        elif isinstance(obj, Call) and obj.ended_at is not None:
            found.append((count_call_completed, (obj.status,)))
    for obj in session.dirty:
        if isinstance(obj, Call) and obj.ended_at is not None:
            history = inspect(obj).attrs.ended_at.history
            if history.added and not any(history.deleted):
                found.append((count_call_completed, (obj.status,)))
    if found:
        _pending(session).extend(found)


def _digits_were_valid(session: Session, turn) -> bool:
    """Whether the keys chose something in the menu the run was waiting in.

    Mirrors the engine's choice (an option whose condition holds, or the menu's default)
    on the state the run had before this turn.
    """
    from .models import FlowRun

    run = session.identity_map.get(inspect(FlowRun).identity_key_from_primary_key(
        (turn.run_id,)))
    if run is None:
        return True
    deleted = inspect(run).attrs.state.history.deleted
    before = deleted[0] if deleted and deleted[0] else None
    registry = current_app.extensions.get("ivr_flows") if current_app else None
    flow = registry.in_memory(run.flow_version) if registry else None
    if before is None or flow is None:
        return True
    node = flow.nodes.get(before.get("node") or "")
    if node is None or getattr(node, "type", None) != "menu":
        return True
    option = node.options.get(turn.input.get("digits") or "")
    context = before.get("context") or {}
    chosen = option is not None and (option.when is None or bool(context.get(option.when)))
    return chosen or bool(node.default)


def _after_commit(session: Session) -> None:
    for fn, args in session.info.pop(_PENDING, ()):
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - the commit happened; only a count is lost
            logging.getLogger(__name__).warning("metrics: not counted", exc_info=True)


def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)


# --- logs ---------------------------------------------------------------------------------

# A phone number in any usual shape: +90 532 123 45 67, 0 (532) 123-45-67, 905321234567,
# 5321234567, and as it appears in a URL, percent- or plus-encoded, once or twice (a search
# URL inside a login redirect): %2B90+532+123+45+67, 0532%20123%2045%2067, (0532)%20123-45-67,
# %252B905321234567. Never inside a word, a token (after `-` or `.`: base64url, versions)
# or a percent escape, so call SIDs, hashes and run ids stay readable; right after an
# escape (`%3D0532...`) a number may start.
_ESCAPE = r"%(?:25)*"
_SEP = rf"(?:[ \-()+]|{_ESCAPE}(?:20|2[bBdD]|28|29))"
_PHONE = re.compile(
    r"(?<!%)(?<!%[0-9A-Fa-f])"
    r"(?:(?<![\w+(.\-])|(?<=%[0-9A-Fa-f]{2})|(?<=%25[0-9A-Fa-f]{2}))"
    rf"(?:\(|{_ESCAPE}28)?"
    rf"(?:(?:\+|{_ESCAPE}2[bB]|00)\d(?:{_SEP}{{0,3}}\d){{7,15}}|\d(?:{_SEP}{{0,3}}\d){{9,15}})"
    r"(?!\w)")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
REDACTED = "[phone]"


def redact(text: str) -> str:
    """`text` with anything shaped like a phone number replaced by [phone]."""
    if not text or not any(c.isdigit() for c in text):
        return text
    return _PHONE.sub(lambda m: m.group(0) if _DATE.match(m.group(0)) else REDACTED, text)


# Query parameters whose values a request log may show: ids, steps, filters. Any other
# parameter (phone, next, s ...) is logged by name only, whatever it holds.
LOGGED_PARAMETERS = frozenset({"run", "step", "transfer", "call_sid", "decision", "since",
                               "until", "limit"})


def loggable_target(target: str) -> str:
    """A request target fit for a log: the path, and the values of allow-listed parameters."""
    path, question, query = target.partition("?")
    if not question:
        return redact(path)
    parts = []
    for pair in query.split("&"):
        if not pair:
            continue
        name, _, _value = pair.partition("=")
        parts.append(pair if unquote_plus(name) in LOGGED_PARAMETERS else f"{name}=-")
    return redact(path + "?" + "&".join(parts))


class RequestLogHandler(WSGIRequestHandler):
    """Werkzeug's request handler for `ivr serve`, logging each target via loggable_target."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """One line per request: method, target (no personal data), status and size."""
        path = getattr(self, "path", None)
        line = (f"{self.command} {loggable_target(path)} {self.request_version}"
                if path is not None else "(unreadable request line)")
        self.log("info", '"%s" %s %s', line.translate(self._control_char_table), code, size)


def _redact_value(value):
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


def _install_record_redaction() -> None:
    """Redact every record's message when it is made, whoever logs it and wherever it goes."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_ivr_redacting", False):
        return

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - logging reports a bad format string itself
            return record
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return record

    factory._ivr_redacting = True
    logging.setLogRecordFactory(factory)


class RedactingFilter(logging.Filter):
    """Redact the message and the extra fields of each record a handler emits."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD and isinstance(value, str | dict | list | tuple):
                record.__dict__[key] = _redact_value(value)
        if record.exc_text:
            # Another handler formatted the traceback first; formatters reuse its text.
            record.exc_text = redact(record.exc_text)
        return True


_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonLogFormatter(JsonFormatter):
    """One JSON object per line: time, level, logger, message and any extra fields."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s",
                         rename_fields={"asctime": "time", "levelname": "level",
                                        "name": "logger"},
                         datefmt="%Y-%m-%dT%H:%M:%S%z")

    def formatException(self, ei) -> str:
        return redact(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return redact(super().formatStack(stack_info))

    def process_log_record(self, log_record: dict) -> dict:
        return {k: _redact_value(v) for k, v in log_record.items()}


class TextLogFormatter(logging.Formatter):
    """The plain format, with tracebacks redacted too."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The line, redacted whole: message, traceback (even one cached) and stack."""
        return redact(super().format(record))


def log_formatter(kind: str) -> logging.Formatter:
    """The formatter for IVR_LOG_FORMAT: 'json' (default) or 'text'."""
    return TextLogFormatter() if kind == "text" else JsonLogFormatter()


def configure_logging(app: Flask) -> None:
    """JSON (or text) lines on the process's stderr handler, every record redacted."""
    _install_record_redaction()
    kind = (app.config.get("LOG_FORMAT") or os.environ.get("IVR_LOG_FORMAT") or "json").lower()
    root = logging.getLogger()
    for handler in root.handlers:
        # The handler logging.basicConfig made (not pytest's or an operator's own).
        if type(handler) is logging.StreamHandler:
            handler.setFormatter(log_formatter(kind))
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())


_listening = False


def init_app(app: Flask) -> None:
    """Logs, /metrics, and the counting of committed facts."""
    global _listening
    configure_logging(app)
    app.register_blueprint(bp)
    if not _listening:
        event.listen(Session, "after_flush", _after_flush)
        event.listen(Session, "after_commit", _after_commit)
        event.listen(Session, "after_rollback", _after_rollback)
        _listening = True
