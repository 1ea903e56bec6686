"""C2SP signed notes (signed-note) carrying tree heads (tlog-checkpoint), with Ed25519 keys.

Pure: no database, no Flask. A note is UTF-8 text ending in a newline, a blank line, and
signature lines `— <name> <base64(4-byte key hash || signature)>`; the key hash is the first
four bytes of SHA-256(name || "\\n" || 0x01 || public key). The text of a checkpoint is its
origin, its tree size in decimal and its base64 root hash, one per line.

Parsing (`parse_note`, `parse_checkpoint`) is kept apart from verifying (`verify_note`),
and the verifier takes its keys as arguments.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .merkle import HASH_SIZE, VerificationError

ALG_ED25519 = b"\x01"
DASH = "\u2014"
_NAME = re.compile(r"[^\s+]+")
_SIZE = re.compile(r"0|[1-9][0-9]*")


class NoteError(ValueError):
    """The text is not a well-formed signed note, checkpoint or key."""


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise NoteError(f"a key name is non-empty, with no space and no '+': {name!r}")
    return name


def key_hash(name: str, key: Ed25519PublicKey) -> int:
    """The 4-byte key hash, as an int: SHA-256(name || "\\n" || 0x01 || key)[:4]."""
    digest = hashlib.sha256(name.encode() + b"\n" + ALG_ED25519 + _raw(key)).digest()
    return int.from_bytes(digest[:4], "big")


@dataclass(frozen=True)
class Verifier:
    """A named Ed25519 verifier key, as in a `vkey` string."""

    name: str
    key: Ed25519PublicKey

    @property
    def hash(self) -> int:
        """The 4-byte key hash."""
        return key_hash(self.name, self.key)

    def vkey(self) -> str:
        """`<name>+<hex key hash>+<base64 of 0x01 || public key>`."""
        return (f"{self.name}+{self.hash:08x}+"
                f"{base64.b64encode(ALG_ED25519 + _raw(self.key)).decode()}")


def verifier(name: str, key: Ed25519PublicKey | Ed25519PrivateKey) -> Verifier:
    """A verifier for a name and a key (the public half of a private key)."""
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    return Verifier(_check_name(name), key)


def parse_vkey(vkey: str) -> Verifier:
    """A verifier from its `vkey` string; checks the key hash it states."""
    parts = vkey.strip().split("+", 2)
    if len(parts) != 3:
        raise NoteError(f"a verifier key is <name>+<hash>+<key>: {vkey!r}")
    name, hexhash, b64 = parts
    try:
        raw = base64.b64decode(b64, validate=True)
        stated = int(hexhash, 16) if re.fullmatch(r"[0-9a-f]{8}", hexhash) else None
    except (binascii.Error, ValueError):
        raw, stated = b"", None
    if stated is None or len(raw) != 33 or raw[:1] != ALG_ED25519:
        raise NoteError(f"not an Ed25519 verifier key: {vkey!r}")
    v = Verifier(_check_name(name), Ed25519PublicKey.from_public_bytes(raw[1:]))
    if v.hash != stated:
        raise NoteError(f"verifier key {name}: stated hash {hexhash}, computed {v.hash:08x}")
    return v


def parse_skey(skey: str) -> tuple[str, Ed25519PrivateKey]:
    """The name and private key of a `PRIVATE+KEY+<name>+<hash>+<base64>` signer key."""
    parts = skey.strip().split("+", 4)
    if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
        raise NoteError("a signer key is PRIVATE+KEY+<name>+<hash>+<key>")
    try:
        raw = base64.b64decode(parts[4], validate=True)
    except binascii.Error as e:
        raise NoteError(f"signer key: {e}") from None
    if len(raw) != 33 or raw[:1] != ALG_ED25519:
        raise NoteError("signer key: not an Ed25519 seed")
    key = Ed25519PrivateKey.from_private_bytes(raw[1:])
    if f"{key_hash(parts[2], key.public_key()):08x}" != parts[3]:
        raise NoteError("signer key: the stated hash does not match the key")
    return _check_name(parts[2]), key


# --- notes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Signature:
    """One signature line."""

    name: str
    hash: int
    signature: bytes


@dataclass(frozen=True)
class Note:
    """A parsed, not yet verified, signed note."""

    text: str
    signatures: tuple[Signature, ...]


def sign_note(text: str, name: str, key: Ed25519PrivateKey) -> str:
    """The signed note of `text` (which must end in a newline) by one key."""
    _check_text(text)
    sig = key.sign(text.encode())
    blob = key_hash(_check_name(name), key.public_key()).to_bytes(4, "big") + sig
    return f"{text}\n{DASH} {name} {base64.b64encode(blob).decode()}\n"


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("a note's text ends with a newline")
    if "\n\n" in text or text.startswith("\n"):
        raise NoteError("a note's text has no blank line")


def parse_note(msg: str | bytes) -> Note:
    """Split a signed note into its text and signature lines (nothing is verified)."""
    if isinstance(msg, bytes):
        try:
            msg = msg.decode("utf-8")
        except UnicodeDecodeError:
            raise NoteError("a note is UTF-8") from None
    cut = msg.rfind("\n\n")
    if cut < 0 or not msg.endswith("\n"):
        raise NoteError("a note is text, a blank line and signature lines")
    text, sigs = msg[:cut + 1], msg[cut + 2:]
    _check_text(text)
    out = []
    for line in sigs[:-1].split("\n"):
        if not line.startswith(f"{DASH} "):
            raise NoteError(f"a signature line starts with '{DASH} ': {line[:40]!r}")
        name, _, b64 = line[2:].partition(" ")
        try:
            blob = base64.b64decode(b64, validate=True)
        except binascii.Error:
            blob = b""
        if len(blob) < 5:
            raise NoteError(f"signature line of {name!r}: not a key hash and a signature")
        out.append(Signature(_check_name(name), int.from_bytes(blob[:4], "big"), blob[4:]))
    if not out:
        raise NoteError("a note has at least one signature")
    return Note(text, tuple(out))


def verify_note(note: Note, verifiers: list[Verifier], what: str = "signed note") -> Verifier:
    """The verifier whose signature on the note holds; raises VerificationError if none does."""
    known = {(v.name, v.hash): v for v in verifiers}
    tried = []
    for s in note.signatures:
        v = known.get((s.name, s.hash))
        if v is None:
            tried.append(f"{s.name}+{s.hash:08x} (unknown key)")
            continue
        try:
            v.key.verify(s.signature, note.text.encode())
        except InvalidSignature:
            tried.append(f"{s.name}+{s.hash:08x} (signature does not verify)")
            continue
        return v
    keys = ", ".join(f"{v.name}+{v.hash:08x}" for v in verifiers) or "no keys"
    raise VerificationError(what, f"a valid signature by one of {keys}",
                            "; ".join(tried) or "no signature")


# --- checkpoints ----------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: origin, size and root hash (the text of a checkpoint note)."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        """The tlog-checkpoint body, each line ending in a newline."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode(),
                 *self.extensions]
        return "".join(f"{x}\n" for x in lines)


