"""End-to-end consent calls: real HTTP, real signatures, PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import re
import xml.etree.ElementTree as ET

import pytest

from ivr.cli.main import cli
from ivr.domain.flow import load_flow
from tests.integration.conftest import ROOT

FLOW = load_flow(ROOT / "flows" / "consent.yaml")
TR, EN = (lambda p: FLOW.text(p, "tr")), (lambda p: FLOW.text(p, "en"))


def show(app, call_sid: str) -> dict:
    """`python -m ivr calls show CALL_SID --json`."""
    result = app.test_cli_runner().invoke(cli, ["calls", "show", call_sid, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def texts(turn) -> list[str]:
    return [h.text for h in turn.heard]


SCENARIOS = [
    # keys, decision, digits, language, confirmation prompt
    pytest.param(["1"], "granted", "1", "tr", "confirm_granted", id="consent"),
    pytest.param(["2"], "declined", "2", "tr", "confirm_declined", id="decline"),
    pytest.param(["9", "1"], "granted", "91", "tr", "confirm_granted", id="repeat-then-consent"),
    pytest.param(["5", "1"], "granted", "51", "tr", "confirm_granted", id="invalid-then-consent"),
    pytest.param(["5", "7", "*"], "no_input", "57*", "tr", "confirm_no_input",
                 id="three-invalid"),
    pytest.param(["t", "t", "t"], "no_input", "", "tr", "confirm_no_input", id="three-silences"),
    pytest.param(["0", "1"], "granted", "01", "en", "confirm_granted", id="english"),
]


@pytest.mark.parametrize("keys,decision,digits,language,confirmation", SCENARIOS)
def test_consent_call_paths(caller, live_app, keys, decision, digits, language, confirmation):
    c = caller()
    last = c.run(keys)
    text = FLOW.text(confirmation, language)
    assert text in texts(last)
    assert last.end == "hangup"
    assert last.gather_action is None

    data = show(live_app.app, c.call_sid)
    consent = data["consent"]
    assert consent["decision"] == decision
    assert consent["digits"] == digits
    assert consent["language"] == language
    assert consent["call_sid"] == c.call_sid
    assert consent["phone"] == "+905321234567"
    assert consent["purpose"] == "marketing"
    assert consent["channels"] == ["ARAMA", "MESAJ", "EPOSTA"]
    assert consent["flow_version"] == FLOW.version
    assert re.fullmatch(r"[0-9a-f]{64}", consent["notice_version"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", consent["captured_at"])
    assert consent["agent_id"] == ""
    assert data["status"] == "completed"
    assert data["duration"] == c.duration > 0
    assert len(data["consents"]) == 1


def test_notice_plays_before_the_question_and_cannot_be_skipped(caller):
    c = caller()
    first = c.dial()
    root = ET.fromstring(first.twiml)
    verbs = [el.tag for el in root]
    # Greeting and the notice are plain verbs (not inside <Gather>): no key can skip them.
    assert verbs == ["Say", "Say", "Say", "Start", "Say", "Gather"]
    says = [el.text for el in root if el.tag == "Say"]
    assert says == [TR("greeting"), TR("language_offer"), TR("notice_intro"), TR("notice_body")]
    # Recording starts right after the notice has said the call is recorded.
    assert "kaydedilmektedir" in says[2]
    rec = root.find("Start/Recording")
    assert rec.get("recordingStatusCallback").endswith("/voice/recording")
    gather = root.find("Gather")
    assert gather.get("numDigits") == "1" and gather.get("actionOnEmptyResult") == "true"
    assert [el.text for el in gather] == [TR("question")]


def test_invalid_key_plays_invalid_then_short_reprompt(caller):
    c = caller()
    turn = c.press(c.dial(), "5")
    root = ET.fromstring(turn.twiml)
    assert root[0].tag == "Say" and root[0].text == TR("invalid")
    assert [el.text for el in root.find("Gather")] == [TR("question_short")]


def test_silence_reprompts(caller):
    c = caller()
    turn = c.press(c.dial(), "")
    gather = ET.fromstring(turn.twiml).find("Gather")
    assert [el.text for el in gather] == [TR("no_entry"), TR("question_short")]


def test_repeat_plays_the_notice_again_without_a_second_recording(caller):
    c = caller()
    turn = c.press(c.dial(), "9")
    root = ET.fromstring(turn.twiml)
    assert [el.text for el in root if el.tag == "Say"] == [TR("notice_intro"), TR("notice_body")]
    assert root.find("Start") is None
    assert [el.text for el in root.find("Gather")] == [TR("question")]


def test_english_notice_and_question(caller, live_app):
    c = caller()
    turn = c.press(c.dial(), "0")
    root = ET.fromstring(turn.twiml)
    assert [el.text for el in root if el.tag == "Say"] == [EN("notice_intro"), EN("notice_body")]
    assert all(el.get("language") == "en-US" for el in root.iter("Say"))
    last = c.press(turn, "1")
    assert EN("confirm_granted") in texts(last)


def test_hang_up_during_the_notice_keeps_the_call_and_records_no_consent(caller, live_app):
    c = caller()
    c.dial()
    c.status("ringing", sequence=0)
    c.status("in-progress", sequence=1)
    c.status("completed", sequence=2, duration=17)
    data = show(live_app.app, c.call_sid)
    assert data["consent"] is None and data["consents"] == []
    assert data["status"] == "completed"
    assert data["duration"] == 17
    assert data["started_at"] and data["answered_at"] and data["ended_at"]
    assert data["from"] == "+905321234567"
    types = [e["type"] for e in data["events"]]
    assert "status.completed" in types and "hangup" in types


def test_consents_export_jsonl_and_csv(caller, live_app):
    # Three people: from one number, the second call's "2" would withdraw the first's grant.
    for n, keys in enumerate((["1"], ["2"], ["t", "t", "t"])):
        caller(from_number=f"+90532123456{n}").run(keys)
    runner = live_app.app.test_cli_runner()
    out = runner.invoke(cli, ["consents", "export", "--format", "jsonl"])
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.output.splitlines()]
    assert [r["decision"] for r in rows] == ["granted", "declined", "no_input"]
    assert set(rows[0]) >= {"call_sid", "phone", "purpose", "channels", "decision", "digits",
                            "language", "notice_version", "flow_version", "captured_at",
                            "agent_id"}
    out = runner.invoke(cli, ["consents", "export", "--format", "csv"])
    table = list(csv.DictReader(io.StringIO(out.output)))
    assert [r["decision"] for r in table] == ["granted", "declined", "no_input"]
    assert json.loads(table[0]["channels"]) == ["ARAMA", "MESAJ", "EPOSTA"]
    out = runner.invoke(cli, ["consents", "export", "--since", "2999-01-01"])
    assert out.exit_code == 0 and out.output == ""


def test_calls_show_unknown_call_exits_non_zero(runner):
    result = runner.invoke(cli, ["calls", "show", "CAdoesnotexist", "--json"])
    assert result.exit_code != 0
    assert "Unknown call" in result.output


def test_simulate_prints_the_call_in_the_order_heard(runner):
    result = runner.invoke(cli, ["simulate", "--in-process", "--digits", "1"])
    assert result.exit_code == 0, result.output
    lines = [ln.strip() for ln in result.output.splitlines()]
    heard = [ln.removeprefix("caller hears: ") for ln in lines]
    intro, question = heard.index(TR("notice_intro")), heard.index(TR("question"))
    # Recording starts right after the sentence that says the call is recorded.
    assert "kaydedil" in TR("notice_intro") and lines[intro + 1] == "(recording starts)"
    assert lines.count("(recording starts)") == 1 and intro < question
    assert lines[question + 1] == "caller presses: 1"
    assert f"caller hears: {TR('confirm_granted')}" in lines
    assert lines[-2].startswith("Call ended: hangup after ") and lines[-1] == "Decision: granted"
