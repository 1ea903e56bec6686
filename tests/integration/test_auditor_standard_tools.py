"""The auditors' "verify without this software" procedure, run exactly as written
(docs/verify-with-standard-tools.sh) against every tamper vector of verification_support:
the whole Merkle log against a signed checkpoint note, and one call's inclusion proofs."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ivr import create_app
from ivr.adapters.simulate import Caller, flask_transport
from ivr.web.current import database
from tests.support.audit import invoke
from tests.support.verification import (
    PROOF_VECTORS,
    TOOLS,
    VECTORS,
    Export,
    ProofExport,
    fenced_block_after,
    pem,
    run_script,
    sign_note,
    tree_hash,
)

from .conftest import AUTH_TOKEN, ROOT, require_tools

SCRIPT = ROOT / "docs" / "verify-with-standard-tools.sh"
README_HEADING = "Verify without this software"


def _ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def public_key(app) -> str:
    """`audit public-key` (its first line, the key id, goes to stderr)."""
    out = _ok(invoke(app, "audit", "public-key"))
    return out[out.index("-----BEGIN"):]


def make_export(app, make_caller) -> Export:
    """A granted and a declined consent call, a signed checkpoint, `audit entries`, the key."""
    make_caller().run(["2"])
    make_caller().run(["1"])
    note = _ok(invoke(app, "audit", "checkpoint"))
    lines = tuple(json.loads(x) for x in _ok(invoke(app, "audit", "entries")).splitlines())
    return Export(lines=lines, checkpoint=note, public_key=public_key(app))


def make_proof_export(app, ex: Export) -> ProofExport:
    """`audit prove --json` of the granted call, with the declined call's consent leaf."""
    refs = [json.loads(e["body"]) for e in ex.lines]
    declined, granted = [b["ref"] for b in refs if b["kind"] == "consent.decided"][:2]
    doc = json.loads(_ok(invoke(app, "audit", "prove", granted, "--json")))
    other = json.loads(_ok(invoke(app, "audit", "prove", declined, "--json")))
    assert other["checkpoint"] == doc["checkpoint"]
    [leaf] = [x for x in other["leaves"] if b"consent.decided" in base64.b64decode(x["leaf"])]
    return ProofExport(sid=granted, doc=doc, public_key=ex.public_key, other=leaf)


def write_export(ex: Export, folder: Path) -> list[str]:
    """The three files: leaves, the note, and the controller's key. Returns the arguments."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "entries.jsonl").write_text(ex.jsonl(), encoding="utf-8")
    (folder / "checkpoint.note").write_text(ex.checkpoint, encoding="utf-8")
    (folder / "audit-public.pem").write_text(ex.public_key)
    return ["entries.jsonl", "checkpoint.note", "audit-public.pem"]


def write_proof(px: ProofExport, folder: Path) -> list[str]:
    """The proof document and the controller's key. Returns the arguments."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "proof.json").write_text(json.dumps(px.doc), encoding="utf-8")
    (folder / "audit-public.pem").write_text(px.public_key)
    return ["--proof", px.sid, "proof.json", "audit-public.pem"]


@pytest.fixture(scope="module")
def exports(tmp_path_factory, module_database_url) -> tuple[Export, ProofExport]:
    """A real export from a real app, made once for the tables of vectors below."""
    tmp = tmp_path_factory.mktemp("export")
    (tmp / "audio").mkdir()
    application = create_app({
        "TESTING": True, "DATABASE_URL": module_database_url,
        "INSTANCE_DIR": str(tmp / "instance"), "AUDIO_DIR": str(tmp / "audio"),
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_ACCOUNT_SID": "AC" + "1" * 32,
        "PUBLIC_URL": "http://ivr.test", "FLOW": str(ROOT / "flows" / "consent.yaml"),
        "FLOWS_DIR": str(ROOT / "flows")})
    database(application).create_all()
    client = application.test_client()
    try:
        ex = make_export(application, lambda: Caller(
            application.config["PUBLIC_URL"], AUTH_TOKEN, flask_transport(client)))
        yield ex, make_proof_export(application, ex)
    finally:
        database(application).engine.dispose()


@pytest.mark.parametrize("name", list(VECTORS))
def test_the_log_check_fails_exactly_on_every_tamper_vector(exports, tmp_path, name):
    require_tools(*TOOLS, what="the auditors' standard-tools verification")
    ex, _px = exports
    vector, accepted, reason = VECTORS[name]
    r = run(tmp_path, *write_export(vector(ex), tmp_path))
    if accepted:
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.splitlines()[-1] == (
            f"OK: leaves 0..{ex.size - 1} of entries.jsonl hash to the root that "
            f"ivr.test/audit-log signed for ivr.test/audit-log (tree size {ex.size})")
    else:
        assert r.returncode == 1, r.stdout + r.stderr
        assert r.stderr.startswith("FAILED: ") and reason in r.stderr, r.stderr
        assert "OK:" not in r.stdout


