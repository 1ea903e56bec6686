"""Proofs handed to outside parties: a call's leaves with inclusion proofs, and consistency
proofs between two tree sizes. Hashes and leaf bytes are standard base64."""

from __future__ import annotations

import base64

from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.storage.models import AuditEntry, AuditQueue, Call

from . import merkle
from .errors import AuditError
from .tree import StoredTree, latest_head, size


def b64(data: bytes) -> str:
    """Standard base64."""
    return base64.b64encode(data).decode()


def prove_call(session: Session, call_sid: str) -> dict:
    """The call's leaves with RFC 9162 inclusion proofs to the latest signed checkpoint.

    Raises AuditError for an unknown call, or when a leaf is not yet in a checkpoint.
    """
    rows = session.execute(select(AuditEntry.seq, AuditEntry.body)
                           .where(AuditEntry.ref == call_sid).order_by(AuditEntry.seq)).all()
    queued = session.scalar(select(AuditQueue.id).where(AuditQueue.ref == call_sid).limit(1))
    if not rows and queued is None:
        known = session.get(Call, call_sid) is not None
        raise AuditError(f"no audit leaves refer to call {call_sid}" if known
                         else f"unknown call: {call_sid}")
    if queued is not None:
        raise AuditError(f"call {call_sid} has leaves still queued: they are integrated "
                         "within the MMD (or run `python -m ivr audit integrate --once`)")
    head = latest_head(session)
    if head is None or rows[-1].seq > head.tree_size:
        raise AuditError(f"call {call_sid} has leaves beyond the latest checkpoint: the next "
                         "one covers them (or run `python -m ivr audit integrate --once`)")
    tree = StoredTree(session)
    n = head.tree_size
    return {
        "checkpoint": head.note,
        "tree_size": n,
        "root_hash": b64(bytes.fromhex(head.root_hash)),
        "leaves": [{"index": r.seq - 1, "leaf": b64(r.body.encode()),
                    "proof": [b64(p) for p in tree.inclusion(r.seq - 1, n)]} for r in rows],
    }


def consistency(session: Session, old: int, new: int) -> dict:
    """The RFC 9162 consistency proof from `old` to `new` leaves, with both roots."""
    have = size(session)
    if not 0 < old <= new <= have:
        raise AuditError(f"sizes must satisfy 0 < OLD_SIZE <= NEW_SIZE <= {have} (the tree "
                         f"size); got {old} and {new}")
    tree = StoredTree(session)
    return {"old_size": old, "new_size": new, "old_root": b64(tree.root(old)),
            "new_root": b64(tree.root(new)),
            "proof": [b64(p) for p in tree.consistency(old, new)]}


def check_proof_document(doc: dict, leaf_hash=merkle.leaf_hash) -> None:
    """Check every inclusion proof of a `prove_call` document against its root hash."""
    root = base64.b64decode(doc["root_hash"])
    for leaf in doc["leaves"]:
        merkle.verify_inclusion(leaf["index"], doc["tree_size"],
                                leaf_hash(base64.b64decode(leaf["leaf"])),
                                [base64.b64decode(p) for p in leaf["proof"]], root)
