"""Run the real app under gunicorn (several worker processes) for the fault tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gunicorn:
    """`gunicorn -c gunicorn.conf.py wsgi:app` with the test's settings."""

    def __init__(self, app_config: dict, workers: int = 2, threads: int = 4):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("IVR_")}
        env.update({
            "IVR_DATABASE_URL": app_config["DATABASE_URL"],
            "IVR_INSTANCE_DIR": app_config["INSTANCE_DIR"],
            "IVR_AUDIO_DIR": app_config["AUDIO_DIR"],
            "TWILIO_AUTH_TOKEN": app_config["TWILIO_AUTH_TOKEN"],
            "TWILIO_ACCOUNT_SID": app_config["TWILIO_ACCOUNT_SID"],
            "IVR_PUBLIC_URL": self.url,
            "IVR_FLOW": app_config["FLOW"],
            "IVR_FLOWS_DIR": app_config["FLOWS_DIR"],
            "IVR_BIND": f"127.0.0.1:{self.port}",
            "WEB_CONCURRENCY": str(workers),
            "IVR_THREADS": str(threads),
            "IVR_LOG_LEVEL": "WARNING",
            "IVR_GUNICORN_LOG_LEVEL": "warning",
        })
        for key in ("PII_KEY", "HMAC_KEY", "SECRET_KEY", "DB_CONNECT_TIMEOUT"):
            if app_config.get(key):
                env[f"IVR_{key}"] = app_config[key]
        self.log = Path(app_config["INSTANCE_DIR"]) / "gunicorn.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"),
                 "wsgi:app"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.wait_ready()

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.log.read_text()[-2000:]}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError("gunicorn did not become ready")

    def workers(self) -> list[int]:
        """PIDs of the worker processes (children of the master)."""
        out = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid:
                out.append(int(stat.parent.name))
        return out

    def kill_workers(self) -> list[int]:
        """SIGKILL every worker, as the kernel's OOM killer or a crash would."""
        pids = self.workers()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        return pids

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
