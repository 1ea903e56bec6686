"""Where a consent came from: an agent's transfer, the API (no call), or an inbound call.

The rule is one ordered table, read first match first: the daily aggregates count by the
CASE it makes (`origin_expr`), the search filters by one origin's condition
(`origin_condition`), and the two always agree.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, case

from ivr.storage.models import Consent

ORIGINS = ("inbound", "transfer", "api")
OTHERWISE = "inbound"  # a consent given during a call, not through a transfer


def _rules() -> list[tuple[ColumnElement[bool], str]]:
    """(condition, origin) in the order they are tried; OTHERWISE when none holds."""
    return [(Consent.transfer_id.is_not(None), "transfer"),
            (Consent.call_sid.is_(None), "api")]


def origin_expr() -> ColumnElement[str]:
    """A consent's origin as a SQL expression."""
    return case(*_rules(), else_=OTHERWISE)


def origin_condition(origin: str) -> ColumnElement[bool]:
    """The SQL condition that a consent has this origin (no two origins' conditions overlap):
    its rule holds and no earlier rule does."""
    earlier: list[ColumnElement[bool]] = []
    for condition, name in _rules():
        if name == origin:
            return and_(*(~e for e in earlier), condition)
        earlier.append(condition)
    if origin != OTHERWISE:
        raise ValueError(f"no consent origin {origin!r}; one of {', '.join(ORIGINS)}")
    return and_(*(~e for e in earlier))
