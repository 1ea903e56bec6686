"""The README's "verify without this software" procedure, run exactly as written
(docs/verify-with-standard-tools.sh) against every tamper vector of verification_support."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ivr import create_app
from ivr.adapters.simulate import Caller, flask_transport
from ivr.storage.db import database

from ..support.audit import invoke
from ..support.verification import TOOLS, VECTORS, Export, fenced_block_after, run_script
from .conftest import AUTH_TOKEN, ROOT, require_tools

SCRIPT = ROOT / "docs" / "verify-with-standard-tools.sh"
README_HEADING = "Verify without this software"


def make_export(app, make_caller) -> Export:
    """One granted consent call, a signed checkpoint, then `audit entries` and `public-key`."""
    make_caller().run(["1"])
    result = invoke(app, "audit", "checkpoint")
    assert result.exit_code == 0, result.output
    checkpoint = json.loads(result.output)
    pem = invoke(app, "audit", "public-key").output.split("\n", 1)[1]
    lines = tuple(json.loads(x) for x in invoke(app, "audit", "entries").output.splitlines())
    assert lines[-1]["seq"] > checkpoint["seq"]  # the audit.checkpoint entry follows it
    return Export(lines=lines, checkpoint=checkpoint, public_key=pem)


def write_export(ex: Export, folder: Path) -> list[str]:
    """The three files the README names; the trusted key is the controller's, never the
    checkpoint's own `public_key`. Returns the script's arguments."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "chain.jsonl").write_text(ex.jsonl(), encoding="utf-8")
    (folder / "checkpoint.json").write_text(json.dumps(ex.checkpoint, indent=2) + "\n")
    (folder / "audit-public.pem").write_text(ex.public_key)
    return ["chain.jsonl", "checkpoint.json", "audit-public.pem"]


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Export:
    """A real export from a real app (SQLite), made once for the table of vectors below."""
    tmp = tmp_path_factory.mktemp("export")
    (tmp / "audio").mkdir()
    application = create_app({
        "TESTING": True, "DATABASE_URL": f"sqlite:///{tmp / 'ivr.db'}",
        "INSTANCE_DIR": str(tmp / "instance"), "AUDIO_DIR": str(tmp / "audio"),
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_ACCOUNT_SID": "AC" + "1" * 32,
        "PUBLIC_URL": "http://ivr.test", "FLOW": str(ROOT / "flows" / "consent.yaml"),
        "FLOWS_DIR": str(ROOT / "flows")})
    database(application).create_all()
    client = application.test_client()
    try:
        yield make_export(application, lambda: Caller(
            application.config["PUBLIC_URL"], AUTH_TOKEN, flask_transport(client)))
    finally:
        database(application).engine.dispose()


@pytest.mark.parametrize("name", list(VECTORS))
def test_the_script_fails_exactly_on_every_tamper_vector(export, tmp_path, name):
    require_tools(*TOOLS, what="the README's standard-tools verification")
    vector, accepted = VECTORS[name]
    args = write_export(vector(export), tmp_path)
    r = run_script(SCRIPT, tmp_path, *args)
    if accepted:
        assert r.returncode == 0, r.stdout + r.stderr
        cp = export.checkpoint["seq"]
        assert r.stdout.splitlines()[-1] == (
            f"OK: entries 1..{cp} hash and link correctly, and the signed checkpoint covers "
            f"seq {cp}")
        assert "no checkpoint you gave covers them" in r.stdout
    else:
        assert r.returncode == 1, r.stdout + r.stderr
        assert r.stderr.startswith("FAILED: "), r.stderr
        assert "OK:" not in r.stdout


@pytest.mark.parametrize(("name", "reason"), [
    ("entry_modified", "bad hash at seq"),
    ("chain_rehashed_unsigned_hash_edited", '"hash" is'),
    ("entry_deleted", "(entry deleted, inserted or moved)"),
    ("first_entry_deleted", "the chain starts at seq 2, not 1"),
    ("entry_inserted", "(entry deleted, inserted or moved)"),
    ("entry_inserted_and_renumbered", "but the checkpoint signed"),
    ("entries_swapped", "(entry deleted, inserted or moved)"),
    ("checkpoint_resigned", "signature does not verify"),
    ("checkpoint_signed_body_edited", "signature does not verify"),
    ("checkpoint_seq_edited", '"seq" is'),
    ("chain_truncated", "(truncated)"),
    ("chain_empty", "holds no entries"),
])
def test_each_failure_says_why(export, tmp_path, name, reason):
    require_tools(*TOOLS, what="the README's standard-tools verification")
    r = run_script(SCRIPT, tmp_path, *write_export(VECTORS[name][0](export), tmp_path))
    assert r.returncode == 1 and reason in r.stderr, r.stderr


