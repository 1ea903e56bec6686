#!/usr/bin/env python3
"""Verify an IVR evidence package with Python's standard library, plus `cryptography` or the
openssl command for the checkpoint's Ed25519 signature.

Run it from the package folder (where README.txt is):  python3 verify.py
It checks, and says which check failed:
  1. SHA256SUMS: every file is as exported;
  2. each leaf of the call: its leaf hash SHA-256(0x00 || leaf) and its RFC 9162 inclusion
     proof lead to the root hash of proof/proof.json;
  3. entries.jsonl and proof/leaf-N.bin hold exactly those leaves;
  4. the checkpoint: proof/checkpoint.note is a C2SP signed note whose text is
     <origin>\\n<tree size>\\n<base64 root hash>\\n, with the same size and root; its
     signature line names the key of proof/vkey.txt (key hash = SHA-256(name || 0x0A ||
     0x01 || public key)[:4]) and its Ed25519 signature holds (with the `cryptography`
     package if installed, else with openssl and proof/public_key.pem);
  5. if present, proof/consistency.json: the RFC 9162 consistency proof from an earlier
     tree (whose root you hold) to this checkpoint's tree;
  6. each audio file's SHA-256 equals its name, and the leaves name those hashes;
  7. each notice document's SHA-256 equals the notice version the leaves record.
Exit status 0 when everything holds, 1 otherwise.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import TypedDict

# DER prefix of an Ed25519 SubjectPublicKeyInfo; the raw 32-byte key follows it.
SPKI_ED25519 = bytes.fromhex("302a300506032b6570032100")
DASH = "\u2014"


class Failed(Exception):
    """A check did not hold."""


# The package's JSON files, as this script reads them (a malformed one fails the package).
class ProvedLeaf(TypedDict):
    """One leaf in proof/proof.json: its index, its bytes and their inclusion proof."""

    index: int
    leaf: str  # base64
    proof: list[str]  # base64 hashes


class Proof(TypedDict):
    """proof/proof.json: the call's leaves, with proofs to the checkpoint's root."""

    checkpoint: str  # the signed note
    tree_size: int
    root_hash: str  # base64
    leaves: list[ProvedLeaf]


class Entry(TypedDict):
    """One line of entries.jsonl: a leaf's index and its body (canonical JSON)."""

    index: int
    body: str


class Consistency(TypedDict):
    """proof/consistency.json: from an earlier tree the auditor holds to this one."""

    old_size: int
    new_size: int
    old_root: str  # base64
    new_root: str  # base64
    proof: list[str]  # base64 hashes


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


