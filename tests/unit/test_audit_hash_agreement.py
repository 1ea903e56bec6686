"""The evidence ZIP's standalone verify.py keeps its own copy of the RFC 9162 hashes and
proof checks (it runs with the standard library alone); it must agree with ivr/audit/merkle.py,
where the package defines them once."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import ivr
from ivr.audit import merkle

ASSETS = Path(__file__).resolve().parents[1] / "assets"
VECTORS = json.loads((ASSETS / "merkle_vectors.json").read_text())
LEAVES = [bytes.fromhex(x) for x in VECTORS["leaves"]]
TREE = merkle.MemoryTree(merkle.leaf_hash(x) for x in LEAVES)
SCRIPT_PATH = Path(ivr.__file__).parent / "audit" / "evidence_verify.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("evidence_verify", SCRIPT_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


script = _load_script()


@given(st.binary(max_size=200))
def test_leaf_hash_agrees(leaf):
    assert script.leaf_hash(leaf) == merkle.leaf_hash(leaf)


@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_node_hash_agrees(left, right):
    assert script.node_hash(left, right) == merkle.node_hash(left, right)


@pytest.mark.parametrize("size", range(1, 9))
def test_inclusion_proofs_agree(size):
    for i in range(size):
        proof = TREE.inclusion(i, size)
        h = merkle.leaf_hash(LEAVES[i])
        assert script.root_from_inclusion(i, size, h, proof) == merkle.root_from_inclusion(
            i, size, h, proof) == TREE.root(size)


@pytest.mark.parametrize(("old", "new"), [(o, n) for n in range(1, 9) for o in range(1, n + 1)])
def test_consistency_proofs_agree(old, new):
    proof = TREE.consistency(old, new)
    merkle.verify_consistency(old, new, TREE.root(old), TREE.root(new), proof)
    script.verify_consistency(old, new, TREE.root(old), TREE.root(new), proof)


@pytest.mark.parametrize(("old", "new"), [(3, 7), (4, 8), (1, 5)])
def test_both_refuse_a_flipped_consistency_proof(old, new):
    proof = TREE.consistency(old, new)
    bad = [bytes([proof[0][0] ^ 1]) + proof[0][1:], *proof[1:]]
    with pytest.raises(merkle.VerificationError):
        merkle.verify_consistency(old, new, TREE.root(old), TREE.root(new), bad)
    with pytest.raises(script.Failed):
        script.verify_consistency(old, new, TREE.root(old), TREE.root(new), bad)
