"""`audit verify --from-checkpoint N`: only the leaves and checkpoints after signed checkpoint
#N, which an earlier run verified. Each tamper vector after #N is its own test, named for
what it tampers with; the attacker has the database and drops the append-only triggers."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from ivr.audit import merkle
from ivr.audit.errors import VerificationError
from ivr.services.audit_verify import verify_from_checkpoint
from ivr.storage.db import database
from tests.support.audit import append_entries, invoke, tamper

from .test_audit_tamper import add_head, bodies, sign

__all__ = ["app_config"]

# Checkpoints #1 at 8 leaves, #2 at 12, #3 at 15; the run starts from #1.
SIZES = (8, 12, 15)
N = SIZES[-1]


@pytest.fixture
def app_config(app_config):
    """The test decides when the sequencer runs."""
    return {**app_config, "AUDIT_SEQUENCER": "off"}


@pytest.fixture
def filled(app):
    """N leaves, with signed checkpoints #1, #2, #3 at SIZES."""
    done = 0
    for size in SIZES:
        append_entries(app, size - done)
        done = size
        assert invoke(app, "audit", "integrate", "--once").exit_code == 0
    with database(app).engine.connect() as conn:
        heads = conn.execute(text("SELECT id, tree_size FROM audit_tree_heads ORDER BY id")).all()
    assert [tuple(h) for h in heads] == [(1, 8), (2, 12), (3, 15)]
    return app


def assert_detected(app, index: int, problem: str, checkpoint: str = "1"):
    """`audit verify --from-checkpoint` exits 1 naming this index and problem."""
    result = invoke(app, "audit", "verify", "--from-checkpoint", checkpoint)
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"FAILED at index {index}: {problem}: expected "), \
        result.output
    with app.app_context(), database(app).sessionmaker() as s:
        with pytest.raises(VerificationError) as info:
            verify_from_checkpoint(s, int(checkpoint))
    assert (info.value.seq, info.value.problem) == (index, problem)
    data = json.loads(invoke(app, "audit", "verify", "--from-checkpoint", checkpoint,
                             "--json").output)
    assert (data["ok"], data["seq"], data["problem"]) == (False, index, problem)


def test_untouched_log_verifies_from_a_checkpoint(filled):
    result = invoke(filled, "audit", "verify", "--from-checkpoint", "1")
    assert result.exit_code == 0, result.output
    root = merkle.root_of([merkle.leaf_hash(b.encode()) for b in bodies(filled)])
    assert result.output == (
        f"ok: {N - 8} leaves after checkpoint #1 (tree size 8) of {N}, 3 checkpoints "
        f"from it, consistent; root {root.hex()[:16]}…; 0 queued; next run: "
        "--from-checkpoint 3\n")
    data = json.loads(invoke(filled, "audit", "verify", "--from-checkpoint", "2",
                             "--json").output)
    assert (data["ok"], data["from_checkpoint"], data["from_size"], data["leaves_checked"],
            data["latest_checkpoint"], data["root_hash"]) == (True, 2, 12, 3, 3, root.hex())
    # From the latest checkpoint: nothing new to read, and the log still verifies.
    assert invoke(filled, "audit", "verify", "--from-checkpoint", "3").exit_code == 0


def test_it_reads_only_the_leaves_after_the_checkpoint(filled):
    # A leaf before the checkpoint is the full verify's to check: rewriting it (and only
    # it) is not seen from #2, and is by the full verify. So the run never read it.
    tamper(filled, """UPDATE audit_log SET body = REPLACE(body, '"digits":"1"', '"digits":"2"')
                      WHERE seq = 3""")
    assert invoke(filled, "audit", "verify", "--from-checkpoint", "2").exit_code == 0
    assert invoke(filled, "audit", "verify").exit_code == 1


def test_new_leaves_after_the_last_checkpoint_are_checked_too(filled):
    append_entries(filled, 2)
    assert invoke(filled, "audit", "integrate", "--once").exit_code == 0
    append_entries(filled, 1)
    with database(filled).engine.connect() as conn:
        # The sequencer's pass integrated the first two; the last stays queued.
        assert conn.execute(text("SELECT count(*) FROM audit_queue")).scalar() == 1
    result = invoke(filled, "audit", "verify", "--from-checkpoint", "3")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: 2 leaves after checkpoint #3 (tree size 15) of 17")
    assert "1 queued; next run: --from-checkpoint 4" in result.output


