"""Tamper vectors against the Merkle log, each its own test and named for what it tampers
with: `python -m ivr audit verify` exits 1 naming the first bad leaf index and the kind of
tampering. The attacker has the database and drops the append-only triggers first."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, text

from ivr.audit import leaves, merkle, note
from ivr.audit.errors import VerificationError
from ivr.domain.times import utcnow
from ivr.services.audit_verify import verify_log
from ivr.storage import audit_store
from ivr.storage.kvkk_models import DestructionLog, IysBatch
from ivr.storage.models import Call, Consent, FlowRun, Turn
from ivr.storage.transfer_models import Transfer
from ivr.web.current import database
from tests.support.audit import append_entries, invoke, tamper
from tests.support.auditor import place_call

N = 12
ORIGIN = "ivr.test/audit-log"


@pytest.fixture
def app_config(app_config):
    """The test decides when the sequencer runs."""
    return {**app_config, "AUDIT_SEQUENCER": "off"}


@pytest.fixture
def filled(app):
    """N leaves, with signed checkpoints at 8 and at N."""
    append_entries(app, 8)
    assert invoke(app, "audit", "integrate", "--once").exit_code == 0
    append_entries(app, N - 8)
    assert invoke(app, "audit", "integrate", "--once").exit_code == 0
    return app


def assert_detected(app, index: int, problem: str, *extra: str):
    """`audit verify` exits 1 naming this index and problem; verify_log raises the same."""
    result = invoke(app, "audit", "verify", *extra)
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"FAILED at index {index}: {problem}: expected "), \
        result.output
    if not extra:
        with app.app_context(), database(app).sessionmaker() as s:
            with pytest.raises(VerificationError) as info:
                verify_log(s)
        assert (info.value.seq, info.value.problem) == (index, problem)
        assert f"expected {info.value.expected}, found {info.value.found}" in str(info.value)
    data = json.loads(invoke(app, "audit", "verify", "--json", *extra).output)
    assert (data["ok"], data["unit"], data["seq"], data["problem"]) == (False, "index", index,
                                                                         problem)


def bodies(app) -> list[str]:
    with database(app).engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT body FROM audit_log ORDER BY seq"))]


def sign(app, size: int, root: bytes, key=None) -> str:
    """A checkpoint note signed with the log's own key (or another)."""
    from ivr.services import audit_keys

    with app.app_context():
        key = key or audit_keys.signing_key(app.config)
    return note.sign_checkpoint(note.Checkpoint(ORIGIN, size, root), ORIGIN, key)


def add_head(app, size: int, root: bytes, text_: str) -> None:
    with database(app).engine.begin() as conn:
        conn.execute(text("INSERT INTO audit_tree_heads (tree_size, root_hash, at, note) "
                          "VALUES (:s, :r, :at, :n)"),
                     {"s": size, "r": root.hex(), "at": utcnow(), "n": text_})


def test_untouched_log_verifies(filled):
    result = invoke(filled, "audit", "verify")
    assert result.exit_code == 0, result.output
    root = merkle.root_of([merkle.leaf_hash(b.encode()) for b in bodies(filled)])
    assert result.output == f"ok: {N} leaves, 2 signed checkpoints, root {root.hex()[:16]}…; " \
                            "0 queued\n"


def test_modified_leaf(filled):
    tamper(filled, """UPDATE audit_log SET body = REPLACE(body, '"digits":"1"', '"digits":"2"')
                      WHERE seq = 7""")
    assert_detected(filled, 6, "leaf modified")


def test_modified_kind_column(filled):
    tamper(filled, "UPDATE audit_log SET kind = 'consent.decided' WHERE seq = 4")
    assert_detected(filled, 3, "leaf modified")


def test_modified_leaf_and_its_stored_hash(filled):
    # The careful attacker rewrites the leaf and its stored hash: the signed root catches it.
    tamper(filled, """UPDATE audit_log SET body = REPLACE(body, '"digits":"1"', '"digits":"2"')
                      WHERE seq = 7""")
    h = merkle.leaf_hash(bodies(filled)[6].encode())
    tamper(filled, "UPDATE audit_tree SET hash = :h WHERE level = 0 AND idx = 6", h=h)
    assert_detected(filled, 0, "root mismatch")


def test_deleted_leaf(filled):
    tamper(filled, "DELETE FROM audit_log WHERE seq = 7")
    assert_detected(filled, 6, "leaf deleted")


