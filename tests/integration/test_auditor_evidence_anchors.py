"""The evidence ZIP with the checkpoint's anchors: the RFC 3161 token and the authority's
certificates, the cosigned note; its README's `openssl ts -verify` steps run as written."""

from __future__ import annotations

import re
import subprocess

import pytest

from ivr.audit import checkpoint as cps
from ivr.audit import cosignature, note
from tests.support.audit import invoke
from tests.support.auditor import audio_dir, auditor, place_call, rendered_audio

from .conftest import require_tools
from .test_audit_anchors import log_key, log_vkey, tsa, witness
from .test_auditor_evidence import _extract, _run_shell_steps, _run_verify, download

__all__ = ["audio_dir", "auditor", "rendered_audio", "log_key", "log_vkey", "tsa", "witness"]

TIMESTAMP_STEPS = re.compile(r"----- BEGIN TIME-STAMP STEPS -----\n(.*?)"
                             r"----- END TIME-STAMP STEPS -----", re.S)


@pytest.fixture
def app_config(app_config, log_key, tsa, witness):
    return {**app_config, "AUDIT_SIGNING_KEY": cps.private_key_pem(log_key),
            "TSA_URLS": tsa.url, "TSA_CA_FILE": str(tsa.ca_file),
            "WITNESSES": f"{witness.vkey} {witness.url}", "AUDIT_TIMESTAMP_INTERVAL": "0.01"}


def _anchored_package(app, auditor, local_caller, tmp_path):
    caller = place_call(local_caller, ["1"])
    for args in (("audit", "integrate", "--once"), ("audit", "anchor", "--once")):
        r = invoke(app, *args)
        assert r.exit_code == 0, r.output
    return _extract(download(auditor, caller.call_sid).data, caller.call_sid, tmp_path)


def _run_timestamp_steps(folder):
    script = TIMESTAMP_STEPS.search((folder / "README.txt").read_text()).group(1)
    return subprocess.run(["bash", "-c", script], cwd=folder, capture_output=True, text=True,
                          timeout=60)


def test_the_package_carries_the_token_and_the_cosigned_note(app, auditor, local_caller,
                                                             tmp_path, witness):
    require_tools("openssl", "sha256sum", "bash", "od", "sed", "jq", "grep",
                  what="the README's time-stamp steps")
    folder = _anchored_package(app, auditor, local_caller, tmp_path)
    assert (folder / "timestamp" / "token-1.tsr").stat().st_size > 0
    assert "BEGIN CERTIFICATE" in (folder / "timestamp" / "tsa-ca.pem").read_text()
    cosigned = (folder / "proof" / "checkpoint.note").read_text()
    n = note.parse_note(cosigned)
    w = cosignature.parse_vkey(witness.vkey)
    [sig] = cosignature.matching(n.signatures, w)
    cosignature.verify_cosignature(n.text, sig, w)
    r = _run_timestamp_steps(folder)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Verification: OK" in r.stdout and "Time stamp:" in r.stdout
    assert r.stdout.rstrip().endswith("OK: every time-stamp token verifies over "
                                      "proof/checkpoint.txt")
    # The package's other checks still hold with the cosignature line in the note.
    assert _run_verify(folder).returncode == 0
    assert _run_shell_steps(app, folder).returncode == 0


def test_the_time_stamp_steps_fail_on_another_checkpoint(app, auditor, local_caller, tmp_path):
    require_tools("openssl", "bash", what="the README's time-stamp steps")
    folder = _anchored_package(app, auditor, local_caller, tmp_path)
    txt = folder / "proof" / "checkpoint.txt"
    lines = txt.read_text().splitlines()
    lines[1] = str(int(lines[1]) + 1)
    txt.write_text("\n".join(lines) + "\n")
    r = _run_timestamp_steps(folder)
    assert r.returncode != 0
    assert "Verification: OK" not in r.stdout
