"""The evidence package of one call: a ZIP a third party can check with standard tools.

It holds the call's own leaves of the Merkle log and their RFC 9162 inclusion proofs to a
signed checkpoint (the sequencer integrates and signs one first when none covers them), the
checkpoint note with its signed text, signature and public key, optionally a consistency
proof from an earlier checkpoint the auditor holds, the notice text and documents whose
SHA-256 is the recorded notice version, the audio files the caller heard (named by their
SHA-256), the replay output, a README and a verify script. It holds no
entry about any other call, and its size does not grow with the log.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import jinja2
from cryptography.hazmat.primitives import serialization
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ivr.audit import checkpoint as cps
from ivr.audit import leaves, merkle, note, proofs, timestamps
from ivr.audit.errors import AuditError
from ivr.domain import times
from ivr.domain.flow import Flow
from ivr.domain.notice_version import notice_version
from ivr.domain.pii import PersonalData
from ivr.domain.times import utcnow
from ivr.services import anchoring, audit_keys, audit_sequencer
from ivr.services.accounts import User
from ivr.services.audit_replay import replay_call
from ivr.services.reports import call_timeline
from ivr.services.timeline import AUDITOR_KINDS, run_versions
from ivr.storage import anchor_store
from ivr.storage.audit_tree import StoredTree, latest_head, prove_call
from ivr.storage.flowstore import FlowRegistry
from ivr.storage.models import AuditEntry, AuditQueue, AuditTreeHead, Call

from .access import record_access, transaction
from .audio_index import AudioIndex, file_sha256

# The standalone script every package carries (package data of ivr.audit: it imports nothing
# of ours, so an auditor runs it with Python alone).
VERIFY_SCRIPT = resources.files("ivr.audit") / "evidence_verify.py"
# The README's template, rendered without an app: plain text, nothing escaped.
_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).resolve().parents[2] / "templates"),
    autoescape=False)  # noqa: S701 - a .txt file for people, not HTML


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
    tree_size: int = 0
    leaves: list[int] = field(default_factory=list)


class NoticeDoc(NamedTuple):
    """One canonical notice document: its file name, bytes, the version recomputed from it
    and the version the log recorded (None when none was)."""

    name: str
    canonical: bytes
    version: str
    recorded: str | None


@dataclass(frozen=True)
class HeardNotice:
    """A run's notice in one language as the caller heard it."""

    run: str
    language: str
    stem: str
    text: str
    docs: list[NoticeDoc]


@dataclass(frozen=True)
class AudioFiles:
    """The prompt files the caller heard: those still in the audio folder, and the rest."""

    files: dict[str, bytes]
    included: list[str]
    missing: list[str]


def _line(e: AuditEntry) -> dict:
    return {"index": e.seq - 1, "body": e.body}


