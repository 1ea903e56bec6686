"""Focused tests of the dashboard's pure parts: the period, the SVG chart, the notice
phase of a hang-up, and the escaping of flow-graph labels (through Graphviz itself)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import date

import pytest

from ivr.domain.flow.model import Flow, Node, Option
from ivr.services.notice_dropoff import AFTER, BEFORE, phase_at
from ivr.web.auditor.dashboard import Period, PeriodError, parse_period
from ivr.web.auditor.flowgraph import dot_to_svg, flow_dot, quote
from ivr.web.auditor.svgchart import Bar, Series, nice_top, stacked_bars
from tests.integration.conftest import require_tools

SVG = "{http://www.w3.org/2000/svg}"
TODAY = date(2026, 3, 18)  # a Wednesday


@pytest.mark.parametrize("args, want", [
    ({}, Period(date(2026, 2, 17), TODAY, "day")),
    ({"since": "01.03.2026", "until": "15.03.2026"}, Period(date(2026, 3, 1), date(2026, 3, 15))),
    ({"since": "2026-03-01", "step": "week"}, Period(date(2026, 3, 1), TODAY, "week")),
])
def test_parse_period(args, want):
    assert parse_period(args, TODAY) == want


@pytest.mark.parametrize("args, field", [
    ({"since": "32.01.2026"}, "since"),
    ({"until": "2026-13-01"}, "until"),
    ({"step": "hour"}, "step"),
    ({"since": "18.03.2026", "until": "17.03.2026"}, "until"),
    ({"since": "01.01.2025", "until": "31.12.2026"}, "since"),
])
def test_parse_period_names_the_bad_field(args, field):
    with pytest.raises(PeriodError) as e:
        parse_period(args, TODAY)
    assert field in e.value.errors


def test_weeks_start_on_monday_and_cover_the_period_exactly():
    weeks = Period(date(2026, 3, 4), date(2026, 3, 23), "week").buckets()
    assert weeks == [(date(2026, 3, 4), date(2026, 3, 8)), (date(2026, 3, 9), date(2026, 3, 15)),
                     (date(2026, 3, 16), date(2026, 3, 22)), (date(2026, 3, 23), date(2026, 3, 23))]


@pytest.mark.parametrize("value, top", [(0, 1), (1, 1), (3, 5), (7, 10), (11, 20), (480, 500)])
def test_nice_top(value, top):
    assert nice_top(value) == top


def test_the_chart_is_valid_svg_with_escaped_labels_and_linked_segments():
    series = [Series("granted", "granted", "#1b7a3d"), Series("declined", "declined", "#b3261e")]
    bars = [Bar('<script>"x"&', {"granted": 3, "declined": 1},
                {"granted": "/auditor/?decision=granted&language=tr"}),
            Bar("empty", {}, {})]
    svg = ET.fromstring(str(stacked_bars("Outcomes & more", series, bars)))
    rects = [r for r in svg.iter(f"{SVG}rect") if r.get("data-count")]
    assert [(r.get("class"), r.get("data-count")) for r in rects] == [
        ("seg seg-granted", "3"), ("seg seg-declined", "1")]
    assert float(rects[0].get("height")) == pytest.approx(190 * 3 / 5)
    links = list(svg.iter(f"{SVG}a"))
    assert [a.get("href") for a in links] == ["/auditor/?decision=granted&language=tr"]
    texts = [t.text for t in svg.iter(f"{SVG}text")]
    assert '<script>"x"&' in texts and "style" not in str(stacked_bars("t", series, bars))
    assert svg.find(f"{SVG}title").text == "Outcomes & more"


def _play(prompt, words=10):
    return {"kind": "play", "prompt": prompt, "language": "tr", "text": " ".join(["söz"] * words)}


TURN = [_play("greeting", 5), _play("intro", 10), _play("body", 25),
        {"kind": "noticeplayed", "prompts": ["intro", "body"], "language": "tr"},
        {"kind": "gather", "prompts": [_play("question", 20)], "timeout": 6, "node": "ask"}]


@pytest.mark.parametrize("elapsed, phase", [
    (-0.5, BEFORE), (1.9, BEFORE), (2.1, "intro"), (5.9, "intro"), (6.1, "body"),
    (15.9, "body"), (16.1, AFTER), (60, AFTER),
])
def test_phase_at_times_said_prompts_by_their_words(elapsed, phase):
    assert phase_at(TURN, {}, elapsed, False, {}) == phase


def test_phase_at_times_played_prompts_by_their_audio_file():
    heard = {"greeting": "a" * 64}
    assert phase_at(TURN, heard, 9.0, False, {"a" * 64: 10.0}) == BEFORE
    assert phase_at(TURN, heard, 11.0, False, {"a" * 64: 10.0}) == "intro"


def test_a_turn_after_the_notice_is_after_it():
    later = [{"kind": "gather", "prompts": [_play("question_short", 5)], "timeout": 6,
              "node": "ask"}]
    assert phase_at(later, {}, 1.0, True, {}) == AFTER
    assert phase_at(later, {}, 1.0, False, {}) == BEFORE


@pytest.mark.parametrize("text, dot", [
    ("plain", '"plain"'),
    ('say "hi"', '"say \\"hi\\""'),
    ("back\\slash", '"back\\\\slash"'),
    ("two\nlines", '"two\\nlines"'),
])
def test_quote(text, dot):
    assert quote(text) == dot


def test_labels_that_look_like_dot_or_svg_stay_text():
    require_tools("dot", what="the flow diagram escaping test")
    # Flow files only allow plain ids; the escaping must not rely on that.
    hello = Node('he"llo', "menu", prompts=("hi",),
                 options={"1": Option("1", "bye", when='x"] ; evil [label="')})
    bye = Node("bye\\N", "exit", action="dial", number="<b>&\\N")
    flow = Flow("tricky", "0" * 64, "tricky.yaml", ("tr",), "tr", 'he"llo', "marketing",
                ("ARAMA",), {"hi": {"tr": "Merhaba"}}, {hello.id: hello, bye.id: bye}, {}, {})
    svg = ET.fromstring(dot_to_svg(flow_dot(flow)))
    texts = " ".join(t.text or "" for t in svg.iter(f"{SVG}text"))
    assert 'if x"] ; evil [label="' in texts
    assert "dial <b>&\\N" in texts and 'he"llo' in texts and "bye\\N" in texts