def test_deleted_leaf_and_the_rest_renumbered(filled):
    tamper(filled, "DELETE FROM audit_log WHERE seq = 7",
           "UPDATE audit_log SET seq = -seq WHERE seq > 7",
           "UPDATE audit_log SET seq = -seq - 1 WHERE seq < 0")
    assert_detected(filled, 6, "leaf deleted")


def test_deleted_leaves_at_the_end(filled):
    tamper(filled, f"DELETE FROM audit_log WHERE seq > {N - 2}")
    assert_detected(filled, N - 2, "leaf deleted")


def test_deleted_queued_leaf(filled):
    # A call and its queued leaf commit together; the attacker deletes the queued leaf.
    with database(filled).sessionmaker() as s, s.begin():
        s.add(Call(call_sid="CAqueued", status="ringing"))
        audit_store.append(s, [("call.status", "CAqueued", {"status": "ringing"})])
    tamper(filled, "DELETE FROM audit_queue WHERE ref = 'CAqueued'")
    assert_detected(filled, -1, "fact without leaf")


def _bare_fact(kind: str):
    if kind == "consent":
        return Consent(call_sid="CAtest", purpose="marketing", channels=["sms"],
                       decision="granted", digits="1")
    if kind == "call":
        return Call(call_sid="CAnoleaf", status="completed")
    return Transfer(id="t" * 32, call_sid="CAtest", agent_id="a1", agent_name="Ayşe",
                    idempotency_key="k1", request_hash="0" * 64, return_to={},
                    flow_id="consent", status="requested", requested_at=utcnow())


def _bare_row(s, kind: str):
    if kind == "İYS batch":
        return IysBatch(id="b" * 40, record_count=1, sha256="0" * 64)
    if kind == "destruction run":
        return DestructionLog(run_id="r" * 32, category="call", action="deleted",
                              table_name="calls", row_ref="x", reason="forged")
    return _bare_fact(kind)


@pytest.mark.parametrize("kind", ["call", "consent", "transfer", "İYS batch",
                                  "destruction run"])
def test_fact_whose_leaf_is_missing(filled, kind):
    # A fact written straight into its table, without the leaf that records it.
    with database(filled).sessionmaker() as s, s.begin():
        s.add(_bare_row(s, kind))
    assert_detected(filled, -1, "fact without leaf")
    result = invoke(filled, "audit", "verify")
    assert f"expected a leaf for {kind} " in result.output


def test_a_turn_whose_leaf_is_missing(app, local_caller):
    # A real call, then one more turn written straight into its run, without its leaf.
    sid = place_call(local_caller, ["1"]).call_sid
    assert invoke(app, "audit", "integrate", "--once").exit_code == 0
    assert invoke(app, "audit", "verify").exit_code == 0
    with database(app).sessionmaker() as s, s.begin():
        run_id = s.scalar(select(FlowRun.id).where(FlowRun.call_sid == sid))
        s.add(Turn(run_id=run_id, step=99, input=None, actions=[], twiml="<Response/>"))
    assert_detected(app, -1, "fact without leaf")
    assert "expected a leaf for turn " in invoke(app, "audit", "verify").output


def test_inserted_leaf(filled):
    tamper(filled, "UPDATE audit_log SET seq = -seq WHERE seq >= 7",
           "UPDATE audit_log SET seq = 1 - seq WHERE seq < 0")
    forged = leaves.leaf_body("consent.decided", "CAforged", {"decision": "granted"},
                             "2026-01-01T00:00:00.000000Z").decode()
    tamper(filled, "INSERT INTO audit_log (seq, body, kind, ref) "
           "VALUES (7, :b, 'consent.decided', 'CAforged')", b=forged)
    assert_detected(filled, 6, "leaf inserted")


def test_inserted_leaf_at_the_end_outside_the_sequencer(filled):
    forged = leaves.leaf_body("test.fact", "CAtest", {"n": 99}, "2026-01-01T00:00:00.000000Z")
    tamper(filled, f"INSERT INTO audit_log (seq, body, kind, ref) "
           f"VALUES ({N + 1}, :b, 'test.fact', 'CAtest')", b=forged.decode())
    assert_detected(filled, N, "leaf inserted")


