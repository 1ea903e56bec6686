"""Deterministic replay of real calls (driven through the signed webhooks over HTTP): every
consent-call scenario replays to the stored path and decision, an old call still replays after
the flow file changed, and tampering with the record is named where the paths diverge."""

from __future__ import annotations

import json

import pytest
import yaml
from sqlalchemy import text

from ivr import create_app
from ivr.domain.flow import load_flow
from ivr.domain.flow.loader import parse_yaml
from ivr.services.audit_replay import replay_call
from ivr.storage.flowstore import FlowRegistry
from ivr.web.current import database
from tests.integration.conftest import ROOT
from tests.integration.test_consent_call import SCENARIOS
from tests.support.audit import invoke, tamper

FLOW = load_flow(ROOT / "flows" / "consent.yaml")

# The consent-call scenarios, exactly as the end-to-end call tests drive them.


def replay(app, call_sid: str):
    """The ReplayResult, computed in the app as the CLI does."""
    with app.app_context(), database(app).sessionmaker() as s:
        return replay_call(s, app.extensions["ivr_flows"], call_sid)


@pytest.mark.parametrize("keys,decision,digits,language,confirmation", SCENARIOS)
def test_replay_of_every_consent_scenario(caller, live_app, keys, decision, digits, language,
                                          confirmation):
    c = caller()
    c.run(keys)
    result = invoke(live_app.app, "audit", "replay", c.call_sid)
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"Replay of call {c.call_sid}" in out
    assert f"decision: {decision}, keys {digits or '-'}, language {language}" in out
    assert "Result: OK" in out
    # What was played, with the text of the recorded flow version, and what was pressed.
    assert FLOW.text("notice_intro", "tr") in out
    assert FLOW.text(confirmation, language) in out
    for key in keys:
        assert ("no key before the timeout" if key == "t" else f"caller pressed {key}") in out

    r = replay(live_app.app, c.call_sid)
    assert r.ok and len(r.runs) == 1
    run = r.runs[0]
    assert run.flow_version == FLOW.version and run.language == "tr"
    assert [s.step for s in run.steps] == list(range(len(keys) + 1))
    assert [s.input for s in run.steps[1:]] == [
        {"type": "timeout"} if k == "t" else {"type": "digits", "digits": k} for k in keys]
    assert all(s.at and s.at.endswith("Z") for s in run.steps)
    last = run.steps[-1]
    assert last.decision["decision"] == decision and last.decision["digits"] == digits
    assert last.decision["notice_version"]  # the notice heard before deciding, by hash
    assert [p.prompt for p in last.played][-2:] == [confirmation, "goodbye"]
    assert all(p.language == language for p in last.played)
    assert run.decision == last.decision and r.chain.ok and r.chain.checked >= 4
    json.dumps(r.to_dict())  # the evidence package can carry it


def test_replay_of_a_hang_up_during_the_notice(caller, live_app):
    c = caller()
    c.dial()
    c.hang_up()
    result = invoke(live_app.app, "audit", "replay", c.call_sid)
    assert result.exit_code == 0, result.output
    assert "caller hung up" in result.output
    assert "decision: none (the caller hung up first)" in result.output
    r = replay(live_app.app, c.call_sid)
    run = r.runs[0]
    assert r.ok and run.decision is None and run.hung_up_at
    assert [s.input for s in run.steps] == [None, {"type": "hangup"}]


