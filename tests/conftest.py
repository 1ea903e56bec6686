"""The whole suite: tests/unit/ (no server, no database) and tests/integration/ (HTTP, CLI,
PostgreSQL), each with its own conftest.py; helpers shared by tests live in tests/support/.
This file says, at the top of every run, which PostgreSQL the suite uses, and stops the
embedded one at the end."""

from __future__ import annotations

import os

from tests.integration.conftest import _pg_state, pg_available, stop_embedded_server


def pytest_report_header(config):
    if not os.environ.get("IVR_TEST_PG_URL"):
        return ("PostgreSQL: an embedded server, started at the first test that needs it "
                "(set IVR_TEST_PG_URL to use a server)")
    if pg_available():
        return f"PostgreSQL: {_pg_state['url']} (IVR_TEST_PG_URL, reachable)"
    return (f"!!! PostgreSQL NOT reachable at IVR_TEST_PG_URL: {_pg_state.get('why')} — "
            "every test that needs it FAILS")


# Modules whose tests time how soon something answers (the fault table's 2 s, the database
# deadline, the sequencer's MMD): `make test` runs them alone, after the rest has run on
# pytest-xdist's workers, so a busy neighbour cannot make them late.
SERIAL = {"test_fault_table.py", "test_outage.py", "test_faults.py", "test_db_deadline.py",
          "test_audit_sequencer.py", "test_observability.py",
          # the smokes fail on any error; a loaded machine makes a tiny load test time out
          "test_benchmark_smokes.py"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in SERIAL:
            item.add_marker("serial")


def pytest_sessionfinish(session, exitstatus):
    stop_embedded_server()
