"""Tamper vectors for the verification procedures we publish, and a runner for their scripts.

A vector takes an export (the chain lines, the checkpoint document, the trusted key) and
returns what an attacker would hand over instead. The adapters that write an export to disk
(a README export, an evidence ZIP) live with their tests; the vectors do not know the layout,
so a new export format reuses them unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ivr.audit import chain

TOOLS = ("bash", "jq", "openssl", "sha256sum", "grep")


@dataclass(frozen=True)
class Export:
    """An export as a verifier receives it: entry lines, a checkpoint, and its public key PEM."""

    lines: tuple[dict, ...]
    checkpoint: dict
    public_key: str

    def jsonl(self) -> str:
        """The chain file, one JSON object per line, as `audit entries` writes it."""
        return "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in self.lines)


def entry_hash(prev_hash: str, body: str) -> str:
    """An entry's hash, computed independently of ivr.audit."""
    return hashlib.sha256(b"\x00" + bytes.fromhex(prev_hash) + body.encode()).hexdigest()


def rehash(lines: list[dict], start_prev: str | None = None) -> list[dict]:
    """Relink and rehash every line: what an attacker does after editing the chain."""
    prev = start_prev if start_prev is not None else lines[0]["prev_hash"]
    out = []
    for e in lines:
        h = entry_hash(prev, e["body"])
        out.append({**e, "prev_hash": prev, "hash": h})
        prev = h
    return out


