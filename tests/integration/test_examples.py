"""The shipped examples work as documented, and every hint names one command prefix."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.integration.conftest import ROOT

PREFIX = ".venv/bin/python -m ivr"
BROKEN = "docs/examples/broken-flow.yaml"


def ivr(*args: str, tmp_path) -> subprocess.CompletedProcess:
    """`python -m ivr ARGS` from the checkout, as a user runs it."""
    env = {**os.environ, "IVR_INSTANCE_DIR": str(tmp_path / "instance")}
    return subprocess.run([sys.executable, "-m", "ivr", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_broken_flow_example_fails_with_one_line_naming_file_and_node(tmp_path):
    done = ivr("flows", "check", BROKEN, tmp_path=tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (f"Error: {BROKEN}: node 'consent': leads to unknown node "
                           "'confrm_granted'\n")


def test_the_broken_flow_example_has_exactly_that_one_mistake(tmp_path):
    fixed = tmp_path / "fixed.yaml"
    text = (ROOT / BROKEN).read_text(encoding="utf-8")
    fixed.write_text(text.replace("next: confrm_granted}", "next: confirm_granted}"),
                     encoding="utf-8")
    done = ivr("flows", "check", str(fixed), tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"ok  {fixed}  id=broken-example")


def test_the_service_never_loads_the_example(tmp_path):
    done = ivr("flows", "check", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "broken" not in done.stdout


def test_usage_lines_name_the_prefix(tmp_path):
    done = ivr("simulate", "--digits", "x", tmp_path=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith(f"Usage: {PREFIX} simulate [OPTIONS]")


def test_the_login_page_names_the_prefix(client):
    page = client.get("/login").get_data(as_text=True)
    assert f"<code>{PREFIX} users add NAME --role auditor</code>" in page
