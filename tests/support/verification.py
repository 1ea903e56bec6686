"""Tamper vectors for the verification procedures we publish, and a runner for their scripts.

An export of the Merkle log is the leaves (`audit entries` lines), the signed checkpoint note
and the trusted public key; a proof export is `audit prove --json`'s document. A vector
returns what an attacker would hand over instead. The RFC 9162 hashing and the C2SP note
signing here are written independently of ivr.audit, so the scripts are checked against a
second implementation, not against the code they verify.
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

TOOLS = ("bash", "jq", "openssl", "sha256sum", "od", "sed", "split", "paste")
DASH = "\u2014"


# --- RFC 9162 and C2SP, independently ----------------------------------------------------


def leaf_hash(leaf: bytes) -> bytes:
    """SHA-256(0x00 || leaf)."""
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def tree_hash(leaves: list[bytes]) -> bytes:
    """The RFC 9162 Merkle tree hash of leaf bytes (the largest-power-of-two split)."""
    if len(leaves) == 1:
        return leaf_hash(leaves[0])
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node_hash(tree_hash(leaves[:k]), tree_hash(leaves[k:]))


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: list[bytes]) -> bytes:
    """The root a leaf and its inclusion proof lead to (RFC 9162 section 2.1.3.2)."""
    fn, sn, r = index, size - 1, leaf_hash(leaf)
    for p in proof:
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return r


def sign_note(text: str, name: str, key: Ed25519PrivateKey) -> str:
    """A C2SP signed note of `text` by `key` under `name`."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw)
    key_hash = hashlib.sha256(name.encode() + b"\n\x01" + raw).digest()[:4]
    sig = base64.b64encode(key_hash + key.sign(text.encode())).decode()
    return f"{text}\n{DASH} {name} {sig}\n"


def note_parts(note: str) -> tuple[str, str, int, str]:
    """The text, the signer's name, the tree size and the base64 root of a checkpoint note."""
    text, sigs = note.split("\n\n", 1)
    origin, size, root = text.split("\n")[:3]
    return text + "\n", sigs.split(" ")[1], int(size), root


def pem(key: Ed25519PrivateKey) -> str:
    """The public half of a key as a SubjectPublicKeyInfo PEM."""
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def resigned(note: str, key: Ed25519PrivateKey, size: int | None = None,
             root: bytes | None = None) -> str:
    """The note's checkpoint, optionally with another size or root, signed by `key`."""
    text, name, old_size, old_root = note_parts(note)
    lines = text.split("\n")
    lines[1] = str(old_size if size is None else size)
    lines[2] = old_root if root is None else base64.b64encode(root).decode()
    return sign_note("\n".join(lines), name, key)


def flip_decision(body: bytes) -> bytes:
    """A consent.decided leaf with its decision flipped (granted <-> declined)."""
    assert b'"consent.decided"' in body, body
    flipped = body.replace(b'"granted"', b'"@"').replace(b'"declined"', b'"granted"')
    return flipped.replace(b'"@"', b'"declined"')


# --- the whole log: leaves, a checkpoint note, the trusted key ---------------------------


@dataclass(frozen=True)
class Export:
    """An export as a verifier receives it: leaf lines, a checkpoint note, its public key."""

    lines: tuple[dict, ...]
    checkpoint: str
    public_key: str

    def jsonl(self) -> str:
        """The leaves, one JSON object per line, as `audit entries` writes them."""
        return "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in self.lines)

    @property
    def size(self) -> int:
        """The tree size the checkpoint signs."""
        return note_parts(self.checkpoint)[2]


def _consent(ex: Export) -> int:
    """The position of the first consent.decided leaf inside the signed tree."""
    for i, e in enumerate(ex.lines[:ex.size]):
        if json.loads(e["body"])["kind"] == "consent.decided":
            return i
    raise LookupError("the export has no consent.decided leaf inside its checkpoint")


def _flip(e: dict) -> dict:
    return {**e, "body": flip_decision(e["body"].encode()).decode()}


def _renumber(lines) -> tuple[dict, ...]:
    return tuple({**e, "seq": n + 1, "index": n} for n, e in enumerate(lines))


def untouched(ex: Export) -> Export:
    """The export as made."""
    return ex


def leaf_modified(ex: Export) -> Export:
    """The consent flipped from granted to declined."""
    lines = list(ex.lines)
    i = _consent(ex)
    lines[i] = _flip(lines[i])
    return replace(ex, lines=tuple(lines))


def leaf_deleted(ex: Export) -> Export:
    """The consent leaf removed."""
    i = _consent(ex)
    return replace(ex, lines=ex.lines[:i] + ex.lines[i + 1:])


def leaf_deleted_and_renumbered(ex: Export) -> Export:
    """The consent leaf removed and the later leaves renumbered to close the gap."""
    i = _consent(ex)
    return replace(ex, lines=_renumber(ex.lines[:i] + ex.lines[i + 1:]))