def parse_checkpoint(text: str) -> Checkpoint:
    """A checkpoint from the text of a note (its signatures are checked elsewhere)."""
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise NoteError("a checkpoint is an origin, a size and a root hash, each on a line")
    origin, size, root, *ext = lines[:-1]
    if not origin or not _SIZE.fullmatch(size):
        raise NoteError(f"checkpoint: bad origin or tree size ({origin!r}, {size!r})")
    try:
        h = base64.b64decode(root, validate=True)
    except binascii.Error:
        h = b""
    if len(h) != HASH_SIZE:
        raise NoteError(f"checkpoint: the root hash is not the base64 of {HASH_SIZE} bytes")
    if any(not x for x in ext):
        raise NoteError("checkpoint: an extension line is empty")
    return Checkpoint(origin, int(size), h, tuple(ext))


def sign_checkpoint(cp: Checkpoint, name: str, key: Ed25519PrivateKey) -> str:
    """The signed note of a checkpoint."""
    return sign_note(cp.text(), name, key)


def open_checkpoint(msg: str | bytes, verifiers: list[Verifier], origin: str | None = None,
                    what: str = "checkpoint") -> Checkpoint:
    """Parse a checkpoint note, verify its signature with the given keys, check its origin."""
    try:
        n = parse_note(msg)
        cp = parse_checkpoint(n.text)
    except NoteError as e:
        raise VerificationError(what, "a signed checkpoint note", str(e)) from None
    verify_note(n, verifiers, what)
    if origin is not None and cp.origin != origin:
        raise VerificationError(what, f"origin {origin!r}", f"origin {cp.origin!r}")
    return cp
