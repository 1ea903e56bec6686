"""Signed checkpoints (C2SP signed notes), the signing key, the sequencer's commands, and
the public proof contract: `audit prove --json`, `audit consistency`, `GET /audit/checkpoint`.
Leaves stay queued until the test runs `audit integrate --once`."""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from ivr import create_app
from ivr.audit import checkpoint as cps
from ivr.audit import merkle, note
from ivr.domain.config import ConfigError
from ivr.web.current import database
from tests.integration.conftest import require_tools
from tests.support.audit import append_entries, invoke


@pytest.fixture
def app_config(app_config):
    """No inline sequencer: leaves wait in the queue until the test integrates them."""
    return {**app_config, "AUDIT_SEQUENCER": "off"}


def integrate(app) -> str:
    result = invoke(app, "audit", "integrate", "--once")
    assert result.exit_code == 0, result.output
    return result.output


def signed_checkpoint(app) -> str:
    result = invoke(app, "audit", "checkpoint")
    assert result.exit_code == 0, result.output
    return result.output


def vkey(app) -> note.Verifier:
    result = invoke(app, "audit", "public-key", "--note")
    assert result.exit_code == 0, result.output
    return note.parse_vkey(result.output)


def leaves(app) -> list[bytes]:
    with database(app).engine.connect() as conn:
        rows = conn.execute(text("SELECT body FROM audit_log ORDER BY seq"))
        return [r[0].encode() for r in rows]


def test_checkpoint_is_a_signed_note_of_the_tree(app):
    append_entries(app, 5)
    text_ = signed_checkpoint(app)
    v = vkey(app)
    cp = note.open_checkpoint(text_, [v], origin="ivr.test/audit-log")
    assert text_.startswith("ivr.test/audit-log\n5\n")
    assert cp.size == 5 and cp.root == merkle.root_of([merkle.leaf_hash(x) for x in leaves(app)])
    assert re.fullmatch(r"ivr\.test/audit-log\+[0-9a-f]{8}\+A[A-Za-z0-9+/]{43}",
                        v.vkey())
    result = invoke(app, "audit", "verify")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: 5 leaves, 1 signed checkpoints, root ")


def test_checkpoint_of_an_empty_log_is_refused(app):
    result = invoke(app, "audit", "checkpoint")
    assert result.exit_code == 1 and "the audit log is empty" in result.output


def test_integrate_once_empties_the_queue(app):
    append_entries(app, 7)
    with database(app).engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM audit_queue")).scalar() == 7
        assert conn.execute(text("SELECT COUNT(*) FROM audit_log")).scalar() == 0
    assert integrate(app) == "integrated 7 leaves; tree size 7; signed checkpoint #1 at size 7\n"
    assert integrate(app) == "integrated 0 leaves; tree size 7\n"
    with database(app).engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM audit_queue")).scalar() == 0
        seqs = [r[0] for r in conn.execute(text("SELECT seq FROM audit_log ORDER BY seq"))]
    assert seqs == list(range(1, 8))
    # Leaves keep the order in which they were queued.
    assert [json.loads(b)["data"]["n"] for b in leaves(app)] == list(range(1, 8))


def test_generated_key_is_kept_in_instance_and_reused(app):
    append_entries(app, 2)
    first = signed_checkpoint(app)
    append_entries(app, 1)
    second = signed_checkpoint(app)
    path = os.path.join(app.config["INSTANCE_DIR"], "audit_signing_key")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert Path(path).read_text().startswith("-----BEGIN PRIVATE KEY-----")
    v = vkey(app)
    assert [note.open_checkpoint(x, [v]).size for x in (first, second)] == [2, 3]


@pytest.mark.parametrize("form", ["pem", "base64-seed"])
def test_key_from_the_environment(app, monkeypatch, form):
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    value = cps.private_key_pem(key) if form == "pem" else base64.b64encode(raw).decode()
    monkeypatch.setenv("IVR_AUDIT_SIGNING_KEY", value)
    append_entries(app, 2)
    text_ = signed_checkpoint(app)
    expected = note.verifier("ivr.test/audit-log", key)
    assert vkey(app).vkey() == expected.vkey()
    note.open_checkpoint(text_, [expected])
    result = invoke(app, "audit", "public-key")
    assert result.exit_code == 0
    assert cps.public_key_pem(key) in result.output
    assert not os.path.exists(os.path.join(app.config["INSTANCE_DIR"], "audit_signing_key"))


