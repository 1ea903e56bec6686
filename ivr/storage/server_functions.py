"""PL/pgSQL functions a migration creates (and `Database.create_all`, for tests): the
webhooks' (webhook_functions.py) and the sequencer's (audit_functions.py)."""

from __future__ import annotations

from sqlalchemy.engine import Engine


class ServerFunctions:
    """The SQL that creates and drops a set of PostgreSQL functions."""

    def __init__(self, create_sql: str, drop_sql: str):
        self.create_sql = create_sql
        self.drop_sql = drop_sql

    def create_statements(self) -> list[str]:
        """SQL that creates the functions."""
        return [self.create_sql]

    def drop_statements(self) -> list[str]:
        """SQL that drops them."""
        return [self.drop_sql]

    def install(self, engine: Engine) -> None:
        """Create (or replace) the functions."""
        with engine.begin() as conn:
            for stmt in self.create_statements():
                conn.exec_driver_sql(stmt)
