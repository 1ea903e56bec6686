"""Sending a checkpoint to a C2SP tlog-witness: POST <URL>/add-checkpoint with the old size,
the consistency proof and the signed note (ivr/audit/witness.py formats the body). Only the
anchoring worker calls it (ivr/services/anchoring.py), never a webhook."""

from __future__ import annotations

from dataclasses import dataclass

import requests

MAX_RESPONSE = 64 * 1024


class WitnessUnavailable(Exception):
    """The witness did not answer: down, slow, or the connection broke."""


@dataclass(frozen=True)
class Reply:
    """The witness's status, content type and body."""

    status: int
    content_type: str
    body: bytes


def add_checkpoint(url: str, body: bytes, timeout: float) -> Reply:
    """POST the request body to URL/add-checkpoint."""
    try:
        r = requests.post(url.rstrip("/") + "/add-checkpoint", data=body, timeout=timeout,
                          stream=True)
        data = r.raw.read(MAX_RESPONSE + 1, decode_content=True)
        r.close()
    except requests.RequestException as e:
        raise WitnessUnavailable(f"{type(e).__name__}: {str(e)[:200]}") from e
    if len(data) > MAX_RESPONSE:
        raise WitnessUnavailable(f"an answer over {MAX_RESPONSE} bytes")
    return Reply(r.status_code, r.headers.get("Content-Type", ""), data)
