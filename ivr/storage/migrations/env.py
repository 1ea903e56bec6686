"""Alembic environment: the app's own engine and every model's metadata, no alembic.ini.

Run through `python -m ivr db ...` (ivr/cli/db.py), which hands over the Flask app in
`config.attributes["app"]`; the app factory has imported every model module by then.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text
from sqlalchemy.types import TypeDecorator

from ivr.storage.base import Base
from ivr.storage.db import database

# Two `db upgrade` runs at once (several machines deploying) take turns on PostgreSQL.
_PG_MIGRATION_LOCK = 0x1FC0_0DB0


def render_item(type_, obj, autogen_context):
    """Render our column types as their plain SQLAlchemy type, so no revision imports ivr."""
    if type_ == "type" and isinstance(obj, TypeDecorator):
        impl = obj.impl_instance
        if type(impl).__module__.startswith("sqlalchemy.sql"):
            return f"sa.{impl!r}"
    return False


def configure(connection) -> None:
    """Point Alembic at a connection with the options every command shares."""
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # An upgrade applies whole or not at all.
        transactional_ddl=True,
        compare_type=True,
        compare_server_default=False,
        render_item=render_item,
    )


def run_migrations_online() -> None:
    """Run the migrations in one transaction on the app's engine."""
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = database(config.attributes["app"]).engine
    with engine.connect() as conn:
        _run(conn)


def _run(connection) -> None:
    configure(connection)
    with context.begin_transaction():
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("Offline (--sql) migrations are not supported: the audit triggers are "
                     "installed through the live connection.")
run_migrations_online()
