"""The evidence package: what the ZIP holds (the call's own leaves and their proofs, nothing
of other calls), and that a third party can verify it with hashlib, sha256sum, openssl, the
README's shell steps and the bundled script."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import subprocess
import sys
import zipfile

import pytest
from sqlalchemy import func, select

from ivr.audit import merkle, note
from ivr.storage import audit_store
from ivr.storage.models import AuditTreeHead
from ivr.web.current import database
from tests.support.audit import invoke
from tests.support.auditor import (
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

SHELL_STEPS = re.compile(r"----- BEGIN SHELL STEPS -----\n(.*?)----- END SHELL STEPS -----",
                         re.S)


def download(client, sid: str, **form):
    token = csrf_token(client, "/auditor/")
    return client.post(f"/auditor/calls/{sid}/evidence.zip", data={"csrf_token": token, **form})


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
        return s.scalar(select(func.count()).select_from(AuditTreeHead))
    finally:
        s.close()


def test_package_contents_and_recorded_hashes(app, auditor, local_caller):
    other = place_call(local_caller, ["2"])
    caller = place_call(local_caller, ["1"])
    place_call(local_caller, ["2"])
    sid = caller.call_sid
    r = download(auditor, sid)
    assert r.status_code == 200 and r.mimetype == "application/zip"
    assert r.headers["Content-Disposition"] == f'attachment; filename="evidence-{sid}.zip"'
    files = open_package(r.data, sid)
    for name in ("README.txt", "SHA256SUMS", "entries.jsonl", "proof/proof.json",
                 "proof/checkpoint.note", "proof/checkpoint.txt", "proof/checkpoint.sig",
                 "proof/public_key.pem", "proof/vkey.txt", "notice/tr.txt", "notice/tr.json",
                 "prompts.txt", "replay.txt", "call.json", "verification.txt", "verify.py"):
        assert name in files, name
    # Nothing about any other call.
    for data in files.values():
        assert other.call_sid.encode() not in data

    # The call's leaves, exactly as stored, with a leaf file and a path file each.
    stored = [b for b in audit_bodies(app) if b["ref"] == sid and not b["kind"].startswith(
        "auditor.")]
    entries = jsonl(files["entries.jsonl"])
    assert [json.loads(e["body"]) for e in entries] == stored
    for e in entries:
        assert files[f"proof/leaf-{e['index']}.bin"] == e["body"].encode()
        assert f"proof/path-{e['index']}.txt" in files

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

    assert "Result: OK" in files["replay.txt"].decode()
    assert caller.from_number not in files["call.json"].decode()
    assert json.loads(files["call.json"])["consent"]["decision"] == "granted"
    readme = files["README.txt"].decode()
    assert 'openssl pkeyutl -verify -pubin -inkey "$key" -rawin' in readme
    assert "key=controller-public.pem" in readme
    assert "sha256sum -c --quiet SHA256SUMS" in readme and "python3 verify.py" in readme
    assert SHELL_STEPS.search(readme)

    sums = dict(reversed(line.split("  ", 1)) for line in
                files["SHA256SUMS"].decode().splitlines())
    assert set(sums) == set(files) - {"SHA256SUMS"}
    for name, digest in sums.items():
        assert hashlib.sha256(files[name]).hexdigest() == digest


def test_proofs_verify_with_the_published_key(app, auditor, local_caller):
    caller = place_call(local_caller, ["2"])
    place_call(local_caller, ["1"])
    files = open_package(download(auditor, caller.call_sid).data, caller.call_sid)
    doc = json.loads(files["proof/proof.json"])
    assert set(doc) == {"checkpoint", "tree_size", "root_hash", "leaves"}
    vkey = invoke(app, "audit", "public-key", "--note").output.strip()
    assert files["proof/vkey.txt"].decode().strip() == vkey
    cp = note.open_checkpoint(files["proof/checkpoint.note"].decode(), [note.parse_vkey(vkey)])
    assert (cp.size, base64.b64encode(cp.root).decode()) == (doc["tree_size"], doc["root_hash"])
    for leaf in doc["leaves"]:
        merkle.verify_inclusion(leaf["index"], doc["tree_size"],
                                merkle.leaf_hash(base64.b64decode(leaf["leaf"])),
                                [base64.b64decode(p) for p in leaf["proof"]], cp.root)


def test_package_of_a_call_in_a_log_of_10000_calls(app, auditor, local_caller):
    first = place_call(local_caller, ["1"])
    # Ten thousand other calls' leaves, then one more real call: the package stays small.
    for start in range(0, 10_000, 2_500):
        with database(app).sessionmaker() as s, s.begin():
            audit_store.append(s, [("call.status", f"CA{n:032d}", {"status": "completed"})
                                   for n in range(start, start + 2_500)])
    caller = place_call(local_caller, ["1"])
    files = open_package(download(auditor, caller.call_sid).data, caller.call_sid)
    without_audio = sum(len(v) for k, v in files.items() if not k.startswith("audio/"))
    assert without_audio < 100_000, without_audio
    blob = b"".join(files.values())
    assert first.call_sid.encode() not in blob
    assert re.findall(rb"CA[0-9a-f]{32}", blob.replace(caller.call_sid.encode(), b"")) == []
    assert json.loads(files["proof/proof.json"])["tree_size"] > 10_000


def _extract(data: bytes, sid: str, where) -> object:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        z.extractall(where)
    return where / f"evidence-{sid}"


def _run_verify(folder):
    return subprocess.run([sys.executable, "-I", "verify.py"], cwd=folder, capture_output=True,
                          text=True, timeout=60)


def test_bundled_script_and_openssl_verify_the_package(app, auditor, local_caller, tmp_path):
    # Caller switches to English: the Turkish notice was heard without a decision in it.
    caller = place_call(local_caller, ["0", "2"])
    folder = _extract(download(auditor, caller.call_sid).data, caller.call_sid, tmp_path)
    names = sorted(p.name for p in (folder / "notice").iterdir())
    assert "en.json" in names and any(n.startswith("tr-leaf") for n in names)
    r = _run_verify(folder)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("OK: ")
    require_tools("openssl", "sha256sum", "bash", "od", "sed", "jq",
                  what="the README's shell steps")
    r = _run_shell_steps(app, folder)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Signature Verified Successfully" in r.stdout
    size = json.loads((folder / "proof" / "proof.json").read_text())["tree_size"]
    assert r.stdout.rstrip().endswith(f"OK: every leaf of this call is in the tree of {size} "
                                      "leaves signed with controller-public.pem")


def _run_shell_steps(app, folder):
    """The README's steps, with the controller's key saved beside the package."""
    out = invoke(app, "audit", "public-key").output
    (folder / "controller-public.pem").write_text(out[out.index("-----BEGIN"):])
    script = SHELL_STEPS.search((folder / "README.txt").read_text()).group(1)
    return subprocess.run(["bash", "-c", script], cwd=folder, capture_output=True, text=True,
                          timeout=60)


def test_shell_steps_catch_a_changed_leaf(app, auditor, local_caller, tmp_path):
    require_tools("openssl", "sha256sum", "bash", "od", "sed", "jq",
                  what="the README's shell steps")
    caller = place_call(local_caller, ["2"])
    folder = _extract(download(auditor, caller.call_sid).data, caller.call_sid, tmp_path)
    leaf = next(p for p in (folder / "proof").glob("leaf-*.bin")
                if b"consent.decided" in p.read_bytes())
    leaf.write_bytes(leaf.read_bytes().replace(b'"declined"', b'"granted"'))
    _resum(folder)
    r = _run_shell_steps(app, folder)
    assert r.returncode == 1 and f"FAILED: leaf {leaf.stem[5:]} leads to" in r.stdout


def _resum(folder) -> None:
    lines = []
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        name = line.split("  ", 1)[1]
        lines.append(f"{hashlib.sha256((folder / name).read_bytes()).hexdigest()}  {name}")
    (folder / "SHA256SUMS").write_text("\n".join(lines) + "\n")


def _edit_proof(folder, change) -> None:
    path = folder / "proof" / "proof.json"
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def _flip_first_proof_hash(doc) -> None:
    leaf = next(x for x in doc["leaves"] if x["proof"])
    h = bytearray(base64.b64decode(leaf["proof"][0]))
    h[0] ^= 1
    leaf["proof"][0] = base64.b64encode(bytes(h)).decode()


def _forge_leaf(folder) -> None:
    def change(doc):
        for x in doc["leaves"]:
            data = base64.b64decode(x["leaf"])
            if b"consent.decided" in data:
                x["leaf"] = base64.b64encode(data.replace(b'"declined"', b'"granted"')).decode()
    _edit_proof(folder, change)


def _forge_signature(folder) -> None:
    sig = folder / "proof" / "checkpoint.sig"
    forged = bytes([sig.read_bytes()[0] ^ 1]) + sig.read_bytes()[1:]
    sig.write_bytes(forged)
    note_path = folder / "proof" / "checkpoint.note"
    text = note_path.read_text()
    line = text.splitlines()[-1]
    blob = base64.b64decode(line.split(" ")[2])
    new_line = " ".join(line.split(" ")[:2] + [base64.b64encode(blob[:4] + forged).decode()])
    note_path.write_text(text.replace(line, new_line))
    _edit_proof(folder, lambda doc: doc.__setitem__("checkpoint", note_path.read_text()))


@pytest.mark.parametrize("tamper,expected", [
    ("leaf", "leads to root"),
    ("proof", "leads to root"),
    ("audio", "not the hash in its name"),
    ("signature", "signature does not verify"),
    ("size", "checkpoint: it signs size"),
])
def test_bundled_script_detects_tampering(auditor, local_caller, tmp_path, tamper, expected):
    caller = place_call(local_caller, ["2"])
    folder = _extract(download(auditor, caller.call_sid).data, caller.call_sid, tmp_path)
    if tamper == "leaf":
        _forge_leaf(folder)
    elif tamper == "proof":
        _edit_proof(folder, _flip_first_proof_hash)
    elif tamper == "audio":
        wav = next((folder / "audio").iterdir())
        wav.write_bytes(wav.read_bytes()[:-100] + bytes(100))
    elif tamper == "signature":
        _forge_signature(folder)
    else:
        _edit_proof(folder, lambda doc: doc.__setitem__("tree_size", doc["tree_size"] + 1))
    r = _run_verify(folder)
    assert r.returncode == 1
    assert "SHA256SUMS" in r.stdout  # the file list catches it first
    _resum(folder)  # a forger who also rewrites SHA256SUMS is caught by the deeper check
    r = _run_verify(folder)
    assert r.returncode == 1 and expected in r.stdout, r.stdout


def test_checkpoint_is_reused_while_it_covers_the_call(app, auditor, local_caller):
    caller = place_call(local_caller, ["1"])
    assert checkpoints(app) == 1  # the sequencer signs the first one as soon as there are leaves
    download(auditor, caller.call_sid)  # the call's later leaves need a newer checkpoint
    assert checkpoints(app) == 2
    # The first download is a leaf about the call too, so a second download needs a
    # checkpoint that covers it; one that does is reused.
    invoke(app, "audit", "integrate", "--once")
    assert checkpoints(app) == 3
    download(auditor, caller.call_sid)
    assert checkpoints(app) == 3
    later = place_call(local_caller, ["2"])  # within the interval: no new checkpoint yet
    assert checkpoints(app) == 3
    files = open_package(download(auditor, later.call_sid).data, later.call_sid)
    assert checkpoints(app) == 4
    assert json.loads(files["proof/proof.json"])["tree_size"] > \
        jsonl(files["entries.jsonl"])[-1]["index"]


def test_consistency_proof_from_a_checkpoint_the_auditor_holds(app, auditor, local_caller,
                                                                tmp_path):
    place_call(local_caller, ["1"])
    held = json.loads(invoke(app, "audit", "checkpoints", "--json").output.splitlines()[-1])
    caller = place_call(local_caller, ["2"])
    folder = _extract(download(auditor, caller.call_sid, since=held["tree_size"]).data,
                      caller.call_sid, tmp_path)
    c = json.loads((folder / "proof" / "consistency.json").read_text())
    assert (c["old_size"], c["old_root"]) == (held["tree_size"], held["root_hash"])
    r = _run_verify(folder)
    assert r.returncode == 0 and f"extends the earlier tree of {held['tree_size']}" in r.stdout
    c["old_root"] = base64.b64encode(bytes(32)).decode()
    (folder / "proof" / "consistency.json").write_text(json.dumps(c))
    _resum(folder)
    r = _run_verify(folder)
    assert r.returncode == 1 and r.stdout.startswith("FAILED: consistency: expected the ")


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
