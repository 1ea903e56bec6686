"""The embedded PostgreSQL server, for real, as `make run` starts it: `db upgrade` and
`serve` with no IVR_DATABASE_URL, a server left running and reused, a server killed with
SIGKILL (a stale postmaster.pid, even one whose pid now belongs to another process), and
`db stop-embedded`. Also: an SQLite URL stops every command with what to do."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ivr.storage import embedded_pg
from tests.integration.conftest import ROOT
from tests.support.gunicorn_server import free_port


@pytest.fixture
def instance():
    """An instance folder the server's own user can reach when we are root (pytest's
    tmp_path is private to us); its server is stopped at the end."""
    folder = Path(tempfile.mkdtemp(prefix="ivr-embedded-"))
    folder.chmod(0o711)
    yield folder / "instance"
    try:
        embedded_pg.stop(folder / "instance" / "pg")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def ivr(instance: Path, *args: str, env: dict | None = None, **kw):
    """`python -m ivr ARGS` as `make run` runs it: no IVR_DATABASE_URL."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("IVR_") and k != "TWILIO_AUTH_TOKEN"}
    base.update({"IVR_INSTANCE_DIR": str(instance), "IVR_AUDIO_DIR": str(instance / "audio")})
    return subprocess.run([sys.executable, "-m", "ivr", *args], cwd=ROOT,
                          env={**base, **(env or {})}, capture_output=True, text=True,
                          timeout=120, **kw)


def postmaster_pid(instance: Path) -> int:
    running = embedded_pg.read_postmaster(instance / "pg")
    assert running is not None, "no embedded server runs"
    return running.pid


def serves(instance: Path) -> int:
    """Start `ivr serve`, return /healthz's status, stop it as `timeout` stops `make run`."""
    port = free_port()
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("IVR_") and k != "TWILIO_AUTH_TOKEN"}
    base.update({"IVR_INSTANCE_DIR": str(instance), "IVR_AUDIO_DIR": str(instance / "audio")})
    with tempfile.TemporaryFile("w+") as out, subprocess.Popen(
            [sys.executable, "-m", "ivr", "serve", "--port", str(port)], cwd=ROOT, env=base,
            stdout=out, stderr=subprocess.STDOUT) as proc:
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    out.seek(0)
                    pytest.fail(f"serve stopped: {out.read()[-2000:]}")
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                try:
                    conn.request("GET", "/healthz")
                    return conn.getresponse().status
                except OSError:
                    assert time.monotonic() < deadline, "the server did not start"
                    time.sleep(0.2)
                finally:
                    conn.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)


@pytest.mark.slow
def test_make_run_starts_reuses_and_recovers_the_embedded_server(instance):
    first = ivr(instance, "db", "upgrade")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Database at revision" in first.stdout
    assert f"embedded PostgreSQL server in {instance / 'pg'}, on its unix socket" in first.stdout
    pid = postmaster_pid(instance)
    assert serves(instance) == 200

    # Still running after serve ended: the next command reuses it.
    again = ivr(instance, "db", "current")
    assert again.returncode == 0 and "up to date" in again.stdout, again.stdout + again.stderr
    assert postmaster_pid(instance) == pid

    # Killed with SIGKILL: its postmaster.pid stays behind, and the next start works.
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    assert (instance / "pg" / "postmaster.pid").exists()
    after_crash = ivr(instance, "db", "current")
    assert after_crash.returncode == 0, after_crash.stdout + after_crash.stderr
    assert "Traceback" not in after_crash.stderr
    pid2 = postmaster_pid(instance)
    assert pid2 != pid

    # Killed again, and its pid now names a live process that is no postgres (ours).
    os.kill(pid2, signal.SIGKILL)
    time.sleep(0.5)
    pidfile = instance / "pg" / "postmaster.pid"
    lines = pidfile.read_text().splitlines()
    pidfile.write_text("\n".join([str(os.getpid()), *lines[1:]]) + "\n")
    assert serves(instance) == 200
    assert postmaster_pid(instance) not in (pid, pid2, os.getpid())

    stopped = ivr(instance, "db", "stop-embedded")
    assert stopped.returncode == 0 and "Stopped" in stopped.stdout, stopped.stderr
    assert embedded_pg.read_postmaster(instance / "pg") is None
    assert "No embedded server" in ivr(instance, "db", "stop-embedded").stdout


@pytest.mark.parametrize("command", [["db", "upgrade"], ["audit", "verify"], ["serve"]])
def test_an_sqlite_url_says_what_to_do(tmp_path, command):
    done = ivr(tmp_path / "instance", *command,
               env={"IVR_DATABASE_URL": f"sqlite:///{tmp_path / 'ivr.db'}"})
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    message = done.stderr.strip()
    assert message.startswith("Error: IVR_DATABASE_URL names an SQLite database")
    assert "db import-sqlite" in message and "audit verify" in message
    assert len(message.splitlines()) == 1
