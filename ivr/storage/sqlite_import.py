"""Moving an SQLite database made by an earlier release into PostgreSQL.

Earlier releases ran on SQLite by default (instance/ivr.db). Their every table is read with
the standard library's sqlite3 and written, unchanged, into a migrated and empty
PostgreSQL database, parents before children; then the sequences are set past the copied
ids. The audit log's bodies, leaf hashes, tree nodes and signed checkpoints are copied as
they are, so `audit verify` checks the moved log exactly as it checked the old one.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import JSON, Boolean, Date, DateTime, MetaData, func, insert, select, text
from sqlalchemy.engine import Engine

from .migrate import current_revision, head_revision

# The last revision an SQLite database could reach: 0007 created PostgreSQL functions only.
LAST_SQLITE_REVISION = "0007"
_CHUNK = 1000
_SKIP = {"alembic_version", "sqlite_sequence"}


class SqliteImportError(Exception):
    """The SQLite file or the PostgreSQL database is not fit for the move."""


def import_sqlite(path: Path, engine: Engine) -> dict[str, int]:
    """Copy every table of the SQLite database at `path` into the PostgreSQL database of
    `engine` (at the newest revision, and empty): the number of rows per table."""
    source = _open(path)
    try:
        revision = _one(source, "SELECT version_num FROM alembic_version")
        if revision != LAST_SQLITE_REVISION:
            raise SqliteImportError(
                f"{path} is at schema revision {revision}, not {LAST_SQLITE_REVISION}: run "
                "`python -m ivr db upgrade` on it with the previous release first")
        with engine.begin() as conn:
            if current_revision(conn) != head_revision():
                raise SqliteImportError("the PostgreSQL database is not at the newest "
                                        "revision: run `python -m ivr db upgrade` first")
            target = MetaData()
            target.reflect(conn)
            tables = [t for t in target.sorted_tables if t.name not in _SKIP]
            theirs = {name for (name,) in source.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")} - _SKIP
            unknown = theirs - {t.name for t in tables}
            if unknown:
                raise SqliteImportError(f"{path} has tables this release does not know: "
                                        f"{', '.join(sorted(unknown))}")
            for t in tables:
                if conn.scalar(select(func.count()).select_from(t)):
                    raise SqliteImportError(
                        f"the PostgreSQL database already has data (table {t.name}): import "
                        "into an empty database, just migrated")
            counts = {t.name: _copy(source, conn, t) for t in tables if t.name in theirs}
            for t in tables:
                _advance_sequences(conn, t)
        return counts
    finally:
        source.close()


def _open(path: Path) -> sqlite3.Connection:
    if not Path(path).is_file():
        raise SqliteImportError(f"no such file: {path}")
    try:
        conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as e:
        raise SqliteImportError(f"{path} is not an SQLite database: {e}") from e
    return conn


def _one(source: sqlite3.Connection, sql: str):
    try:
        row = source.execute(sql).fetchone()
    except sqlite3.DatabaseError as e:
        raise SqliteImportError(f"not a database of this service ({e})") from e
    return row[0] if row else None


def _copy(source: sqlite3.Connection, conn, table) -> int:
    """Copy one table's rows (the columns both sides have), in primary-key order."""
    have = [r[1] for r in source.execute(f'PRAGMA table_info("{table.name}")')]
    missing = set(have) - set(table.c.keys())
    if missing:
        raise SqliteImportError(f"table {table.name} has columns this release does not know: "
                                f"{', '.join(sorted(missing))}")
    columns = [table.c[name] for name in have]
    convert = [_converter(c.type) for c in columns]
    # Names of the reflected schema's tables and columns, none from input.
    names = ", ".join(f'"{c.name}"' for c in columns)
    order = ", ".join(f'"{c.name}"' for c in table.primary_key.columns) or "rowid"
    cursor = source.execute(
        f'SELECT {names} FROM "{table.name}" ORDER BY {order}')  # noqa: S608
    copied = 0
    while rows := cursor.fetchmany(_CHUNK):
        conn.execute(insert(table), [
            {c.key: (None if v is None else f(v)) for c, f, v in zip(columns, convert, row,
                                                                    strict=True)}
            for row in rows])
        copied += len(rows)
    return copied


def _converter(sqltype):
    """How a value SQLite stored for this column becomes the value PostgreSQL takes."""
    if isinstance(sqltype, DateTime):
        return _utc  # SQLAlchemy kept UTC times on SQLite as text, without the zone
    if isinstance(sqltype, Date):
        return lambda v: v if isinstance(v, date) else date.fromisoformat(v)
    if isinstance(sqltype, Boolean):
        return bool
    if isinstance(sqltype, JSON):
        return lambda v: json.loads(v) if isinstance(v, str | bytes) else v
    return lambda v: v


def _utc(value) -> datetime:
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _advance_sequences(conn, table) -> None:
    """Set each serial or identity column's sequence past the largest copied value."""
    for column in table.c:
        seq = conn.scalar(text("SELECT pg_get_serial_sequence(:t, :c)"),
                          {"t": f'"{table.name}"', "c": column.name})
        if seq is not None:
            top = conn.scalar(select(func.max(column)))
            conn.execute(text("SELECT setval(CAST(:s AS regclass), :v, :called)"),
                         {"s": seq, "v": top or 1, "called": top is not None})
