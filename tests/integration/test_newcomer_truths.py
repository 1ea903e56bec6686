"""Smaller truths a newcomer trips on: a transferred call's start reads the same on every
surface, and comparing flow versions says what it needs."""

from __future__ import annotations

import json

from ivr.domain import times
from tests.support.audit import invoke
from tests.support.auditor import audio_dir, auditor, parse_html, place_call, rendered_audio
from tests.support.transfer import twilio

from .test_evidence_agreement import transferred_call

__all__ = ["audio_dir", "auditor", "rendered_audio", "twilio"]  # fixtures


def test_a_transferred_calls_start_reads_the_same_everywhere(app, auditor, local_caller, twilio):
    sid = transferred_call(app, auditor, local_caller, twilio)
    doc = json.loads(invoke(app, "calls", "show", sid, "--json").output)
    [first] = [ev for ev in doc["timeline"] if ev["kind"] == "call.started"]
    assert doc["started_at"] == first["at"] and doc["answered_at"] == first["at"]
    assert doc["started_source"] == "flow"
    text = invoke(app, "calls", "show", sid).output
    when = times.text(first["at"])
    assert f"  started   {when} (when the call reached the consent flow" in text
    assert f"  answered  {when} (when the call reached the consent flow" in text
    assert f"{when}  Call started" in text
    page = parse_html(auditor.get(f"/auditor/calls/{sid}").get_data(as_text=True))
    [started_on_timeline] = [li.find("div", **{"class": "when"}) for li in
                             page.findall("li", data_kind="call.started")]
    for field in ("started", "answered"):
        dd = page.find("dd", id=field)
        assert dd.find("time").text == started_on_timeline.find("time").text, field
        assert "when the call reached the consent flow" in dd.text


def test_an_inbound_call_keeps_twilios_start(app, auditor, local_caller):
    sid = place_call(local_caller, ["1"]).call_sid
    doc = json.loads(invoke(app, "calls", "show", sid, "--json").output)
    assert doc["started_source"] == "twilio"
    assert "reached the consent flow" not in invoke(app, "calls", "show", sid).output


def test_comparing_needs_two_chosen_versions(app, auditor, local_caller):
    for query in ("", "?a=", "?b=", "?a=&b="):
        r = auditor.get(f"/auditor/flows/diff{query}")
        assert r.status_code == 400
        assert "Two versions must be chosen to compare" in r.get_data(as_text=True)


def test_with_one_version_nothing_is_offered_to_compare(app, auditor, local_caller):
    place_call(local_caller, ["1"])
    page = parse_html(auditor.get("/auditor/flows").get_data(as_text=True))
    assert page.findall("input", type="radio") == []
    assert page.find("form", id="compare").find("button") is None
    assert "nothing to compare it with" in page.find("p", id="one-version").text
