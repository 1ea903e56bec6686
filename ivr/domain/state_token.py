"""The engine state a gather URL carries, so a call can go on while the database is away.

Twilio signs the URL together with the token, so the state cannot be forged. The token may
also carry the run's memory (what it has played so far, ivr/services/run_memory.py), so a
webhook can write the next turn without reading the run first.
"""

from __future__ import annotations

import base64
import json
import zlib

from .flow import engine as e


class StateTokenError(ValueError):
    """A state token that cannot be read back."""


def state_token(flow_version: str, state: e.State, memory: dict | None = None) -> str:
    """A compact, URL-safe form of (flow version, engine state[, run memory])."""
    doc = {"v": flow_version, "s": state.to_dict()}
    if memory is not None:
        doc["m"] = memory
    raw = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode().rstrip("=")


def read_token(token: str) -> tuple[str, e.State, dict | None]:
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


def read_state_token(token: str) -> tuple[str, e.State]:
    """(flow version, state) of a token; raises StateTokenError for anything malformed."""
    version, state, _memory = read_token(token)
    return version, state