@pytest.mark.parametrize("value", ["not a key", base64.b64encode(b"short").decode(),
                                   "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"])
def test_a_bad_key_in_the_environment_is_one_clear_line(app, monkeypatch, value):
    monkeypatch.setenv("IVR_AUDIT_SIGNING_KEY", value)
    append_entries(app, 1)
    for args in (["checkpoint"], ["public-key"], ["public-key", "--note"],
                 ["integrate", "--once"]):
        result = invoke(app, "audit", *args)
        assert result.exit_code == 1, result.output
        assert "IVR_AUDIT_SIGNING_KEY: not an Ed25519 key" in result.output
        assert "Traceback" not in result.output


def test_verify_does_not_create_a_key(app):
    append_entries(app, 3)
    result = invoke(app, "audit", "verify")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: 0 leaves, 0 signed checkpoints, empty log; 3 queued")
    assert not os.path.exists(os.path.join(app.config["INSTANCE_DIR"], "audit_signing_key"))


def test_entries_export(app):
    append_entries(app, 4, ref="CAone")
    append_entries(app, 3, ref="CAtwo")
    integrate(app)
    lines = [json.loads(x) for x in invoke(app, "audit", "entries").output.splitlines()]
    assert [(x["seq"], x["index"]) for x in lines] == [(i, i - 1) for i in range(1, 8)]
    assert [x["body"].encode() for x in lines] == leaves(app)
    part = invoke(app, "audit", "entries", "--from", "3", "--to", "5").output.splitlines()
    assert [json.loads(x)["seq"] for x in part] == [3, 4, 5]
    two = invoke(app, "audit", "entries", "--call", "CAtwo").output.splitlines()
    assert [json.loads(x)["seq"] for x in two] == [5, 6, 7]


def test_checkpoints_are_listed_and_served(app, client):
    assert client.get("/audit/checkpoint").status_code == 404
    append_entries(app, 3)
    integrate(app)
    append_entries(app, 2)
    latest = signed_checkpoint(app)
    r = client.get("/audit/checkpoint")  # no login: a checkpoint names no caller
    assert r.status_code == 200 and r.mimetype == "text/plain"
    assert r.get_data(as_text=True) == latest
    rows = invoke(app, "audit", "checkpoints").output.splitlines()
    assert [line.split("\t")[:2] for line in rows] == [["#1", "3"], ["#2", "5"]]
    listed = invoke(app, "audit", "checkpoints", "--json").output
    docs = [json.loads(x) for x in listed.splitlines()]
    assert docs[-1]["note"] == latest and docs[-1]["tree_size"] == 5


