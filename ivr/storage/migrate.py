"""Schema migrations with Alembic: the revisions in ivr/storage/migrations/, the current and the
newest revision, and the upgrade that adopts a schema made by `init-db`.

The schema is created and changed only by the Alembic revisions. `Database.create_all()`
stays for the test suite's speed.
"""

from __future__ import annotations

import functools
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from flask import Flask
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from ivr.storage.audit_store import install_append_only_guard

from .base import Base
from .db import database

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class MigrationError(Exception):
    """The database cannot be brought to the wanted revision."""


def alembic_config(app: Flask) -> Config:
    """An Alembic config for this app's database (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    cfg.set_main_option("truncate_slug_length", "40")
    cfg.attributes["app"] = app
    return cfg


@functools.cache
def head_revision() -> str | None:
    """The newest revision this code ships (read once per process)."""
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def current_revision(conn: Connection) -> str | None:
    """The revision the database is at; None when it has no migration history."""
    return MigrationContext.configure(conn).get_current_revision()


def schema_state(engine: Engine, timeout: float) -> tuple[str | None, bool]:
    """(the revision the database is at, whether it holds the tables at all), each statement
    bounded by `timeout` seconds; raises SQLAlchemyError when the database does not answer."""
    with engine.connect() as conn:
        conn.execute(text(f"SET LOCAL statement_timeout = {int(timeout * 1000)}"))
        conn.execute(text("SELECT 1"))
        revision = current_revision(conn)
        return revision, revision is not None or inspect(conn).has_table("audit_log")


def schema_diff(conn: Connection) -> list:
    """Differences between the live schema and the models (empty when they agree)."""
    mc = MigrationContext.configure(conn, opts={"compare_type": True,
                                                "target_metadata": Base.metadata})
    return compare_metadata(mc, Base.metadata)


def describe(diff) -> str:
    """One difference from compare_metadata, in words."""
    if isinstance(diff, list):  # column modifications come as a list of tuples
        return "; ".join(describe(d) for d in diff)
    kind = diff[0]
    if kind in ("add_table", "remove_table"):
        return f"{'missing' if kind == 'add_table' else 'extra'} table {diff[1].name}"
    if kind in ("add_index", "remove_index"):
        return f"{'missing' if kind == 'add_index' else 'extra'} index {diff[1].name}"
    if kind in ("add_column", "remove_column"):
        where = "missing" if kind == "add_column" else "extra"
        return f"{where} column {diff[2]}.{diff[3].name}"
    if kind.startswith("modify_"):
        return f"{kind[7:]} of {diff[2]}.{diff[3]} differs"
    obj = diff[1] if len(diff) > 1 else None
    name = getattr(obj, "name", None) or getattr(getattr(obj, "table", None), "name", "")
    return f"{kind.replace('_', ' ')} {name}".strip()


def _split(diffs) -> tuple[set[str], list]:
    """(whole tables missing, every other difference: the ones adoption cannot fix)."""
    missing = {d[1].name for d in diffs if isinstance(d, tuple) and d[0] == "add_table"}
    conflicts = [d for d in diffs
                 if not (isinstance(d, tuple) and (d[0] == "add_table" or (
                     d[0] == "add_index" and d[1].table.name in missing)))]
    return missing, conflicts


def _adopt_unversioned(app: Flask) -> bool:
    """Bring a schema made by `init-db` (before migrations existed) under migration control.

    When its tables are exactly the models', or some whole tables are missing and the rest
    match, the missing tables are added and the schema is stamped as head. Anything else is
    refused: it needs a person.
    """
    engine = database(app).engine
    with engine.connect() as conn:
        names = set(inspect(conn).get_table_names())
        if "alembic_version" in names or not names & set(Base.metadata.tables):
            return False
        diffs = schema_diff(conn)
    missing, conflicts = _split(diffs)
    if conflicts:
        shown = "; ".join(describe(d) for d in conflicts[:8])
        more = f" and {len(conflicts) - 8} more" if len(conflicts) > 8 else ""
        raise MigrationError(
            "the database has tables but no migration history, and they differ from the "
            f"models ({shown}{more}). Back it up, then migrate it by hand or start from an "
            "empty database.")
    if missing:

        Base.metadata.create_all(engine, tables=[Base.metadata.tables[t] for t in missing])
        install_append_only_guard(engine)
        with engine.connect() as conn:
            left = schema_diff(conn)
        if left:
            raise MigrationError("adding the missing tables did not make the schema match: "
                                 + "; ".join(describe(d) for d in left[:8]))
    command.stamp(alembic_config(app), "head")
    return True


def upgrade(app: Flask, revision: str = "head") -> bool:
    """Bring the schema to `revision`; True when an init-db schema was adopted first."""
    try:
        adopted = _adopt_unversioned(app)
        command.upgrade(alembic_config(app), revision)
    except CommandError as e:
        raise MigrationError(str(e)) from e
    finally:
        database(app).forget_functions()
    return adopted


def downgrade(app: Flask, revision: str) -> None:
    """Take the schema back to `revision` ('base' removes every table)."""
    try:
        command.downgrade(alembic_config(app), revision)
    except CommandError as e:
        raise MigrationError(str(e)) from e
    finally:
        database(app).forget_functions()
