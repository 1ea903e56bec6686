"""ivr/audit/verify.py over plain iterables, with keys passed in: no app, no database."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ivr.audit import errors, leaves, merkle, note
from ivr.audit.errors import VerificationError
from ivr.audit.verify import check_split_views, open_heads, verify_leaves

ORIGIN = "ivr.example/audit-log"
KEY = Ed25519PrivateKey.generate()
VERIFIERS = [note.verifier(ORIGIN, KEY)]
N = 6


def _rows() -> list[tuple]:
    """(seq, body, kind, ref, stored leaf hash), as the log stores them."""
    out = []
    for seq in range(1, N + 1):
        body = leaves.leaf_body("test.fact", f"CA{seq}", {"n": seq},
                               "2026-01-01T00:00:00.000000Z").decode()
        out.append((seq, body, "test.fact", f"CA{seq}", merkle.leaf_hash(body.encode())))
    return out


def _head(rows, size=N, key=KEY, cp_id=1):
    root = merkle.root_of([r[4] for r in rows[:size]])
    text = note.sign_checkpoint(note.Checkpoint(ORIGIN, size, root), ORIGIN, key)
    return (cp_id, size, root.hex(), text)


def test_an_untouched_log_verifies_to_its_signed_root():
    rows = _rows()
    heads = open_heads([_head(rows, 4), _head(rows, N, cp_id=2)], VERIFIERS, ORIGIN)
    compact = verify_leaves(iter(rows), heads)
    assert compact.size == N
    assert compact.root() == merkle.root_of([r[4] for r in rows])


def _modified(rows):
    seq, body, kind, ref, h = rows[2]
    rows[2] = (seq, body.replace('"n":3', '"n":4'), kind, ref, h)


def _deleted(rows):
    del rows[2]


def _swapped(rows):
    a, b = rows[2], rows[3]
    rows[2], rows[3] = (a[0], b[1], b[2], b[3], a[4]), (b[0], a[1], a[2], a[3], b[4])


def _rewritten_with_its_hash(rows):
    seq, body, kind, ref, _h = rows[2]
    body = body.replace('"n":3', '"n":4')
    rows[2] = (seq, body, kind, ref, merkle.leaf_hash(body.encode()))


@pytest.mark.parametrize(("tamper", "problem", "index"), [
    (_modified, errors.LEAF_MODIFIED, 2),
    (_deleted, errors.LEAF_DELETED, 2),
    (_swapped, errors.LEAVES_SWAPPED, 2),
    (_rewritten_with_its_hash, errors.ROOT_MISMATCH, 0),
])
def test_tampered_leaves_are_named(tamper, problem, index):
    rows = _rows()
    heads = open_heads([_head(rows)], VERIFIERS, ORIGIN)
    tamper(rows)
    with pytest.raises(VerificationError) as e:
        verify_leaves(iter(rows), heads)
    assert (e.value.problem, e.value.seq, e.value.unit) == (problem, index, "index")


def test_a_checkpoint_signed_by_another_key_is_forged():
    rows = _rows()
    with pytest.raises(VerificationError) as e:
        open_heads([_head(rows, key=Ed25519PrivateKey.generate())], VERIFIERS, ORIGIN)
    assert e.value.problem == errors.CHECKPOINT_FORGED


def test_two_roots_for_one_size_are_a_split_view():
    rows = _rows()
    other = list(rows)
    _rewritten_with_its_hash(other)
    heads = open_heads([_head(rows), _head(other, cp_id=2)], VERIFIERS, ORIGIN)
    with pytest.raises(VerificationError) as e:
        check_split_views(heads)
    assert e.value.problem == errors.SPLIT_VIEW
