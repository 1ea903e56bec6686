#!/usr/bin/env python3
"""Verify an IVR evidence package with nothing but Python's standard library.

Run it from the package folder (where README.txt is):  python3 verify.py
It checks, and says which check failed:
  1. SHA256SUMS: every file is as exported;
  2. the chain segment: each entry's hash is SHA-256(0x00 || previous hash || body),
     each entry links to the one before it, and sequence numbers have no gap;
  3. the call's entries (entries.jsonl) all appear, unchanged, in the segment;
  4. the checkpoint: its signed message is 0x01 || its body, it names the segment's last
     entry and hash, its key id is the SHA-256 of the public key, and its Ed25519
     signature holds (with the `cryptography` package if installed, else with openssl);
  5. each audio file's SHA-256 equals its name, and the entries name those hashes;
  6. each notice document's SHA-256 equals the notice version the entries record.
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

ENTRY_PREFIX = b"\x00"
CHECKPOINT_PREFIX = b"\x01"
# DER prefix of an Ed25519 SubjectPublicKeyInfo; the raw 32-byte key follows it.
SPKI_ED25519 = bytes.fromhex("302a300506032b6570032100")


class Failed(Exception):
    """A check did not hold."""


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


def read_jsonl(path: str) -> list[dict]:
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


def entry_hash(prev_hash: str, body: str) -> str:
    data = ENTRY_PREFIX + bytes.fromhex(prev_hash) + body.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def check_segment(segment: list[dict]) -> None:
    prev = None
    for e in segment:
        if prev is not None:
            if e["seq"] != prev["seq"] + 1:
                raise Failed(f"segment: entry {prev['seq'] + 1} is missing (found {e['seq']})")
            if e["prev_hash"] != prev["hash"]:
                raise Failed(f"segment: entry {e['seq']} does not link to entry {prev['seq']}")
        if entry_hash(e["prev_hash"], e["body"]) != e["hash"]:
            raise Failed(f"segment: the body of entry {e['seq']} does not hash to its hash")
        if json.loads(e["body"]).get("seq") != e["seq"]:
            raise Failed(f"segment: entry {e['seq']} holds the body of another entry")
        prev = e


def check_entries(entries: list[dict], segment: list[dict]) -> None:
    by_seq = {e["seq"]: e for e in segment}
    for e in entries:
        if by_seq.get(e["seq"]) != e:
            raise Failed(f"entries.jsonl: entry {e['seq']} is not in the chain segment as given")


def verify_signature(pem_path: str, message_path: str, signature: bytes) -> str:
    """'cryptography' or 'openssl' when the signature holds; Failed otherwise."""
    try:
        from cryptography.exceptions import InvalidSignature  # late import: optional package
        from cryptography.hazmat.primitives.serialization import load_pem_public_key  # noqa: E501 late import: optional package (openssl otherwise)
    except ImportError:
        openssl = shutil.which("openssl")
        if not openssl:
            raise Failed("checkpoint: neither the `cryptography` package nor openssl is "
                         "available to check the signature") from None
        with tempfile.NamedTemporaryFile(delete=False) as sig:
            sig.write(signature)
        try:
            r = subprocess.run([openssl, "pkeyutl", "-verify", "-pubin", "-inkey", pem_path,
                                "-rawin", "-in", message_path, "-sigfile", sig.name],
                               capture_output=True, text=True)
        finally:
            os.unlink(sig.name)
        if r.returncode != 0:
            raise Failed("checkpoint: openssl says the signature does not verify") from None
        return "openssl"
    with open(pem_path, "rb") as f:
        key = load_pem_public_key(f.read())
    with open(message_path, "rb") as f:
        message = f.read()
    try:
        key.verify(signature, message)
    except InvalidSignature:
        raise Failed("checkpoint: the Ed25519 signature does not verify") from None
    return "cryptography"


def check_checkpoint(segment: list[dict]) -> tuple[dict, str]:
    with open("chain/checkpoint.json", encoding="utf-8") as f:
        doc = json.load(f)
    with open("chain/checkpoint.msg", "rb") as f:
        message = f.read()
    if message != CHECKPOINT_PREFIX + doc["signed_body"].encode("utf-8"):
        raise Failed("checkpoint: checkpoint.msg is not 0x01 followed by the signed body")
    signed = json.loads(doc["signed_body"])
    last = segment[-1]
    if signed["seq"] != last["seq"] or signed["hash"] != last["hash"]:
        raise Failed(f"checkpoint: it signs entry {signed['seq']} with hash {signed['hash']}, "
                     f"but the segment ends at entry {last['seq']} with hash {last['hash']}")
    if not os.path.exists("chain/public_key.pem"):
        raise Failed("checkpoint: chain/public_key.pem is missing; obtain the signer's public "
                     f"key (key id {signed['key_id']}) from the data controller")
    with open("chain/public_key.pem", encoding="ascii") as f:
        der = base64.b64decode("".join(line for line in f.read().splitlines()
                                       if not line.startswith("-----")))
    if not der.startswith(SPKI_ED25519) or len(der) != 44:
        raise Failed("checkpoint: public_key.pem is not an Ed25519 public key")
    if hashlib.sha256(der[-32:]).hexdigest() != signed["key_id"]:
        raise Failed("checkpoint: the public key's id does not match the key id it names")
    with open("chain/checkpoint.sig", "rb") as f:
        signature = f.read()
    if base64.b64encode(signature).decode() != doc["signature"]:
        raise Failed("checkpoint: checkpoint.sig differs from the signature in checkpoint.json")
    how = verify_signature("chain/public_key.pem", "chain/checkpoint.msg", signature)
    return signed, how


def hashes_named(entries: list[dict]) -> set[str]:
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


def check_audio(entries: list[dict]) -> int:
    named = hashes_named(entries)
    n = 0
    for name in sorted(os.listdir("audio")) if os.path.isdir("audio") else []:
        digest = sha256_file(os.path.join("audio", name))
        if name != digest + ".wav":
            raise Failed(f"audio: {name} has SHA-256 {digest}, not the hash in its name")
        if digest not in named:
            raise Failed(f"audio: {name} is not named by any of the call's entries")
        n += 1
    return n


def check_notices(entries: list[dict]) -> int:
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
            raise Failed(f"notice: {name} has SHA-256 {digest}, which no entry records as its "
                         "notice version")
        n += 1
    return n


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    os.chdir(here)
    try:
        files = check_sums()
        segment = read_jsonl("chain/segment.jsonl")
        entries = read_jsonl("entries.jsonl")
        if not segment:
            raise Failed("segment: chain/segment.jsonl is empty")
        check_segment(segment)
        check_entries(entries, segment)
        signed, how = check_checkpoint(segment)
        audio = check_audio(entries)
        notices = check_notices(entries)
    except Failed as e:
        print(f"FAILED: {e}")
        return 1
    except (OSError, ValueError, KeyError) as e:
        print(f"FAILED: the package is incomplete or malformed: {e}")
        return 1
    print(f"OK: {files} files intact; {len(entries)} call entries inside a chain segment of "
          f"{len(segment)} entries ({segment[0]['seq']}..{segment[-1]['seq']}) whose hashes "
          f"and links hold; checkpoint at seq {signed['seq']} signed {signed['at']} verifies "
          f"({how}); {audio} audio file(s) and {notices} notice document(s) match their "
          "recorded hashes.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
