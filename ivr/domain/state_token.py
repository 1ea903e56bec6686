"""The engine state a gather URL carries, so a call can go on while the database is away.

Twilio signs the URL together with the token, so the state cannot be forged. The token may
also carry the run's memory (what it has played so far, ivr/services/run_memory.py), so a
webhook can write the next turn without reading the run first.
"""

from __future__ import annotations

import base64
import functools
import json
import zlib
from typing import Any, TypedDict

from .flow import engine as e


class StateTokenError(ValueError):
    """A state token that cannot be read back."""


class TransferFacts(TypedDict):
    """What a transfer token carries (`read_transfer_token`)."""

    flow_id: str
    language: str | None
    return_to: dict[str, Any]


def state_token(flow_version: str, state: e.State,
                memory: dict[str, Any] | None = None) -> str:
    """A compact, URL-safe form of (flow version, engine state[, run memory])."""
    doc: dict[str, object] = {"v": flow_version, "s": state.to_dict()}
    if memory is not None:
        doc["m"] = memory
    return _packed(json.dumps(doc, separators=(",", ":"), sort_keys=True).encode())


@functools.lru_cache(maxsize=4096)
def _packed(raw: bytes) -> str:
    # Most gather URLs carry one of a few states (every caller's first turn is the same):
    # each is compressed once per process.
    return base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode().rstrip("=")


def read_token(token: str) -> tuple[str, e.State, dict[str, Any] | None]:
    """The inverse of `state_token`: (flow version, state, memory or None); raises
    StateTokenError for anything malformed."""
    try:
        raw = zlib.decompress(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)),
                              bufsize=4096)
        data = json.loads(raw)
        memory = data.get("m")
        return data["v"], e.State.from_dict(data["s"]), memory if isinstance(memory,
                                                                               dict) else None
    except (ValueError, KeyError, TypeError, AttributeError, zlib.error) as exc:
        raise StateTokenError(f"unreadable state token: {type(exc).__name__}") from None


def transfer_token(flow_id: str, language: str | None, return_to: dict[str, Any]) -> str:
    """A compact, URL-safe form of a transfer's facts, for the URL Twilio fetches when the
    caller arrives: the flow can be planned without reading the transfer first."""
    raw = json.dumps({"f": flow_id, "l": language, "r": return_to}, separators=(",", ":"),
                     sort_keys=True).encode()
    return base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode().rstrip("=")


def read_transfer_token(token: str) -> TransferFacts:
    """The inverse of `transfer_token`: {"flow_id", "language", "return_to"}; raises
    StateTokenError for anything malformed."""
    try:
        raw = zlib.decompress(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)),
                              bufsize=4096)
        data = json.loads(raw)
        flow_id, language, return_to = data["f"], data["l"], data["r"]
        if not (isinstance(flow_id, str) and isinstance(return_to, dict)
                and (language is None or isinstance(language, str))):
            raise TypeError("unexpected types")
        return {"flow_id": flow_id, "language": language, "return_to": return_to}
    except (ValueError, KeyError, TypeError, AttributeError, zlib.error) as exc:
        raise StateTokenError(f"unreadable transfer token: {type(exc).__name__}") from None
