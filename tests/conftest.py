"""The whole suite: tests/unit/ (no server, no database) and tests/integration/ (HTTP, CLI,
both databases), each with its own conftest.py; helpers shared by tests live in
tests/support/. This file only says, at the top of every run, whether PostgreSQL answers."""

from __future__ import annotations

from tests.integration.conftest import IN_CI, PG_ADMIN_URL, _pg_state, pg_available


def pytest_report_header(config):
    if pg_available():
        return f"PostgreSQL: {PG_ADMIN_URL} (reachable)"
    return (f"!!! PostgreSQL NOT reachable at {PG_ADMIN_URL}: {_pg_state.get('why')} — "
            "the PostgreSQL half of the suite is SKIPPED" + (" (CI: will FAIL)" if IN_CI else ""))
