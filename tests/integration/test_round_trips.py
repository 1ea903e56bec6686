"""Database round trips per webhook on PostgreSQL, counted with SQLAlchemy's
`before_cursor_execute` event (issue 14 builds on this: each webhook's budget may only go
down). A change that adds a statement to a webhook's common path fails here."""

from __future__ import annotations

import pytest
from sqlalchemy import event

from ivr.storage.db import database
from tests.integration.conftest import postgresql_only

# Statements per webhook of a plain consent call (incoming, the key "1", completed), as
# measured on PostgreSQL; BEGIN and COMMIT are not cursor executions and are not counted.
BUDGET = {"incoming": 10, "gather": 8, "status": 9}  # issue 14 aims at 1 each


@pytest.fixture
def app_config(app_config):
    """The sequencer off: its integration passes are not the webhooks' round trips."""
    return {**app_config, "AUDIT_SEQUENCER": "off"}


@postgresql_only
def test_statements_per_webhook(app, local_caller):
    counts: list[int] = []

    def count(*_args):
        counts[-1] += 1

    engine = database(app).engine
    local_caller(from_number="+905320000001").run(["1"])  # warm: flow version, key checks
    caller = local_caller()
    event.listen(engine, "before_cursor_execute", count)
    try:
        counts.append(0)
        turn = caller.dial()
        counts.append(0)
        caller.press(turn, "1")
        counts.append(0)
        caller.hang_up()
    finally:
        event.remove(engine, "before_cursor_execute", count)
    measured = dict(zip(BUDGET, counts, strict=True))
    for name, limit in BUDGET.items():
        assert measured[name] <= limit, (name, measured)
