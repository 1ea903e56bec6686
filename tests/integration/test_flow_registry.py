"""The flow and notice registry over HTTP on both databases: every version a call ran,
its use and notices as stored, its Graphviz diagram, and a diff of two versions."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select

from ivr import create_app
from ivr.adapters.simulate import Caller, flask_transport
from ivr.storage.models import Consent, FlowRun
from ivr.web.current import database
from tests.support.auditor import audio_dir, auditor, parse_html, place_call, rendered_audio

from .conftest import AUTH_TOKEN, require_tools

__all__ = ["audio_dir", "auditor", "rendered_audio"]  # fixtures, so pytest finds them

ROOT = Path(__file__).resolve().parents[2]
NEW_GOODBYE = "Aradığınız için teşekkürler. <Hoşça kalın> & \"iyi günler\"."


def changed_flow(tmp_path: Path) -> Path:
    """The consent flow with one prompt reworded and one node added before the exit."""
    doc = yaml.safe_load((ROOT / "flows" / "consent.yaml").read_text(encoding="utf-8"))
    doc["prompts"]["goodbye"]["tr"] = NEW_GOODBYE
    doc["prompts"]["survey"] = {"tr": "Kısa bir anket.", "en": "A short survey."}
    for name in ("confirm_granted", "confirm_declined", "confirm_withdrawn", "confirm_no_input"):
        doc["nodes"][name]["next"] = "survey"
    doc["nodes"]["survey"] = {"type": "play", "prompts": ["survey"], "next": "done"}
    path = tmp_path / "changed" / "consent.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def two_versions(app, app_config, local_caller, tmp_path):
    """Calls under the shipped flow, then under a changed one (same database)."""
    place_call(local_caller, ["1"], from_number="+905321234567")
    place_call(local_caller, ["0", "2"], from_number="+905339876543")
    later = create_app({**app_config, "FLOW": str(changed_flow(tmp_path)),
                        "FLOWS_DIR": str(tmp_path / "changed")})
    caller = Caller(later.config["PUBLIC_URL"], AUTH_TOKEN,
                    flask_transport(later.test_client()), from_number="+905301112233")
    caller.run(["1"])
    old = app.extensions["ivr_flows"].default.version
    new = later.extensions["ivr_flows"].default.version
    database(later).engine.dispose()
    assert old != new
    return old, new, caller.call_sid


def stored_use(app, version: str) -> dict:
    s = database(app).sessionmaker()
    try:
        lo, hi, n = s.execute(select(func.min(FlowRun.created_at), func.max(FlowRun.created_at),
                                     func.count(FlowRun.call_sid.distinct()))
                              .where(FlowRun.flow_version == version)).one()
        notices = {(lang, nv) for lang, nv in s.execute(
            select(Consent.language, Consent.notice_version)
            .where(Consent.flow_version == version))}
        return {"first": lo, "last": hi, "calls": n, "notices": notices}
    finally:
        s.close()


def get(client, url: str, status: int = 200):
    r = client.get(url)
    assert r.status_code == status, r.get_data(as_text=True)[:500]
    return parse_html(r.get_data(as_text=True))


def test_the_registry_lists_every_version_with_its_use_and_notices(app, auditor, two_versions):
    old, new, _ = two_versions
    doc = get(auditor, "/auditor/flows")
    rows = {tr.get("data-version"): tr for tr in doc.find("table", id="versions")
            .findall("tr", data_version=True)}
    assert set(rows) == {old, new}
    assert list(rows) == [new, old]  # newest first
    for version, tr in rows.items():
        use = stored_use(app, version)
        assert int(tr.find("td", **{"class": "num calls"}).get("data-count")) == use["calls"]
        assert tr.find("td", **{"class": "first-use"}).find("time").get("datetime")[:19] == \
            use["first"].strftime("%Y-%m-%dT%H:%M:%S")
        assert tr.find("td", **{"class": "last-use"}).find("time").get("datetime")[:19] == \
            use["last"].strftime("%Y-%m-%dT%H:%M:%S")
        shown = {(n.get("data-language"), n.get("data-notice"))
                 for n in tr.findall("div", **{"class": "notice"})}
        assert shown == use["notices"]
    assert stored_use(app, old)["calls"] == 2
    assert {lang for lang, _ in stored_use(app, old)["notices"]} == {"tr", "en"}


def test_a_version_page_draws_the_stored_flow(app, auditor, two_versions):
    require_tools("dot", what="the flow diagram test")
    _, new, _ = two_versions
    doc = get(auditor, f"/auditor/flows/{new[:12]}")
    assert doc.find("code", id="full-version").text == new
    svg = doc.find("section", id="graph").find("svg")
    assert svg is not None
    titles = {t.text for g in svg.findall("g", **{"class": "node"}) for t in g.findall("title")}
    flow = yaml.safe_load((ROOT / "flows" / "consent.yaml").read_text(encoding="utf-8"))
    assert titles == {*flow["nodes"], "survey", "start"}
    edges = [t.text for g in svg.findall("g", **{"class": "edge"}) for t in g.findall("title")]
    assert "consent->confirm_granted" in edges
    labels = " ".join(t.text for t in svg.findall("text"))
    assert "key 1 → granted" in labels and "no valid key → no_input" in labels
    goodbye = doc.find("tr", data_prompt="goodbye", data_language="tr")
    assert NEW_GOODBYE in goodbye.text


def test_the_diff_shows_changed_prompts_and_nodes_side_by_side(auditor, two_versions):
    old, new, _ = two_versions
    doc = get(auditor, f"/auditor/flows/diff?a={old}&b={new[:10]}")
    goodbye = doc.find("tr", data_prompt="goodbye", data_language="tr")
    assert goodbye.get("data-state") == "changed"
    left, right = goodbye.findall("td")
    assert "Bizi aradığınız için teşekkür ederiz" in left.text and NEW_GOODBYE in right.text
    assert doc.find("tr", data_prompt="goodbye", data_language="en").get("data-state") == "same"
    assert doc.find("tr", data_prompt="survey", data_language="tr").get("data-state") == "added"
    assert doc.find("tr", data_node="survey").get("data-state") == "added"
    granted = doc.find("tr", data_node="confirm_granted")
    assert granted.get("data-state") == "changed"
    assert "next → done" in granted.findall("td")[0].text
    assert "next → survey" in granted.findall("td")[1].text
    assert doc.find("tr", data_node="consent").get("data-state") == "same"
    # Audio heard: the greeting was played from the same rendered file in both versions.
    greeting = doc.find("tr", data_prompt="greeting", data_language="tr")
    codes = [c.get("title") for c in greeting.findall("code") if c.get("title")]
    assert len(codes) == 2 and codes[0] == codes[1]


@pytest.mark.parametrize("query", ["a=zzz&b=abc", "a=0123456789ab&b=0123456789ab"])
def test_a_bad_diff_request_is_explained(auditor, two_versions, query):
    doc = get(auditor, f"/auditor/flows/diff?{query}", status=400)
    assert "is not a stored flow version" in doc.find("main").text


def test_an_unknown_version_is_a_404(auditor):
    get(auditor, "/auditor/flows/0123456789ab", status=404)
    get(auditor, "/auditor/flows/not-hex", status=404)


def test_the_call_page_links_to_its_flow_version(auditor, two_versions):
    _, new, sid = two_versions
    doc = get(auditor, f"/auditor/calls/{sid}")
    link = doc.find("a", **{"class": "flow-version"})
    assert link.get("href") == f"/auditor/flows/{new}"
    get(auditor, link.get("href"))