def test_replay_after_the_flow_file_changed(caller, live_app, app_config, tmp_path):
    c = caller()
    c.run(["1"])
    old_text = FLOW.text("question", "tr")
    doc = parse_yaml((ROOT / "flows" / "consent.yaml").read_text(encoding="utf-8"), "consent")
    doc["prompts"]["question"]["tr"] = "Yeni soru metni: onay için 1, ret için 2."
    folder = tmp_path / "flows-v2"
    folder.mkdir()
    (folder / "consent.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True),
                                         encoding="utf-8")
    new_app = create_app({**app_config, "FLOW": str(folder / "consent.yaml"),
                          "FLOWS_DIR": str(folder)})
    try:
        registry: FlowRegistry = new_app.extensions["ivr_flows"]
        assert registry.default.version != FLOW.version
        assert FLOW.version not in registry._by_version  # only the database has the old one
        result = invoke(new_app, "audit", "replay", c.call_sid)
        assert result.exit_code == 0, result.output
        assert old_text in result.output
        assert "Yeni soru metni" not in result.output
        assert f"version {FLOW.version}" in result.output
    finally:
        database(new_app).engine.dispose()


def run_id(app, call_sid: str) -> str:
    with database(app).engine.connect() as conn:
        return conn.execute(text("SELECT id FROM flow_runs WHERE call_sid = :c"),
                            {"c": call_sid}).scalar_one()


def assert_mismatch(app, call_sid: str, where: str, what: str):
    result = invoke(app, "audit", "replay", call_sid)
    assert result.exit_code == 1, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("Result: MISMATCH"))
    assert where in line and what in line, result.output
    return result.output


def test_replay_detects_a_tampered_turn_input(caller, live_app):
    c = caller()
    c.run(["1"])
    run = run_id(live_app.app, c.call_sid)
    with database(live_app.app).engine.begin() as conn:
        conn.execute(text("UPDATE flow_turns SET input = :i WHERE run_id = :r AND step = 1"),
                     {"i": json.dumps({"type": "digits", "digits": "2"}), "r": run})
    out = assert_mismatch(live_app.app, c.call_sid, "step 1", "input")
    assert "paths diverge at action 0" in out  # the declined path is not what was stored


def test_replay_detects_tampered_turn_actions(caller, live_app):
    c = caller()
    c.run(["2"])
    run = run_id(live_app.app, c.call_sid)
    with database(live_app.app).engine.begin() as conn:
        actions = conn.execute(
            text("SELECT actions FROM flow_turns WHERE run_id = :r AND step = 1"),
            {"r": run}).scalar_one()
        actions = json.loads(actions) if isinstance(actions, str) else actions
        actions[0]["decision"] = "granted"
        conn.execute(text("UPDATE flow_turns SET actions = :a WHERE run_id = :r AND step = 1"),
                     {"a": json.dumps(actions), "r": run})
    assert_mismatch(live_app.app, c.call_sid, "step 1", "paths diverge at action 0")


def test_replay_detects_a_tampered_consent_decision(caller, live_app):
    c = caller()
    c.run(["2"])
    with database(live_app.app).engine.begin() as conn:
        conn.execute(text("UPDATE consents SET decision = 'granted' WHERE call_sid = :c"),
                     {"c": c.call_sid})
    assert_mismatch(live_app.app, c.call_sid, "step 1", "decision: consents table:")


def test_replay_detects_a_deleted_turn(caller, live_app):
    c = caller()
    c.run(["9", "1"])
    run = run_id(live_app.app, c.call_sid)
    with database(live_app.app).engine.begin() as conn:
        conn.execute(text("DELETE FROM flow_turns WHERE run_id = :r AND step = 2"), {"r": run})
    assert_mismatch(live_app.app, c.call_sid, "run", "stored turns are not steps 0..2")


def test_replay_detects_a_hang_up_removed_from_the_run(caller, live_app):
    c = caller()
    c.dial()
    c.hang_up()
    with database(live_app.app).engine.begin() as conn:
        conn.execute(text("UPDATE flow_runs SET hangup_at = NULL WHERE call_sid = :c"),
                     {"c": c.call_sid})
    assert_mismatch(live_app.app, c.call_sid, "step 1", "hang-up the run does not")


def test_replay_detects_a_tampered_audit_entry(caller, live_app):
    c = caller()
    c.run(["1"])
    tamper(live_app.app, """UPDATE audit_log SET body = REPLACE(body, '"digits":"1"',
                            '"digits":"2"') WHERE ref = :c AND kind = 'input.received'""",
           c=c.call_sid)
    assert_mismatch(live_app.app, c.call_sid, "the call", "audit entries do not verify")


