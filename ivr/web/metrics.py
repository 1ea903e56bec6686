"""Prometheus metrics: counters of committed facts, webhook latencies and the spool gauges.

Metrics count committed facts: a flow run, a consent, a timed-out or refused key press, a
call that ended. They are counted by watching what each transaction writes and adding the
counts only when it commits, so a rolled-back or retried webhook counts nothing and a
spooled webhook counts when it is replayed. Under gunicorn, set PROMETHEUS_MULTIPROC_DIR
to an empty folder so /metrics (ivr/web/metrics_endpoint.py) adds up every worker.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from flask import Flask, current_app
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import event, inspect
from sqlalchemy.orm import Session

from ivr.domain.flow.engine import digits_chose
from ivr.domain.redact import safe_sid
from ivr.domain.times import utcnow
from ivr.domain.vocabulary import DECISIONS, TERMINAL
from ivr.storage import anchor_store
from ivr.storage.audit_store import queue_report
from ivr.storage.models import Call, Consent, FlowRun, Turn

from .health import probe_engine

log = logging.getLogger("ivr.webhook")
_obs_log = logging.getLogger("ivr.observability")  # the name logs have always carried

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


def count_facts(facts) -> None:
    """Count what a webhook's statement committed (ivr/services/webhooks.py), as the
    session events below count what the other verbs commit."""
    for kind, *args in facts:
        counter = _FACT_COUNTERS.get(kind)
        if counter is not None:
            counter(*args)


# Each takes its fact's own arguments (a fact is its kind, then them).
_FACT_COUNTERS: dict[str, Callable[..., None]] = {
    "call_started": count_call_started, "consent": count_consent, "gather": count_gather,
    "call_completed": count_call_completed}


def observe_webhook(path: str, call_sid: str, outcome: str, seconds: float) -> None:
    """One log line and one latency sample per webhook (call SIDs only, never numbers)."""
    WEBHOOK_LATENCY.labels(path=path, outcome=outcome).observe(seconds)
    sid = safe_sid(call_sid)
    latency_ms = round(seconds * 1000, 1)
    log.info("webhook path=%s call_sid=%s outcome=%s latency_ms=%.1f", path, sid, outcome,
             latency_ms, extra={"event": "webhook", "path": path, "call_sid": sid,
                                "outcome": outcome, "latency_ms": latency_ms})


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
    except Exception:  # a scrape must not fail because the disk did
        _obs_log.warning("spool depth unavailable", exc_info=True)
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


class _AuditQueueCollector:
    def __init__(self, app: Flask):
        self.app = app

    def collect(self):
        depth, age = queue_report(probe_engine(self.app))
        g = GaugeMetricFamily("ivr_audit_queue_depth",
                              "Audit leaves queued, waiting for the sequencer")
        g.add_metric([], depth)
        yield g
        g = GaugeMetricFamily("ivr_audit_queue_oldest_seconds",
                              "Age of the oldest queued audit leaf (0 when none is queued)")
        g.add_metric([], age)
        yield g
        yield from _anchor_metrics(anchor_store.status(probe_engine(self.app)))


def _anchor_metrics(st: anchor_store.Status):
    nan = float("nan")
    pending = GaugeMetricFamily("ivr_audit_anchors_wanted",
                                "Checkpoint time-stamps and cosignatures not yet had, by kind",
                                labels=["kind"])
    oldest = GaugeMetricFamily("ivr_audit_anchors_oldest_wanted_seconds",
                               "Age of the oldest wanted time-stamp or cosignature (0: none)",
                               labels=["kind"])
    failing = GaugeMetricFamily("ivr_audit_anchors_failing",
                                "Wanted anchors whose authority or witness failed at least once",
                                labels=["kind"])
    now = utcnow()
    for kind, p in st.pending.items():
        pending.add_metric([kind], p.count if st.readable else nan)
        oldest.add_metric([kind], (now - p.oldest).total_seconds() if p.oldest else
                          (0.0 if st.readable else nan))
        failing.add_metric([kind], p.failing if st.readable else nan)
    refused = GaugeMetricFamily("ivr_audit_checkpoint_refused",
                                "1 while the sequencer refuses to sign a checkpoint that would "
                                "fork the published log")
    refused.add_metric([], (1.0 if st.refused else 0.0) if st.readable else nan)
    yield from (pending, oldest, failing, refused)


def metrics_text(app: Flask) -> bytes:
    """The exposition text: every worker's counters (multiprocess mode) and the spool depth."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess  # late import: only under gunicorn

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    local = CollectorRegistry(auto_describe=False)
    local.register(_SpoolCollector(app))
    local.register(_AuditQueueCollector(app))
    return generate_latest(registry) + generate_latest(local)


# --- counting committed facts -------------------------------------------------------------

_PENDING = "ivr_metrics_pending"
# A count to make once its transaction commits: the counter and its arguments.
_Count = tuple[Callable[..., None], tuple]


def _pending(session: Session) -> list[_Count]:
    return session.info.setdefault(_PENDING, [])


def _after_flush(session: Session, _flush_context) -> None:
    # Counting must never break the write it watches.
    try:
        _collect(session)
    except Exception:
        _obs_log.warning("metrics: a flush was not counted", exc_info=True)


def _collect(session: Session) -> None:  # noqa: C901 - one gauge per family, read in one pass

    found: list[_Count] = []
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

    run = session.identity_map.get(inspect(FlowRun).identity_key_from_primary_key(
        (turn.run_id,)))
    if run is None:
        return True
    deleted = inspect(run).attrs.state.history.deleted
    before = deleted[0] if deleted and deleted[0] else None
    registry = current_app.extensions.get("ivr_flows") if current_app else None
    flow = registry.in_memory(run.flow_version) if registry else None
    return digits_chose(flow, before, turn.input.get("digits"))


def _after_commit(session: Session) -> None:
    for fn, args in session.info.pop(_PENDING, ()):
        try:
            fn(*args)
        except Exception:  # the commit happened; only a count is lost
            _obs_log.warning("metrics: not counted", exc_info=True)


def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)


_listening = False


def init_app(app: Flask) -> None:
    """Count committed facts from every session (once per process)."""
    global _listening
    if not _listening:
        event.listen(Session, "after_flush", _after_flush)
        event.listen(Session, "after_commit", _after_commit)
        event.listen(Session, "after_rollback", _after_rollback)
        _listening = True
