"""A caller whose `From` names no real phone number: Twilio's placeholders for a withheld,
restricted, unknown, unavailable or blocked caller id, `Anonymous`, a SIP address, or any
other text. They hear the notice, are told why no choice can be recorded, and are never
asked; nothing is ever tied to the value they sent. The call itself is still
transaction-security data: its times, status and recording are kept."""

from __future__ import annotations

import csv
import io
import json

import pytest
from sqlalchemy import func, select

from ivr.cli.main import cli
from ivr.domain.flow import load_flow
from ivr.storage.models import Call, Consent, Recording
from ivr.web.current import database
from tests.integration.conftest import ROOT, verified_chain_length
from tests.support.transfer import QUEUE, auth, follow, make_user, twilio  # noqa: F401

FLOW = load_flow(ROOT / "flows" / "consent.yaml")
BY_TEXT = {FLOW.text(p, lang): p for p in FLOW.prompts for lang in FLOW.languages}
NOTICE = ["greeting", "language_offer", "notice_intro", "notice_body"]

# Twilio's placeholders (help.twilio.com 223179988): ANONYMOUS, UNAVAILABLE, UNKNOWN
# (both spellings seen), RESTRICTED, BLOCKED on a keypad; then what else a From can hold.
HIDDEN = ["+266696687", "+86282452253", "+8656696", "+8656696687", "+7378742833",
          "+2562533", "Anonymous", "anonymous", "sip:a@b.c", "client:agent-7",
          "<script>alert(1)</script>", '=HYPERLINK("http://evil/","x")', "+9053212345",
          "266696687", ""]


def run_cli(app, *args) -> str:
    result = app.test_cli_runner().invoke(cli, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def heard(turns) -> list[str]:
    return [BY_TEXT[h.text] for t in turns for h in t.heard]


def consents(app) -> int:
    with database(app).sessionmaker() as s:
        return s.scalar(select(func.count()).select_from(Consent))


@pytest.mark.parametrize("number", HIDDEN)
def test_a_hidden_caller_hears_the_notice_and_why_nothing_is_recorded(
        local_caller, app, number):
    c = local_caller(from_number=number, recording_callbacks=True)
    last = c.run(["1"])
    first, *rest = c.turns
    assert heard([first]) == [*NOTICE, "hidden_caller"]
    assert heard(rest) == ["hidden_caller_end", "goodbye"] and last.end == "hangup"
    assert consents(app) == 0
    # The call is still transaction-security data, and names nobody.
    with database(app).sessionmaker() as s:
        call = s.get(Call, c.call_sid)
        assert call.status == "completed" and call.ended_at and call.duration
        assert call.phone_hmac is None and call.phone_enc is None
        assert s.scalar(select(Recording.status).where(Recording.call_sid == c.call_sid)) \
            == "completed"
    shown = json.loads(run_cli(app, "calls", "show", c.call_sid, "--json"))
    assert shown["consents"] == [] and shown["status"] == "completed", shown
    assert verified_chain_length(app) > 0


@pytest.mark.parametrize("keys", [["2"], ["3"], ["t"], ["5"], ["9", "1"]])
def test_no_key_and_no_silence_is_ever_a_choice(local_caller, app, keys):
    c = local_caller(from_number="Anonymous")
    c.run(keys)
    assert heard(c.turns[-1:])[-2:] == ["hidden_caller_end", "goodbye"]
    assert consents(app) == 0


def test_the_next_anonymous_caller_is_not_offered_anyone_s_withdrawal(local_caller, app):
    for _ in range(2):
        c = local_caller(from_number="Anonymous")
        c.run(["1"])
        assert heard(c.turns[:1])[-1] == "hidden_caller"
        assert "question_withdraw" not in heard(c.turns)
    assert consents(app) == 0
    # A real number on the same line is asked as always.
    c = local_caller()
    c.run(["1"])
    assert heard(c.turns[:1])[-1] == "question" and consents(app) == 1


def test_in_english_too(local_caller, app):
    c = local_caller(from_number="+266696687")
    c.run(["0", "1"])
    assert c.turns[1].heard[-1].text == FLOW.text("hidden_caller", "en")
    assert [h.text for h in c.turns[2].heard] == [FLOW.text("hidden_caller_end", "en"),
                                                  FLOW.text("goodbye", "en")]
    assert consents(app) == 0


def test_nothing_reaches_iys_or_the_consent_export(local_caller, app):
    for number in ("+266696687", "sip:a@b.c", '=HYPERLINK("http://evil/","x")'):
        local_caller(from_number=number).run(["1"])
    assert json.loads(run_cli(app, "iys", "pending", "--json")) == []
    rows = list(csv.DictReader(io.StringIO(run_cli(app, "consents", "export",
                                                   "--format", "csv"))))
    assert rows == []


def test_a_hidden_caller_sent_into_the_flow_by_an_agent_goes_back_without_a_choice(
        app, client, local_caller, twilio):  # noqa: F811 - the fixture
    _agent, bearer = make_user(app, "ayse", "agent")
    moved = local_caller(from_number="Anonymous", account_sid="AC" + "1" * 32)
    moved.dial()
    twilio.calls[moved.call_sid] = "in-progress"
    r = client.post("/api/transfers", json={"call_sid": moved.call_sid, "return_to": QUEUE},
                    headers=auth(bearer, "key-hidden"))
    assert r.status_code == 201, r.get_data(as_text=True)
    turn = follow(moved, twilio.updates()[-1].form["Url"])
    assert heard([turn])[-1] == "hidden_caller"
    back = moved.press(turn, "1")
    assert heard([back]) == ["hidden_caller_end", "return_queue"]
    assert back.end == "enqueue:sales"
    doc = client.get(r.headers["Location"], headers={"Authorization": f"Bearer {bearer}"}).json
    assert doc["status"] == "returned" and doc["decision"] is None
    assert consents(app) == 0