def leaf_inserted(ex: Export) -> Export:
    """A copy of the leaf before the consent inserted before it."""
    i = _consent(ex)
    return replace(ex, lines=ex.lines[:i] + (ex.lines[i - 1],) + ex.lines[i:])


def leaf_inserted_and_renumbered(ex: Export) -> Export:
    """A forged leaf inserted before the consent, and every later leaf renumbered."""
    i = _consent(ex)
    forged = {**ex.lines[i], "body": ex.lines[i]["body"].replace("consent.decided",
                                                                 "input.received")}
    return replace(ex, lines=_renumber(ex.lines[:i] + (forged,) + ex.lines[i:]))


def leaves_swapped(ex: Export) -> Export:
    """The consent and the leaf before it swapped, lines and all."""
    i = _consent(ex)
    lines = list(ex.lines)
    lines[i - 1], lines[i] = lines[i], lines[i - 1]
    return replace(ex, lines=tuple(lines))


def leaves_swapped_and_renumbered(ex: Export) -> Export:
    """The consent and the leaf before it swapped, their indexes kept in order."""
    return replace(ex, lines=_renumber(leaves_swapped(ex).lines))


def checkpoint_resigned(ex: Export) -> Export:
    """The consent flipped and a checkpoint of the forged tree signed by another key."""
    forged = leaf_modified(ex)
    root = tree_hash([e["body"].encode() for e in forged.lines[:ex.size]])
    return replace(forged, checkpoint=resigned(ex.checkpoint, Ed25519PrivateKey.generate(),
                                               root=root))


def checkpoint_size_edited(ex: Export) -> Export:
    """The note's tree size lowered by one, its signature kept."""
    text, _name, size, _root = note_parts(ex.checkpoint)
    edited = text.replace(f"\n{size}\n", f"\n{size - 1}\n", 1)
    return replace(ex, checkpoint=ex.checkpoint.replace(text, edited, 1))


def checkpoint_root_edited(ex: Export) -> Export:
    """The consent flipped and the note's root replaced by the forged tree's root."""
    forged = leaf_modified(ex)
    text, _name, _size, root = note_parts(ex.checkpoint)
    new = base64.b64encode(tree_hash([e["body"].encode() for e in forged.lines[:ex.size]]))
    return replace(forged, checkpoint=ex.checkpoint.replace(root, new.decode(), 1))


def entries_empty(ex: Export) -> Export:
    """An empty file of leaves."""
    return replace(ex, lines=())


def entries_truncated(ex: Export) -> Export:
    """The leaves cut before the checkpoint's last one."""
    return replace(ex, lines=ex.lines[:ex.size - 1])


def checkpoint_empty(ex: Export) -> Export:
    """An empty checkpoint file."""
    return replace(ex, checkpoint="")


Vector = Callable[[Export], Export]

# name -> (vector, whether a correct verifier accepts the result, what its failure says)
VECTORS: dict[str, tuple[Vector, bool, str]] = {
    "untouched": (untouched, True, ""),
    "leaf_modified": (leaf_modified, False, "but the checkpoint signs"),
    "leaf_deleted": (leaf_deleted, False, "(a leaf deleted, inserted or moved)"),
    "leaf_deleted_and_renumbered": (leaf_deleted_and_renumbered, False,
                                    "but the checkpoint signs"),
    "leaf_inserted": (leaf_inserted, False, "(a leaf deleted, inserted or moved)"),
    "leaf_inserted_and_renumbered": (leaf_inserted_and_renumbered, False,
                                     "but the checkpoint signs"),
    "leaves_swapped": (leaves_swapped, False, "(a leaf deleted, inserted or moved)"),
    "leaves_swapped_and_renumbered": (leaves_swapped_and_renumbered, False,
                                      "but the checkpoint signs"),
    "checkpoint_resigned": (checkpoint_resigned, False, "the checkpoint is not signed by"),
    "checkpoint_size_edited": (checkpoint_size_edited, False, "signature does not verify"),
    "checkpoint_root_edited": (checkpoint_root_edited, False, "signature does not verify"),
    "entries_empty": (entries_empty, False, "holds no leaves"),
    "entries_truncated": (entries_truncated, False, "(truncated)"),
    "checkpoint_empty": (checkpoint_empty, False, "is empty: it holds no signed checkpoint"),
}


# --- one call: `audit prove --json` -----------------------------------------------------


@dataclass(frozen=True)
class ProofExport:
    """A proof document of one call, the trusted key, and a leaf of another call (with its
    index and proof, in the same tree) for the swap vector."""

    sid: str
    doc: dict
    public_key: str
    other: dict


def _leaf_of(doc: dict, kind: bytes) -> int:
    return next(n for n, x in enumerate(doc["leaves"]) if kind in base64.b64decode(x["leaf"]))


