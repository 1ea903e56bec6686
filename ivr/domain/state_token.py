"""The engine state a gather URL carries, so a call can go on while the database is away.

Twilio signs the URL together with the token, so the state cannot be forged.
"""

from __future__ import annotations

import base64
import json
import zlib

from .flow import engine as e


class StateTokenError(ValueError):
    """A state token that cannot be read back."""


def state_token(flow_version: str, state: e.State) -> str:
    """A compact, URL-safe form of (flow version, engine state)."""
    raw = json.dumps({"v": flow_version, "s": state.to_dict()}, separators=(",", ":"),
                     sort_keys=True).encode()
    return base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode().rstrip("=")


def read_state_token(token: str) -> tuple[str, e.State]:
    """The inverse of `state_token`; raises StateTokenError for anything malformed."""
    try:
        raw = zlib.decompress(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)),
                              bufsize=4096)
        data = json.loads(raw)
        return data["v"], e.State.from_dict(data["s"])
    except (ValueError, KeyError, TypeError, zlib.error) as exc:
        raise StateTokenError(f"unreadable state token: {type(exc).__name__}") from None
