"""Signed checkpoints, the signing key, and verification by a third party with standard tools
(sha256sum, xxd, jq, openssl) as docs/verify-with-standard-tools.sh does."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from ivr.audit import checkpoint as cps
from ivr.storage.db import database
from tests.integration.conftest import ROOT, require_tools
from tests.support.audit import append_entries, invoke, rows


def checkpoint(app) -> dict:
    result = invoke(app, "audit", "checkpoint")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_checkpoint_signs_the_head_and_is_itself_audited(app):
    append_entries(app, 5)
    head = rows(app)[-1]
    doc = checkpoint(app)
    assert (doc["seq"], doc["hash"]) == (5, head[3])
    assert doc["algorithm"] == "Ed25519" and doc["signed_message_prefix"] == "01"
    assert json.loads(doc["signed_body"]) == {k: doc[k] for k in ("at", "hash", "key_id", "seq")}
    assert doc["at"].endswith("Z")
    # The signature verifies over 0x01 || signed_body with the printed public key.
    pub = serialization.load_pem_public_key(doc["public_key"].encode())
    pub.verify(base64.b64decode(doc["signature"]), b"\x01" + doc["signed_body"].encode())
    entry = json.loads(rows(app)[-1][2])
    assert entry["seq"] == 6 and entry["kind"] == "audit.checkpoint"
    assert entry["data"]["signature"] == doc["signature"] and entry["data"]["hash"] == head[3]
    with database(app).engine.connect() as conn:
        stored = conn.execute(text("SELECT seq, hash, key_id, signature FROM audit_checkpoints"))
        assert [tuple(r) for r in stored] == [(5, head[3], doc["key_id"], doc["signature"])]
    result = invoke(app, "audit", "verify")
    assert result.exit_code == 0 and "ok: 6 entries, 1 checkpoints, head 6 " in result.output


def test_checkpoint_of_an_empty_log_is_refused(app):
    result = invoke(app, "audit", "checkpoint")
    assert result.exit_code == 1 and "the audit log is empty" in result.output


def test_generated_key_is_kept_in_instance_and_reused(app):
    append_entries(app, 2)
    first, second = checkpoint(app), checkpoint(app)
    assert first["key_id"] == second["key_id"]
    path = os.path.join(app.config["INSTANCE_DIR"], "audit_signing_key")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert Path(path).read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert second["seq"] == first["seq"] + 1  # the first checkpoint's entry is under the second


@pytest.mark.parametrize("form", ["pem", "base64-seed"])
def test_key_from_the_environment(app, monkeypatch, form):
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    value = cps.private_key_pem(key) if form == "pem" else base64.b64encode(raw).decode()
    monkeypatch.setenv("IVR_AUDIT_SIGNING_KEY", value)
    append_entries(app, 2)
    assert checkpoint(app)["key_id"] == cps.key_id(key)
    result = invoke(app, "audit", "public-key")
    assert result.exit_code == 0
    assert cps.public_key_pem(key) in result.output
    assert f"key id {cps.key_id(key)}" in result.output
    assert not os.path.exists(os.path.join(app.config["INSTANCE_DIR"], "audit_signing_key"))


@pytest.mark.parametrize("value", ["not a key", base64.b64encode(b"short").decode(),
                                   "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"])
def test_a_bad_key_in_the_environment_is_one_clear_line(app, monkeypatch, value):
    monkeypatch.setenv("IVR_AUDIT_SIGNING_KEY", value)
    append_entries(app, 1)
    for args in (["checkpoint"], ["public-key"]):
        result = invoke(app, "audit", *args)
        assert result.exit_code == 1, result.output
        assert "IVR_AUDIT_SIGNING_KEY: not an Ed25519 key" in result.output
        assert "Traceback" not in result.output


def test_verify_does_not_create_a_key(app):
    append_entries(app, 3)
    assert invoke(app, "audit", "verify").exit_code == 0
    assert not os.path.exists(os.path.join(app.config["INSTANCE_DIR"], "audit_signing_key"))


def test_entries_export(app):
    append_entries(app, 4, ref="CAone")
    append_entries(app, 3, ref="CAtwo")
    lines = [json.loads(x) for x in invoke(app, "audit", "entries").output.splitlines()]
    assert [x["seq"] for x in lines] == list(range(1, 8))
    assert [tuple(x.values()) for x in lines] == rows(app)
    part = invoke(app, "audit", "entries", "--from", "3", "--to", "5").output.splitlines()
    assert [json.loads(x)["seq"] for x in part] == [3, 4, 5]
    two = invoke(app, "audit", "entries", "--call", "CAtwo").output.splitlines()
    assert [json.loads(x)["seq"] for x in two] == [5, 6, 7]


TOOLS = ("bash", "jq", "sha256sum", "openssl", "base64")
SCRIPT = ROOT / "docs" / "verify-with-standard-tools.sh"


def _verify(tmp_path):
    return subprocess.run(["bash", str(SCRIPT), "chain.jsonl", "checkpoint.json",
                           "audit-public.pem"], cwd=tmp_path, capture_output=True, text=True)


def test_a_third_party_verifies_with_standard_tools(app, tmp_path):
    """The published script (docs/verify-with-standard-tools.sh) on a fresh export: it
    passes, and fails on a modified body and on a forged signature (every other tamper
    vector: tests/test_auditor_standard_tools.py)."""
    require_tools(*TOOLS, what="the third-party verification with standard tools")
    append_entries(app, 6)
    (tmp_path / "checkpoint.json").write_text(invoke(app, "audit", "checkpoint").output)
    (tmp_path / "audit-public.pem").write_text(
        invoke(app, "audit", "public-key").output.split("\n", 1)[1])
    (tmp_path / "chain.jsonl").write_text(invoke(app, "audit", "entries").output,
                                          encoding="utf-8")
    doc = json.loads((tmp_path / "checkpoint.json").read_text())
    ok = _verify(tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.splitlines()[-1].startswith("OK: entries 1..")

    chain_text = (tmp_path / "chain.jsonl").read_text(encoding="utf-8")
    (tmp_path / "chain.jsonl").write_text(chain_text.replace('\\"digits\\":\\"1\\"',
                                                             '\\"digits\\":\\"2\\"', 1))
    bad = _verify(tmp_path)
    assert bad.returncode == 1 and "FAILED: bad hash at seq 1" in bad.stderr
    (tmp_path / "chain.jsonl").write_text(chain_text)
    forged = Ed25519PrivateKey.generate().sign(b"\x01" + doc["signed_body"].encode())
    (tmp_path / "checkpoint.json").write_text(json.dumps(
        {**doc, "signature": base64.b64encode(forged).decode()}))
    bad = _verify(tmp_path)
    assert bad.returncode == 1 and "signature does not verify" in bad.stderr
