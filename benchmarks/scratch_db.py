"""A throwaway database for a benchmark: a new PostgreSQL schema on IVR_TEST_PG_URL's
server, dropped afterwards (unless kept)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text

PG_URL = os.environ.get("IVR_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def schema_url(schema: str, pg_url: str = PG_URL) -> str:
    """The URL of `schema` on `pg_url`'s server (its search path set to the schema)."""
    return f"{pg_url}{'&' if '?' in pg_url else '?'}options=-csearch_path%3D{schema}"


def schema_exists(schema: str, pg_url: str = PG_URL) -> bool:
    """Whether `schema` exists on `pg_url`'s server."""
    admin = create_engine(pg_url)
    try:
        with admin.connect() as conn:
            return bool(conn.scalar(text("SELECT 1 FROM pg_namespace WHERE nspname = :s"),
                                    {"s": schema}))
    finally:
        admin.dispose()


@contextmanager
def scratch_database(pg_url: str = PG_URL, *, schema: str | None = None,
                     keep: bool = False) -> Iterator[str]:
    """Yield a database URL: a fresh schema on `pg_url` (named `schema`, else at random),
    dropped afterwards unless `keep`; an existing `schema` is used as it is."""
    schema = schema or "bench_" + secrets.token_hex(4)
    admin = create_engine(pg_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    try:
        yield schema_url(schema, pg_url)
    finally:
        if not keep:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
