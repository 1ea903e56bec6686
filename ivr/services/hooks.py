"""What a call verb tells the modules that follow it (transfers), without importing them.

A verb publishes each turn and each call's end to the listeners in its Context; each
listener returns the audit entries to append in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from ..storage.models import FlowRun

AuditEntries = list[tuple[str, str, dict]]


def _nothing(*_args) -> AuditEntries:
    return []


@dataclass(frozen=True)
class CallListener:
    """Reactions to a turn of a run and to the end of a call."""

    on_turn: Callable[[Session, FlowRun, list, datetime], AuditEntries] = _nothing
    on_call_ended: Callable[[Session, str, datetime], AuditEntries] = _nothing
    # For the one-statement webhooks (ivr/services/fast_calls.py): the listener does nothing
    # on a turn of a run without a transfer, nor at the end of a call none of whose
    # transfers is in one of these statuses. None: it must always be asked (the webhooks
    # then take the ORM path).
    quiet_without_transfers: tuple[str, ...] | None = None
