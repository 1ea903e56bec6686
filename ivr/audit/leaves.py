"""Audit entries: canonical bodies and the entry hash (pure; no database here).

A new entry is a leaf of the Merkle log (ivr/audit/merkle.py): its bytes are the RFC 8785
canonical JSON of {"at", "data", "kind", "ref"}. ivr/storage/audit_store.py queues it in the
caller's transaction; the sequencer (ivr/services/audit_sequencer.py) gives it its index
later. Entries from before the Merkle log were a hash chain: SHA-256(0x00 ||
previous hash || body), the first linking to 32 zero bytes (`FIRST_PREV`); they stay as
the first leaves and their chain stays verifiable (ivr/audit/legacy.py).
"""

from __future__ import annotations

import hashlib
from typing import Any

from ivr.domain.canonical import canonical_json

ENTRY_PREFIX = b"\x00"
CHECKPOINT_PREFIX = b"\x01"
FIRST_PREV = "00" * 32


def canonical(data: object) -> bytes:
    """RFC 8785 canonical JSON bytes (ivr/domain/canonical.py)."""
    return canonical_json(data)


def entry_hash(prev_hash: str, body: bytes) -> str:
    """The hash of one entry of the former hash chain, chained to the previous one."""
    return hashlib.sha256(ENTRY_PREFIX + bytes.fromhex(prev_hash) + body).hexdigest()


def leaf_body(kind: str, ref: str | None, data: dict[str, Any], stamp: str) -> bytes:
    """The leaf bytes of one entry."""
    return canonical({"kind": kind, "at": stamp, "ref": ref, "data": data})
