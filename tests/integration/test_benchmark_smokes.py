"""The benchmarks of issue 24 at their `--smoke` size, as subprocesses: they run against
this test server and must exit 0, so a change that breaks them fails here, not on the day
someone measures."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import ROOT, pg_admin_url, pg_available


@pytest.mark.parametrize("argv", [
    ["benchmarks/audit_verify.py", "--smoke"],
    ["benchmarks/audit_verify.py", "--from-checkpoint", "--smoke"],
    ["benchmarks/retention.py", "--smoke"],
], ids=["audit_verify", "audit_verify_from_checkpoint", "retention"])
def test_benchmark_smoke(argv):
    assert pg_available()
    url = pg_admin_url()
    env = {**os.environ, "IVR_TEST_PG_URL": url, "IVR_BENCH_PG_URL": url}
    done = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    if "--from-checkpoint" in argv:
        assert "audit verify --from-checkpoint 1 (tree size 2,000): 600 new leaves" \
            in done.stdout, done.stdout
    elif "retention.py" in argv[0]:
        assert "expired calls left with a phone: 0" in done.stdout, done.stdout
        assert "webhook errors: 0" in done.stdout, done.stdout
    else:
        assert "verified 2,500 leaves" in done.stdout, done.stdout