def test_an_export_from_each_backend_verifies(app, local_caller, tmp_path):
    require_tools(*TOOLS, what="the README's standard-tools verification")
    ex = make_export(app, local_caller)
    r = run_script(SCRIPT, tmp_path, *write_export(ex, tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    bad = run_script(SCRIPT, tmp_path / "bad",
                     *write_export(VECTORS["entry_modified"][0](ex), tmp_path / "bad"))
    assert bad.returncode == 1, bad.stdout


def test_a_segment_verifies_only_when_asked(export, tmp_path):
    require_tools(*TOOLS, what="the README's standard-tools verification")
    args = write_export(VECTORS["first_entry_deleted"][0](export), tmp_path)
    r = run_script(SCRIPT, tmp_path, "--segment", *args)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1].startswith("OK: entries 2..")


def test_usage_and_missing_files(tmp_path):
    require_tools(*TOOLS, what="the README's standard-tools verification")
    r = run_script(SCRIPT, tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("usage: ")
    r = run_script(SCRIPT, tmp_path, "chain.jsonl", "checkpoint.json", "key.pem")
    assert r.returncode == 1 and "cannot read chain.jsonl" in r.stderr


def test_the_readme_embeds_the_script_verbatim():
    """The published block under the heading (README.md, or docs/auditors.md where the
    auditor reference lives) is the tested script, byte for byte."""
    pages = [ROOT / "README.md", ROOT / "docs" / "auditors.md"]
    blocks = {p.name: fenced_block_after(p.read_text(encoding="utf-8"), README_HEADING)
              for p in pages if p.exists()}
    found = {name: b for name, b in blocks.items() if b is not None}
    assert found, f"no ```bash block under '{README_HEADING}' in README.md or docs/auditors.md"
    for name, block in found.items():
        assert block == SCRIPT.read_text(encoding="utf-8"), name


def synthetic_export(count: int) -> Export:
    """A chain of `count` entries, with non-ASCII words, and a checkpoint at its head."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ivr.audit import chain

    from ..support.verification import rehash, sign_checkpoint

    lines = [{"seq": n, "prev_hash": "", "hash": "", "body": chain.canonical({
        "at": "2026-11-30T07:39:51.367000Z", "kind": "test.fact", "ref": None, "seq": n,
        "data": {"n": n, "note": "çağrı  \"iki\"\tboşluk\\"}}).decode()}
        for n in range(1, count + 1)]
    lines = rehash(lines, "0" * 64)
    cp = sign_checkpoint(count, lines[-1]["hash"], "2026-11-30T07:40:00.000000Z",
                         Ed25519PrivateKey.generate())
    return Export(lines=tuple(lines), checkpoint=cp, public_key=cp["public_key"])


@pytest.mark.parametrize(("damaged", "reason"), [
    (None, None),
    (1500, "bad hash at seq 1500"),  # in the second batch of a thousand
    (2500, "bad hash at seq 2500"),  # in the last, partial batch
])
def test_a_long_chain_is_checked_in_batches(tmp_path, damaged, reason):
    require_tools(*TOOLS, what="the README's standard-tools verification")
    ex = synthetic_export(2600)
    if damaged:
        lines = list(ex.lines)
        lines[damaged - 1] = {**lines[damaged - 1],
                              "body": lines[damaged - 1]["body"].replace("çağrı", "cagri")}
        ex = Export(lines=tuple(lines), checkpoint=ex.checkpoint, public_key=ex.public_key)
    r = run_script(SCRIPT, tmp_path, *write_export(ex, tmp_path))
    if reason is None:
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[-1].startswith("OK: entries 1..2600 ")
    else:
        assert r.returncode == 1 and reason in r.stderr, r.stderr
