"""PL/pgSQL functions a migration creates (and `Database.create_all`, for tests): the
webhooks' (webhook_functions.py) and the sequencer's (audit_functions.py). SQLite has none."""

from __future__ import annotations

from sqlalchemy.engine import Engine


class ServerFunctions:
    """The SQL that creates and drops a set of PostgreSQL functions."""

    def __init__(self, create_sql: str, drop_sql: str):
        self.create_sql = create_sql
        self.drop_sql = drop_sql

    def create_statements(self, dialect: str) -> list[str]:
        """SQL that creates the functions (none on SQLite)."""
        return [self.create_sql] if dialect == "postgresql" else []

    def drop_statements(self, dialect: str) -> list[str]:
        """SQL that drops them."""
        return [self.drop_sql] if dialect == "postgresql" else []

    def install(self, engine: Engine) -> None:
        """Create (or replace) the functions on a PostgreSQL engine."""
        statements = self.create_statements(engine.dialect.name)
        if statements:
            with engine.begin() as conn:
                for stmt in statements:
                    conn.exec_driver_sql(stmt)
