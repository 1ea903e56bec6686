"""One round trip per webhook on PostgreSQL: a call of its function (ivr/storage/
webhook_functions.py) as a statement of its own, which commits as it returns.

No BEGIN, no COMMIT and no pool ping go over the wire: the connection is in autocommit
mode for the one statement, and a connection that died in the pool is found by the
statement itself, which is then tried once more on a fresh one (safe: a statement that
did commit is found again by its idempotency token, run step or event key).
"""

from __future__ import annotations

import threading

import orjson
import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from . import deadline as db_deadline
from .webhook_functions import ARGS

# Each function is called with one JSON object holding its arguments
# (ivr/storage/webhook_functions.py unpacks it).
_CALLS = {name: f"SELECT * FROM {name}(%(p)s::json)".encode()  # noqa: S608 - constant names
          for name in ARGS}
_NAMES = {name: frozenset(arg for arg, _kind in args) for name, args in ARGS.items()}


_lock = threading.Lock()


def arguments(function: str) -> tuple[str, ...]:
    """The names of a function's arguments (tests check the services pass each one)."""
    return tuple(arg for arg, _kind in ARGS[function])


def available(db) -> bool:
    """Whether this Database (ivr/storage/db.py) has the functions: PostgreSQL at migration
    0007 or later; looked up once per Database and process."""
    known = getattr(db, "_fast_webhooks", None)
    if known is None:
        with _lock:
            known = getattr(db, "_fast_webhooks", None)
            if known is None:
                known = db.engine.dialect.name == "postgresql" and _present(db.engine)
                db._fast_webhooks = known
    return known


def _present(engine: Engine) -> bool:
    with engine.connect() as conn:
        found = conn.exec_driver_sql(
            "SELECT count(DISTINCT proname) FROM pg_proc WHERE proname = ANY(%(names)s)",
            {"names": list(ARGS)}).scalar()
    return found == len(ARGS)


def call(engine: Engine, function: str, params: dict):
    """Run one webhook function as one autocommitted statement; its result row (a named
    tuple). Errors come as SQLAlchemy's, as from any other statement.

    The statement goes to psycopg directly, prepared on each connection at its first call
    (one Parse per connection; then each call is Bind/Execute/Sync, one round trip).
    """
    sql = _CALLS[function]
    unknown = params.keys() - _NAMES[function]
    if unknown:
        raise ValueError(f"{function} takes no {sorted(unknown)}")
    params = {"p": orjson.dumps(params).decode()}
    for attempt in (1, 2):
        with db_deadline.unpinged():
            fairy = engine.raw_connection()
        try:
            return _execute(engine, fairy, sql, params)
        except DBAPIError as exc:
            if attempt == 1 and exc.connection_invalidated:
                continue  # a connection that had died in the pool: once more, on a new one
            raise
        finally:
            fairy.close()
    raise AssertionError("unreachable")


def _back_to_transactions(fairy, driver) -> None:
    """Autocommit off again: the pool's other users run transactions. A connection that
    cannot be switched back is not given to them."""
    try:
        driver.autocommit = False
    except psycopg.Error as exc:
        fairy.invalidate(exc)


def _execute(engine: Engine, fairy, sql: bytes, params: dict):
    driver = fairy.driver_connection
    try:
        driver.autocommit = True
        try:
            with driver.cursor(row_factory=namedtuple_row) as cursor:
                cursor.execute(sql, params, prepare=True)
                return cursor.fetchone()
        finally:
            _back_to_transactions(fairy, driver)
    except psycopg.Error as exc:
        gone = engine.dialect.is_disconnect(exc, driver, None)
        if gone:
            fairy.invalidate(exc)
        raise DBAPIError.instance(sql.decode(), None, exc, psycopg.Error, hide_parameters=True,
                                  connection_invalidated=gone, dialect=engine.dialect) from exc
