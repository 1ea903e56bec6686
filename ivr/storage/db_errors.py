"""Database errors by kind: the SQLSTATE class and the driver's exception class, never the
message text (STYLE.md, habit 22).

Three kinds matter to a caller waiting on a webhook:

- **away**: the database cannot do the work now (refused or reset connections, a server
  shutting down, too many connections, a statement cut by its timeout or by our deadline).
  The request is answered from the spool and applied later.
- **retry**: the transaction lost a race (serialization failure, deadlock). It was rolled
  back whole, so running it again is safe.
- anything else is a bug or bad data, answered as such.

psycopg's own exceptions count as well as SQLAlchemy's wrappers of them: the one-statement
path talks to psycopg directly.
"""

from __future__ import annotations

import psycopg
from sqlalchemy.exc import DBAPIError, DisconnectionError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

# SQLSTATE classes and codes (PostgreSQL, Appendix A) that mean "not now", not "never".
AWAY_CLASSES = ("08",  # connection exception
                "53",  # insufficient resources: 53300 too many connections, disk, memory
                "57",  # operator intervention: 57P01 admin shutdown, 57014 query canceled
                "58")  # system error (I/O)
AWAY_CODES = frozenset({"25P03",  # idle-in-transaction session timeout
                        "55P03"})  # lock not available (lock_timeout)
RETRY_CODES = frozenset({"40001",  # serialization failure
                         "40P01"})  # deadlock detected
# The schema is not there yet (a migration still to run): a spooled record must wait.
SCHEMA_CODES = frozenset({"42P01", "42703", "42883", "3F000"})


def driver_error(exc: BaseException) -> BaseException | None:
    """The psycopg exception behind `exc` (itself, or the one SQLAlchemy wrapped)."""
    if isinstance(exc, psycopg.Error):
        return exc
    orig = getattr(exc, "orig", None)
    return orig if isinstance(orig, psycopg.Error) else None


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE the server sent with this error, if it sent one."""
    orig = driver_error(exc)
    return getattr(orig, "sqlstate", None) if orig is not None else None


def retryable(exc: BaseException) -> bool:
    """True for a transaction that lost a race and was rolled back whole."""
    return sqlstate(exc) in RETRY_CODES


def lost_race(exc: BaseException) -> bool:
    """True for a statement that met a concurrent one's row (a unique key both wrote): it
    was rolled back whole, and running it again finds the other's row."""
    return sqlstate(exc) == "23505"


def away(exc: BaseException) -> bool:
    """True for "the database cannot do this now", as opposed to a bug or bad data."""
    if isinstance(exc, (PoolTimeout, DisconnectionError)):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    state = sqlstate(exc)
    if state is not None:
        return state[:2] in AWAY_CLASSES or state in AWAY_CODES
    orig = driver_error(exc)
    # No SQLSTATE: the client library itself failed (refused, reset, timed out, closed).
    return isinstance(orig, (psycopg.OperationalError, psycopg.InterfaceError))


def schema_missing(exc: BaseException) -> bool:
    """True when a table, column or function the statement needs does not exist (yet)."""
    return sqlstate(exc) in SCHEMA_CODES


def database_error(exc: BaseException) -> bool:
    """True for any error that came from the database or its driver."""
    return isinstance(exc, (SQLAlchemyError, psycopg.Error))
