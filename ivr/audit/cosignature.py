"""C2SP tlog-cosignature, the Ed25519 type (cosignature/v1, signature type 0x04).

Pure: no database, no Flask, no network. A cosignature is a signed-note signature line
`— <witness name> base64(key ID || u64 timestamp || Ed25519 signature)` on a checkpoint;
the key ID is SHA-256(name || "\\n" || 0x04 || public key)[:4], and the signed message is
"cosignature/v1\\n" "time <timestamp>\\n" followed by the checkpoint's whole note text.
Verifier keys are vkeys of type 0x04: `<name>+<hex key ID>+<base64(0x04 || key)>`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .merkle import VerificationError
from .note import DASH, NoteError, Signature

ALG_COSIGNATURE_V1 = b"\x04"
HEADER = "cosignature/v1\n"
_NAME = re.compile(r"[^\s+]+")
MAX_TIMESTAMP = 2**63 - 1


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(name: str, key: Ed25519PublicKey) -> int:
    """SHA-256(name || "\\n" || 0x04 || 32-byte key)[:4], as an int."""
    digest = hashlib.sha256(name.encode() + b"\n" + ALG_COSIGNATURE_V1 + _raw(key)).digest()
    return int.from_bytes(digest[:4], "big")


@dataclass(frozen=True)
class Cosigner:
    """A witness's cosignature/v1 verifier key."""

    name: str
    key: Ed25519PublicKey

    @property
    def id(self) -> int:
        """The 4-byte key ID."""
        return key_id(self.name, self.key)

    def vkey(self) -> str:
        """`<name>+<hex key ID>+<base64(0x04 || key)>`."""
        return (f"{self.name}+{self.id:08x}+"
                f"{base64.b64encode(ALG_COSIGNATURE_V1 + _raw(self.key)).decode()}")


def cosigner(name: str, key: Ed25519PublicKey | Ed25519PrivateKey) -> Cosigner:
    """The cosigner of a name and key (the public half of a private key)."""
    if not _NAME.fullmatch(name):
        raise NoteError(f"a key name is non-empty, with no space and no '+': {name!r}")
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    return Cosigner(name, key)


def parse_vkey(vkey: str) -> Cosigner:
    """A cosigner from its vkey of type 0x04; checks the key ID it states."""
    parts = vkey.strip().split("+", 2)
    if len(parts) != 3:
        raise NoteError(f"a verifier key is <name>+<hash>+<key>: {vkey!r}")
    name, hexid, b64 = parts
    try:
        raw = base64.b64decode(b64, validate=True)
    except binascii.Error:
        raw = b""
    if len(raw) != 33 or raw[:1] != ALG_COSIGNATURE_V1:
        found = f"type 0x{raw[0]:02x}" if raw else "no key"
        raise NoteError(f"not a cosignature/v1 (type 0x04) Ed25519 verifier key ({found}): "
                        f"{vkey.strip()!r}")
    if not re.fullmatch(r"[0-9a-f]{8}", hexid):
        raise NoteError(f"verifier key {name}: the key ID is 8 hex digits, not {hexid!r}")
    c = cosigner(name, Ed25519PublicKey.from_public_bytes(raw[1:]))
    if c.id != int(hexid, 16):
        raise NoteError(f"verifier key {name}: stated key ID {hexid}, computed {c.id:08x}")
    return c


def signed_message(text: str, timestamp: int) -> bytes:
    """The bytes a cosignature/v1 signs: header, time line, then the checkpoint's note text."""
    return f"{HEADER}time {timestamp}\n{text}".encode()


def cosign(text: str, name: str, key: Ed25519PrivateKey, timestamp: int) -> str:
    """One cosignature line (ending in a newline) on a checkpoint's note text."""
    if not 0 < timestamp <= MAX_TIMESTAMP:
        raise ValueError("a cosignature's timestamp is a positive POSIX time")
    sig = key.sign(signed_message(text, timestamp))
    blob = key_id(name, key.public_key()).to_bytes(4, "big") + timestamp.to_bytes(8, "big") + sig
    return f"{DASH} {name} {base64.b64encode(blob).decode()}\n"


def timestamp_of(sig: Signature) -> int:
    """The timestamp a cosignature/v1 signature states (its first 8 bytes after the key ID)."""
    if len(sig.signature) != 8 + 64:
        raise NoteError(f"signature of {sig.name}: not a cosignature/v1 (8-byte time and a "
                        f"64-byte signature; found {len(sig.signature)} bytes)")
    return int.from_bytes(sig.signature[:8], "big")


def verify_cosignature(text: str, sig: Signature, c: Cosigner) -> int:
    """Check one cosignature line on a note's text; its timestamp, or VerificationError."""
    what = f"cosignature of {c.name}"
    if (sig.name, sig.hash) != (c.name, c.id):
        raise VerificationError(what, f"key {c.name}+{c.id:08x}", f"key {sig.name}+{sig.hash:08x}")
    try:
        ts = timestamp_of(sig)
    except NoteError as e:
        raise VerificationError(what, "a cosignature/v1", str(e)) from None
    if not 0 < ts <= MAX_TIMESTAMP:
        raise VerificationError(what, "a non-zero timestamp", str(ts))
    try:
        c.key.verify(sig.signature[8:], signed_message(text, ts))
    except InvalidSignature:
        raise VerificationError(what, "a signature over this checkpoint",
                                "a signature that does not verify (made over another "
                                "checkpoint, or altered)") from None
    return ts


def matching(signatures: Iterable[Signature], c: Cosigner) -> list[Signature]:
    """The signature lines whose name and key ID are this cosigner's."""
    return [s for s in signatures if (s.name, s.hash) == (c.name, c.id)]
