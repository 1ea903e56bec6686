"""The audit log's exceptions: a broken chain, and everything else that stops an audit task."""

from __future__ import annotations

BODY_MODIFIED = "body modified"
ENTRY_DELETED = "entry deleted"
ENTRY_INSERTED = "entry inserted"
ORDER_CHANGED = "order changed"
CHECKPOINT_MISMATCH = "checkpoint mismatch"
LINK_BROKEN = "link broken"

PROBLEMS = (BODY_MODIFIED, ENTRY_DELETED, ENTRY_INSERTED, ORDER_CHANGED, CHECKPOINT_MISMATCH,
            LINK_BROKEN)


class AuditError(Exception):
    """An audit task cannot run: no signing key, an empty log, an unreadable file."""


class VerificationError(Exception):
    """The chain is not what was appended: names the first bad seq, the problem, and both sides."""

    def __init__(self, seq: int, problem: str, expected: str, found: str, detail: str = ""):
        self.seq = seq
        self.problem = problem
        self.expected = expected
        self.found = found
        self.detail = detail
        msg = f"seq {seq}: {problem}: expected {expected}, found {found}"
        super().__init__(f"{msg} ({detail})" if detail else msg)

    def to_dict(self) -> dict:
        """A JSON-ready form, for pages and evidence packages."""
        return {"seq": self.seq, "problem": self.problem, "expected": self.expected,
                "found": self.found, "message": str(self)}
