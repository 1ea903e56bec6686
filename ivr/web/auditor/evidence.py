"""The evidence package of one call: a ZIP a third party can check with standard tools.

It holds the call's audit entries, the chain segment from the call's first entry to a
signed checkpoint at or after its last one (a fresh checkpoint is signed when none is),
the checkpoint with its exact signed bytes and public key, the notice text and documents
whose SHA-256 is the recorded notice version, the audio files the caller heard (named by
their SHA-256), the replay output, a README, a standard-library verify script, and the
shell script (verify.sh) that the README's standard-tools steps run.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from flask import render_template
from sqlalchemy.orm import Session

from ...audit import chain
from ...audit import checkpoint as cps
from ...audit.errors import AuditError, VerificationError
from ...audit.replay import replay_call
from ...audit.verify import segment as chain_segment
from ...audit.verify import verify_segment
from ...domain import times
from ...domain.pii import PersonalData
from ...services import calls
from ...services.reports import call_timeline
from ...services.timeline import fact_entries, run_versions
from ...storage.accounts import User
from ...storage.db import utcnow
from ...storage.models import AuditEntry, Call
from .access import record_access, transaction
from .audiofiles import AudioIndex, file_sha256

VERIFY_SCRIPT = Path(__file__).with_name("evidence_verify.py")
# The same script as docs/verify-with-standard-tools.sh (a test keeps them equal).
VERIFY_SHELL = Path(__file__).with_name("verify_chain.sh")


class EvidenceError(Exception):
    """The package cannot be built; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Package:
    """A built evidence package."""

    filename: str
    data: bytes
    files: dict[str, str] = field(default_factory=dict)  # name in the ZIP -> sha256
    checkpoint_seq: int = 0
    segment: tuple[int, int] = (0, 0)


def _line(e: AuditEntry | dict) -> dict:
    if isinstance(e, dict):
        return {"seq": e["seq"], "prev_hash": e["prev_hash"], "hash": e["hash"],
                "body": e["body"]}
    return {"seq": e.seq, "prev_hash": e.prev_hash, "hash": e.hash, "body": e.body}


def _jsonl(rows) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def ensure_checkpoint(s: Session, call_sid: str) -> None:
    """Sign a fresh checkpoint when none covers the call's last entry (its own transaction)."""
    with transaction(s):
        entries = fact_entries(s, call_sid)
        if not entries:
            return
        if cps.latest(s, at_or_after=entries[-1].seq) is None:
            try:
                key = cps.signing_key()
            except AuditError as e:
                raise EvidenceError(f"cannot sign a checkpoint: {e}", 500) from e
            cps.make_checkpoint(s, key)


def _notice_doc(flow, lang: str, items: list[tuple[str, str | None]]) -> tuple[bytes, str]:
    parts = [(p, flow.text(p, lang), a) for p, a in items]
    doc = {"language": lang, "prompts": [{"id": p, "text": t, "audio": a} for p, t, a in parts]}
    return chain.canonical(doc), calls.notice_version(lang, parts)


def _notices(bodies: list[dict], versions: dict[str, str], registry, s: Session) -> list[dict]:
    """Each run's notice per language as the caller heard it, with canonical documents whose
    SHA-256 is a recorded notice version: the whole notice when a decision was made in that
    language (the decision records its version), else one document per notice.played entry."""
    heard: dict[tuple[str, str], list[tuple[str, str | None]]] = {}
    played: dict[tuple[str, str], list[dict]] = {}
    for b in bodies:
        if b["kind"] != "notice.played":
            continue
        d = b["data"]
        played.setdefault((d["run"], d["language"]), []).append(b)
        items = heard.setdefault((d["run"], d["language"]), [])
        for p, a in zip(d.get("prompts") or [], d.get("audio") or [], strict=False):
            if (p, a) not in items:
                items.append((p, a))
    decided = {(b["data"].get("run"), b["data"].get("language")): b["data"].get("notice_version")
               for b in bodies if b["kind"] in ("consent.decided", "consent.withdrawn")}
    runs = list(dict.fromkeys(run for run, _ in heard))
    out = []
    for (run, lang), items in heard.items():
        flow = registry.version(s, versions[run])
        stem = lang if len(runs) == 1 else f"run{runs.index(run) + 1}-{lang}"
        canonical, version = _notice_doc(flow, lang, items)
        recorded = decided.get((run, lang))
        if recorded is not None:
            docs = [(f"{stem}.json", canonical, version, recorded)]
        else:
            docs = []
            for b in played[(run, lang)]:
                d = b["data"]
                c, v = _notice_doc(flow, lang, list(zip(d["prompts"], d["audio"], strict=False)))
                docs.append((f"{stem}-seq{b['seq']}.json", c, v, d.get("notice_version")))
        out.append({"run": run, "language": lang, "stem": stem,
                    "text": "\n\n".join(flow.text(p, lang) for p, _a in items) + "\n",
                    "docs": docs})
    return out


