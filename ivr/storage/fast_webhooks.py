"""One round trip per webhook on PostgreSQL: a call of its function (ivr/storage/
webhook_functions.py) as a statement of its own, which commits as it returns.

No BEGIN, no COMMIT and no pool ping go over the wire: the connection is in autocommit
mode for the one statement, and a connection that died in the pool is found by the
statement itself, which is then tried once more on a fresh one (safe: a statement that
did commit is found again by its idempotency token, run step or event key).
"""

from __future__ import annotations

import threading

import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from . import deadline as db_deadline

_ARGS = {
    "ivr_webhook_incoming": (
        ("p_token", "text"), ("p_path", "text"), ("p_now", "timestamptz"), ("p_sid", "text"),
        ("p_account", "text"), ("p_phone_hmac", "text"), ("p_phone_enc", "text"),
        ("p_to", "text"), ("p_direction", "text"), ("p_status", "text"),
        ("p_decisive", "text[]"), ("p_channels", "text[]"), ("p_granted", "text"),
        ("p_run", "text"),
        ("p_origin", "text"), ("p_flow_id", "text"), ("p_flow_version", "text"),
        ("p_state", "json"), ("p_ended", "boolean"), ("p_heard", "json"),
        ("p_notice", "json"), ("p_actions", "json"), ("p_twiml", "text"),
        ("p_leaves", "json")),
    "ivr_webhook_gather": (
        ("p_token", "text"), ("p_path", "text"), ("p_now", "timestamptz"), ("p_sid", "text"),
        ("p_run", "text"), ("p_step", "integer"), ("p_flow_version", "text"),
        ("p_state_before", "jsonb"), ("p_heard_before", "jsonb"),
        ("p_notice_before", "jsonb"), ("p_state", "json"), ("p_ended", "boolean"),
        ("p_heard", "json"), ("p_notice", "json"), ("p_input", "json"),
        ("p_actions", "json"), ("p_twiml", "text"), ("p_leaves", "json"),
        ("p_decision", "text"),
        ("p_phone_hmac", "text"), ("p_purpose", "text"), ("p_channels", "json"),
        ("p_digits", "text"), ("p_language", "text"), ("p_notice_version", "text"),
        ("p_audio", "json"), ("p_needle", "text")),
    "ivr_webhook_status": (
        ("p_token", "text"), ("p_path", "text"), ("p_now", "timestamptz"), ("p_sid", "text"),
        ("p_account", "text"), ("p_phone_hmac", "text"), ("p_phone_enc", "text"),
        ("p_to", "text"), ("p_direction", "text"), ("p_status", "text"),
        ("p_seq", "bigint"), ("p_ts", "timestamptz"), ("p_duration", "integer"),
        ("p_key", "text"), ("p_data", "json"), ("p_ranks", "jsonb"),
        ("p_terminal", "text[]"), ("p_starting", "text[]"), ("p_answering", "text[]"),
        ("p_active_transfers", "text[]"), ("p_body_applied", "text"),
        ("p_body_stored", "text"), ("p_hangup_kind", "text"), ("p_hangup_body", "text"),
        ("p_run_needle", "text"), ("p_step_needle", "text")),
    "ivr_webhook_recording": (
        ("p_token", "text"), ("p_path", "text"), ("p_now", "timestamptz"), ("p_sid", "text"),
        ("p_account", "text"), ("p_recording", "text"), ("p_status", "text"),
        ("p_key", "text"), ("p_data", "json"), ("p_order", "jsonb"),
        ("p_duration", "integer"), ("p_channels", "integer"), ("p_source", "text"),
        ("p_track", "text"), ("p_start", "timestamptz"), ("p_url", "text"),
        ("p_error", "text"), ("p_body", "text")),
}

# Each function's call in psycopg's placeholders, every argument cast to its declared type
# (names and types are the constants above; the values are bound parameters).
_CALLS = {name: "SELECT * FROM {}({})".format(  # noqa: S608
    name, ", ".join(f"%({arg})s::{kind}" for arg, kind in args)).encode()
    for name, args in _ARGS.items()}
_lock = threading.Lock()


def text_array(values) -> str | None:
    """A PostgreSQL array literal of strings, for a text[] argument (psycopg's list dumper
    escapes element by element in Python; constant arrays are written once)."""
    if values is None:
        return None
    return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
                          for v in values) + "}"


def arguments(function: str) -> tuple[str, ...]:
    """The names of a function's arguments (tests check the services pass each one)."""
    return tuple(arg for arg, _kind in _ARGS[function])


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
            {"names": list(_ARGS)}).scalar()
    return found == len(_ARGS)


def call(engine: Engine, function: str, params: dict):
    """Run one webhook function as one autocommitted statement; its result row (a named
    tuple). Errors come as SQLAlchemy's, as from any other statement.

    The statement goes to psycopg directly, prepared on each connection at its first call
    (one Parse per connection; then each call is Bind/Execute/Sync, one round trip).
    """
    sql = _CALLS[function]
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
