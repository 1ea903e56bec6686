"""The database: the engine (a PostgreSQL server, or the embedded one)
and its session factory."""

from __future__ import annotations

from pathlib import Path

from flask import Flask
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from . import (
    audit_functions,
    daily_aggregates,
    embedded_pg,
    models,  # noqa: F401 - its tables join Base.metadata, which create_all makes
    webhook_functions,
)
from . import deadline as db_deadline
from .audit_store import install_append_only_guard
from .base import Base

EMBEDDED_DIR = "pg"  # the embedded server's data directory, under the instance folder


def make_engine(url: str, **kwargs) -> Engine:
    """An engine on a PostgreSQL server, with a pool sized for a few threads."""
    # psycopg 3 prepares a statement on a connection at its sixth execution
    # (prepare_threshold, kept at its default here; the app's Database turns it off). The
    # webhooks' functions are prepared at their first call instead
    # (ivr/storage/webhook_functions.py), so they are parsed and planned once per connection.
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 5)
    kwargs.setdefault("max_overflow", 10)
    kwargs.setdefault("pool_timeout", 5)
    return create_engine(url, **kwargs)


class Database:
    """The app's engine and session factory."""

    def __init__(self, url: str, connect_timeout: float = 1.2):
        self.url = url
        self.connect_timeout = connect_timeout
        # A caller waits on us: give up on an unreachable database quickly and answer
        # from the spool path instead (see ivr/services/offline.py). Webhooks also bound a
        # database that stops answering (ivr/storage/deadline.py), which pings.
        # No statement is prepared behind our back (psycopg's prepare_threshold): after five
        # runs of a prepared statement PostgreSQL may switch to a generic plan, which for a
        # page's query (a keyset page, an IN list of runs) can be ten times slower than the
        # plan made for its values. The webhooks' functions prepare themselves explicitly
        # (ivr/storage/webhook_functions.py).
        self.engine = make_engine(
            url, connect_args={"connect_timeout": max(2, round(connect_timeout)),
                               "prepare_threshold": None},
            pool_timeout=max(1.0, connect_timeout), pool_pre_ping=False)
        db_deadline.install(self.engine)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)

    def create_all(self) -> None:
        """Create the schema (tests and the embedded default; production uses migrations)."""
        Base.metadata.create_all(self.engine)
        install_append_only_guard(self.engine)
        webhook_functions.install(self.engine)
        audit_functions.install(self.engine)
        daily_aggregates.install(self.engine)
        self.forget_functions()

    def forget_functions(self) -> None:
        """New connections after the server functions changed (create_all, a migration):
        none keeps a statement prepared against the old ones."""
        self.engine.dispose()


def database(app: Flask) -> Database:
    """The app's Database (views and commands: ivr.web.current.database)."""
    return app.extensions["ivr_db"]


def init_app(app: Flask) -> None:
    """Attach the database to the app (the request's session: ivr/web/current.py)."""
    if not app.config.get("DATABASE_URL"):
        # No server named: the embedded one under instance/pg, started or reused.
        app.config["DATABASE_URL"] = embedded_pg.start(
            Path(app.config["INSTANCE_DIR"]) / EMBEDDED_DIR)
        app.config["DATABASE_EMBEDDED"] = True
    app.extensions["ivr_db"] = Database(app.config["DATABASE_URL"],
                                        float(app.config.get("DB_CONNECT_TIMEOUT") or 1.2))