def _with_leaf(px: ProofExport, n: int, leaf: dict) -> ProofExport:
    leaves = list(px.doc["leaves"])
    leaves[n] = leaf
    return replace(px, doc={**px.doc, "leaves": leaves})


def proof_untouched(px: ProofExport) -> ProofExport:
    """The document as made."""
    return px


def proof_hash_modified(px: ProofExport) -> ProofExport:
    """One bit of the consent leaf's first proof hash flipped."""
    n = _leaf_of(px.doc, b"consent.decided")
    leaf = px.doc["leaves"][n]
    h = bytearray(base64.b64decode(leaf["proof"][0]))
    h[0] ^= 1
    return _with_leaf(px, n, {**leaf, "proof": [base64.b64encode(bytes(h)).decode(),
                                                *leaf["proof"][1:]]})


def proof_leaf_modified(px: ProofExport) -> ProofExport:
    """The consent leaf's decision flipped, its proof kept."""
    n = _leaf_of(px.doc, b"consent.decided")
    leaf = px.doc["leaves"][n]
    flipped = flip_decision(base64.b64decode(leaf["leaf"]))
    return _with_leaf(px, n, {**leaf, "leaf": base64.b64encode(flipped).decode()})


def proof_leaf_of_another_call(px: ProofExport) -> ProofExport:
    """The consent leaf replaced by another call's consent leaf, with its own valid proof
    (kept in index order)."""
    leaves = [x for x in px.doc["leaves"]
              if b"consent.decided" not in base64.b64decode(x["leaf"])] + [px.other]
    return replace(px, doc={**px.doc, "leaves": sorted(leaves, key=lambda x: x["index"])})


def proof_index_wrong(px: ProofExport) -> ProofExport:
    """The consent leaf and the leaf before it trade indexes, each keeping its leaf and proof."""
    n = _leaf_of(px.doc, b"consent.decided")
    leaves = list(px.doc["leaves"])
    a, b = leaves[n - 1], leaves[n]
    leaves[n - 1], leaves[n] = {**b, "index": a["index"]}, {**a, "index": b["index"]}
    return replace(px, doc={**px.doc, "leaves": leaves})


def proof_index_beyond_tree(px: ProofExport) -> ProofExport:
    """The last leaf's index set to the tree size."""
    return _with_leaf(px, -1, {**px.doc["leaves"][-1], "index": px.doc["tree_size"]})


def proof_checkpoint_resigned(px: ProofExport) -> ProofExport:
    """The consent leaf flipped, and the root its proof then leads to signed by another key."""
    forged = proof_leaf_modified(px)
    leaf = forged.doc["leaves"][_leaf_of(forged.doc, b"consent.decided")]
    root = root_from_inclusion(leaf["index"], px.doc["tree_size"],
                               base64.b64decode(leaf["leaf"]),
                               [base64.b64decode(p) for p in leaf["proof"]])
    note = resigned(px.doc["checkpoint"], Ed25519PrivateKey.generate(), root=root)
    return replace(forged, doc={**forged.doc, "checkpoint": note,
                                "root_hash": base64.b64encode(root).decode()})


def proof_checkpoint_edited(px: ProofExport) -> ProofExport:
    """The note's tree size raised by one (and the document's with it), signature kept."""
    text, _name, size, _root = note_parts(px.doc["checkpoint"])
    note = px.doc["checkpoint"].replace(text, text.replace(f"\n{size}\n", f"\n{size + 1}\n"))
    return replace(px, doc={**px.doc, "checkpoint": note, "tree_size": size + 1})


def proof_tree_size_edited(px: ProofExport) -> ProofExport:
    """Only the document's unsigned tree_size edited."""
    return replace(px, doc={**px.doc, "tree_size": px.doc["tree_size"] + 1})


def proof_no_leaves(px: ProofExport) -> ProofExport:
    """A document with no leaves."""
    return replace(px, doc={**px.doc, "leaves": []})


ProofVector = Callable[[ProofExport], ProofExport]

PROOF_VECTORS: dict[str, tuple[ProofVector, bool, str]] = {
    "untouched": (proof_untouched, True, ""),
    "proof_hash_modified": (proof_hash_modified, False, "but the checkpoint signs"),
    "leaf_modified": (proof_leaf_modified, False, "but the checkpoint signs"),
    "leaf_of_another_call": (proof_leaf_of_another_call, False, "not about call"),
    "index_wrong": (proof_index_wrong, False, "with its proof leads to root"),
    "index_beyond_tree": (proof_index_beyond_tree, False, "is not in the tree of"),
    "checkpoint_resigned": (proof_checkpoint_resigned, False, "the checkpoint is not signed by"),
    "checkpoint_edited": (proof_checkpoint_edited, False, "signature does not verify"),
    "tree_size_edited": (proof_tree_size_edited, False, "(edited)"),
    "no_leaves": (proof_no_leaves, False, "holds no leaves"),
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
