"""`python -m ivr db import-sqlite PATH`: an instance made by an earlier release, on SQLite,
moves into PostgreSQL with its audit log byte for byte, and `audit verify` passes after.

The SQLite file is made as the previous release made it: the models' tables on an SQLite
engine, then the rows of real calls (run on PostgreSQL) written with plain sqlite3 in the
form that release stored them (times as naive UTC text, JSON as text, booleans as 0/1).
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import MetaData, create_engine, select, text

from ivr import create_app
from ivr.adapters.simulate import Caller, flask_transport
from ivr.storage.db import Base
from ivr.storage.sqlite_import import LAST_SQLITE_REVISION
from ivr.web.current import database
from tests.integration.conftest import AUTH_TOKEN, pg_schema_url, verified_chain_length
from tests.support.audit import invoke
from tests.support.auditor import place_call


def as_sqlite_stored(value):
    """A value as SQLAlchemy stored it on SQLite in the previous release."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, dict | list):
        return json.dumps(value)
    if isinstance(value, memoryview):
        return bytes(value)
    return value


def copy_to_sqlite(app, path) -> None:
    """Write every table of the app's PostgreSQL schema into a new SQLite file."""
    engine = create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    engine.dispose()
    source = MetaData()
    with database(app).engine.connect() as conn, sqlite3.connect(path) as out:
        source.reflect(conn)
        for table in source.sorted_tables:
            rows = conn.execute(select(table)).all()
            if rows:
                names = ", ".join(f'"{c}"' for c in table.c.keys())
                marks = ", ".join("?" for _ in table.c)
                out.executemany(f'INSERT INTO "{table.name}" ({names}) VALUES ({marks})',
                                [tuple(as_sqlite_stored(v) for v in row) for row in rows])
        out.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
                    "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))")
        out.execute("INSERT INTO alembic_version VALUES (?)", (LAST_SQLITE_REVISION,))
    out.close()


def rows(app, sql: str) -> list[tuple]:
    with database(app).engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql))]


@pytest.fixture
def moved(app, local_caller, app_config, tmp_path):
    """(the old app, a fresh app on another schema with the old data imported, the import's
    output)."""
    for keys in (["1"], ["2"], ["1"], ["3"]):
        place_call(local_caller, keys)
    place_call(local_caller, ["1"], from_number="+905321112233")
    assert verified_chain_length(app) > 0
    old_file = tmp_path / "ivr.db"
    copy_to_sqlite(app, old_file)
    schema = pg_schema_url()
    # The same instance folder: the same data keys and audit signing key.
    new = create_app({**app_config, "DATABASE_URL": next(schema)})
    try:
        upgraded = invoke(new, "db", "upgrade")
        assert upgraded.exit_code == 0, upgraded.output
        imported = invoke(new, "db", "import-sqlite", str(old_file))
        yield app, new, imported, old_file
    finally:
        database(new).engine.dispose()
        next(schema, None)


def test_the_audit_log_and_the_consents_move_unchanged(moved):
    old, new, imported, _file = moved
    assert imported.exit_code == 0, imported.output
    assert "audit_log: " in imported.output and "Copied " in imported.output
    for sql in ("SELECT seq, prev_hash, body, hash, kind, ref, queued_at, integrated_at "
                "FROM audit_log ORDER BY seq",
                "SELECT level, idx, hash FROM audit_tree ORDER BY level, idx",
                "SELECT id, tree_size, root_hash, at, note FROM audit_tree_heads ORDER BY id",
                "SELECT * FROM consents ORDER BY id",
                "SELECT * FROM calls ORDER BY call_sid",
                "SELECT * FROM settings ORDER BY name"):
        assert rows(new, sql) == rows(old, sql), sql
    verified = invoke(new, "audit", "verify")
    assert verified.exit_code == 0, verified.output
    assert verified.output.startswith(f"ok: {verified_chain_length(old)} leaves")


def test_the_moved_instance_takes_new_calls(moved):
    old, new, imported, _file = moved
    assert imported.exit_code == 0, imported.output
    # The sequences start after the copied ids: a new call's rows do not collide.
    client = new.test_client()
    place_call(lambda **kw: Caller(new.config["PUBLIC_URL"], AUTH_TOKEN,
                                   flask_transport(client), **kw), ["1"])
    before = len(rows(old, "SELECT id FROM consents"))
    assert len(rows(new, "SELECT id FROM consents")) == before + 1
    assert verified_chain_length(new) > verified_chain_length(old)


def test_a_second_import_is_refused(moved):
    _old, new, imported, old_file = moved
    assert imported.exit_code == 0, imported.output
    again = invoke(new, "db", "import-sqlite", str(old_file))
    assert again.exit_code == 1
    assert "already has data" in again.output and "Traceback" not in again.output