def _replay_text(s: Session, registry, call_sid: str) -> str:
    return replay_call(s, registry, call_sid).render()


def _summary(doc: dict, phone_hmac: str | None) -> dict:
    """The call's summary without the phone number (the entries carry its keyed HMAC)."""
    out = {k: v for k, v in doc.items() if k != "from"}
    out["caller_hmac"] = phone_hmac
    out["consents"] = [{k: v for k, v in c.items() if k != "phone"} for c in doc["consents"]]
    out["consent"] = out["consents"][-1] if out["consents"] else None
    return out


def build_package(s: Session, call_sid: str, *, registry, pii: PersonalData,
                  index: AudioIndex, user: User) -> Package:
    """Build the ZIP for one call and record the export as an auditor.access entry."""
    ensure_checkpoint(s, call_sid)
    now = utcnow()
    with transaction(s):
        call = s.get(Call, call_sid)
        entries = fact_entries(s, call_sid)
        if call is None or not entries:
            record_access(s, user, "export.evidence", via="web", call_sid=call_sid, found=False)
            missing = True
        else:
            missing = False
            package = _build(s, call, entries, registry, pii, index, now)
            record_access(s, user, "export.evidence", via="web", call_sid=call_sid,
                          phone_hmac=call.phone_hmac)
    if missing:
        raise EvidenceError(f"No audit entries refer to call {call_sid}.", 404)
    return package