def sign_checkpoint(seq: int, hash_: str, at: str, key: Ed25519PrivateKey) -> dict:
    """A checkpoint document as `audit checkpoint` prints it, signed by `key`."""
    pub = key.public_key()
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key_id = hashlib.sha256(raw).hexdigest()
    body = chain.canonical({"seq": seq, "hash": hash_, "at": at, "key_id": key_id}).decode()
    sig = base64.b64encode(key.sign(b"\x01" + body.encode())).decode()
    pem = pub.public_bytes(serialization.Encoding.PEM,
                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return {"seq": seq, "hash": hash_, "at": at, "key_id": key_id, "algorithm": "Ed25519",
            "signed_message_prefix": "01", "signed_body": body, "signature": sig,
            "public_key": pem}


def _index(ex: Export, kind: str) -> int:
    """The position of the first entry of this kind at or before the checkpoint."""
    for i, e in enumerate(ex.lines):
        body = json.loads(e["body"])
        if body["kind"] == kind and e["seq"] <= ex.checkpoint["seq"]:
            return i
    raise LookupError(f"the export has no {kind} entry before its checkpoint")


def _flip_decision(e: dict) -> dict:
    body = json.loads(e["body"])
    assert body["data"]["decision"] == "granted", body
    body["data"]["decision"] = "declined"
    return {**e, "body": chain.canonical(body).decode()}


def _head_at(lines, seq: int) -> str:
    return next(e["hash"] for e in lines if e["seq"] == seq)


def _forged(ex: Export) -> list[dict]:
    """The chain with the consent flipped from granted to declined, fully rehashed."""
    lines = list(ex.lines)
    i = _index(ex, "consent.decided")
    lines[i] = _flip_decision(lines[i])
    return rehash(lines)


def untouched(ex: Export) -> Export:
    """The export as made."""
    return ex


def entry_modified(ex: Export) -> Export:
    """The consent flipped from granted to declined, nothing rehashed."""
    lines = list(ex.lines)
    i = _index(ex, "consent.decided")
    lines[i] = _flip_decision(lines[i])
    return replace(ex, lines=tuple(lines))


def chain_rehashed_unsigned_hash_edited(ex: Export) -> Export:
    """Issue 11, finding 2: a rehashed forgery with only the checkpoint's unsigned .hash edited."""
    lines = _forged(ex)
    cp = {**ex.checkpoint, "hash": _head_at(lines, ex.checkpoint["seq"])}
    return replace(ex, lines=tuple(lines), checkpoint=cp)


def entry_deleted(ex: Export) -> Export:
    """The consent entry removed."""
    i = _index(ex, "consent.decided")
    return replace(ex, lines=ex.lines[:i] + ex.lines[i + 1:])


def first_entry_deleted(ex: Export) -> Export:
    """The export's first entry removed."""
    return replace(ex, lines=ex.lines[1:])


def entry_inserted(ex: Export) -> Export:
    """A copy of an entry inserted before the consent."""
    i = _index(ex, "consent.decided")
    return replace(ex, lines=ex.lines[:i] + (ex.lines[i - 1],) + ex.lines[i:])


def entry_inserted_and_renumbered(ex: Export) -> Export:
    """A forged entry inserted, later entries renumbered and the whole chain rehashed."""
    i = _index(ex, "consent.decided")
    body = json.loads(ex.lines[i]["body"])
    forged = {**body, "kind": "input.received", "data": {"input": {"type": "digits",
                                                                   "digits": "2"}}}
    lines = list(ex.lines[:i]) + [{"seq": body["seq"], "body": ""}] + list(ex.lines[i:])
    out = []
    for n, e in enumerate(lines):
        b = forged if e["body"] == "" else json.loads(e["body"])
        seq = lines[0]["seq"] + n
        out.append({"seq": seq, "prev_hash": "", "hash": "",
                    "body": chain.canonical({**b, "seq": seq}).decode()})
    return replace(ex, lines=tuple(rehash(out, ex.lines[0]["prev_hash"])))


def entries_swapped(ex: Export) -> Export:
    """The consent and the entry before it swapped."""
    i = _index(ex, "consent.decided")
    lines = list(ex.lines)
    lines[i - 1], lines[i] = lines[i], lines[i - 1]
    return replace(ex, lines=tuple(lines))


def checkpoint_resigned(ex: Export) -> Export:
    """A forged chain with a checkpoint signed by the attacker's own key (and its PEM inside)."""
    lines = _forged(ex)
    cp = sign_checkpoint(ex.checkpoint["seq"], _head_at(lines, ex.checkpoint["seq"]),
                         ex.checkpoint["at"], Ed25519PrivateKey.generate())
    return replace(ex, lines=tuple(lines), checkpoint=cp)


def checkpoint_signed_body_edited(ex: Export) -> Export:
    """A forged chain, and the checkpoint's signed body edited to its head (old signature)."""
    lines = _forged(ex)
    head = _head_at(lines, ex.checkpoint["seq"])
    cp = {**ex.checkpoint, "hash": head,
          "signed_body": ex.checkpoint["signed_body"].replace(ex.checkpoint["hash"], head)}
    return replace(ex, lines=tuple(lines), checkpoint=cp)


def checkpoint_seq_edited(ex: Export) -> Export:
    """Only the checkpoint's unsigned seq edited, to point at an earlier entry."""
    return replace(ex, checkpoint={**ex.checkpoint, "seq": ex.checkpoint["seq"] - 1})


def chain_truncated(ex: Export) -> Export:
    """The chain cut before the checkpoint's entry."""
    return replace(ex, lines=tuple(e for e in ex.lines if e["seq"] < ex.checkpoint["seq"]))


def chain_empty(ex: Export) -> Export:
    """An empty chain file."""
    return replace(ex, lines=())


Vector = Callable[[Export], Export]

# name -> (vector, whether a correct verifier accepts the result)
VECTORS: dict[str, tuple[Vector, bool]] = {
    "untouched": (untouched, True),
    "entry_modified": (entry_modified, False),
    "chain_rehashed_unsigned_hash_edited": (chain_rehashed_unsigned_hash_edited, False),
    "entry_deleted": (entry_deleted, False),
    "first_entry_deleted": (first_entry_deleted, False),
    "entry_inserted": (entry_inserted, False),
    "entry_inserted_and_renumbered": (entry_inserted_and_renumbered, False),
    "entries_swapped": (entries_swapped, False),
    "checkpoint_resigned": (checkpoint_resigned, False),
    "checkpoint_signed_body_edited": (checkpoint_signed_body_edited, False),
    "checkpoint_seq_edited": (checkpoint_seq_edited, False),
    "chain_truncated": (chain_truncated, False),
    "chain_empty": (chain_empty, False),
}


def run_script(script: str | Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """Run a shell script (a file, or the text of one) with bash in `cwd`, exactly as written."""
    if isinstance(script, Path):
        cmd = ["bash", str(script), *args]
    else:
        cmd = ["bash", "-c", script, "steps", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def fenced_block_after(markdown: str, heading: str, lang: str = "bash") -> str | None:
    """The first ```lang fenced block after a heading line, or None when there is none."""
    m = re.search(rf"^#+ {re.escape(heading)}[ \t]*\n((?:(?!#|```)[^\n]*\n)*?)```{lang}\n(.*?)^```",
                  markdown, re.M | re.S)
    return m.group(2) if m else None


def indented_block_after(text: str, heading: str) -> str | None:
    """The first block indented by four spaces after a line starting with `heading`
    (a plain-text README's code block), dedented; None when there is none."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(heading)), None)
    if start is None:
        return None
    block: list[str] = []
    for line in lines[start + 1:]:
        if line.startswith("    "):
            block.append(line[4:])
        elif block:
            break
    return "\n".join(block) + "\n" if block else None
