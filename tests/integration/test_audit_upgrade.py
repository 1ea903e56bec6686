"""`python -m ivr db upgrade` on a database holding the previous release's hash chain: every
entry is kept and becomes one of the first leaves in seq order; the old chain head and its
Ed25519 checkpoints stay verifiable, and `audit verify` reports both parts."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from ivr import create_app
from ivr.audit import leaves, merkle
from ivr.web.current import database
from tests.support.audit import append_entries, invoke, make_legacy_log, tamper

COUNT = 3000
CP_AT = 2000


@pytest.fixture
def old(app_config):
    """An app on a database made by the previous release, upgraded to the head."""
    application = create_app({**app_config, "AUDIT_SEQUENCER": "off"})
    make_legacy_log(application, COUNT, checkpoint_at=CP_AT)
    yield application
    database(application).engine.dispose()


def chain_rows(app) -> list[tuple]:
    with database(app).engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT seq, prev_hash, body, hash FROM audit_log ORDER BY seq"))]


def test_every_entry_is_kept_as_the_first_leaves(old):
    rows = chain_rows(old)
    assert [r[0] for r in rows] == list(range(1, COUNT + 2))  # + the checkpoint entry
    prev = leaves.FIRST_PREV
    for _seq, p, body, h in rows:  # the chain columns are untouched
        assert p == prev and leaves.entry_hash(p, body.encode()) == h
        prev = h
    with database(old).engine.connect() as conn:
        stored = [bytes(r[0]) for r in conn.execute(text(
            "SELECT hash FROM audit_tree WHERE level = 0 ORDER BY idx"))]
    assert stored == [merkle.leaf_hash(r[2].encode()) for r in rows]


def test_verify_reports_both_parts_then_new_leaves_follow(old):
    result = invoke(old, "audit", "verify")
    assert result.exit_code == 0, result.output
    head = chain_rows(old)[-1][3]
    assert result.output.startswith(f"ok: {COUNT + 1} leaves, 0 signed checkpoints, root ")
    assert result.output.endswith(f"; hash chain (before the Merkle log): {COUNT + 1} entries, "
                                  f"1 checkpoints, head {head[:16]}…\n")
    append_entries(old, 5)
    assert invoke(old, "audit", "integrate", "--once").exit_code == 0
    data = json.loads(invoke(old, "audit", "verify", "--json").output)
    assert data["tree_size"] == COUNT + 6 and data["tree_checkpoints"] == 1
    assert data["chain"] == {"entries": COUNT + 1, "checkpoints": 1, "head_hash": head}
    proof = json.loads(invoke(old, "audit", "prove", "CAold", "--json").output)
    assert len(proof["leaves"]) == COUNT and proof["leaves"][0]["index"] == 0


def test_a_rewritten_old_entry_is_still_named_by_its_seq(old):
    tamper(old, """UPDATE audit_log SET body = REPLACE(body, '"digits":"1"', '"digits":"2"')
                   WHERE seq = 1500""")
    result = invoke(old, "audit", "verify")
    assert result.exit_code == 1
    assert result.output.startswith("FAILED at seq 1500: body modified: expected "), result.output


def test_the_old_chain_checkpoint_still_binds_the_old_entries(old):
    # Rewritten and re-hashed from 1500 on: only the old Ed25519 checkpoint (at 2000) can tell.
    from tests.support.audit import rehash_from

    tamper(old, """UPDATE audit_log SET body = REPLACE(body, '"digits":"1"', '"digits":"2"')
                   WHERE seq = 1500""")
    rehash_from(old, 1500)
    result = invoke(old, "audit", "verify")
    assert result.exit_code == 1
    assert result.output.startswith(f"FAILED at seq {CP_AT}: checkpoint mismatch"), result.output
