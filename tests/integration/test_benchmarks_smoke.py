"""The dashboard benchmark's smoke run: a small fill by COPY, the daily aggregates rebuilt,
every timed page answering 200, nothing logged as an error, exit status 0 (so the script
cannot rot between the runs that measure)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import ROOT, pg_admin_url, pg_available


def test_the_dashboard_benchmark_smoke_run_passes():
    if not pg_available():
        pytest.fail("PostgreSQL not reachable")
    env = {**os.environ, "IVR_TEST_PG_URL": pg_admin_url()}
    run = subprocess.run([sys.executable, "benchmarks/dashboard.py", "--smoke"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "calls/s" in run.stdout and "rebuilt the daily aggregates" in run.stdout
    for page in ("dashboard, 90 days per day", "dashboard, default (last 30 days)",
                 "dashboard, 90 days per week", "flow registry", "drop-off calls, first page"):
        assert page in run.stdout, run.stdout
    assert "Traceback" not in run.stderr, run.stderr
