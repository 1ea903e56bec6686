"""Proof documents handed to outside parties, checked here without a database: hashes and
leaf bytes are standard base64 (ivr/storage/audit_tree.py makes them from the stored tree)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from typing import Any

from . import merkle


def b64(data: bytes) -> str:
    """Standard base64."""
    return base64.b64encode(data).decode()


def proof_json(doc: Mapping[str, object]) -> str:
    """The proof document as `audit prove --json` prints it and an evidence package holds it:
    one line of JSON and a newline, so the two can be compared byte for byte."""
    return json.dumps(doc) + "\n"


def check_proof_document(doc: Mapping[str, Any],
                         leaf_hash: Callable[[bytes], bytes] = merkle.leaf_hash) -> None:
    """Check every inclusion proof of a `prove_call` document (JSON: {"tree_size",
    "root_hash", "leaves": [{"index", "leaf", "proof"}]}) against its root hash."""
    root = base64.b64decode(doc["root_hash"])
    for leaf in doc["leaves"]:
        merkle.verify_inclusion(leaf["index"], doc["tree_size"],
                                leaf_hash(base64.b64decode(leaf["leaf"])),
                                [base64.b64decode(p) for p in leaf["proof"]], root)
