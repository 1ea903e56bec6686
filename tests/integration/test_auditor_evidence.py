"""The evidence package: what the ZIP holds, and that a third party can verify it with
hashlib, sha256sum, openssl and the bundled script."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import sys
import zipfile

import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import func, select

from ivr.storage.db import database
from ivr.storage.models import AuditCheckpoint

from ..support.auditor import (
    AUDITOR,
    audio_dir,
    audit_bodies,
    auditor,
    csrf_token,
    place_call,
    rendered_audio,
)
from .conftest import require_tools

__all__ = ["audio_dir", "auditor", "rendered_audio"]  # fixtures, so pytest finds them


def download(client, sid: str):
    token = csrf_token(client, "/auditor/")
    return client.post(f"/auditor/calls/{sid}/evidence.zip", data={"csrf_token": token})


def open_package(data: bytes, sid: str) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        prefix = f"evidence-{sid}/"
        assert all(n.startswith(prefix) for n in z.namelist())
        return {n[len(prefix):]: z.read(n) for n in z.namelist()}


def jsonl(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode("utf-8").splitlines() if line]


def checkpoints(app) -> int:
    s = database(app).sessionmaker()
    try:
        return s.scalar(select(func.count()).select_from(AuditCheckpoint))
    finally:
        s.close()


def test_package_contents_and_recorded_hashes(app, auditor, local_caller):
    caller = place_call(local_caller, ["1"])
    sid = caller.call_sid
    r = download(auditor, sid)
    assert r.status_code == 200 and r.mimetype == "application/zip"
    assert r.headers["Content-Disposition"] == f'attachment; filename="evidence-{sid}.zip"'
    files = open_package(r.data, sid)
    for name in ("README.txt", "SHA256SUMS", "entries.jsonl", "chain/segment.jsonl",
                 "chain/checkpoint.json", "chain/checkpoint.msg", "chain/checkpoint.sig",
                 "chain/public_key.pem", "notice/tr.txt", "notice/tr.json", "prompts.txt",
                 "replay.txt", "call.json", "verification.txt", "verify.py"):
        assert name in files, name

    # The call's entries, exactly as stored.
    stored = [b for b in audit_bodies(app) if b["ref"] == sid and not b["kind"].startswith(
        "auditor.")]
    entries = jsonl(files["entries.jsonl"])
    assert [json.loads(e["body"]) for e in entries] == stored

    # Each audio file is the one the caller heard: its SHA-256 is the recorded hash.
    played = {p["audio"] for b in stored if b["kind"] == "prompts.played"
              for p in b["data"]["played"] if p["audio"]}
    audio = {n: data for n, data in files.items() if n.startswith("audio/")}
    assert len(audio) == 8 - 4  # four rendered prompts, one language: tr
    for name, data in audio.items():
        digest = hashlib.sha256(data).hexdigest()
        assert name == f"audio/{digest}.wav" and digest in played

    # The notice, word for word, and its document hashes to the decision's notice version.
    [decision] = [b for b in stored if b["kind"] == "consent.decided"]
    assert hashlib.sha256(files["notice/tr.json"]).hexdigest() == \
        decision["data"]["notice_version"]
    flow = app.extensions["ivr_flows"].default
    assert files["notice/tr.txt"].decode() == (flow.text("notice_intro", "tr") + "\n\n"
                                               + flow.text("notice_body", "tr") + "\n")

    # The replay output, the summary without the phone number, and a README.
    assert "Result: OK" in files["replay.txt"].decode()
    assert caller.from_number not in files["call.json"].decode()
    assert json.loads(files["call.json"])["consent"]["decision"] == "granted"
    readme = files["README.txt"].decode()
    assert "openssl pkeyutl -verify -pubin -inkey chain/public_key.pem -rawin" in readme
    assert "sha256sum -c SHA256SUMS" in readme and "python3 verify.py" in readme

    # SHA256SUMS covers every other file.
    sums = dict(reversed(line.split("  ", 1)) for line in
                files["SHA256SUMS"].decode().splitlines())
    assert set(sums) == set(files) - {"SHA256SUMS"}
    for name, digest in sums.items():
        assert hashlib.sha256(files[name]).hexdigest() == digest


def test_chain_segment_verifies_with_plain_hashlib(app, auditor, local_caller):
    first = place_call(local_caller, ["2"])
    place_call(local_caller, ["1"])  # another call's entries follow; the segment spans them
    files = open_package(download(auditor, first.call_sid).data, first.call_sid)
    segment = jsonl(files["chain/segment.jsonl"])
    prev = None
    for e in segment:
        digest = hashlib.sha256(b"\x00" + bytes.fromhex(e["prev_hash"])
                                + e["body"].encode("utf-8")).hexdigest()
        assert digest == e["hash"]
        assert json.loads(e["body"])["seq"] == e["seq"]
        if prev:
            assert e["seq"] == prev["seq"] + 1 and e["prev_hash"] == prev["hash"]
        prev = e
    entries = jsonl(files["entries.jsonl"])
    assert segment[0] == entries[0]
    assert all(e in segment for e in entries)

    # The checkpoint signs the segment's last entry, with the key in the package.
    doc = json.loads(files["chain/checkpoint.json"])
    signed = json.loads(doc["signed_body"])
    assert (signed["seq"], signed["hash"]) == (segment[-1]["seq"], segment[-1]["hash"])
    assert files["chain/checkpoint.msg"] == b"\x01" + doc["signed_body"].encode()
    key = serialization.load_pem_public_key(files["chain/public_key.pem"])
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert hashlib.sha256(raw).hexdigest() == signed["key_id"]
    key.verify(files["chain/checkpoint.sig"], files["chain/checkpoint.msg"])
    assert base64.b64encode(files["chain/checkpoint.sig"]).decode() == doc["signature"]


def _extract(data: bytes, sid: str, where) -> object:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        z.extractall(where)
    return where / f"evidence-{sid}"


def _run_verify(folder):
    return subprocess.run([sys.executable, "-I", "verify.py"], cwd=folder, capture_output=True,
                          text=True, timeout=60)


def test_bundled_script_and_openssl_verify_the_package(auditor, local_caller, tmp_path):
    # Caller switches to English: the Turkish notice was heard without a decision in it.
    caller = place_call(local_caller, ["0", "2"])
    folder = _extract(download(auditor, caller.call_sid).data, caller.call_sid, tmp_path)
    names = sorted(p.name for p in (folder / "notice").iterdir())
    assert "en.json" in names and any(n.startswith("tr-seq") for n in names)
    r = _run_verify(folder)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("OK: ")
    require_tools("openssl", "sha256sum", what="the openssl half of this test")
    r = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey",
                        "chain/public_key.pem", "-rawin", "-in", "chain/checkpoint.msg",
                        "-sigfile", "chain/checkpoint.sig"], cwd=folder, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0 and "Signature Verified Successfully" in r.stdout
    r = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=folder, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stdout


def _resum(folder) -> None:
    lines = []
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        name = line.split("  ", 1)[1]
        lines.append(f"{hashlib.sha256((folder / name).read_bytes()).hexdigest()}  {name}")
    (folder / "SHA256SUMS").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("tamper,expected", [
    ("decision", "does not hash to its hash"),
    ("drop", "is missing"),
    ("audio", "not the hash in its name"),
    ("signature", "signature does not verify"),
])
def test_bundled_script_detects_tampering(auditor, local_caller, tmp_path, tamper, expected):
    caller = place_call(local_caller, ["2"])
    folder = _extract(download(auditor, caller.call_sid).data, caller.call_sid, tmp_path)
    seg = folder / "chain" / "segment.jsonl"
    lines = seg.read_text(encoding="utf-8").splitlines()
    if tamper == "decision":
        i = next(i for i, line in enumerate(lines) if "consent.decided" in line)
        lines[i] = lines[i].replace('\\"declined\\"', '\\"granted\\"')
        seg.write_text("\n".join(lines) + "\n", encoding="utf-8")
        ent = folder / "entries.jsonl"
        ent.write_text(ent.read_text(encoding="utf-8").replace('\\"declined\\"',
                                                               '\\"granted\\"'), "utf-8")
    elif tamper == "drop":
        del lines[2]
        seg.write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif tamper == "audio":
        wav = next((folder / "audio").iterdir())
        wav.write_bytes(wav.read_bytes()[:-100] + bytes(100))
    else:
        sig = folder / "chain" / "checkpoint.sig"
        forged = bytes([sig.read_bytes()[0] ^ 1]) + sig.read_bytes()[1:]
        sig.write_bytes(forged)
        doc = json.loads((folder / "chain" / "checkpoint.json").read_text())
        doc["signature"] = base64.b64encode(forged).decode()
        (folder / "chain" / "checkpoint.json").write_text(json.dumps(doc))
    r = _run_verify(folder)
    assert r.returncode == 1
    assert "SHA256SUMS" in r.stdout  # the file list catches it first
    _resum(folder)  # a forger who also rewrites SHA256SUMS is caught by the deeper check
    r = _run_verify(folder)
    assert r.returncode == 1 and expected in r.stdout, r.stdout


def test_checkpoint_is_reused_while_it_covers_the_call(app, auditor, local_caller):
    caller = place_call(local_caller, ["1"])
    assert checkpoints(app) == 0
    download(auditor, caller.call_sid)
    assert checkpoints(app) == 1
    download(auditor, caller.call_sid)  # the checkpoint still covers every entry of the call
    assert checkpoints(app) == 1
    later = place_call(local_caller, ["2"])
    files = open_package(download(auditor, later.call_sid).data, later.call_sid)
    assert checkpoints(app) == 2
    assert json.loads(files["chain/checkpoint.json"])["seq"] >= \
        jsonl(files["entries.jsonl"])[-1]["seq"]


def test_export_is_an_access_entry(app, auditor, local_caller):
    caller = place_call(local_caller, ["1"])
    download(auditor, caller.call_sid)
    [entry] = audit_bodies(app, "auditor.access")
    assert entry["ref"] == caller.call_sid
    assert entry["data"]["action"] == "export.evidence" and entry["data"]["user"] == AUDITOR


def test_a_missing_audio_file_is_reported_not_faked(auditor, local_caller, audio_dir, tmp_path):
    caller = place_call(local_caller, ["1"])
    for wav in audio_dir.glob("*.wav"):
        wav.unlink()  # the audio folder was cleaned after the call
    folder = _extract(download(auditor, caller.call_sid).data, caller.call_sid, tmp_path)
    assert not (folder / "audio").exists()
    assert "no longer in the audio folder" in (folder / "verification.txt").read_text()
    assert "Not included (no longer on the server)" in (folder / "README.txt").read_text()
    assert _run_verify(folder).returncode == 0


def test_unknown_call_has_no_package(auditor):
    r = download(auditor, "CA" + "9" * 32)
    assert r.status_code == 404
    assert "No audit entries refer to call" in r.get_data(as_text=True)
