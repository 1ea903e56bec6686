"""Tamper vectors, each named for what it tampers with: `python -m ivr audit verify` must exit
non-zero naming the first bad sequence number and the problem. The attacker has the database
and drops the append-only triggers first. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from ivr.audit import chain
from ivr.audit import checkpoint as cps
from ivr.audit.errors import VerificationError
from ivr.audit.verify import verify_call, verify_chain
from ivr.storage.db import database
from tests.integration.conftest import postgresql_only
from tests.support.audit import append_entries, invoke, rehash_from, rows, shift_up, tamper

N = 12


@pytest.fixture
def filled(app):
    """An app whose chain holds N entries."""
    append_entries(app, N)
    return app


def assert_detected(app, seq: int, problem: str, *extra: str):
    """`audit verify` exits 1 and names this seq and problem; the function raises the same."""
    result = invoke(app, "audit", "verify", *extra)
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"FAILED at seq {seq}: {problem}: expected "), result.output
    if not extra:
        with app.app_context(), database(app).sessionmaker() as s:
            with pytest.raises(VerificationError) as info:
                verify_chain(s)
        assert (info.value.seq, info.value.problem) == (seq, problem)
        assert info.value.expected and info.value.found
        assert f"expected {info.value.expected}, found {info.value.found}" in str(info.value)


def test_untouched_chain_verifies(filled):
    result = invoke(filled, "audit", "verify")
    assert result.exit_code == 0, result.output
    head = rows(filled)[-1]
    assert result.output == f"ok: {N} entries, 0 checkpoints, head {N} {head[3][:16]}…\n"
    data = json.loads(invoke(filled, "audit", "verify", "--json").output)
    assert data["ok"] is True and data["entries"] == N and data["head_hash"] == head[3]


def test_empty_log_verifies(app):
    result = invoke(app, "audit", "verify")
    assert result.exit_code == 0 and result.output == "ok: 0 entries, 0 checkpoints, empty log\n"


def test_modified_body(filled):
    tamper(filled, """UPDATE audit_log SET body = REPLACE(body, '"digits":"1"', '"digits":"2"')
                      WHERE seq = 7""")
    assert_detected(filled, 7, "body modified")


def test_modified_hash_column(filled):
    tamper(filled, "UPDATE audit_log SET hash = :h WHERE seq = 5", h="ab" * 32)
    assert_detected(filled, 5, "body modified")


def test_modified_body_rehashed_in_place(filled):
    # The row is made self-consistent again, but the next entry still links to the old hash.
    tamper(filled, """UPDATE audit_log SET body = REPLACE(body, '"digits":"1"', '"digits":"2"')
                      WHERE seq = 7""")
    body = rows(filled)[6][2]
    tamper(filled, "UPDATE audit_log SET hash = :h WHERE seq = 7",
           h=chain.entry_hash(rows(filled)[5][3], body.encode()))
    assert_detected(filled, 7, "body modified")


def test_modified_ref_column(filled):
    # kind and ref are indexed columns outside the hash; they must still agree with the body.
    tamper(filled, "UPDATE audit_log SET ref = 'CAsomeoneelse' WHERE seq = 4")
    assert_detected(filled, 4, "body modified")


def test_deleted_row(filled):
    tamper(filled, "DELETE FROM audit_log WHERE seq = 7")
    assert_detected(filled, 7, "entry deleted")


def test_deleted_first_row(filled):
    tamper(filled, "DELETE FROM audit_log WHERE seq = 1")
    assert_detected(filled, 1, "entry deleted")


def test_deleted_row_and_renumbered(filled):
    tamper(filled, "DELETE FROM audit_log WHERE seq = 7",
           "UPDATE audit_log SET seq = -seq WHERE seq > 7",
           "UPDATE audit_log SET seq = -seq - 1 WHERE seq < 0")
    assert_detected(filled, 7, "entry deleted")


def test_inserted_row(filled):
    # A well-formed forged entry at 7: right seq in its body, linked to 6, its hash correct.
    shift_up(filled, 7)
    prev = rows(filled)[5][3]
    body = chain.canonical({"seq": 7, "kind": "consent.decided", "ref": "CAforged",
                            "at": "2026-01-01T00:00:00.000000Z", "data": {"decision": "granted"}})
    tamper(filled, "INSERT INTO audit_log (seq, prev_hash, body, hash, kind, ref) "
           "VALUES (7, :p, :b, :h, 'consent.decided', 'CAforged')",
           p=prev, b=body.decode(), h=chain.entry_hash(prev, body))
    assert_detected(filled, 7, "entry inserted")


def test_swapped_rows(filled):
    tamper(filled, "UPDATE audit_log SET seq = -7 WHERE seq = 7",
           "UPDATE audit_log SET seq = 7 WHERE seq = 8",
           "UPDATE audit_log SET seq = 8 WHERE seq = -7")
    assert_detected(filled, 7, "order changed")


def test_swapped_bodies_only(filled):
    a, b = rows(filled)[6][2], rows(filled)[7][2]
    tamper(filled, "UPDATE audit_log SET body = :b WHERE seq = 7",
           "UPDATE audit_log SET body = :a WHERE seq = 8", a=a, b=b)
    assert_detected(filled, 7, "order changed")


def test_broken_first_link(filled):
    # Entry 1 claims a predecessor other than the defined constant; everything else re-hashed.
    body = rows(filled)[0][2]
    tamper(filled, "UPDATE audit_log SET prev_hash = :p, hash = :h WHERE seq = 1",
           p="11" * 32, h=chain.entry_hash("11" * 32, body.encode()))
    rehash_from(filled, 2)
    assert_detected(filled, 1, "link broken")


def make_checkpoint(app) -> dict:
    result = invoke(app, "audit", "checkpoint")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_forged_checkpoint(filled):
    make_checkpoint(filled)
    # Another key signs a statement about seq 10 and claims the real key's id.
    real = json.loads(invoke(filled, "audit", "verify", "--json").output)
    assert real["ok"]
    with filled.app_context():
        kid = cps.key_id(cps.signing_key())
    forged = cps.Checkpoint(10, rows(filled)[9][3], "2026-01-01T00:00:00.000000Z", kid, "")
    other = Ed25519PrivateKey.generate()
    sig = base64.b64encode(other.sign(forged.message())).decode()
    tamper(filled, "INSERT INTO audit_checkpoints (seq, hash, at, key_id, signature, body) "
           "VALUES (10, :h, :at, :k, :sig, :body)", h=forged.hash, at=forged.at.replace("Z", ""),
           k=kid, sig=sig, body=forged.body().decode())
    assert_detected(filled, 10, "checkpoint mismatch")


def test_checkpoint_row_pointing_elsewhere(filled):
    cp = make_checkpoint(filled)
    tamper(filled, "UPDATE audit_checkpoints SET hash = :h", h="cd" * 32)
    assert_detected(filled, cp["seq"], "checkpoint mismatch")


def test_checkpoint_by_an_unknown_key(filled, tmp_path):
    other = Ed25519PrivateKey.generate()
    cp = cps.Checkpoint(N, rows(filled)[-1][3], "2026-01-01T00:00:00.000000Z",
                        cps.key_id(other), "")
    doc = cps.Checkpoint(cp.seq, cp.hash, cp.at, cp.key_id,
                         base64.b64encode(other.sign(cp.message())).decode()).to_dict()
    path = tmp_path / "cp.json"
    path.write_text(json.dumps(doc))
    assert_detected(filled, N, "checkpoint mismatch", "--checkpoint", str(path))
    # With the signer's public key given, the same checkpoint is good evidence.
    pub = tmp_path / "other.pem"
    pub.write_text(cps.public_key_pem(other))
    result = invoke(filled, "audit", "verify", "--checkpoint", str(path), "--public-key", str(pub))
    assert result.exit_code == 0, result.output
    assert "1 checkpoints" in result.output


def test_rehashed_rewrite_is_caught_by_the_checkpoint(filled):
    cp = make_checkpoint(filled)
    assert cp["seq"] == N
    tamper(filled, """UPDATE audit_log SET body = REPLACE(body, '"digits":"1"', '"digits":"2"')
                      WHERE seq = 5""")
    rehash_from(filled, 5)
    assert_detected(filled, N, "checkpoint mismatch")


def test_rehashed_rewrite_is_caught_only_by_the_checkpoint_kept_outside(filled, tmp_path):
    """A careful attacker rewrites entry 5, re-hashes everything after it, and removes every
    checkpoint from the database: the chain is consistent again, and only the checkpoint
    handed to an outside party shows the rewrite."""
    cp = make_checkpoint(filled)
    kept = tmp_path / "checkpoint.json"
    kept.write_text(json.dumps(cp))
    tamper(filled, "DELETE FROM audit_checkpoints",
           f"DELETE FROM audit_log WHERE seq > {N}",  # the audit.checkpoint entry
           """UPDATE audit_log SET body = REPLACE(body, '"digits":"1"', '"digits":"2"')
              WHERE seq = 5""")
    rehash_from(filled, 5)
    assert invoke(filled, "audit", "verify").exit_code == 0
    assert_detected(filled, N, "checkpoint mismatch", "--checkpoint", str(kept))


def test_truncated_tail_is_caught_by_the_checkpoint(filled):
    cp = make_checkpoint(filled)
    tamper(filled, "DELETE FROM audit_log WHERE seq > 9")
    assert cp["seq"] == N
    assert_detected(filled, 10, "entry deleted")


def test_verify_call_reports_instead_of_raising(filled):
    tamper(filled, """UPDATE audit_log SET body = REPLACE(body, '"digits":"1"', '"digits":"2"')
                      WHERE seq = 7""")
    with filled.app_context(), database(filled).sessionmaker() as s:
        status = verify_call(s, "CAtest")
        assert status.ok is False and status.problem.seq == 7
        assert status.problem.problem == "body modified"
        assert "seq 7" in status.message and status.to_dict()["problem"]["seq"] == 7
        untouched = verify_call(s, "CAnothing")
        assert untouched.ok and untouched.checked == 0


def test_verify_call_ok_and_covered_by_checkpoint(filled):
    cp = make_checkpoint(filled)
    with filled.app_context(), database(filled).sessionmaker() as s:
        status = verify_call(s, "CAtest")
    assert status.ok and status.checked == N and status.checkpoint["seq"] == cp["seq"]
    assert f"a signed checkpoint follows at seq {cp['seq']} (signature valid)" in status.message


@pytest.mark.parametrize("statement", [
    "UPDATE audit_log SET body = 'x' WHERE seq = 3",
    "DELETE FROM audit_log WHERE seq = 3",
    "DELETE FROM audit_log",
])
def test_the_trigger_rejects_update_and_delete(filled, statement):
    before = rows(filled)
    with pytest.raises(DBAPIError, match="append-only"):
        with database(filled).engine.begin() as conn:
            conn.execute(text(statement))
    assert rows(filled) == before


# SQLite has no TRUNCATE; DELETE without WHERE is covered above on both backends.
@postgresql_only
def test_the_trigger_rejects_truncate_on_postgresql(filled):
    with pytest.raises(DBAPIError, match="append-only"):
        with database(filled).engine.begin() as conn:
            conn.execute(text("TRUNCATE audit_log"))
    assert len(rows(filled)) == N


@pytest.mark.parametrize("seq,prev", [(N + 2, "head"), (N + 1, "00" * 32), (5, "head")],
                         ids=["gap", "wrong-link", "middle"])
def test_the_trigger_rejects_an_insert_that_does_not_extend_the_head(filled, seq, prev):
    head = rows(filled)[-1][3]
    with pytest.raises(DBAPIError, match="append-only"):
        with database(filled).engine.begin() as conn:
            conn.execute(text("INSERT INTO audit_log (seq, prev_hash, body, hash, kind) "
                              "VALUES (:s, :p, '{}', :h, 'x')"),
                         {"s": seq, "p": head if prev == "head" else prev, "h": "00" * 32})
    assert len(rows(filled)) == N


def test_verify_segment_for_evidence_packages(filled):
    from ivr.audit.verify import segment, verify_segment

    cp = make_checkpoint(filled)
    with filled.app_context(), database(filled).sessionmaker() as s:
        signed = cps.from_row(cps.latest(s))
        keys = cps.app_public_keys()
        part = list(segment(s, 4, cp["seq"]))
    assert verify_segment(part, signed, keys) == cp["seq"] - 3
    bad = [dict(e) for e in part]
    bad[2]["body"] = bad[2]["body"].replace('"digits":"1"', '"digits":"2"')
    with pytest.raises(VerificationError) as info:
        verify_segment(bad, signed, keys)
    assert (info.value.seq, info.value.problem) == (6, "body modified")
    with pytest.raises(VerificationError) as info:
        verify_segment(part[:-1], signed, keys)  # ends before the checkpoint
    assert info.value.problem == "checkpoint mismatch"
    with pytest.raises(VerificationError) as info:
        verify_segment(part[:3] + part[4:], signed, keys)
    assert (info.value.seq, info.value.problem) == (7, "entry deleted")


def test_forged_checkpoint_entry(filled):
    """Anyone who can append could add an `audit.checkpoint` entry; its signature must hold."""
    with filled.app_context():
        kid = cps.key_id(cps.signing_key())
    head = rows(filled)[-1]
    forged = cps.Checkpoint(N, head[3], "2026-01-01T00:00:00.000000Z", kid, "")
    sig = base64.b64encode(Ed25519PrivateKey.generate().sign(forged.message())).decode()
    with database(filled).sessionmaker() as s, s.begin():
        chain.append(s, [(cps.ENTRY_KIND, None, {"seq": N, "hash": head[3], "at": forged.at,
                                                 "key_id": kid, "signature": sig})])
    assert_detected(filled, N, "checkpoint mismatch")


def test_checkpoint_entry_without_a_checkpoint(filled):
    with database(filled).sessionmaker() as s, s.begin():
        chain.append(s, [(cps.ENTRY_KIND, None, {"note": "no signature here"})])
    assert_detected(filled, N + 1, "checkpoint mismatch")
