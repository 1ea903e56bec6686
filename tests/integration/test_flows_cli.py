"""Flow files through the command line and at start-up: `flows check`, and a broken flow
stopping the app, wsgi and the CLI with one line (the flow rules: tests/unit/test_flows.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ivr import create_app
from ivr.cli.main import cli
from ivr.domain.flow import InvalidFlow
from tests.integration.conftest import ROOT
from tests.unit.test_flows import variant


def test_flows_check_cli(tmp_path):
    from click.testing import CliRunner

    ok = CliRunner().invoke(cli, ["flows", "check", str(ROOT / "flows" / "consent.yaml")])
    assert ok.exit_code == 0 and "ok" in ok.output
    bad = variant(tmp_path, lambda d: d["nodes"]["consent"]["options"]["1"].update(next="x"))
    result = CliRunner().invoke(cli, ["flows", "check", bad])
    assert result.exit_code == 1
    assert f"{bad}: node 'consent': leads to unknown node 'x'" in result.output
    assert "Traceback" not in result.output


def test_invalid_flow_stops_start_up_with_one_line(tmp_path, database_url):
    bad = variant(tmp_path, lambda d: d["nodes"]["consent"]["options"]["1"].update(next="x"))
    with pytest.raises(InvalidFlow):
        create_app({"FLOW": bad, "FLOWS_DIR": str(tmp_path / "none"),
                    "INSTANCE_DIR": str(tmp_path / "i"), "DATABASE_URL": database_url})
    env = {"IVR_FLOW": bad, "IVR_INSTANCE_DIR": str(tmp_path / "i"), "PATH": "/usr/bin:/bin",
           "IVR_DATABASE_URL": database_url}
    proc = subprocess.run([sys.executable, "-c", "import wsgi"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0
    assert "leads to unknown node 'x'" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "ivr", "calls", "show", "CAx"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "leads to unknown node 'x'" in proc.stderr
