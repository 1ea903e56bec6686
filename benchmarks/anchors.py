"""Anchoring during a benchmark (`consent_calls.py --anchors [--anchors-down]`): a real
RFC 3161 authority (`openssl ts -reply`, tests/support/tsa.py) and a real C2SP witness
(`python -m ivr witness serve`, behind a TCP proxy that can cut it), set in the IVR's
environment as an operator sets them. With `down()` both refuse connections; `settle()`
brings them back and runs `audit anchor --once` until `audit verify` holds every checkpoint
to its time-stamps and to the witness's cosignature, and says how long that took."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ivr.services.audit_sequencer import ORIGIN_SETTING  # noqa: E402 - after the path set-up
from tests.support.anchors import WitnessProcess  # noqa: E402
from tests.support.tcp_proxy import proxied  # noqa: E402
from tests.support.tsa import TimeStampAuthority  # noqa: E402


def _ivr(env: dict, *args: str, check: bool = True,
         timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "ivr", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise SystemExit(f"python -m ivr {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done


class Anchors:
    """The authority and the witness of one benchmark run."""

    def __init__(self, env: dict):
        self.folder = Path(tempfile.mkdtemp(prefix="ivr-bench-anchors-"))
        # The first checkpoint pins the log's origin from IVR_PUBLIC_URL, which differs by
        # port from round to round here; pin one now, so the witness knows the log's name.
        url = env["IVR_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO settings (name, value) VALUES (%s, %s) "
                         "ON CONFLICT DO NOTHING", (ORIGIN_SETTING, "ivr.bench/audit-log"))
        vkey = _ivr(env, "audit", "public-key", "--note").stdout.strip()
        self.tsa = TimeStampAuthority("Benchmark TSA")
        self.witness = WitnessProcess(self.folder / "witness", [vkey], "witness.bench/dpo")
        self.proxy, url = proxied(self.witness.url)
        self.env = {"IVR_TSA_URLS": self.tsa.url, "IVR_TSA_CA_FILE": str(self.tsa.ca_file),
                    "IVR_WITNESSES": f"{self.witness.vkey} {url}",
                    # Often, so a short window holds many anchors.
                    "IVR_AUDIT_TIMESTAMP_INTERVAL": "5",
                    "IVR_AUDIT_CHECKPOINT_INTERVAL": "2"}

    def down(self) -> None:
        """Both refuse connections (the authority's port closes, the witness's proxy cuts)."""
        self.tsa.stop()
        self.proxy.cut()

    def settle(self, env: dict, limit: float = 600.0) -> str:
        """Both up again: `audit anchor --once` until a pass fails nothing (each pass takes
        every waiting anchor), then one `audit verify` that holds every checkpoint to its
        time-stamps and to the witness's cosignature."""
        if self.tsa.mode == "down":
            self.tsa.start()
        self.proxy.restore()
        t0 = time.monotonic()
        passes, done = 0, None
        while time.monotonic() - t0 < limit:
            done = _ivr(env, "audit", "anchor", "--once", check=False)
            passes += 1
            if done.returncode == 0 and ", failed 0" in done.stdout:
                break
            time.sleep(2)
        anchored = time.monotonic() - t0
        verify = ("audit", "verify", "--tsa-ca", str(self.tsa.ca_file), "--witness",
                  self.witness.vkey, "--quorum", "1", "--max-cosign-age", "0")
        t1 = time.monotonic()
        checked = _ivr(env, *verify, check=False, timeout=3600)
        verified = time.monotonic() - t1
        if checked.returncode != 0:
            return (f"anchors: NOT settled: {passes} anchoring passes in {anchored:.1f} s, "
                    f"then audit verify: {checked.stdout[-400:]}")
        return (f"anchors: every checkpoint time-stamped and cosigned {anchored:.1f} s after "
                f"the authority and the witness were reachable ({passes} `audit anchor "
                f"--once` passes: {done.stdout.strip() if done else ''}); {self.tsa.requests} "
                f"time-stamps served; audit verify with both took {verified:.1f} s")

    def close(self) -> None:
        self.proxy.close()
        self.witness.stop()
        self.tsa.stop()
