"""The one-commit ceiling: a bare Flask app whose POST /commit inserts one row and commits.

Served by the same gunicorn settings as the IVR (`gunicorn -c gunicorn.conf.py
--pythonpath benchmarks bare_app:app`), on the same engine and pool settings
(`ivr.storage.db.make_engine`), so the ratio to it is what the IVR's own work costs per webhook.
The database comes from BENCH_DATABASE_URL; `create_table(url)` makes its one table.
"""

from __future__ import annotations

import os

from flask import Flask, Response, request
from sqlalchemy import BigInteger, Column, DateTime, MetaData, String, Table, func, insert

from ivr.storage.db import make_engine

metadata = MetaData()
commits = Table(
    "bench_commits", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("call_sid", String(64)),
    Column("received_at", DateTime(timezone=True), server_default=func.now()),
)


def create_table(url: str) -> None:
    """Create the bench_commits table (once, before the workers start)."""
    engine = make_engine(url)
    metadata.create_all(engine)
    engine.dispose()


def create_app(url: str | None = None) -> Flask:
    """The bare app; its engine connects on the first request, after gunicorn's fork."""
    app = Flask(__name__)
    engine = make_engine(url or os.environ["BENCH_DATABASE_URL"])

    @app.post("/commit")
    def commit():
        """One INSERT, one COMMIT."""
        with engine.begin() as conn:
            conn.execute(insert(commits).values(call_sid=request.form.get("CallSid", "")[:64]))
        return Response(status=204)

    @app.get("/healthz")
    def healthz():
        """The process is alive."""
        return {"status": "ok"}

    return app


# gunicorn's `bare_app:app`; importing the module for create_table() needs no database.
if os.environ.get("BENCH_DATABASE_URL"):
    app = create_app()
