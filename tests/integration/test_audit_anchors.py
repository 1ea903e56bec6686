"""Checkpoint anchors on PostgreSQL, through the CLI and HTTP: RFC 3161 time-stamps from a
real authority on 127.0.0.1 (`openssl ts -reply`), cosignatures from a real C2SP witness
(`python -m ivr witness serve`), the gap when either is away, and the four attacks of issue
23: an insider's rewrite, a restored old backup, a moved token, a replayed cosignature."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from ivr import create_app
from ivr.audit import checkpoint as cps
from ivr.audit import cosignature, note
from ivr.storage import anchor_store
from ivr.web.current import database
from tests.support.anchors import WitnessProcess, rewrite_log
from tests.support.audit import append_entries, invoke
from tests.support.tsa import TimeStampAuthority

from .conftest import ROOT, require_tools

ORIGIN = "ivr.test/audit-log"


@pytest.fixture
def log_key():
    return Ed25519PrivateKey.generate()


@pytest.fixture
def log_vkey(log_key):
    return note.verifier(ORIGIN, log_key).vkey()


@pytest.fixture
def tsa():
    require_tools("openssl", what="the time-stamp authority of the anchoring tests")
    authority = TimeStampAuthority()
    yield authority
    authority.stop()


@pytest.fixture
def witness(tmp_path, log_vkey):
    w = WitnessProcess(tmp_path / "witness", [log_vkey])
    yield w
    w.stop()


@pytest.fixture
def app_config(app_config, log_key, tsa, witness):
    """Leaves wait in the queue until a test integrates them; anchors until it anchors."""
    return {**app_config, "AUDIT_SEQUENCER": "off",
            "AUDIT_SIGNING_KEY": cps.private_key_pem(log_key),
            "TSA_URLS": tsa.url, "TSA_CA_FILE": str(tsa.ca_file),
            "WITNESSES": f"{witness.vkey} {witness.url}", "AUDIT_TIMESTAMP_INTERVAL": "0.01",
            "ANCHOR_RETRY": "0.05", "ANCHOR_RETRY_MAX": "0.2", "ANCHOR_TIMEOUT": "2"}


def run(app, *args, code=0) -> str:
    result = invoke(app, *args)
    assert result.exit_code == code, result.output
    return result.output


def checkpoint(app, n: int = 3) -> str:
    """n more leaves, integrated and signed."""
    append_entries(app, n)
    return run(app, "audit", "checkpoint")


def anchor(app) -> str:
    return run(app, "audit", "anchor", "--once")


def sql(app, statement: str, **params):
    with database(app).engine.begin() as conn:
        return conn.execute(text(statement), params).all() if statement.lstrip().upper() \
            .startswith("SELECT") else conn.execute(text(statement), params)


def tokens(app) -> list[dict]:
    return [json.loads(x) for x in run(app, "audit", "timestamps", "--json").splitlines()]


# --- time-stamps --------------------------------------------------------------------------


def test_a_checkpoint_is_time_stamped_and_openssl_verifies_the_token(app, tsa, tmp_path):
    first = checkpoint(app)
    assert anchor(app).startswith("time-stamped 1, cosigned 1,")
    [t] = tokens(app)
    assert set(t) == {"tree_size", "note", "tsa", "token"}
    assert (t["tree_size"], t["note"], t["tsa"]) == (3, first, tsa.url)
    # The message imprint is the SHA-256 of the note's signed body, which openssl checks.
    body = first.split("\n\n")[0] + "\n"
    (tmp_path / "body").write_bytes(body.encode())
    (tmp_path / "t.tsr").write_bytes(base64.b64decode(t["token"]))
    out = subprocess.run(["openssl", "ts", "-verify", "-in", str(tmp_path / "t.tsr"), "-data",
                          str(tmp_path / "body"), "-CAfile", str(tsa.ca_file)],
                         capture_output=True, text=True)
    assert "Verification: OK" in out.stdout, out.stdout + out.stderr
    reply = subprocess.run(["openssl", "ts", "-reply", "-in", str(tmp_path / "t.tsr"), "-text"],
                           capture_output=True, text=True).stdout
    assert hashlib.sha256(body.encode()).hexdigest()[:8] in reply.replace(" ", "").lower() \
        or "Message data:" in reply
    out = run(app, "audit", "verify")
    assert "1 time-stamps verified" in out, out


def test_authority_down_then_up_every_gap_checkpoint_gets_its_token(app, client, tsa):
    tsa.stop()
    for _ in range(3):
        checkpoint(app)
        anchor(app)
    ready = client.get("/readyz").get_json()
    assert ready["checks"]["audit_anchors"].startswith("ok (3 timestamps wanted")
    assert any("timestamp(s) waiting" in w and "ConnectionError" in w
               for w in ready["warnings"]), ready
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'ivr_audit_anchors_wanted{kind="timestamp"} 3.0' in metrics
    assert 'ivr_audit_anchors_failing{kind="timestamp"} 1.0' in metrics
    tsa.start()
    time.sleep(0.3)  # past the back-off
    assert anchor(app).startswith("time-stamped 3,")
    assert [t["tree_size"] for t in tokens(app)] == [3, 6, 9]
    ready = client.get("/readyz").get_json()
    assert ready["checks"]["audit_anchors"] == "ok (none wanted)", ready
    assert not any("time-stamp" in w for w in ready["warnings"]), ready
    assert "3 time-stamps verified" in run(app, "audit", "verify")


def test_after_an_outage_anchor_once_fills_the_gap_at_once_and_stamps_the_quiet_last_one(
        app_config, tsa):
    """Back-off for an hour, and a last checkpoint signed too soon after the one before to
    be asked for: once the authority is back, `audit anchor --once` stamps both, with no
    sequencer pass in between (the servers may be down, or no call comes)."""
    app = create_app({**app_config, "AUDIT_TIMESTAMP_INTERVAL": "1", "ANCHOR_RETRY": "3600",
                      "ANCHOR_RETRY_MAX": "3600"})
    database(app).create_all()
    try:
        tsa.stop()
        checkpoint(app)
        assert "failed 1" in anchor(app)
        checkpoint(app)  # within the interval: not asked for when signed
        assert [r[0] for r in sql(app, "SELECT tree_size FROM audit_anchors "
                                       "WHERE kind = 'timestamp'")] == [3]
        tsa.start()
        time.sleep(1.1)
        assert anchor(app).startswith("time-stamped 2,")
        assert [t["tree_size"] for t in tokens(app)] == [3, 6]
        assert "2 time-stamps verified" in run(app, "audit", "verify")
    finally:
        database(app).engine.dispose()


def test_one_anchoring_pass_drains_a_gap_longer_than_a_page(app, monkeypatch):
    """Five checkpoints waiting (an outage's gap, say), two to a page: one pass takes all."""
    monkeypatch.setattr(anchor_store, "PAGE", 2)
    for _ in range(5):
        checkpoint(app)
    assert anchor(app).startswith("time-stamped 5, cosigned 5,")
    assert "5 time-stamps verified" in run(app, "audit", "verify")


@pytest.mark.parametrize("mode", ["garbage", "slow", "error"])
def test_an_authority_that_answers_badly_is_retried_and_nothing_is_stored(app, app_config,
                                                                           tsa, mode):
    tsa.mode, tsa.delay = mode, 3.0
    checkpoint(app)
    started = time.monotonic()
    result = invoke(app, "audit", "anchor", "--once")
    assert time.monotonic() - started < 6
    assert "time-stamped 0" in result.output and "failed 1" in result.output
    assert tokens(app) == []
    tsa.mode = "up"
    time.sleep(0.3)
    assert anchor(app).startswith("time-stamped 1")


def test_a_checkpoint_older_than_the_interval_without_a_token_is_reported_by_age(app, tsa):
    tsa.stop()
    checkpoint(app)
    anchor(app)
    time.sleep(1.1)
    out = run(app, "audit", "verify", code=1)
    assert out.startswith("FAILED at checkpoint 1: checkpoint without time-stamp"), out
    assert "is 1 s old and no time-stamp covers it" in out


def test_a_token_that_predates_its_checkpoint_fails(app):
    checkpoint(app)
    anchor(app)
    sql(app, "UPDATE audit_tree_heads SET at = at + interval '1 hour'")
    out = run(app, "audit", "verify", code=1)
    assert out.startswith("FAILED at checkpoint 1: time-stamp before its checkpoint"), out


# --- the witness --------------------------------------------------------------------------


def test_the_witness_cosigns_each_checkpoint_with_a_consistency_proof(app, client, witness):
    checkpoint(app)
    anchor(app)
    second = checkpoint(app, 5)
    assert anchor(app).startswith("time-stamped 1, cosigned 1,")
    assert witness.known()[ORIGIN]["size"] == 8
    served = client.get("/audit/checkpoint").get_data(as_text=True)
    assert served.startswith(second)
    n = note.parse_note(served)
    w = cosignature.parse_vkey(witness.vkey)
    [sig] = cosignature.matching(n.signatures, w)
    assert abs(cosignature.verify_cosignature(n.text, sig, w) - time.time()) < 60
    # The witness serves what it cosigned, with the log's signature and its own.
    got = requests.get(f"{witness.url}/{hashlib.sha256(ORIGIN.encode()).hexdigest()}/checkpoint",
                       timeout=5)
    assert got.status_code == 200 and got.text == served
    out = run(app, "audit", "verify", "--witness", witness.vkey, "--max-cosign-age", "0")
    assert "cosignatures: witness.test/dpo on 2 checkpoints (quorum 1)" in out


def test_witness_down_then_up_cosigns_every_checkpoint_of_the_gap(app, witness, tmp_path,
                                                                  log_vkey):
    witness.stop()
    for _ in range(3):
        checkpoint(app)
        anchor(app)
    assert "cosignatures missing" in run(app, "audit", "verify", "--witness", witness.vkey,
                                         "--max-cosign-age", "0", code=1)
    # The same witness (key and state) comes back on another port.
    again = WitnessProcess(witness.folder, [log_vkey])
    try:
        sql(app, "UPDATE audit_anchors SET target = target")  # nothing to change in the DB
        app.extensions.pop("ivr_anchor_settings")
        app.config["WITNESSES"] = f"{again.vkey} {again.url}"
        time.sleep(0.3)
        assert ", cosigned 3," in anchor(app)
        assert again.known()[ORIGIN]["size"] == 9
        run(app, "audit", "verify", "--witness", again.vkey, "--max-cosign-age", "0")
    finally:
        again.stop()


def _post(url: str, body: bytes) -> requests.Response:
    return requests.post(f"{url}/add-checkpoint", data=body, timeout=5)


def test_witness_status_codes_follow_tlog_witness(app, witness, log_key):
    from ivr.audit import merkle
    from ivr.audit import witness as protocol

    spec = (ROOT / "tests" / "assets" / "tlog_witness_spec_request.txt").read_bytes()
    assert _post(witness.url, spec).status_code == 404  # an origin it does not witness
    hashes = [merkle.leaf_hash(bytes([i])) for i in range(6)]
    tree = merkle.MemoryTree(hashes)

    def signed(size, key=log_key, root=None):
        cp = note.Checkpoint(ORIGIN, size, root if root is not None else tree.root(size))
        return note.sign_checkpoint(cp, ORIGIN, key)

    r = _post(witness.url, protocol.format_request(0, [], signed(3, Ed25519PrivateKey.generate())))
    assert r.status_code == 403
    bad_sig = signed(3).replace("\n\n— ", "\n\n— ")[:-6] + "AAAA=\n"
    assert _post(witness.url, protocol.format_request(0, [], bad_sig)).status_code in (400, 403)
    assert _post(witness.url, b"old x\n\n" + signed(3).encode()).status_code == 400
    assert _post(witness.url, protocol.format_request(4, [], signed(3))).status_code == 400
    r = _post(witness.url, protocol.format_request(0, [hashes[0]], signed(3)))
    assert r.status_code == 422
    r = _post(witness.url, protocol.format_request(0, [], signed(0, root=b"\x00" * 32)))
    assert r.status_code == 422
    r = _post(witness.url, protocol.format_request(0, [], signed(3)))
    assert r.status_code == 200 and r.text.startswith(f"— {witness.name} ")
    r = _post(witness.url, protocol.format_request(0, [], signed(5)))
    assert (r.status_code, r.text, r.headers["Content-Type"]) == (409, "3\n", "text/x.tlog.size")
    r = _post(witness.url, protocol.format_request(3, [hashes[0]], signed(5)))
    assert r.status_code == 422  # a proof that does not verify
    r = _post(witness.url, protocol.format_request(3, [], signed(3, root=b"\x01" * 32)))
    assert r.status_code == 422  # same size, another root
    r = _post(witness.url, protocol.format_request(3, tree.consistency(3, 5), signed(5)))
    assert r.status_code == 200
    assert witness.known()[ORIGIN]["size"] == 5
    assert requests.get(f"{witness.url}/{'0' * 64}/checkpoint", timeout=5).status_code == 404


# --- the four attacks ------------------------------------------------------------------------


def test_attack_1_an_insider_rewrites_the_log_and_re_signs_it(app, witness, log_key, tmp_path):
    checkpoint(app)
    anchor(app)
    checkpoint(app)
    anchor(app)
    before = tokens(app)
    run(app, "audit", "verify", "--witness", witness.vkey, "--max-cosign-age", "0")
    # One fact changed; every hash, node and checkpoint remade with the log's own key, and
    # the copy kept outside the database overwritten too.
    notes = rewrite_log(app, log_key, ORIGIN,
                        lambda b: b.replace('"digits":"1"', '"digits":"2"', 1)
                        if '"n":2,' in b else b)
    (tmp_path / "instance" / "audit_published_checkpoint").write_text(notes[-1])
    out = run(app, "audit", "verify", code=1)  # the tokens no longer match the checkpoints
    assert out.startswith("FAILED at checkpoint 1: time-stamp over another checkpoint"), out
    # The witness refuses to cosign the rewritten history's next checkpoint.
    checkpoint(app)
    result = invoke(app, "audit", "anchor", "--once")
    assert "HTTP 422" in result.output or "HTTP 409" in result.output, result.output
    assert witness.known()[ORIGIN]["size"] == 6
    # Without the time-stamps, the witness alone still tells.
    sql(app, "DELETE FROM audit_anchors WHERE kind = 'timestamp'")
    app.extensions.pop("ivr_anchor_settings")
    app.config["TSA_URLS"] = ""
    out = run(app, "audit", "verify", "--witness", witness.vkey, "--max-cosign-age", "0", code=1)
    assert "cosignatures missing" in out or "cosignature invalid" in out, out
    # And the tokens an auditor kept do not verify over the new checkpoints.
    for old, new in zip(before, notes, strict=True):
        (tmp_path / "t.tsr").write_bytes(base64.b64decode(old["token"]))
        (tmp_path / "body").write_text(new.split("\n\n")[0] + "\n")
        r = subprocess.run(["openssl", "ts", "-verify", "-in", str(tmp_path / "t.tsr"),
                            "-data", str(tmp_path / "body"), "-CAfile",
                            app.config["TSA_CA_FILE"]], capture_output=True, text=True)
        assert "Verification: OK" not in r.stdout


def test_attack_2_an_old_backup_is_restored(app, client):
    checkpoint(app)
    sql(app, "CREATE TABLE bk_log AS TABLE audit_log; CREATE TABLE bk_tree AS TABLE audit_tree;"
             "CREATE TABLE bk_heads AS TABLE audit_tree_heads; CREATE TABLE bk_anchors AS "
             "TABLE audit_anchors")
    checkpoint(app)
    anchor(app)
    # The restore: the audit tables as the backup had them (the instance folder stays).
    sql(app, "SET LOCAL session_replication_role = replica;"
             "DELETE FROM audit_anchors; DELETE FROM audit_tree_heads; DELETE FROM audit_tree;"
             "DELETE FROM audit_log; INSERT INTO audit_log SELECT * FROM bk_log;"
             "INSERT INTO audit_tree SELECT * FROM bk_tree;"
             "INSERT INTO audit_tree_heads SELECT * FROM bk_heads;"
             "INSERT INTO audit_anchors SELECT * FROM bk_anchors")
    append_entries(app, 5, ref="CAafter")
    result = invoke(app, "audit", "integrate", "--once")
    assert result.exit_code == 1
    assert "refused to sign a checkpoint: the tree's root at size 6" in result.output
    assert "is not the published one" in result.output
    assert [r[0] for r in sql(app, "SELECT tree_size FROM audit_tree_heads")] == [3]
    ready = client.get("/readyz").get_json()
    assert any("refuses to sign checkpoints" in w for w in ready["warnings"]), ready
    assert "ivr_audit_checkpoint_refused 1.0" in client.get("/metrics").get_data(as_text=True)


def test_attack_3_a_token_moved_from_another_checkpoint(app):
    checkpoint(app)
    anchor(app)
    checkpoint(app)
    anchor(app)
    run(app, "audit", "verify")
    sql(app, "UPDATE audit_anchors SET data = (SELECT data FROM audit_anchors WHERE head_id = 1"
             " AND kind = 'timestamp') WHERE head_id = 2 AND kind = 'timestamp'")
    out = run(app, "audit", "verify", code=1)
    assert out.startswith("FAILED at checkpoint 2: time-stamp over another checkpoint: "
                          "expected a token over checkpoint #2 (tree size 6)"), out
    assert "found a token over checkpoint #1 (tree size 3)" in out


class ReplayingWitness:
    """A witness that answers every add-checkpoint with the first cosignature it got from
    the real one: a replay."""

    def __init__(self, real_url: str):
        kept: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if not kept:
                    kept.append(requests.post(f"{real_url}/add-checkpoint", data=body,
                                              timeout=5).text)
                data = kept[0].encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_attack_4_a_witness_replays_an_old_cosignature(app, witness):
    replaying = ReplayingWitness(witness.url)
    app.extensions.pop("ivr_anchor_settings", None)
    app.config["WITNESSES"] = f"{witness.vkey} {replaying.url}"
    try:
        checkpoint(app)
        assert ", cosigned 1," in anchor(app)
        checkpoint(app)
        result = invoke(app, "audit", "anchor", "--once")
        assert "cosigned 0" in result.output and "does not verify" in result.output
        out = run(app, "audit", "verify", "--witness", witness.vkey, "--max-cosign-age", "0",
                  code=1)
        assert "FAILED at checkpoint 2: cosignatures missing" in out, out
        # Stored anyway (by hand, or by a client that does not check): verification fails.
        sql(app, "UPDATE audit_anchors SET state = 'done', data = (SELECT data FROM "
                 "audit_anchors WHERE head_id = 1 AND kind = 'cosignature') "
                 "WHERE head_id = 2 AND kind = 'cosignature'")
        out = run(app, "audit", "verify", "--witness", witness.vkey, code=1)
        assert out.startswith("FAILED at checkpoint 2: cosignature invalid"), out
        assert "replayed from another checkpoint" in out
    finally:
        replaying.server.shutdown()
        replaying.server.server_close()


# --- webhooks never wait for an authority or a witness ------------------------------------


def test_webhooks_do_not_wait_for_a_slow_authority_or_a_down_witness(app_config, tsa, witness):
    from ivr.adapters.simulate import Caller, http_transport

    from .conftest import AUTH_TOKEN, LiveServer

    tsa.mode, tsa.delay = "slow", 4.0
    witness.stop()
    server = LiveServer({**app_config, "AUDIT_SEQUENCER": "thread", "AUDIT_MMD": "0.2",
                         "AUDIT_CHECKPOINT_INTERVAL": "0.2", "ANCHOR_PERIOD": "0.1",
                         "ANCHOR_TIMEOUT": "10"}).start()
    try:
        durations = []
        for _ in range(3):
            c = Caller(server.url, AUTH_TOKEN, http_transport())
            started = time.monotonic()
            c.run(["1"])
            durations.append(time.monotonic() - started)
            time.sleep(0.5)  # the sequencer signs; the anchoring thread is stuck on the TSA
        assert max(durations) < 2.0, durations
        tsa.mode = "up"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if tokens(server.app):
                break
            time.sleep(0.3)
        assert tokens(server.app), "the anchoring thread fetched no token once the TSA was up"
    finally:
        from ivr.services import anchoring, audit_sequencer

        audit_sequencer.stop_thread(server.app)
        anchoring.stop_thread(server.app)
        server.stop()
        server.server.server_close()
