"""No benchmark rots: each script under benchmarks/ runs at its `--smoke` size, as a user
runs it, and must exit 0 without a traceback. A module move that breaks a benchmark's
imports, or a benchmark that no longer finishes, fails here. (benchmarks/dashboard.py's
smoke run is in test_benchmarks_smoke.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import pg_admin_url

ROOT = Path(__file__).resolve().parents[2]
SMOKES = ["consent_calls.py", "kvkk_lifecycle.py", "load_calls.py", "outage_answer.py",
          "request_overhead.py", "transfers.py"]
# Each with what its output must say besides exiting 0.
CHECKED = {
    "audit_verify": (["benchmarks/audit_verify.py", "--smoke"], ["verified 2,500 leaves"]),
    "audit_verify_from_checkpoint": (
        ["benchmarks/audit_verify.py", "--from-checkpoint", "--smoke"],
        ["audit verify --from-checkpoint 1 (tree size 2,000): 600 new leaves"]),
    "retention": (["benchmarks/retention.py", "--smoke"],
                  ["expired calls left with a phone: 0", "webhook errors: 0"]),
}
# Helpers the scripts import, not benchmarks themselves.
HELPERS = {"anchors.py", "bare_app.py", "call_mix.py", "scratch_db.py", "__init__.py"}
ELSEWHERE = {"dashboard.py"}

pytestmark = pytest.mark.slow


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    url = pg_admin_url()
    env = {**os.environ, "IVR_TEST_PG_URL": url, "IVR_BENCH_PG_URL": url}
    return subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_every_benchmark_has_a_smoke_run():
    scripts = {p.name for p in (ROOT / "benchmarks").glob("*.py")}
    checked = {Path(argv[0]).name for argv, _ in CHECKED.values()}
    assert scripts - HELPERS - ELSEWHERE == set(SMOKES) | checked


@pytest.mark.parametrize("script", SMOKES)
def test_benchmark_smoke(script):
    done = _run([f"benchmarks/{script}", "--smoke"], 240)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "Traceback" not in output, output[-4000:]


@pytest.mark.parametrize("name", sorted(CHECKED))
def test_benchmark_smoke_figures(name):
    argv, expected = CHECKED[name]
    done = _run(argv, 900)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    for line in expected:
        assert line in done.stdout, done.stdout