def _build(s: Session, call: Call, entries: list[AuditEntry], registry, pii, index, now):
    sid = call.call_sid
    row = cps.latest(s, at_or_after=entries[-1].seq)
    if row is None:
        raise EvidenceError("no checkpoint covers this call", 500)
    cp = cps.from_row(row)
    keys = cps.app_public_keys()
    pub = keys.get(cp.key_id)
    segment = [_line(e) for e in chain_segment(s, entries[0].seq, cp.seq)]
    try:
        verify_segment(segment, cp, keys)
        chain_result = (f"OK: entries {segment[0]['seq']}..{segment[-1]['seq']} hash and link "
                        f"correctly and checkpoint #{row.id} (seq {cp.seq}) verifies.")
    except VerificationError as e:
        chain_result = f"FAILED: {e}"
    bodies = [json.loads(e.body) for e in entries]
    versions = run_versions(s, sid, bodies)
    notices = _notices(bodies, versions, registry, s)
    hashes = []
    for b in bodies:
        for p in (b["data"].get("played") or []) if b["kind"] == "prompts.played" else []:
            if p.get("audio") and p["audio"] not in hashes:
                hashes.append(p["audio"])
    found = index.find(hashes)
    try:
        replay = _replay_text(s, registry, sid)
    except Exception as e:  # noqa: BLE001 - a failed replay is itself evidence, and is shown
        replay = f"REPLAY FAILED: {type(e).__name__}: {e}\n"

    files: dict[str, bytes] = {}
    files["entries.jsonl"] = _jsonl(_line(e) for e in entries)
    files["chain/segment.jsonl"] = _jsonl(segment)
    files["chain/checkpoint.json"] = (json.dumps(
        cp.to_dict(cps.public_key_pem(pub) if pub else None), ensure_ascii=False,
        indent=2) + "\n").encode()
    files["chain/checkpoint.msg"] = cp.message()
    files["chain/checkpoint.sig"] = base64.b64decode(cp.signature)
    if pub is not None:
        files["chain/public_key.pem"] = cps.public_key_pem(pub).encode()
    prompt_lines = []
    for b in bodies:
        if b["kind"] != "prompts.played":
            continue
        flow = registry.version(s, versions[b["data"]["run"]]) if b["data"].get("run") in versions \
            else None
        for p in b["data"].get("played") or []:
            text = flow.text(p["prompt"], p["language"]) if flow else "(unknown flow version)"
            prompt_lines.append(f"{times.text(b['at'])}  seq {b['seq']}  {p['prompt']} "
                                f"({p['language']})  "
                                f"audio {p.get('audio') or 'none (spoken by <Say>)'}\n"
                                f"    {text}\n")
    files["prompts.txt"] = "".join(prompt_lines).encode("utf-8")
    for n in notices:
        files[f"notice/{n['stem']}.txt"] = n["text"].encode("utf-8")
        for name, canonical, _v, _r in n["docs"]:
            files[f"notice/{name}"] = canonical
    missing_audio = []
    for h in hashes:
        name = found.get(h)
        path = index.path(name) if name else None
        if path is None or file_sha256(path) != h:
            missing_audio.append(h)
            continue
        files[f"audio/{h}.wav"] = path.read_bytes()
    files["replay.txt"] = replay.encode("utf-8")
    files["call.json"] = (json.dumps(_summary(call_timeline(s, sid, pii), call.phone_hmac),
                                     ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    checks = [f"Chain: {chain_result}"]
    for n in notices:
        for name, canonical, version, recorded in n["docs"]:
            # A decision records the notice version (every part heard in the language); a
            # notice.played entry records the hash of the part it played.
            what = "notice version" if name == f"{n['stem']}.json" else "part hash"
            agree = (f"equals the recorded {what}" if recorded == version
                     else f"DIFFERS from the recorded {what} {recorded}")
            checks.append(f"Notice notice/{name}: SHA-256 "
                          f"{hashlib.sha256(canonical).hexdigest()}, recomputed {what} "
                          f"{version}, {agree}.")
    for h in missing_audio:
        checks.append(f"Audio {h}: the file is no longer in the audio folder; not included.")
    files["verification.txt"] = ("Checked by the server when the package was built "
                                 f"({times.text(now)}):\n" + "\n".join(checks) + "\n").encode()
    files["verify.py"] = VERIFY_SCRIPT.read_bytes()
    files["verify.sh"] = VERIFY_SHELL.read_bytes()
    files["README.txt"] = render_template(
        "auditor/evidence_readme.txt", call_sid=sid, now=times.text(now), cp=cp, row=row,
        cp_at=times.text(cp.at),
        segment=segment, entries=entries, notices=notices, has_key=pub is not None,
        audio=[h for h in hashes if h not in missing_audio], missing_audio=missing_audio,
    ).encode("utf-8")
    sums = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    files["SHA256SUMS"] = "".join(f"{sums[n]}  {n}\n" for n in sorted(sums)).encode()

    folder = f"evidence-{sid}"
    buf = io.BytesIO()
    stamp = now.timetuple()[:6]
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name in ["README.txt", "SHA256SUMS", *sorted(n for n in files
                                                        if n not in ("README.txt", "SHA256SUMS"))]:
            info = zipfile.ZipInfo(f"{folder}/{name}", date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o755 if name in ("verify.py", "verify.sh") else 0o644) << 16
            z.writestr(info, files[name])
    return Package(filename=f"{folder}.zip", data=buf.getvalue(), files=sums,
                   checkpoint_seq=cp.seq, segment=(segment[0]["seq"], segment[-1]["seq"]))
