"""The log's Ed25519 signing key, and the checkpoints of the former hash chain.

The Merkle log's checkpoints are signed notes (ivr/audit/note.py, signed by
ivr/services/audit_sequencer.py) made with the same key. The hash chain's checkpoints below
are kept only to verify the entries from before the Merkle log.

The signing key comes from IVR_AUDIT_SIGNING_KEY, which holds either a PKCS#8 PEM private key
(`openssl genpkey -algorithm ed25519`) or the standard base64 of the raw 32-byte Ed25519 seed.
Without it, a key is generated once and kept in instance/audit_signing_key (PKCS#8 PEM);
ivr/services/audit_keys.py finds the app's key, every function here takes its keys as
arguments.

The signed message is 0x01 || canonical JSON (RFC 8785) of {"at", "hash", "key_id", "seq"};
entries hash with 0x00 first, so a checkpoint can never pass for an entry. key_id is the
SHA-256 (hex) of the raw 32-byte public key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from . import leaves
from .errors import CHECKPOINT_MISMATCH, AuditError, VerificationError

KEY_ENV = "IVR_AUDIT_SIGNING_KEY"
ENTRY_KIND = "audit.checkpoint"


# --- keys -----------------------------------------------------------------------------


def load_private_key(text: str) -> Ed25519PrivateKey:
    """An Ed25519 private key from PKCS#8 PEM or from the base64 of its 32-byte seed."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(text.encode(), password=None)
        else:
            seed = base64.b64decode(text, validate=True)
            if len(seed) != 32:
                raise ValueError(f"a raw Ed25519 seed is 32 bytes, this is {len(seed)}")
            key = Ed25519PrivateKey.from_private_bytes(seed)
    except (ValueError, TypeError, binascii.Error) as e:
        raise AuditError(f"{KEY_ENV}: not an Ed25519 key (PKCS#8 PEM or base64 of a 32-byte "
                         f"seed): {e}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditError(f"{KEY_ENV}: the PEM key is not an Ed25519 key")
    return key


def private_key_pem(key: Ed25519PrivateKey) -> str:
    """PKCS#8 PEM of a private key."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def load_public_key(text: str | bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from SubjectPublicKeyInfo PEM (`audit public-key` output)."""
    data = text.encode() if isinstance(text, str) else text
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        raise AuditError(f"not a PEM public key: {e}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise AuditError("the public key is not an Ed25519 key")
    return key


def public_key_pem(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """SubjectPublicKeyInfo PEM, readable by `openssl pkey -pubin`."""
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def key_id(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """SHA-256 (hex) of the raw 32-byte public key."""
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def public_keys(*keys: Ed25519PublicKey | Ed25519PrivateKey) -> dict[str, Ed25519PublicKey]:
    """Public keys by key id, for the verifier."""
    out = {}
    for k in keys:
        pub = k.public_key() if isinstance(k, Ed25519PrivateKey) else k
        out[key_id(pub)] = pub
    return out


# --- checkpoints ----------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement that the entry at `seq` had `hash`; `source` says where it came from."""

    seq: int
    hash: str
    at: str
    key_id: str
    signature: str
    source: str = ""

    def body(self) -> bytes:
        """The canonical JSON that is signed (after the 0x01 prefix)."""
        return leaves.canonical({"seq": self.seq, "hash": self.hash, "at": self.at,
                                "key_id": self.key_id})

    def message(self) -> bytes:
        """The exact bytes the signature covers."""
        return leaves.CHECKPOINT_PREFIX + self.body()

    def to_dict(self, public_key: str | None = None) -> dict[str, str | int]:
        """The document handed to an outside party (`audit checkpoint` prints it)."""
        doc: dict[str, str | int] = {
            "seq": self.seq, "hash": self.hash, "at": self.at, "key_id": self.key_id,
            "algorithm": "Ed25519", "signed_message_prefix": leaves.CHECKPOINT_PREFIX.hex(),
            "signed_body": self.body().decode(), "signature": self.signature}
        if public_key:
            doc["public_key"] = public_key
        return doc

    def verify(self, keys: Mapping[str, Ed25519PublicKey]) -> None:
        """Check the signature; raises VerificationError naming the checkpoint's seq."""
        key = keys.get(self.key_id)
        if key is None:
            raise VerificationError(
                self.seq, CHECKPOINT_MISMATCH, "a signature by a known key",
                f"key {self.key_id[:16]}…, which is not among the public keys given",
                f"{self.source}; pass the signer's key with --public-key")
        try:
            key.verify(base64.b64decode(self.signature, validate=True), self.message())
        except (InvalidSignature, ValueError, binascii.Error):
            raise VerificationError(
                self.seq, CHECKPOINT_MISMATCH, f"a valid Ed25519 signature by {self.key_id[:16]}…",
                "an invalid signature", self.source) from None


class StoredCheckpoint(Protocol):
    """A stored checkpoint's columns, as a row object has them."""

    @property
    def id(self) -> int: ...
    @property
    def seq(self) -> int: ...
    @property
    def hash(self) -> str: ...
    @property
    def key_id(self) -> str: ...
    @property
    def signature(self) -> str: ...
    @property
    def body(self) -> str: ...


# (id, seq, hash, key_id, signature, body), as CHECKPOINTS_SQL (ivr/audit/legacy.py) reads them
CheckpointColumns = tuple[int, int, str, str, str, str]


def from_row(row: StoredCheckpoint | CheckpointColumns) -> Checkpoint:
    """The signed content of a stored checkpoint (a row object or its (id, seq, hash, key_id,
    signature, body) tuple); its columns must agree with its signed body."""
    cp_id, seq, h, kid, signature, body = (
        row if isinstance(row, tuple)
        else (row.id, row.seq, row.hash, row.key_id, row.signature, row.body))
    source = f"stored checkpoint #{cp_id}"
    try:
        doc = json.loads(body)
        cp = Checkpoint(int(doc["seq"]), str(doc["hash"]), str(doc["at"]), str(doc["key_id"]),
                        signature, source)
    except (ValueError, TypeError, KeyError):
        raise VerificationError(seq, CHECKPOINT_MISMATCH, "a signed checkpoint body",
                                "an unreadable body", source) from None
    if cp.body().decode() != body or (cp.seq, cp.hash, cp.key_id) != (seq, h, kid):
        raise VerificationError(seq, CHECKPOINT_MISMATCH,
                                f"columns equal to the signed body (seq {cp.seq}, hash {cp.hash})",
                                f"seq {seq}, hash {h}", source)
    return cp


def from_document(doc: Mapping[str, Any], source: str = "checkpoint file") -> Checkpoint:
    """A checkpoint as printed by `audit checkpoint` (or its JSON kept by an outside party)."""
    try:
        cp = Checkpoint(int(doc["seq"]), str(doc["hash"]), str(doc["at"]), str(doc["key_id"]),
                        str(doc["signature"]), source)
    except (KeyError, TypeError, ValueError) as e:
        raise AuditError(f"{source}: not a checkpoint document (missing or bad {e})") from None
    return cp


def from_entry_data(data: Mapping[str, Any], seq: int) -> Checkpoint:
    """The checkpoint an `audit.checkpoint` entry at `seq` records."""
    return Checkpoint(int(data["seq"]), str(data["hash"]), str(data["at"]), str(data["key_id"]),
                      str(data["signature"]), f"audit entry {seq}")