@pytest.mark.parametrize("name", list(PROOF_VECTORS))
def test_the_proof_check_fails_exactly_on_every_tamper_vector(exports, tmp_path, name):
    require_tools(*TOOLS, what="the auditors' standard-tools verification")
    _ex, px = exports
    vector, accepted, reason = PROOF_VECTORS[name]
    r = run(tmp_path, *write_proof(vector(px), tmp_path))
    if accepted:
        assert r.returncode == 0, r.stdout + r.stderr
        n = len(px.doc["leaves"])
        assert r.stdout.splitlines()[-1] == (
            f"OK: {n} leaves of call {px.sid} are included in the tree of "
            f"{px.doc['tree_size']} leaves whose root ivr.test/audit-log signed for "
            "ivr.test/audit-log")
    else:
        assert r.returncode == 1, r.stdout + r.stderr
        assert r.stderr.startswith("FAILED: ") and reason in r.stderr, r.stderr
        assert "OK:" not in r.stdout


def run(folder: Path, *args: str):
    """The published script, run as written in `folder`."""
    return run_script(SCRIPT, folder, *args)


def test_the_log_grown_after_the_checkpoint_still_verifies(exports, tmp_path):
    require_tools(*TOOLS, what="the auditors' standard-tools verification")
    ex, _px = exports
    assert len(ex.lines) == ex.size  # the checkpoint covers the whole export
    more = Export(lines=ex.lines + ({"seq": ex.size + 1, "index": ex.size,
                                     "body": ex.lines[0]["body"]},),
                  checkpoint=ex.checkpoint, public_key=ex.public_key)
    r = run(tmp_path, *write_export(more, tmp_path))
    assert r.returncode == 0, r.stderr
    assert f"note: leaves {ex.size}..{ex.size} follow" in r.stdout


def test_an_export_from_a_test_app_verifies(app, local_caller, tmp_path):
    require_tools(*TOOLS, what="the auditors' standard-tools verification")
    ex = make_export(app, local_caller)
    r = run(tmp_path, *write_export(ex, tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    px = make_proof_export(app, ex)
    r = run(tmp_path, *write_proof(px, tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    bad = run(tmp_path / "bad", *write_export(VECTORS["leaf_modified"][0](ex), tmp_path / "bad"))
    assert bad.returncode == 1, bad.stdout


def test_usage_and_missing_files(tmp_path):
    require_tools(*TOOLS, what="the auditors' standard-tools verification")
    r = run(tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("usage: ")
    r = run(tmp_path, "--proof", "CA1", "proof.json")
    assert r.returncode == 2 and r.stderr.startswith("usage: ")
    r = run(tmp_path, "entries.jsonl", "checkpoint.note", "key.pem")
    assert r.returncode == 1 and "cannot read entries.jsonl" in r.stderr


def test_the_doc_embeds_the_script_verbatim():
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
    """A log of `count` leaves, with non-ASCII words and escapes, and a checkpoint of it."""
    from ivr.audit import leaves

    bodies = [leaves.canonical({
        "at": "2026-11-30T07:39:51.367000Z", "kind": "test.fact", "ref": None,
        "data": {"n": n, "note": "çağrı  \"iki\"\tboşluk\\ %s \\x41"}}).decode()
        for n in range(count)]
    root = tree_hash([b.encode() for b in bodies])
    key = Ed25519PrivateKey.generate()
    note = sign_note(f"ivr.test/audit-log\n{count}\n{base64.b64encode(root).decode()}\n",
                     "ivr.test/audit-log", key)
    lines = tuple({"seq": n + 1, "index": n, "body": b} for n, b in enumerate(bodies))
    return Export(lines=lines, checkpoint=note, public_key=pem(key))


@pytest.mark.parametrize(("count", "damaged"), [
    (1, None), (2, None), (3, None), (7, None), (8, None), (9, None), (2000, None),
    (2000, 1500), (2000, 1999),
])
def test_tree_sizes_and_a_long_log(tmp_path, count, damaged):
    """Every shape of tree folds to the RFC 9162 root; 2,000 leaves take under 30 s."""
    require_tools(*TOOLS, what="the auditors' standard-tools verification")
    ex = synthetic_export(count)
    if damaged is not None:
        lines = list(ex.lines)
        lines[damaged] = {**lines[damaged],
                          "body": lines[damaged]["body"].replace("çağrı", "cagri")}
        ex = Export(lines=tuple(lines), checkpoint=ex.checkpoint, public_key=ex.public_key)
    start = time.monotonic()
    r = run(tmp_path, *write_export(ex, tmp_path))
    assert time.monotonic() - start < 30
    if damaged is None:
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[-1].startswith(f"OK: leaves 0..{count - 1} ")
    else:
        assert r.returncode == 1 and "but the checkpoint signs" in r.stderr, r.stderr
