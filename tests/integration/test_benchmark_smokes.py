"""No benchmark rots: each script under benchmarks/ runs at its `--smoke` size, as a user
runs it, and must exit 0 without a traceback. A module move that breaks a benchmark's
imports, or a benchmark that no longer finishes, fails here.

benchmarks/dashboard.py, benchmarks/audit_verify.py and the retention benchmark have smoke
tests of their own (issue 24)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from .conftest import pg_admin_url

ROOT = Path(__file__).resolve().parents[2]
SMOKES = ["consent_calls.py", "kvkk_lifecycle.py", "load_calls.py", "outage_answer.py",
          "request_overhead.py", "transfers.py"]
# Helpers the scripts import, not benchmarks themselves.
HELPERS = {"bare_app.py", "call_mix.py", "scratch_db.py", "__init__.py"}
# Benchmarks whose smoke tests belong to issue 24.
ELSEWHERE = {"dashboard.py", "audit_verify.py", "retention.py"}

pytestmark = pytest.mark.slow


def test_every_benchmark_has_a_smoke_run():
    scripts = {p.name for p in (ROOT / "benchmarks").glob("*.py")}
    assert scripts - HELPERS - ELSEWHERE == set(SMOKES)


@pytest.mark.parametrize("script", SMOKES)
def test_benchmark_smoke(script):
    url = pg_admin_url()
    if script == "outage_answer.py" and make_url(url).port not in (None, 5432):
        pytest.skip("outage_answer.py puts its proxy in front of 127.0.0.1:5432 only")
    env = {**os.environ, "IVR_TEST_PG_URL": url, "IVR_BENCH_PG_URL": url}
    done = subprocess.run([sys.executable, f"benchmarks/{script}", "--smoke"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=240)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