def test_unknown_checkpoint(filled):
    result = invoke(filled, "audit", "verify", "--from-checkpoint", "9")
    assert result.exit_code == 1
    assert "there is no signed checkpoint #9" in result.output


def test_modified_leaf_after_the_checkpoint(filled):
    tamper(filled, """UPDATE audit_log SET body = REPLACE(body, '"digits":"1"', '"digits":"2"')
                      WHERE seq = 11""")
    assert_detected(filled, 10, "leaf modified")


def test_modified_leaf_and_its_stored_hash_after_the_checkpoint(filled):
    # The careful attacker rewrites the leaf and its stored hash: the next signed root
    # (checkpoint #2) no longer matches the tree recomputed from #1's subtrees.
    tamper(filled, """UPDATE audit_log SET body = REPLACE(body, '"digits":"1"', '"digits":"2"')
                      WHERE seq = 11""")
    h = merkle.leaf_hash(bodies(filled)[10].encode())
    tamper(filled, "UPDATE audit_tree SET hash = :h WHERE level = 0 AND idx = 10", h=h)
    assert_detected(filled, 8, "root mismatch")


def test_deleted_leaf_right_after_the_checkpoint(filled):
    tamper(filled, "DELETE FROM audit_log WHERE seq = 9")
    assert_detected(filled, 8, "leaf deleted")


def test_deleted_leaves_at_the_end(filled):
    tamper(filled, f"DELETE FROM audit_log WHERE seq > {N - 2}")
    assert_detected(filled, N - 2, "leaf deleted")


def test_inserted_leaf_at_the_end_outside_the_sequencer(filled):
    tamper(filled, "INSERT INTO audit_log (seq, body, kind, ref) "
           "SELECT seq + 1, body, kind, ref FROM audit_log WHERE seq = :n", n=N)
    assert_detected(filled, N, "leaf inserted")


def test_swapped_leaves_after_the_checkpoint(filled):
    tamper(filled, "UPDATE audit_log SET seq = -10 WHERE seq = 10",
           "UPDATE audit_log SET seq = 10 WHERE seq = 11",
           "UPDATE audit_log SET seq = 11 WHERE seq = -10")
    assert_detected(filled, 9, "leaves swapped")


def test_starting_checkpoint_forged(filled):
    # The starting checkpoint's note no longer carries a valid signature.
    tamper(filled, "UPDATE audit_tree_heads SET note = REPLACE(note, :a, :b), tree_size = 7 "
           "WHERE id = 1", a="\n8\n", b="\n7\n")
    assert_detected(filled, 7, "checkpoint forged")


def test_later_checkpoint_re_signed_by_another_key(filled):
    tree = merkle.MemoryTree(merkle.leaf_hash(b.encode()) for b in bodies(filled))
    tamper(filled, "DELETE FROM audit_anchors", "DELETE FROM audit_tree_heads WHERE id = 3")
    add_head(filled, N, tree.root(), sign(filled, N, tree.root(), Ed25519PrivateKey.generate()))
    assert_detected(filled, N, "checkpoint forged")


def test_stored_subtree_of_the_starting_checkpoint_modified(filled):
    # The run starts from the stored hash of #1's one perfect subtree (8 leaves: level 3).
    tamper(filled, "UPDATE audit_tree SET hash = :h WHERE level = 3 AND idx = 0",
           h=merkle.leaf_hash(b"x"))
    assert_detected(filled, 8, "tree node modified")


def test_inconsistent_tree_between_the_checkpoint_and_the_latest(filled):
    # A stored node the consistency proof from #1 (8) to #3 (15) is made of, and which no
    # leaf check reads: the proof no longer holds.
    tamper(filled, "UPDATE audit_tree SET hash = :h WHERE level = 2 AND idx = 2",
           h=merkle.leaf_hash(b"x"))
    assert_detected(filled, 8, "tree node modified")


def test_a_later_checkpoint_of_another_history(filled):
    # Signed with the log's own key (a stolen key), at a size between #2 and #3, over a
    # tree this log never had: the tree recomputed from #1 and the stored one agree on
    # another root at 13.
    other = merkle.root_of([merkle.leaf_hash(bytes([i])) for i in range(13)])
    add_head(filled, 13, other, sign(filled, 13, other))
    assert_detected(filled, 13, "split view")


def test_split_view_at_the_starting_size(filled):
    other = merkle.leaf_hash(b"another history")
    add_head(filled, 8, other, sign(filled, 8, other))
    assert_detected(filled, 8, "split view")
