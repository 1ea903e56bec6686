"""Sending İYS batches to an İYS-compatible endpoint (HTTP only; what an answer means for the
stored batch is ivr/services/kvkk/iys_push.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import requests

# Worth another try later: the endpoint, the network or the token is the problem.
RETRYABLE = {401, 403, 408, 429}


@dataclass
class Answer:
    """What the endpoint said about one batch."""

    outcome: str  # accepted | rejected | failed
    http_status: int | None
    transaction_id: str | None = None
    errors: list[dict] = field(default_factory=list)


def safe_url(url: str) -> str:
    """The URL as recorded: no credentials, query or fragment."""
    p = urlsplit(url)
    host = p.hostname or ""
    if p.port:
        host += f":{p.port}"
    return urlunsplit((p.scheme, host, p.path, "", ""))[:500]


def _errors(payload) -> list[dict]:
    items = payload.get("errors") if isinstance(payload, dict) else None
    out = []
    for e in items if isinstance(items, list) else []:
        if isinstance(e, dict):
            idx = e.get("index")
            out.append({"code": str(e.get("code") or "")[:32],
                        "message": str(e.get("message") or "")[:300],
                        "index": idx if isinstance(idx, int) else None})
    return out


def send(url: str, token: str, body: bytes, timeout: float) -> Answer:
    """POST one batch with a bearer token; never raises for HTTP or network failures."""
    try:
        r = requests.post(url, data=body, timeout=timeout, allow_redirects=False,
                          headers={"Authorization": f"Bearer {token}",
                                   "Content-Type": "application/json; charset=utf-8",
                                   "Accept": "application/json"})
    except requests.RequestException as e:
        return Answer("failed", None, errors=[{"code": "NETWORK", "index": None,
                                               "message": type(e).__name__}])
    try:
        payload = r.json()
    except ValueError:
        payload = None
    if 200 <= r.status_code < 300:
        tid = payload.get("transactionId") or payload.get("requestId") \
            if isinstance(payload, dict) else None
        if tid:
            return Answer("accepted", r.status_code, str(tid)[:100])
        return Answer("failed", r.status_code, errors=[
            {"code": "NO_TRANSACTION_ID", "index": None,
             "message": "a 2xx answer without transactionId"}])
    errors = _errors(payload) or [{"code": f"HTTP{r.status_code}", "index": None,
                                   "message": r.reason or ""}]
    if r.status_code >= 500 or r.status_code in RETRYABLE:
        return Answer("failed", r.status_code, errors=errors)
    return Answer("rejected", r.status_code, errors=errors)
