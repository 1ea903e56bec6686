"""The RFC 9162 Merkle tree against transparency-dev/merkle's published vectors, plus
properties: every generated proof verifies, and any flipped bit makes it fail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.audit import merkle
from ivr.audit.merkle import VerificationError

ASSETS = Path(__file__).resolve().parents[1] / "assets"
VECTORS = json.loads((ASSETS / "merkle_vectors.json").read_text())
LEAVES = [bytes.fromhex(x) for x in VECTORS["leaves"]]
TREE = merkle.MemoryTree(merkle.leaf_hash(x) for x in LEAVES)


def h(x: str) -> bytes:
    return bytes.fromhex(x)


@pytest.mark.parametrize("i", range(8))
def test_leaf_hashes(i):
    assert merkle.leaf_hash(LEAVES[i]).hex() == VECTORS["leaf_hashes"][i]


@pytest.mark.parametrize("size", range(9))
def test_roots_of_every_size(size):
    assert TREE.root(size).hex() == VECTORS["roots"][size]


@pytest.mark.parametrize("size", range(9))
def test_compact_range_root_at_every_size(size):
    c = merkle.CompactRange()
    for x in LEAVES[:size]:
        c.append(merkle.leaf_hash(x))
    assert c.root().hex() == VECTORS["roots"][size]


@pytest.mark.parametrize("v", VECTORS["inclusion"], ids=lambda v: f"{v['index']}-of-{v['size']}")
def test_inclusion_vectors(v):
    proof = [h(p) for p in v["proof"]]
    assert TREE.inclusion(v["index"], v["size"]) == proof
    merkle.verify_inclusion(v["index"], v["size"], TREE.hashes[v["index"]], proof,
                            h(VECTORS["roots"][v["size"]]))


@pytest.mark.parametrize("v", VECTORS["consistency"], ids=lambda v: f"{v['old']}-to-{v['new']}")
def test_consistency_vectors(v):
    proof = [h(p) for p in v["proof"]]
    assert TREE.consistency(v["old"], v["new"]) == proof
    merkle.verify_consistency(v["old"], v["new"], h(VECTORS["roots"][v["old"]]),
                              h(VECTORS["roots"][v["new"]]), proof)


def _corrupt_inclusion(index, size, proof, root, leaf):
    some = h("abacaba000000000000000000000000000000000000000000060061e00123456")
    yield "index - 1", (index - 1, size, leaf, proof, root)
    yield "index + 1", (index + 1, size, leaf, proof, root)
    yield "index ^ 2", (index ^ 2, size, leaf, proof, root)
    yield "size * 2", (index, size * 2, leaf, proof, root)
    yield "size // 2", (index, size // 2, leaf, proof, root)
    yield "wrong leaf", (index, size, merkle.leaf_hash(b"WrongLeaf"), proof, root)
    yield "empty root", (index, size, leaf, proof, merkle.EMPTY_ROOT)
    yield "random root", (index, size, leaf, proof, some)
    yield "trailing root", (index, size, leaf, [*proof, root], root)
    yield "preceding root", (index, size, leaf, [root, *proof], root)
    if proof:
        yield "removed element", (index, size, leaf, proof[:-1], root)
    if len(proof) > 1:
        yield "inserted element", (index, size, leaf, [proof[0], some, *proof[1:]], root)


@pytest.mark.parametrize("v", VECTORS["inclusion"][1:],
                         ids=lambda v: f"{v['index']}-of-{v['size']}")
def test_corrupted_inclusion_fails(v):
    proof = [h(p) for p in v["proof"]]
    root = h(VECTORS["roots"][v["size"]])
    for name, args in _corrupt_inclusion(v["index"], v["size"], proof, root,
                                         TREE.hashes[v["index"]]):
        with pytest.raises(VerificationError):
            merkle.verify_inclusion(*args)
            pytest.fail(f"verified a proof with {name}")


@pytest.mark.parametrize("v", VECTORS["consistency"][1:], ids=lambda v: f"{v['old']}-to-{v['new']}")
def test_corrupted_consistency_fails(v):
    old, new = v["old"], v["new"]
    proof = [h(p) for p in v["proof"]]
    r1, r2 = h(VECTORS["roots"][old]), h(VECTORS["roots"][new])
    cases = {
        "old - 1": (old - 1, new, r1, r2, proof), "old + 1": (old + 1, new, r1, r2, proof),
        "old ^ 2": (old ^ 2, new, r1, r2, proof), "new * 2": (old, new * 2, r1, r2, proof),
        "new // 2": (old, new // 2, r1, r2, proof), "swapped roots": (old, new, r2, r1, proof),
        "empty proof": (old, new, r1, r2, []), "trailing root": (old, new, r1, r2, [*proof, r1]),
        "preceding root": (old, new, r1, r2, [r2, *proof]),
        "truncated": (old, new, r1, r2, proof[:-1]),
        "preceding proof[0]": (old, new, r1, r2, [proof[0], *proof]),
    }
    for name, args in cases.items():
        with pytest.raises(VerificationError):
            merkle.verify_consistency(*args)
            pytest.fail(f"verified a proof with {name}")


@pytest.mark.parametrize("index,size", [(0, 0), (1, 1), (2, 1), (-1, 4)])
def test_inclusion_index_out_of_range(index, size):
    with pytest.raises(VerificationError, match="leaf index below the tree size"):
        merkle.verify_inclusion(index, size, TREE.hashes[0], [], TREE.hashes[0])


def test_consistency_edge_cases():
    r = TREE.root(3)
    merkle.verify_consistency(0, 3, merkle.EMPTY_ROOT, r, [])
    merkle.verify_consistency(3, 3, r, r, [])
    with pytest.raises(VerificationError, match="equal roots"):
        merkle.verify_consistency(3, 3, r, TREE.root(4), [])
    with pytest.raises(VerificationError, match="an empty proof"):
        merkle.verify_consistency(3, 3, r, r, [r])
    with pytest.raises(VerificationError, match="no larger"):
        merkle.verify_consistency(4, 3, TREE.root(4), r, [])


def test_error_names_expected_and_found():
    with pytest.raises(VerificationError) as e:
        merkle.verify_inclusion(0, 8, TREE.hashes[1], TREE.inclusion(0), TREE.root())
    assert f"expected root {TREE.root().hex()}" in str(e.value)
    assert "found root " in str(e.value)


@st.composite
def trees(draw):
    n = draw(st.integers(min_value=1, max_value=70))
    return merkle.MemoryTree(merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n))


@settings(max_examples=60, deadline=None)
@given(trees(), st.data())
def test_every_inclusion_proof_verifies_and_a_flipped_bit_fails(tree, data):
    size = data.draw(st.integers(1, len(tree.hashes)))
    index = data.draw(st.integers(0, size - 1))
    proof = tree.inclusion(index, size)
    root = tree.root(size)
    merkle.verify_inclusion(index, size, tree.hashes[index], proof, root)
    parts = [tree.hashes[index], *proof, root]
    which = data.draw(st.integers(0, len(parts) - 1))
    bit = data.draw(st.integers(0, 255))
    parts[which] = _flip(parts[which], bit)
    with pytest.raises(VerificationError):
        merkle.verify_inclusion(index, size, parts[0], parts[1:-1], parts[-1])


@settings(max_examples=60, deadline=None)
@given(trees(), st.data())
def test_every_consistency_proof_verifies_and_a_flipped_bit_fails(tree, data):
    new = data.draw(st.integers(1, len(tree.hashes)))
    old = data.draw(st.integers(1, new))
    proof = tree.consistency(old, new)
    r1, r2 = tree.root(old), tree.root(new)
    merkle.verify_consistency(old, new, r1, r2, proof)
    parts = [r1, r2, *proof]
    which = data.draw(st.integers(0, len(parts) - 1))
    parts[which] = _flip(parts[which], data.draw(st.integers(0, 255)))
    with pytest.raises(VerificationError):
        merkle.verify_consistency(old, new, parts[0], parts[1], parts[2:])


def _flip(b: bytes, bit: int) -> bytes:
    out = bytearray(b)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 200))
def test_compact_range_emits_every_perfect_node(n):
    tree = merkle.MemoryTree(merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n))
    nodes = {}
    c = merkle.CompactRange()
    for x in tree.hashes:
        c.append(x, lambda level, i, hh: nodes.__setitem__((level, i), hh))
    assert c.root() == tree.root()
    for (level, i), hh in nodes.items():
        assert hh == tree.subtree(i << level, (i + 1) << level)
    peaks = merkle.peak_ranges(n)
    assert [nodes.get(p) or tree.hashes[p[1]] for p in peaks] == c.peaks
    assert sum(1 << lv for lv, _i in peaks) == n