def _jsonl(rows: Iterable[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def ensure_checkpoint(s: Session, app: Flask, call_sid: str) -> None:
    """Have every leaf of the call (its facts and the auditors' access to it) integrated and
    covered by a signed checkpoint: the sequencer runs a pass and signs one when they are not."""
    with transaction(s):
        queued = s.scalar(select(AuditQueue.id).where(AuditQueue.ref == call_sid).limit(1))
        last = s.scalar(select(func.max(AuditEntry.seq)).where(AuditEntry.ref == call_sid))
        head = latest_head(s)
        covered = head is not None and (last is None or last <= head.tree_size)
    if queued is None and covered:
        return
    try:
        done = audit_sequencer.run_pass(app, force_checkpoint=True, wait=10.0)
    except AuditError as e:
        raise EvidenceError(f"cannot sign a checkpoint: {e}", 500) from e
    if done is None:
        raise EvidenceError("the audit sequencer is busy; try again in a few seconds", 503)


def _earlier(s: Session, since: int | None, head: AuditTreeHead) -> dict | None:
    """The consistency proof from an earlier tree size the auditor holds a checkpoint of."""
    if since is None:
        return None
    if not 0 < since <= head.tree_size:
        raise EvidenceError(f"the earlier checkpoint's tree size must be between 1 and "
                            f"{head.tree_size}; got {since}")
    tree = StoredTree(s)
    proof = tree.consistency(since, head.tree_size)
    return {"old_size": since, "new_size": head.tree_size,
            "old_root": proofs.b64(tree.root(since)), "new_root": proofs.b64(
                bytes.fromhex(head.root_hash)), "proof": [proofs.b64(p) for p in proof]}


def _notice_doc(flow: Flow, lang: str, items: list[tuple[str, str | None]]) -> tuple[bytes, str]:
    parts = [(p, flow.text(p, lang), a) for p, a in items]
    doc = {"language": lang, "prompts": [{"id": p, "text": t, "audio": a} for p, t, a in parts]}
    return leaves.canonical(doc), notice_version(lang, parts)


def _notices(bodies: list[dict], versions: dict[str, str], registry: FlowRegistry,
             s: Session) -> list[HeardNotice]:
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
            docs = [NoticeDoc(f"{stem}.json", canonical, version, recorded)]
        else:
            docs = []
            for b in played[(run, lang)]:
                d = b["data"]
                c, v = _notice_doc(flow, lang, list(zip(d["prompts"], d["audio"], strict=False)))
                docs.append(NoticeDoc(f"{stem}-leaf{b['index']}.json", c, v,
                                      d.get("notice_version")))
        out.append(HeardNotice(run, lang, stem,
                               "\n\n".join(flow.text(p, lang) for p, _a in items) + "\n", docs))
    return out


def _summary(doc: dict, phone_hmac: str | None, cover: Coverage) -> dict:
    """The call's summary without the phone number (the entries carry its keyed HMAC); its
    timeline holds the leaves the package's checkpoint covers, and `evidence` says which."""
    out = {k: v for k, v in doc.items() if k != "from"}
    out["timeline"] = [ev for ev in doc["timeline"] if ev["seq"] <= cover.tree_size]
    out["evidence"] = cover.to_dict()
    out["caller_hmac"] = phone_hmac
    out["consents"] = [{k: v for k, v in c.items() if k != "phone"} for c in doc["consents"]]
    out["consent"] = out["consents"][-1] if out["consents"] else None
    return out


def build_package(s: Session, app: Flask, call_sid: str, *, registry: FlowRegistry,
                  pii: PersonalData, index: AudioIndex, user: User,
                  since: int | None = None) -> Package:
    """Build the ZIP for one call and record the export as an auditor.access entry.

    The package is built against one signed checkpoint, which covers every leaf about the
    call when the download begins (the call's facts and the auditors' access to it); every
    file of it speaks of those leaves. The download's own access entry is a later leaf.
    `since` is the tree size of an earlier checkpoint the auditor holds: the package then
    carries the consistency proof from it to the checkpoint its proofs lead to. `app` runs
    the sequencer and holds the log's key and origin."""
    ensure_checkpoint(s, app, call_sid)
    now = utcnow()
    with transaction(s):
        call = s.get(Call, call_sid)
        head = latest_head(s)
        entries = _covered_entries(s, call_sid, head)
        if call is None or head is None or not any(e.kind not in AUDITOR_KINDS
                                                   for e in entries):
            record_access(s, user, "export.evidence", via="web", call_sid=call_sid, found=False)
            missing = True
        else:
            missing = False
            package = _build(s, app, call, entries, head, registry, pii, index, now, since)
            record_access(s, user, "export.evidence", via="web", call_sid=call_sid,
                          phone_hmac=call.phone_hmac)
    if missing:
        raise EvidenceError(f"No audit entries refer to call {call_sid}.", 404)
    return package


def _covered_entries(s: Session, call_sid: str, head: AuditTreeHead | None) -> list[AuditEntry]:
    """Every leaf about the call that the checkpoint covers, oldest first."""
    if head is None:
        return []
    return list(s.scalars(select(AuditEntry).where(AuditEntry.ref == call_sid,
                                                   AuditEntry.seq <= head.tree_size)
                          .order_by(AuditEntry.seq)))


@dataclass(frozen=True)
class Coverage:
    """What every file of a package states about its leaves: one checkpoint, one count, one
    range."""

    checkpoint: int
    tree_size: int
    count: int
    first: int
    last: int
    facts: int
    access: int

    @property
    def line(self) -> str:
        """The sentence each file repeats."""
        return (f"{self.count} leaves ({self.first}..{self.last}: {self.facts} facts of the "
                f"call, {self.access} records of auditors' access) included in signed "
                f"checkpoint #{self.checkpoint} (tree size {self.tree_size})")

    def to_dict(self) -> dict:
        """The same, for call.json."""
        return {"checkpoint": self.checkpoint, "tree_size": self.tree_size,
                "leaves": self.count, "first_index": self.first, "last_index": self.last,
                "call_facts": self.facts, "auditor_access": self.access}


def _coverage(head: AuditTreeHead, entries: list[AuditEntry]) -> Coverage:
    access = sum(e.kind in AUDITOR_KINDS for e in entries)
    return Coverage(head.id, head.tree_size, len(entries), entries[0].seq - 1,
                    entries[-1].seq - 1, len(entries) - access, access)


def _timestamp_files(s: Session, app: Flask, head: AuditTreeHead) -> dict[str, bytes]:
    """The checkpoint's tokens, and the authorities' certificates to check them with."""
    files: dict[str, bytes] = {}
    roots = anchoring.verifier_roots(app)
    ca: list = []
    certs: list = []
    k = 0
    for a, h in anchor_store.done(s, anchor_store.TIMESTAMP):
        if h.id != head.id:
            continue
        if a.data is None:  # a done time-stamp anchor holds its token
            raise ValueError(f"time-stamp anchor {a.id} is done but holds no token")
        der = base64.b64decode(a.data)
        tok = timestamps.describe(timestamps.parse(der))
        k += 1
        files[f"timestamp/token-{k}.tsr"] = der
        certs.extend(c for c in tok.certificates if c not in certs)
        ca.extend(r for r in timestamps.chain_roots(tok, roots) if r not in ca)
    if k:
        files["timestamp/tsa-certs.pem"] = timestamps.certificate_pem(certs).encode()
        files["timestamp/tsa-ca.pem"] = timestamps.certificate_pem(
            [c.public_bytes(serialization.Encoding.DER) for c in ca]).encode()
    return files


def _proof_files(s: Session, app: Flask, call_sid: str, entries: list[AuditEntry],
                 head: AuditTreeHead, cover: Coverage,
                 since: int | None) -> tuple[dict[str, bytes], str]:
    """Step 1, the proofs: each leaf and its inclusion path, the checkpoint note, its
    signature and key, the time-stamp tokens and the consistency proof; with the server's
    own check of them."""
    n = head.tree_size
    try:
        doc = prove_call(s, call_sid, head)
    except AuditError as e:
        raise EvidenceError(f"cannot prove the call's leaves: {e}", 503) from e
    files: dict[str, bytes] = {}
    for entry, leaf in zip(entries, doc["leaves"], strict=True):
        i = leaf["index"]
        path = [base64.b64decode(p) for p in leaf["proof"]]
        files[f"proof/leaf-{i}.bin"] = entry.body.encode()
        files[f"proof/path-{i}.txt"] = "".join(
            f"{side} {h.hex()}\n" for side, h in _sides(i, n, path)).encode()
    parsed = note.parse_note(head.note)
    files["proof/proof.json"] = proofs.proof_json(doc).encode()
    # The note with every witness cosignature collected for it (the log's own signature
    # stays the first line, as verify.py and the README's steps read it).
    files["proof/checkpoint.note"] = (head.note + "".join(
        anchor_store.cosignature_lines(s, head.id))).encode()
    files.update(_timestamp_files(s, app, head))
    files["proof/checkpoint.txt"] = parsed.text.encode()
    files["proof/checkpoint.sig"] = parsed.signatures[0].signature
    key = audit_keys.signing_key(app.config, create=False)
    origin = audit_sequencer.log_origin(s, app)
    if key is not None:
        files["proof/public_key.pem"] = cps.public_key_pem(key).encode()
        files["proof/vkey.txt"] = (audit_sequencer.note_verifier(app, origin, key).vkey()
                                   + "\n").encode()
    earlier = _earlier(s, since, head)
    if earlier is not None:
        files["proof/consistency.json"] = (json.dumps(earlier, indent=1) + "\n").encode()
    try:
        proofs.check_proof_document(doc)
        verifiers = ([audit_sequencer.note_verifier(app, origin, key)] if key else [])
        note.open_checkpoint(head.note, verifiers, origin)
        result = (f"OK: {cover.line}: each leaf's RFC 9162 inclusion proof leads to the root "
                  "the checkpoint signs; the signature verifies.")
    except merkle.VerificationError as e:
        result = f"FAILED: {e}"
    return files, result


def _sides(index: int, size: int, path: list[bytes]) -> list[tuple[str, bytes]]:
    """Each proof hash with the side it joins on (L: hash = H(0x01||p||r)), as RFC 9162
    §2.1.3.2 derives them from the index and the tree size."""
    out, fn, sn = [], index, size - 1
    for p in path:
        if fn & 1 or fn == sn:
            out.append(("L", p))
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            out.append(("R", p))
        fn >>= 1
        sn >>= 1
    return out


def _prompts_text(s: Session, registry: FlowRegistry, bodies: list[dict],
                  versions: dict[str, str]) -> bytes:
    """prompts.txt: every prompt played, when, in which language, with its audio and words."""
    lines = []
    for b in bodies:
        if b["kind"] != "prompts.played":
            continue
        flow = registry.version(s, versions[b["data"]["run"]]) if b["data"].get("run") in versions \
            else None
        for p in b["data"].get("played") or []:
            text = flow.text(p["prompt"], p["language"]) if flow else "(unknown flow version)"
            lines.append(f"{times.text(b['at'])}  leaf {b['index']}  {p['prompt']} "
                         f"({p['language']})  "
                         f"audio {p.get('audio') or 'none (spoken by <Say>)'}\n"
                         f"    {text}\n")
    return "".join(lines).encode("utf-8")


def _notice_files(notices: list[HeardNotice]) -> dict[str, bytes]:
    """Step 2, the notices: each one's text and its canonical documents."""
    files: dict[str, bytes] = {}
    for n in notices:
        files[f"notice/{n.stem}.txt"] = n.text.encode("utf-8")
        for d in n.docs:
            files[f"notice/{d.name}"] = d.canonical
    return files


def _audio_files(index: AudioIndex, bodies: list[dict]) -> AudioFiles:
    """Step 3, the audio: each prompt file the caller heard, named by its SHA-256, when the
    audio folder still holds a file with exactly those bytes."""
    hashes: list[str] = []
    for b in bodies:
        for p in (b["data"].get("played") or []) if b["kind"] == "prompts.played" else []:
            if p.get("audio") and p["audio"] not in hashes:
                hashes.append(p["audio"])
    found = index.find(hashes)
    files: dict[str, bytes] = {}
    missing = []
    for h in hashes:
        name = found.get(h)
        path = index.path(name) if name else None
        if path is None or file_sha256(path) != h:
            missing.append(h)
            continue
        files[f"audio/{h}.wav"] = path.read_bytes()
    return AudioFiles(files, [h for h in hashes if h not in missing], missing)


def _replay_text(s: Session, registry: FlowRegistry, call_sid: str, head: AuditTreeHead) -> str:
    """Step 4, the replay: the call's keys re-run through its flow version, or why not."""
    try:
        return replay_call(s, registry, call_sid, checkpoint=head).render()
    except Exception as e:  # a failed replay is itself evidence, and is shown
        return f"REPLAY FAILED: {type(e).__name__}: {e}\n"


def _verification_text(now: datetime, log_result: str, replay: str, cover: Coverage,
                       notices: list[HeardNotice], missing_audio: list[str]) -> bytes:
    """verification.txt: what the server checked when it built the package."""
    checks = [f"Log: {log_result}"]
    checks.append("Replay: " + ("OK" if "Result: OK" in replay else "see replay.txt")
                  + f"; it reads the same {cover.count} leaves.")
    for n in notices:
        for d in n.docs:
            # A decision records the notice version (every part heard in the language); a
            # notice.played entry records the hash of the part it played.
            what = "notice version" if d.name == f"{n.stem}.json" else "part hash"
            agree = (f"equals the recorded {what}" if d.recorded == d.version
                     else f"DIFFERS from the recorded {what} {d.recorded}")
            checks.append(f"Notice notice/{d.name}: SHA-256 "
                          f"{hashlib.sha256(d.canonical).hexdigest()}, recomputed {what} "
                          f"{d.version}, {agree}.")
    for h in missing_audio:
        checks.append(f"Audio {h}: the file is no longer in the audio folder; not included.")
    return ("Checked by the server when the package was built "
            f"({times.text(now)}):\n" + "\n".join(checks) + "\n").encode()


def _readme(s: Session, call_sid: str, now: datetime, head: AuditTreeHead, cover: Coverage,
            entries: list[AuditEntry], notices: list[HeardNotice], files: dict[str, bytes],
            audio: AudioFiles) -> bytes:
    """Step 5, the README: how to check every file with standard tools."""
    return _TEMPLATES.get_template("auditor/evidence_readme.txt").render(
        call_sid=call_sid, now=times.text(now), head=head,
        head_at=times.text(head.at), cover=cover,
        entries=entries, notices=notices, has_key="proof/public_key.pem" in files,
        has_consistency="proof/consistency.json" in files,
        tokens=sorted(n for n in files if n.startswith("timestamp/token-")),
        cosignatures=anchor_store.cosignature_lines(s, head.id),
        audio=audio.included, missing_audio=audio.missing,
    ).encode("utf-8")


def _checksums(files: dict[str, bytes]) -> dict[str, str]:
    """Step 6, the checksums: every file's SHA-256 (SHA256SUMS lists them by name)."""
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def _zip(folder: str, files: dict[str, bytes], now: datetime) -> bytes:
    """Step 7, the ZIP: README and SHA256SUMS first, then the rest by name, every file dated
    when the package was built; verify.py is executable."""
    buf = io.BytesIO()
    stamp = now.timetuple()[:6]
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name in ["README.txt", "SHA256SUMS", *sorted(n for n in files
                                                        if n not in ("README.txt", "SHA256SUMS"))]:
            info = zipfile.ZipInfo(f"{folder}/{name}", date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o755 if name == "verify.py" else 0o644) << 16
            z.writestr(info, files[name])
    return buf.getvalue()


def _build(s: Session, app: Flask, call: Call, entries: list[AuditEntry], head: AuditTreeHead,
           registry: FlowRegistry, pii: PersonalData, index: AudioIndex, now: datetime,
           since: int | None = None) -> Package:
    """The package, step by step: proofs, notices, audio, replay, README, checksums, ZIP."""
    sid = call.call_sid
    cover = _coverage(head, entries)
    proof_files, log_result = _proof_files(s, app, sid, entries, head, cover, since)
    bodies = [{**json.loads(e.body), "index": e.seq - 1} for e in entries
              if e.kind not in AUDITOR_KINDS]
    versions = run_versions(s, sid, bodies)
    notices = _notices(bodies, versions, registry, s)
    audio = _audio_files(index, bodies)
    replay = _replay_text(s, registry, sid, head)
    timeline = call_timeline(s, sid, pii)
    if timeline is None:  # only an unknown call has none, and this one is stored
        raise LookupError(f"call {sid} has no timeline")

    files: dict[str, bytes] = dict(proof_files)
    files["entries.jsonl"] = _jsonl(_line(e) for e in entries)
    files["prompts.txt"] = _prompts_text(s, registry, bodies, versions)
    files.update(_notice_files(notices))
    files.update(audio.files)
    files["replay.txt"] = replay.encode("utf-8")
    files["call.json"] = (json.dumps(_summary(timeline, call.phone_hmac, cover),
                                     ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    files["verification.txt"] = _verification_text(now, log_result, replay, cover, notices,
                                                    audio.missing)
    files["verify.py"] = VERIFY_SCRIPT.read_bytes()
    files["README.txt"] = _readme(s, sid, now, head, cover, entries, notices, files, audio)
    sums = _checksums(files)
    files["SHA256SUMS"] = "".join(f"{sums[n]}  {n}\n" for n in sorted(sums)).encode()
    folder = f"evidence-{sid}"
    return Package(filename=f"{folder}.zip", data=_zip(folder, files, now), files=sums,
                   tree_size=head.tree_size, leaves=[e.seq - 1 for e in entries])