def test_prove_json_is_the_public_contract(app):
    append_entries(app, 5, ref="CAother")
    append_entries(app, 3, ref="CAmine")
    append_entries(app, 4, ref="CAother")
    integrate(app)
    result = invoke(app, "audit", "prove", "CAmine", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert set(doc) == {"checkpoint", "tree_size", "root_hash", "leaves"}
    cp = note.open_checkpoint(doc["checkpoint"], [vkey(app)])
    assert (cp.size, base64.b64encode(cp.root).decode()) == (doc["tree_size"], doc["root_hash"])
    assert doc["tree_size"] == 12
    assert [x["index"] for x in doc["leaves"]] == [5, 6, 7]
    for x in doc["leaves"]:
        assert set(x) == {"index", "leaf", "proof"}
        assert base64.b64decode(x["leaf"]) == leaves(app)[x["index"]]
        merkle.verify_inclusion(x["index"], cp.size, merkle.leaf_hash(base64.b64decode(x["leaf"])),
                                [base64.b64decode(p) for p in x["proof"]], cp.root)
    assert {json.loads(base64.b64decode(x["leaf"]))["ref"] for x in doc["leaves"]} == {"CAmine"}
    human = invoke(app, "audit", "prove", "CAmine")
    assert human.exit_code == 0 and "leaf 5: " in human.output


@pytest.mark.parametrize("setup,message", [
    ("nothing", "unknown call: CAnobody"),
    ("queued", "has leaves still queued"),
])
def test_prove_refuses_an_unknown_or_queued_call(app, setup, message):
    append_entries(app, 2, ref="CAsomeone")
    integrate(app)
    sid = "CAnobody"
    if setup == "queued":
        append_entries(app, 1, ref=sid)
    result = invoke(app, "audit", "prove", sid, "--json")
    assert result.exit_code != 0 and message in result.output


def test_consistency_command(app):
    append_entries(app, 6)
    integrate(app)
    append_entries(app, 7)
    integrate(app)
    result = invoke(app, "audit", "consistency", "6", "13")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    tree = merkle.MemoryTree(merkle.leaf_hash(x) for x in leaves(app))
    assert base64.b64decode(doc["old_root"]) == tree.root(6)
    assert base64.b64decode(doc["new_root"]) == tree.root(13)
    assert [base64.b64decode(p) for p in doc["proof"]] == tree.consistency(6, 13)
    merkle.verify_consistency(6, 13, tree.root(6), tree.root(13),
                              [base64.b64decode(p) for p in doc["proof"]])
    for bad in (["0", "5"], ["7", "6"], ["6", "14"]):
        r = invoke(app, "audit", "consistency", *bad)
        assert r.exit_code == 1 and "0 < OLD_SIZE <= NEW_SIZE <= 13" in r.output


RECIPE = r"""
set -euo pipefail
# The signed text is everything before the blank line; the signature line's base64 holds a
# 4-byte key hash, then the 64-byte Ed25519 signature.
sed '/^$/,$d' checkpoint.note > checkpoint.txt
tail -n 1 checkpoint.note | cut -d' ' -f3 | base64 -d | tail -c 64 > checkpoint.sig
openssl pkeyutl -verify -pubin -inkey audit-public.pem -rawin -in checkpoint.txt \
  -sigfile checkpoint.sig
sed -n 2p checkpoint.txt
"""


def test_a_third_party_verifies_the_checkpoint_with_openssl(app, tmp_path):
    require_tools("bash", "sed", "base64", "openssl", what="the openssl check of a checkpoint")
    append_entries(app, 6)
    (tmp_path / "checkpoint.note").write_text(signed_checkpoint(app))
    (tmp_path / "audit-public.pem").write_text(invoke(app, "audit", "public-key").output
                                               .split("\n", 1)[1])
    ok = subprocess.run(["bash", "-c", RECIPE], cwd=tmp_path, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.splitlines() == ["Signature Verified Successfully", "6"]
    forged = (tmp_path / "checkpoint.note").read_text().replace("\n6\n", "\n7\n", 1)
    (tmp_path / "checkpoint.note").write_text(forged)
    bad = subprocess.run(["bash", "-c", RECIPE], cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode != 0 and "Signature Verification Failure" in bad.stdout + bad.stderr


def _sign_two_checkpoints(app) -> tuple[str, str]:
    append_entries(app, 3)
    integrate(app)
    first = invoke(app, "audit", "checkpoints", "--json").output.splitlines()[-1]
    append_entries(app, 2)
    return json.loads(first)["note"], signed_checkpoint(app)


def _signed_at(app, tree_size: int, shift: str) -> None:
    """Move when a checkpoint says it was signed (its row's time, not its note)."""
    with database(app).engine.begin() as conn:
        conn.execute(text(f"UPDATE audit_tree_heads SET at = at + interval '{shift}' "
                          "WHERE tree_size = :n"), {"n": tree_size})


def test_checkpoints_can_be_published_only_every_n_minutes(app_config):
    app_config["CHECKPOINT_PUBLISH_MINUTES"] = "10"
    application = create_app(app_config)
    database(application).create_all()
    try:
        client = application.test_client()
        first, latest = _sign_two_checkpoints(application)
        # Both were signed in the current ten minutes: neither is published yet.
        _signed_at(application, 3, "1 hour")
        _signed_at(application, 5, "1 hour")
        r = client.get("/audit/checkpoint")
        assert r.status_code == 404 and r.get_data(as_text=True) == \
            "no checkpoint published yet\n"
        # The first from an earlier period is served; the newer one waits for its period.
        _signed_at(application, 3, "-2 hours")
        r = client.get("/audit/checkpoint")
        assert r.status_code == 200 and r.get_data(as_text=True) == first != latest
        _signed_at(application, 5, "-2 hours")
        assert client.get("/audit/checkpoint").get_data(as_text=True) == latest
    finally:
        database(application).engine.dispose()


@pytest.mark.parametrize("value", ["-1", "ten", "1.5", "1441"])
def test_a_wrong_publish_interval_stops_start_up(app_config, value):
    app_config["CHECKPOINT_PUBLISH_MINUTES"] = value
    with pytest.raises(ConfigError, match="IVR_CHECKPOINT_PUBLISH_MINUTES"):
        create_app(app_config)
