"""The webhooks' writes as PostgreSQL functions: one declaration per function, one
statement per webhook.

Each function's arguments are declared once, as a frozen dataclass below: a field's name
is the argument (`p_<name>` in the SQL), its annotation's SQL type the type it is read
as. The SQL's DECLARE lines and its unpacking statement are written from the declaration
(sql/webhook_functions.sql holds /*ARGS:name*/ and /*FILL:name*/ where they go), and a
call is made by building the dataclass, so it supplies exactly the declared keys: a
missing or an unknown one is a TypeError before anything is sent.

`call` runs one function as one autocommitted statement: no BEGIN, no COMMIT and no pool
ping go over the wire, so each webhook is one round trip. A connection that died in the
pool is found by the statement itself, which is then sent once more on a fresh one (safe:
a statement that did commit is found again by its idempotency token, step or event key).
Migrations freeze their own copy of the SQL (ivr/storage/migrations/versions/*.sql); this
module is the live one, installed by `Database.create_all` and checked against the newest
migration's copy by the tests.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, ClassVar, get_args, get_type_hints

import orjson
import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, StatementError

from . import deadline as db_deadline

SQL_FILE = Path(__file__).with_name("sql") / "webhook_functions.sql"

# The SQL type each argument is read as.
Text = Annotated[str | None, "text"]
Integer = Annotated[int | None, "integer"]
BigInt = Annotated[int | None, "bigint"]
Boolean = Annotated[bool | None, "boolean"]
Time = Annotated[datetime | None, "timestamptz"]
Json = Annotated[Any, "json"]
JsonB = Annotated[Any, "jsonb"]
TextArray = Annotated[list[str] | None, "text[]"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Webhook:
    """What every webhook function takes: the request's idempotency token, path, time and
    CallSid, and the label its row is stored with ('ok' live, 'spooled' from the spool)."""

    FUNCTION: ClassVar[str] = ""
    token: Text
    path: Text
    now: Time
    sid: Text
    label: Text


@dataclass(frozen=True, slots=True, kw_only=True)
class Caller(Webhook):
    """A webhook that may be the first to see its call: who calls whom."""

    account: Text
    phone_hmac: Text
    phone_enc: Text
    to: Text
    direction: Text
    status: Text


@dataclass(frozen=True, slots=True, kw_only=True)
class StartsRun(Caller):
    """A webhook that starts a run: its flow, and the plans for a caller without and with a
    standing grant (the function looks the grant up)."""

    run: Text
    origin: Text
    flow_id: Text
    flow_version: Text
    flow_row: Json  # the flow version to store, or None when it is known to be stored
    decisive: TextArray
    channels: TextArray
    granted: Text
    plain: Json
    consenter: Json
    lookup: Boolean  # False when the plain plan must be used (a spooled start)


@dataclass(frozen=True, slots=True, kw_only=True)
class Incoming(StartsRun):
    """/voice/incoming."""

    FUNCTION: ClassVar[str] = "ivr_webhook_incoming"


@dataclass(frozen=True, slots=True, kw_only=True)
class Transfer(StartsRun):
    """/voice/transfer: plans per language (keys of `plain` and `consenter`)."""

    FUNCTION: ClassVar[str] = "ivr_webhook_transfer"
    transfer_id: Text
    language: Text
    return_to: JsonB
    default_language: Text
    enters: TextArray
    failed: Text
    in_flow: Text
    in_flow_leaves: Json


@dataclass(frozen=True, slots=True, kw_only=True)
class Gather(Webhook):
    """/voice/gather: the run as the URL says it is, and the turn planned from it."""

    FUNCTION: ClassVar[str] = "ivr_webhook_gather"
    run: Text
    step: Integer
    flow_version: Text
    transfer_id: Text
    state_before: JsonB
    heard_before: JsonB
    notice_before: JsonB
    plan: Json
    consent: Json
    transfer_moves: TextArray
    transfer_leaves: Json
    moves: JsonB
    decided: Text
    returned: Text


@dataclass(frozen=True, slots=True, kw_only=True)
class Status(Caller):
    """/voice/status."""

    FUNCTION: ClassVar[str] = "ivr_webhook_status"
    seq: BigInt
    ts: Time
    duration: Integer
    key: Text
    data: Json
    ranks: JsonB
    terminal: TextArray
    starting: TextArray
    answering: TextArray
    body_applied: Text
    body_stored: Text
    hangup_body: Text
    active_transfers: TextArray
    failed: Text
    transfer_failures: Json


@dataclass(frozen=True, slots=True, kw_only=True)
class Recording(Webhook):
    """/voice/recording."""

    FUNCTION: ClassVar[str] = "ivr_webhook_recording"
    account: Text
    recording: Text
    status: Text
    key: Text
    data: Json
    order: JsonB
    duration: Integer
    channels: Integer
    source: Text
    track: Text
    start: Time
    url: Text
    error: Text
    body: Text


DECLARATIONS: tuple[type[Webhook], ...] = (Incoming, Transfer, Gather, Status, Recording)


def _args(cls: type[Webhook]) -> tuple[tuple[str, str], ...]:
    hints = get_type_hints(cls, include_extras=True)
    return tuple((f.name, get_args(hints[f.name])[1]) for f in fields(cls))


ARGS: dict[str, tuple[tuple[str, str], ...]] = {cls.FUNCTION: _args(cls) for cls in DECLARATIONS}
NAMES = (*ARGS, "ivr_fill", "ivr_queue_leaf", "ivr_queue_leaves", "ivr_ordered_times", "ivr_call",
         "ivr_has_grant", "ivr_store_flow_version", "ivr_start_run", "ivr_answered")


def _declare(name: str) -> str:
    return "\n".join(f"  p_{arg} {kind};" for arg, kind in ARGS[name])


def _fill(name: str) -> str:
    names = ", ".join(f"p_{arg}" for arg, _kind in ARGS[name])
    columns = ", ".join(f'"{arg}" {kind}' for arg, kind in ARGS[name])
    return f"  SELECT * INTO {names}\n    FROM json_to_record(p) AS x({columns});"  # noqa: S608 - declared names


def create_sql() -> str:
    """The SQL that creates (or replaces) every webhook function, as this release has it."""
    sql = SQL_FILE.read_text(encoding="utf-8")
    sql = re.sub(r"/\*ARGS:(\w+)\*/", lambda m: _declare(m.group(1)), sql)
    return re.sub(r"/\*FILL:(\w+)\*/", lambda m: _fill(m.group(1)), sql)


def drop_sql() -> str:
    """The SQL that drops them."""
    return f"DROP FUNCTION IF EXISTS {', '.join(NAMES)};"


def install(engine: Engine) -> None:
    """Create (or replace) the functions."""
    with engine.begin() as conn:
        conn.exec_driver_sql(drop_sql())
        conn.exec_driver_sql(create_sql())


# --- the call ------------------------------------------------------------------------------

_CALLS = {name: f"SELECT * FROM {name}(%(p)s::json)".encode()  # noqa: S608 - constant names
          for name in ARGS}
_FIELDS = {cls: tuple(f.name for f in fields(cls)) for cls in DECLARATIONS}
_lock = threading.Lock()


def call(engine: Engine, args: Webhook):
    """Run one webhook function as one autocommitted statement; its result row (a named
    tuple). A database error comes as SQLAlchemy's DBAPIError around psycopg's.

    The statement goes to psycopg directly, prepared on each connection at its first call
    (one Parse per connection; then each call is Bind/Execute/Sync, one round trip).
    """
    sql = _CALLS[args.FUNCTION]
    params = {"p": orjson.dumps({name: getattr(args, name)
                                 for name in _FIELDS[type(args)]}).decode()}
    for attempt in (1, 2):
        with db_deadline.unpinged():
            try:
                connection = engine.raw_connection()
            except psycopg.Error as exc:
                raise _wrapped(engine, sql, exc, gone=True) from exc
        try:
            return _execute(engine, connection, sql, params)
        except DBAPIError as exc:
            if attempt == 1 and exc.connection_invalidated:
                continue  # a connection that had died in the pool: once more, on a new one
            raise
        finally:
            connection.close()
    raise AssertionError("unreachable: the second attempt returns or raises")


def _wrapped(engine: Engine, sql: bytes, exc: psycopg.Error, gone: bool) -> StatementError:
    # A DBAPIError subclass for a driver error, typed by SQLAlchemy as its base class.
    return DBAPIError.instance(sql.decode(), None, exc, psycopg.Error, hide_parameters=True,
                               connection_invalidated=gone, dialect=engine.dialect)


def _back_to_transactions(connection, driver) -> None:
    """Autocommit off again: the pool's other users run transactions. A connection that
    cannot be switched back is not given to them."""
    try:
        driver.autocommit = False
    except psycopg.Error as exc:
        connection.invalidate(exc)


def _execute(engine: Engine, connection, sql: bytes, params: dict):
    driver = connection.driver_connection
    try:
        driver.autocommit = True
        # The engine prepares nothing by itself (ivr/storage/db.py); this statement is
        # prepared on the connection at its first call and kept for the next ones.
        driver.prepare_threshold = 0
        try:
            with driver.cursor(row_factory=namedtuple_row) as cursor:
                cursor.execute(sql, params, prepare=True)
                return cursor.fetchone()
        finally:
            driver.prepare_threshold = None
            _back_to_transactions(connection, driver)
    except psycopg.Error as exc:
        # SQLAlchemy types the error as its protocol's own nested class, which no driver's
        # exception is: psycopg's is what the psycopg dialect reads.
        gone = (engine.dialect.is_disconnect(exc, driver, None)  # type: ignore[arg-type]
                or not connection.is_valid)
        if gone and connection.is_valid:  # not already given up by _back_to_transactions
            connection.invalidate(exc)
        raise _wrapped(engine, sql, exc, gone) from exc