def test_replay_of_a_range(caller, live_app):
    # Three people: from one number, the second call's "2" would withdraw the first's grant.
    calls = [caller(from_number=f"+90532123456{n}") for n in range(3)]
    for c, keys in zip(calls, (["1"], ["2"], ["t", "t", "t"]), strict=True):
        c.run(keys)
    result = invoke(live_app.app, "audit", "replay", "--since", "2000-01-01")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[-1] == "replayed 3 calls: 3 ok, 0 mismatched"
    assert [x.split()[:3] for x in lines[:3]] == [[c.call_sid, d, "ok"] for c, d in
                                                  zip(calls, ("granted", "declined", "no_input"),
                                                      strict=True)]
    none = invoke(live_app.app, "audit", "replay", "--until", "2000-01-01")
    assert none.exit_code == 0 and none.output == "replayed 0 calls: 0 ok, 0 mismatched\n"
    with database(live_app.app).engine.begin() as conn:
        conn.execute(text("UPDATE consents SET digits = '9' WHERE call_sid = :c"),
                     {"c": calls[1].call_sid})
    bad = invoke(live_app.app, "audit", "replay", "--since", "2000-01-01", "--until", "2999-01-01")
    assert bad.exit_code == 1
    assert "replayed 3 calls: 2 ok, 1 mismatched" in bad.output
    assert f"{calls[1].call_sid}  declined  MISMATCH" in bad.output


@pytest.mark.parametrize("args,code,message", [
    ([], 2, "give either CALL_SID or --since/--until"),
    (["CAx", "--since", "2020-01-01"], 2, "give either CALL_SID or --since/--until"),
    (["--since", "yesterday"], 2, "not an ISO 8601 date"),
    (["CAdoesnotexist"], 1, "unknown call: CAdoesnotexist"),
])
def test_replay_usage_errors(app, args, code, message):
    result = invoke(app, "audit", "replay", *args)
    assert result.exit_code == code and message in result.output, result.output
    assert "Traceback" not in result.output


PHONE = "+905321234567"


def test_no_phone_number_in_any_audit_body(caller, live_app):
    for keys in (["1"], ["0", "2"]):
        caller(from_number=PHONE).run(keys)
    c = caller(from_number=PHONE)
    c.dial()
    c.hang_up()
    assert invoke(live_app.app, "audit", "checkpoint").exit_code == 0
    with database(live_app.app).engine.connect() as conn:
        bodies = [r[0] for r in conn.execute(text("SELECT body FROM audit_log"))]
        hmac = conn.execute(text("SELECT DISTINCT phone_hmac FROM calls")).scalar_one()
    assert len(bodies) > 20
    forms = [PHONE, PHONE[1:], PHONE[3:], "0" + PHONE[3:], "532 123 45 67", "5321234567"]
    for body in bodies:
        for form in forms:
            assert form not in body
    # The caller is referred to by the keyed HMAC of the number instead.
    started = [json.loads(b) for b in bodies if '"kind":"call.started"' in b]
    assert started and all(b["data"]["phone"] == hmac for b in started)
    assert all(json.loads(b)["data"]["phone"] == hmac for b in bodies
               if '"kind":"consent.decided"' in b)


def test_erasing_personal_data_leaves_chain_and_replay_valid(caller, live_app):
    c = caller(from_number=PHONE)
    c.run(["1"])
    with database(live_app.app).engine.begin() as conn:
        conn.execute(text("UPDATE calls SET phone_enc = NULL, to_number = NULL"))
        conn.execute(text("UPDATE consents SET phone_enc = NULL"))
    assert invoke(live_app.app, "audit", "verify").exit_code == 0
    result = invoke(live_app.app, "audit", "replay", c.call_sid)
    assert result.exit_code == 0, result.output