def read_entries(path: str) -> list[Entry]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def check_sums() -> int:
    n = 0
    with open("SHA256SUMS", encoding="utf-8") as f:
        for line in f:
            digest, name = line.rstrip("\n").split("  ", 1)
            if sha256_file(name) != digest:
                raise Failed(f"SHA256SUMS: {name} has changed since export")
            n += 1
    return n


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_inclusion(index: int, size: int, h: bytes, proof: list[bytes]) -> bytes:
    """RFC 9162 §2.1.3.2."""
    if not 0 <= index < size:
        raise Failed(f"inclusion: leaf index {index} is not below the tree size {size}")
    fn, sn, r = index, size - 1, h
    for p in proof:
        if len(p) != 32:
            raise Failed(f"inclusion: leaf {index}: a proof element is not 32 bytes")
        if sn == 0:
            raise Failed(f"inclusion: leaf {index}: the proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise Failed(f"inclusion: leaf {index}: the proof is too short")
    return r


def verify_consistency(old: int, new: int, old_root: bytes, new_root: bytes,  # noqa: C901 - RFC 9162 §2.1.4.2 step by step, as the standalone script's reader checks it
                       proof: list[bytes]) -> None:
    """RFC 9162 §2.1.4.2."""
    if not 0 < old <= new:
        raise Failed(f"consistency: sizes {old} and {new} are not 0 < old <= new")
    if old == new:
        if proof or old_root != new_root:
            raise Failed("consistency: equal sizes need equal roots and an empty proof")
        return
    if not proof:
        raise Failed("consistency: the proof is empty")
    path = ([old_root] if old & (old - 1) == 0 else []) + list(proof)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise Failed("consistency: the proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise Failed("consistency: the proof is too short")
    if fr != old_root:
        raise Failed(f"consistency: expected the earlier root {old_root.hex()}, the proof "
                     f"gives {fr.hex()}")
    if sr != new_root:
        raise Failed(f"consistency: expected the checkpoint's root {new_root.hex()}, the "
                     f"proof gives {sr.hex()}")


def check_leaves(doc: Proof, entries: list[Entry]) -> None:
    root = base64.b64decode(doc["root_hash"])
    size = doc["tree_size"]
    for leaf in doc["leaves"]:
        data = base64.b64decode(leaf["leaf"])
        proof = [base64.b64decode(p) for p in leaf["proof"]]
        got = root_from_inclusion(leaf["index"], size, leaf_hash(data), proof)
        if got != root:
            raise Failed(f"inclusion: leaf {leaf['index']} leads to root {got.hex()}, not to "
                         f"the checkpoint's root {root.hex()}")
        with open(f"proof/leaf-{leaf['index']}.bin", "rb") as f:
            if f.read() != data:
                raise Failed(f"proof/leaf-{leaf['index']}.bin differs from proof.json")
    if [(e["index"], e["body"].encode("utf-8")) for e in entries] != [
            (x["index"], base64.b64decode(x["leaf"])) for x in doc["leaves"]]:
        raise Failed("entries.jsonl: its leaves are not exactly those of proof/proof.json")


def parse_vkey(text: str) -> tuple[str, int, bytes]:
    name, hexhash, b64 = text.strip().split("+", 2)
    raw = base64.b64decode(b64)
    if len(raw) != 33 or raw[0] != 1:
        raise Failed("proof/vkey.txt is not an Ed25519 verifier key")
    computed = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    if computed.hex() != hexhash:
        raise Failed(f"proof/vkey.txt: key hash {hexhash} does not match its key "
                     f"({computed.hex()})")
    return name, int(hexhash, 16), raw[1:]


def verify_signature(pub: bytes, text: bytes, sig: bytes) -> str:
    """'cryptography' or 'openssl' when the signature holds; Failed otherwise."""
    try:
        # An auditor's machine may lack `cryptography`: then openssl checks the signature.
        from cryptography.exceptions import InvalidSignature  # late import: optional dependency
        from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # late import: optional
            Ed25519PublicKey,
        )
    except ImportError:
        openssl = shutil.which("openssl")
        if not openssl:
            raise Failed("checkpoint: neither the `cryptography` package nor openssl is "
                         "available to check the signature") from None
        with tempfile.TemporaryDirectory() as d:
            paths = {}
            for name, data in (("msg", text), ("sig", sig)):
                paths[name] = os.path.join(d, name)
                with open(paths[name], "wb") as f:
                    f.write(data)
            r = subprocess.run([openssl, "pkeyutl", "-verify", "-pubin", "-inkey",
                                "proof/public_key.pem", "-rawin", "-in", paths["msg"],
                                "-sigfile", paths["sig"]], capture_output=True, text=True)
        if r.returncode != 0:
            raise Failed("checkpoint: openssl says the signature does not verify") from None
        return "openssl"
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(sig, text)
    except InvalidSignature:
        raise Failed("checkpoint: the Ed25519 signature does not verify") from None
    return "cryptography"


def check_checkpoint(doc: Proof) -> tuple[str, str]:  # noqa: C901 - one check per line of the note, in the order a reader follows them
    with open("proof/checkpoint.note", encoding="utf-8") as f:
        msg = f.read()
    # The note may carry witness cosignatures after the log's own signature lines: the same
    # signed note, with more signature lines than proof.json's copy.
    extra = msg[len(doc["checkpoint"]):]
    if not msg.startswith(doc["checkpoint"]) or not all(
            line.startswith(DASH + " ") for line in extra.splitlines()):
        raise Failed("checkpoint: proof/checkpoint.note differs from proof.json's checkpoint")
    cut = msg.rfind("\n\n")
    if cut < 0:
        raise Failed("checkpoint: not a signed note (no blank line before the signatures)")
    text, sigs = msg[:cut + 1], msg[cut + 2:].splitlines()
    lines = text.split("\n")
    if len(lines) < 4:
        raise Failed("checkpoint: its text is not origin, size and root hash")
    origin, size, root = lines[0], lines[1], lines[2]
    if size != str(doc["tree_size"]) or root != doc["root_hash"]:
        raise Failed(f"checkpoint: it signs size {size} and root {root}, but the proofs are "
                     f"for size {doc['tree_size']} and root {doc['root_hash']}")
    if not os.path.exists("proof/vkey.txt"):
        raise Failed("checkpoint: proof/vkey.txt is missing; obtain the log's verifier key "
                     "from the data controller")
    with open("proof/vkey.txt", encoding="ascii") as f:
        name, khash, pub = parse_vkey(f.read())
    if os.path.exists("proof/public_key.pem"):
        with open("proof/public_key.pem", encoding="ascii") as f:
            der = base64.b64decode("".join(x for x in f.read().splitlines()
                                           if not x.startswith("-----")))
        if der != SPKI_ED25519 + pub:
            raise Failed("checkpoint: public_key.pem and vkey.txt hold different keys")
    for line in sigs:
        if not line.startswith(DASH + " "):
            raise Failed(f"checkpoint: not a signature line: {line[:40]!r}")
        signer, _, b64 = line[2:].partition(" ")
        blob = base64.b64decode(b64)
        if signer == name and int.from_bytes(blob[:4], "big") == khash:
            with open("proof/checkpoint.txt", "rb") as f:
                if f.read() != text.encode("utf-8"):
                    raise Failed("checkpoint: proof/checkpoint.txt is not the note's text")
            with open("proof/checkpoint.sig", "rb") as f:
                if f.read() != blob[4:]:
                    raise Failed("checkpoint: proof/checkpoint.sig is not the note's signature")
            return origin, verify_signature(pub, text.encode("utf-8"), blob[4:])
    raise Failed(f"checkpoint: no signature by {name}+{khash:08x} (proof/vkey.txt)")


def check_consistency(doc: Proof) -> str:
    if not os.path.exists("proof/consistency.json"):
        return ""
    with open("proof/consistency.json", encoding="utf-8") as f:
        c: Consistency = json.load(f)
    if c["new_size"] != doc["tree_size"] or c["new_root"] != doc["root_hash"]:
        raise Failed("consistency: it does not end at this package's checkpoint")
    verify_consistency(c["old_size"], c["new_size"], base64.b64decode(c["old_root"]),
                       base64.b64decode(c["new_root"]),
                       [base64.b64decode(p) for p in c["proof"]])
    return (f"; the tree of {c['new_size']} extends the earlier tree of {c['old_size']} "
            f"(root {c['old_root']}: compare it with the checkpoint you hold)")


def hashes_named(entries: list[Entry]) -> set[str]:
    out: set[str] = set()
    for e in entries:
        data = json.loads(e["body"]).get("data") or {}
        for p in data.get("played") or []:
            out.add(p.get("audio"))
        audio = data.get("audio")
        if isinstance(audio, list):
            out.update(audio)
        elif isinstance(audio, dict):
            out.update(audio.values())
    out.discard(None)
    return out


def check_audio(entries: list[Entry]) -> int:
    named = hashes_named(entries)
    n = 0
    for name in sorted(os.listdir("audio")) if os.path.isdir("audio") else []:
        digest = sha256_file(os.path.join("audio", name))
        if name != digest + ".wav":
            raise Failed(f"audio: {name} has SHA-256 {digest}, not the hash in its name")
        if digest not in named:
            raise Failed(f"audio: {name} is not named by any of the call's leaves")
        n += 1
    return n


def check_notices(entries: list[Entry]) -> int:
    versions = set()
    for e in entries:
        data = json.loads(e["body"]).get("data") or {}
        if data.get("notice_version"):
            versions.add(data["notice_version"])
    n = 0
    for name in sorted(os.listdir("notice")) if os.path.isdir("notice") else []:
        if not name.endswith(".json"):
            continue
        digest = sha256_file(os.path.join("notice", name))
        if digest not in versions:
            raise Failed(f"notice: {name} has SHA-256 {digest}, which no leaf records as its "
                         "notice version")
        n += 1
    return n


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    os.chdir(here)
    try:
        files = check_sums()
        with open("proof/proof.json", encoding="utf-8") as f:
            doc: Proof = json.load(f)
        entries = read_entries("entries.jsonl")
        if not doc["leaves"]:
            raise Failed("proof/proof.json holds no leaves")
        origin, how = check_checkpoint(doc)
        check_leaves(doc, entries)
        earlier = check_consistency(doc)
        audio = check_audio(entries)
        notices = check_notices(entries)
    except Failed as e:
        print(f"FAILED: {e}")
        return 1
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"FAILED: the package is incomplete or malformed: {e}")
        return 1
    print(f"OK: {files} files intact; {len(entries)} leaves of this call are included in the "
          f"tree of {doc['tree_size']} leaves whose root {doc['root_hash']} the checkpoint of "
          f"{origin} signs ({how}){earlier}; {audio} audio file(s) and {notices} notice "
          "document(s) match their recorded hashes.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