def test_swapped_leaves(filled):
    tamper(filled, "UPDATE audit_log SET seq = -7 WHERE seq = 7",
           "UPDATE audit_log SET seq = 7 WHERE seq = 8",
           "UPDATE audit_log SET seq = 8 WHERE seq = -7")
    assert_detected(filled, 6, "leaves swapped")


def test_forged_checkpoint(filled):
    # The note's size is changed; its signature no longer holds.
    tamper(filled, "UPDATE audit_tree_heads SET note = REPLACE(note, :a, :b), tree_size = 11 "
           "WHERE tree_size = 12", a=f"{ORIGIN}\n12\n", b=f"{ORIGIN}\n11\n")
    assert_detected(filled, 11, "checkpoint forged")


def test_checkpoint_columns_that_differ_from_the_note(filled):
    tamper(filled, "UPDATE audit_tree_heads SET tree_size = 10 WHERE tree_size = 12")
    assert_detected(filled, 10, "checkpoint forged")


def test_re_signed_checkpoint(filled):
    # A checkpoint re-signed by a key that is not the log's.
    tree = merkle.MemoryTree(merkle.leaf_hash(b.encode()) for b in bodies(filled))
    tamper(filled, "DELETE FROM audit_tree_heads WHERE tree_size = 12")
    add_head(filled, 12, tree.root(), sign(filled, 12, tree.root(), Ed25519PrivateKey.generate()))
    assert_detected(filled, 12, "checkpoint forged")


def test_split_view_two_roots_for_one_size(filled):
    other = merkle.leaf_hash(b"another history")
    add_head(filled, 12, other, sign(filled, 12, other))
    assert_detected(filled, 12, "split view")


def test_split_view_inconsistent_checkpoints(filled):
    # A signed checkpoint at size 10 whose root is not the log's: it cannot be consistent
    # with the checkpoints at 8 and 12.
    other = merkle.root_of([merkle.leaf_hash(bytes([i])) for i in range(10)])
    add_head(filled, 10, other, sign(filled, 10, other))
    assert_detected(filled, 10, "split view")


def test_tree_node_modified(filled):
    # The stored nodes that proofs are made of: a consistency proof between the checkpoints
    # no longer holds.
    tamper(filled, "UPDATE audit_tree SET hash = :h WHERE level = 2 AND idx = 2",
           h=merkle.leaf_hash(b"x"))
    assert_detected(filled, 8, "tree node modified")


def test_leaf_queued_too_long(filled):
    append_entries(filled, 1)
    tamper(filled, "UPDATE audit_queue SET queued_at = :t", t=utcnow() - timedelta(hours=1))
    assert_detected(filled, N, "leaf queued too long")
    result = invoke(filled, "audit", "verify", "--max-queue-age", "7200")
    assert result.exit_code == 0 and result.output.endswith("; 1 queued\n"), result.output


def test_an_outside_checkpoint_catches_a_re_signed_rewrite(filled, tmp_path):
    # The auditor kept checkpoint 8 from GET /audit/checkpoint; the attacker later rewrote
    # leaf 3, every stored hash above it, and re-signed the heads with the log's own key.
    kept = tmp_path / "kept.note"
    with database(filled).engine.connect() as conn:
        kept.write_text(conn.execute(text("SELECT note FROM audit_tree_heads WHERE "
                                          "tree_size = 8")).scalar())
    tamper(filled, """UPDATE audit_log SET body = REPLACE(body, '"digits":"1"', '"digits":"2"')
                      WHERE seq = 3""")
    tree = merkle.MemoryTree(merkle.leaf_hash(b.encode()) for b in bodies(filled))
    nodes = {}
    compact = merkle.CompactRange()
    for i, h in enumerate(tree.hashes):
        nodes[(0, i)] = h
        compact.append(h, lambda lv, i, hh: nodes.__setitem__((lv, i), hh))
    tamper(filled, "DELETE FROM audit_tree", "DELETE FROM audit_tree_heads")
    with database(filled).engine.begin() as conn:
        for (lv, i), h in nodes.items():
            conn.execute(text("INSERT INTO audit_tree (level, idx, hash) VALUES (:l, :i, :h)"),
                         {"l": lv, "i": i, "h": h})
    for size in (8, N):
        add_head(filled, size, tree.root(size), sign(filled, size, tree.root(size)))
    assert invoke(filled, "audit", "verify").exit_code == 0  # consistent with itself...
    assert_detected(filled, 8, "split view", "--checkpoint", str(kept))  # ...not with the past
