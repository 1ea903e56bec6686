"""The audit log's exceptions: a broken chain, and everything else that stops an audit task."""

from __future__ import annotations

from typing import Any

BODY_MODIFIED = "body modified"
ENTRY_DELETED = "entry deleted"
ENTRY_INSERTED = "entry inserted"
ORDER_CHANGED = "order changed"
CHECKPOINT_MISMATCH = "checkpoint mismatch"
LINK_BROKEN = "link broken"

# The Merkle log's problems, named by leaf index.
LEAF_MODIFIED = "leaf modified"
LEAF_DELETED = "leaf deleted"
LEAF_INSERTED = "leaf inserted"
LEAVES_SWAPPED = "leaves swapped"
CHECKPOINT_FORGED = "checkpoint forged"
SPLIT_VIEW = "split view"
ROOT_MISMATCH = "root mismatch"
TREE_NODE_MODIFIED = "tree node modified"
FACT_WITHOUT_LEAF = "fact without leaf"
LEAF_QUEUED_TOO_LONG = "leaf queued too long"

# The checkpoints' anchors, named by checkpoint id.
TIMESTAMP_OTHER_CHECKPOINT = "time-stamp over another checkpoint"
TIMESTAMP_INVALID = "time-stamp invalid"
TIMESTAMP_EARLY = "time-stamp before its checkpoint"
TIMESTAMP_MISSING = "checkpoint without time-stamp"
COSIGNATURE_INVALID = "cosignature invalid"
COSIGNATURES_MISSING = "cosignatures missing"

PROBLEMS = (BODY_MODIFIED, ENTRY_DELETED, ENTRY_INSERTED, ORDER_CHANGED, CHECKPOINT_MISMATCH,
            LINK_BROKEN, LEAF_MODIFIED, LEAF_DELETED, LEAF_INSERTED, LEAVES_SWAPPED,
            CHECKPOINT_FORGED, SPLIT_VIEW, ROOT_MISMATCH, TREE_NODE_MODIFIED, FACT_WITHOUT_LEAF,
            LEAF_QUEUED_TOO_LONG, TIMESTAMP_OTHER_CHECKPOINT, TIMESTAMP_INVALID, TIMESTAMP_EARLY,
            TIMESTAMP_MISSING, COSIGNATURE_INVALID, COSIGNATURES_MISSING)


class AuditError(Exception):
    """An audit task cannot run: no signing key, an empty log, an unreadable file."""


class VerificationError(Exception):
    """The log is not what was appended: names the first bad seq (hash chain) or leaf index
    (Merkle log), the problem, and both sides."""

    def __init__(self, seq: int, problem: str, expected: str, found: str, detail: str = "",
                 *, unit: str = "seq"):
        self.seq = seq
        self.unit = unit
        self.problem = problem
        self.expected = expected
        self.found = found
        self.detail = detail
        msg = f"{unit} {seq}: {problem}: expected {expected}, found {found}"
        super().__init__(f"{msg} ({detail})" if detail else msg)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, for pages and evidence packages."""
        return {"seq": self.seq, "unit": self.unit, "problem": self.problem,
                "expected": self.expected, "found": self.found, "message": str(self)}
