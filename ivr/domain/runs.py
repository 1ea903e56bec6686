"""Pure rules about flow runs: their ids and the engine input for a gather's keys."""

from __future__ import annotations

import hashlib

from .flow import engine as e

MAX_DIGITS = 32


def run_id_for(call_sid: str, origin: str) -> str:
    """A run's id, derived from the call and the origin so every retry (and the offline
    path, which cannot ask the database) names the same run."""
    return hashlib.sha256(f"{call_sid}\n{origin}".encode()).hexdigest()[:32]


def digits_input(digits: str | None) -> e.Input:
    """The engine's input for a gather's Digits: the keys, or silence when there are none."""
    return e.Digits(digits[:MAX_DIGITS]) if digits else e.Timeout()
