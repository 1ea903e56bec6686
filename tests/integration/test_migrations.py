"""Migrations: an empty database upgraded to head is exactly what the models describe;
every revision goes down and up again; init-db schemas are adopted."""

from __future__ import annotations

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError

from ivr import create_app
from ivr.adapters.simulate import Caller, flask_transport
from ivr.cli.main import cli
from ivr.storage.audit_store import TRIGGERS
from ivr.storage.db import Base
from ivr.storage.migrate import (
    MIGRATIONS,
    MigrationError,
    current_revision,
    downgrade,
    head_revision,
    schema_diff,
    upgrade,
)
from ivr.web.current import database

from .conftest import AUTH_TOKEN


@pytest.fixture
def bare_app(app_config):
    """An app on an empty database: nothing created yet."""
    application = create_app(app_config)
    yield application
    database(application).engine.dispose()


def _tables(app) -> set[str]:
    with database(app).engine.connect() as conn:
        return set(inspect(conn).get_table_names())


def _triggers(app) -> set[str]:
    with database(app).engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE c.relname = 'audit_log' AND c.relnamespace = "
            "(SELECT oid FROM pg_namespace WHERE nspname = current_schema()) "
            "AND NOT t.tgisinternal"))
        return {r[0] for r in rows}


def _diff(app) -> list:
    with database(app).engine.connect() as conn:
        return schema_diff(conn)


def _revision(app) -> str | None:
    with database(app).engine.connect() as conn:
        return current_revision(conn)


def test_upgrade_from_empty_matches_the_models(bare_app):
    upgrade(bare_app)
    assert _revision(bare_app) == head_revision()
    assert _diff(bare_app) == []
    assert set(Base.metadata.tables) <= _tables(bare_app)
    assert _triggers(bare_app) == set(TRIGGERS)


def test_every_model_table_is_in_the_metadata_compared(bare_app):
    # The comparison means something only if the app factory imported every model module:
    # the core tables and those of the subsystems registered by their init_app.
    upgrade(bare_app)
    tables = _tables(bare_app)
    for name in ("calls", "consents", "audit_log", "users", "flow_runs", "webhook_requests"):
        assert name in tables
    assert tables - {"alembic_version"} == set(Base.metadata.tables)


def test_the_migrated_audit_log_is_append_only(bare_app):
    upgrade(bare_app)
    engine = database(bare_app).engine
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO audit_log (seq, prev_hash, body, hash, kind) "
                          "VALUES (1, :p, '{}', :h, 'test')"), {"p": "00" * 32, "h": "ab" * 32})
    for stmt in ("UPDATE audit_log SET kind = 'forged'", "DELETE FROM audit_log",
                 "INSERT INTO audit_log (seq, prev_hash, body, hash, kind) "
                 "VALUES (5, 'x', '{}', 'y', 'gap')"):
        with pytest.raises(DBAPIError, match="append-only"):
            with engine.begin() as conn:
                conn.execute(text(stmt))


def test_downgrade_to_base_and_upgrade_again(bare_app):
    upgrade(bare_app)
    downgrade(bare_app, "base")
    assert _tables(bare_app) <= {"alembic_version"}
    assert _revision(bare_app) is None
    upgrade(bare_app)
    assert _diff(bare_app) == []
    assert _revision(bare_app) == head_revision()


def test_each_revision_steps_down_and_up(bare_app):
    revisions = list(reversed(list(ScriptDirectory(str(MIGRATIONS)).walk_revisions())))
    assert revisions, "no migrations found"
    for rev in revisions:
        upgrade(bare_app, rev.revision)
        downgrade(bare_app, rev.down_revision or "base")
        upgrade(bare_app, rev.revision)
        assert _revision(bare_app) == rev.revision
    assert _diff(bare_app) == []
    assert _triggers(bare_app) == set(TRIGGERS)


def test_a_schema_made_by_init_db_is_adopted(bare_app):
    database(bare_app).create_all()
    assert upgrade(bare_app) is True
    assert _revision(bare_app) == head_revision()
    assert upgrade(bare_app) is False  # already versioned: nothing to adopt


def test_an_init_db_schema_missing_whole_tables_gets_them(bare_app):
    # A database made by an older init-db: some newer tables are not there yet.
    engine = database(bare_app).engine
    keep = [t for name, t in Base.metadata.tables.items() if name not in ("rate_limits", "users")]
    Base.metadata.create_all(engine, tables=keep)
    assert upgrade(bare_app) is True
    assert _diff(bare_app) == []
    assert _revision(bare_app) == head_revision()


def test_an_unversioned_schema_that_differs_is_refused(bare_app):
    engine = database(bare_app).engine
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE users (id INTEGER PRIMARY KEY, nickname VARCHAR(10))"))
    with pytest.raises(MigrationError, match="no migration history") as e:
        upgrade(bare_app)
    assert "missing column users.name" in str(e.value)
    assert "Table(" not in str(e.value)  # said in words, not as reprs
    assert _revision(bare_app) is None


def test_db_commands(bare_app):
    runner = bare_app.test_cli_runner()
    result = runner.invoke(cli, ["db", "current"])
    assert result.exit_code == 1 and "none" in result.output
    result = runner.invoke(cli, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert f"Database at revision {head_revision()}" in result.output
    result = runner.invoke(cli, ["db", "current"])
    assert result.exit_code == 0 and "up to date" in result.output
    result = runner.invoke(cli, ["db", "check"])
    assert result.exit_code == 0 and "matches the models" in result.output
    result = runner.invoke(cli, ["db", "downgrade", "nonsense"])
    assert result.exit_code == 1 and "Error:" in result.output and "Traceback" not in result.output


def test_a_consent_call_works_on_a_migrated_database(bare_app):
    upgrade(bare_app)
    caller = Caller(bare_app.config["PUBLIC_URL"], AUTH_TOKEN,
                    flask_transport(bare_app.test_client()), from_number="+905321234567")
    turn = caller.dial()
    while turn.gather_action:
        turn = caller.press(turn, "1")
    caller.hang_up()
    with database(bare_app).engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM consents")).scalar() == 1
        assert conn.execute(text("SELECT count(*) FROM audit_log")).scalar() > 3
