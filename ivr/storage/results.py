"""What a statement did, read from its result."""

from __future__ import annotations

from sqlalchemy.engine import CursorResult, Result


def rows_affected(result: Result) -> int:
    """How many rows an UPDATE or DELETE without RETURNING matched.

    Session.execute returns a CursorResult for those, but is typed as returning a Result
    (sqlalchemy/sqlalchemy#12913): the check narrows it."""
    if not isinstance(result, CursorResult):
        raise TypeError(f"no row count: {type(result).__name__} is not a CursorResult")
    return result.rowcount
