"""Structured webhook logs and Prometheus metrics."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Histogram

log = logging.getLogger("ivr.webhook")

SIGNATURE_FAILURES = Counter("ivr_signature_failures_total", "Webhooks rejected for a bad signature")
WEBHOOK_LATENCY = Histogram("ivr_webhook_seconds", "Webhook latency", ["path", "outcome"])


def count_signature_failure() -> None:
    """Count one rejected signature."""
    SIGNATURE_FAILURES.inc()


def observe_webhook(path: str, call_sid: str, outcome: str, seconds: float) -> None:
    """One log line and one latency sample per webhook (call SIDs only, never numbers)."""
    WEBHOOK_LATENCY.labels(path=path, outcome=outcome).observe(seconds)
    log.info("webhook path=%s call_sid=%s outcome=%s latency_ms=%.1f",
             path, call_sid or "-", outcome, seconds * 1000)
