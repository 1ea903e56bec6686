"""Flow files: load-time validation, `flows check`, start-up refusal, and the pure engine."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from ivr.domain.flow import InvalidFlow, load_flow
from ivr.domain.flow import engine as e
from tests.unit.conftest import ROOT

SOURCE = (ROOT / "flows" / "consent.yaml").read_text(encoding="utf-8")


def variant(tmp_path, edit) -> str:
    """Write a copy of the consent flow changed by `edit(doc)`; return its path."""
    doc = yaml.safe_load(SOURCE)
    edit(doc)
    path = tmp_path / "flow.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return str(path)


def _del(d, *keys):
    for k in keys[:-1]:
        d = d[k]
    del d[keys[-1]]


BROKEN = [
    pytest.param(lambda d: d["nodes"]["consent"]["options"]["1"].update(next="nowhere"),
                 "consent", "unknown node 'nowhere'", id="unknown-target"),
    pytest.param(lambda d: d["nodes"].update(orphan={"type": "play", "prompts": ["goodbye"],
                                                     "next": "done"}),
                 "orphan", "unreachable", id="unreachable-node"),
    pytest.param(lambda d: d["nodes"].update(loop={"type": "play", "prompts": ["goodbye"],
                                                   "next": "loop"}) or
                 d["nodes"]["consent"]["options"].update({"8": {"next": "loop"}}),
                 "loop", "never reaches an exit", id="no-way-out"),
    pytest.param(lambda d: _del(d, "prompts", "question", "en"),
                 None, "prompt 'question' has no text in en", id="missing-language"),
    pytest.param(lambda d: d["nodes"]["greeting"].update(next="consent"),
                 "consent", "before the notice", id="consent-before-notice"),
    pytest.param(lambda d: d["nodes"]["consent"]["on_exhausted"].update(decision="granted"),
                 "consent", "never be 'granted'", id="silence-as-consent"),
    pytest.param(lambda d: d["nodes"]["consent"].update(bogus=1),
                 "consent", "Additional properties", id="schema-unknown-field"),
    pytest.param(lambda d: d["nodes"]["consent"]["options"].update({"12": {"next": "done"}}),
                 "consent", "does not match", id="schema-bad-key"),
    pytest.param(lambda d: d["nodes"]["consent"].update(prompts=["nope"]),
                 "consent", "prompt 'nope' is not defined", id="undefined-prompt"),
    pytest.param(lambda d: d.update(start="nowhere"), None, "start node", id="bad-start"),
    pytest.param(lambda d: d["prompts"]["question"]["tr"][1].update(lang="de"),
                 None, "prompt 'question' (tr) has a part in undeclared language 'de'",
                 id="part-in-undeclared-language"),
    pytest.param(lambda d: d["prompts"]["question"]["tr"][1].update(text="  "),
                 None, "prompts/question/tr", id="part-without-words"),
    pytest.param(lambda d: d["prompts"]["question"]["tr"][1].update(voice="x"),
                 None, "prompts/question/tr", id="part-with-unknown-field"),
    pytest.param(lambda d: d["prompts"]["question"].update(tr=[]),
                 None, "prompts/question/tr", id="prompt-with-no-parts"),
    pytest.param(lambda d: d["nodes"]["notice"].update(next="greeting"),
                 "notice", "back to the start node", id="second-entry"),
]


@pytest.mark.parametrize("edit,node,problem", BROKEN)
def test_invalid_flows_are_refused_naming_file_node_and_problem(tmp_path, edit, node, problem):
    path = variant(tmp_path, edit)
    with pytest.raises(InvalidFlow) as info:
        load_flow(path)
    message = str(info.value)
    assert message.startswith(path)
    assert problem in message
    if node:
        assert f"node '{node}'" in message
    assert "\n" not in message


def test_duplicate_menu_keys_are_refused(tmp_path):
    text = SOURCE.replace('      "2": {decision: declined, next: confirm_declined}\n',
                          '      "2": {decision: declined, next: confirm_declined}\n'
                          '      2: {next: done}\n')
    path = tmp_path / "dup.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidFlow, match="duplicate key '2'"):
        load_flow(path)


def test_yes_no_on_off_stay_strings(tmp_path):
    text = SOURCE.replace("title: KVKK aydınlatma ve pazarlama açık rızası", "title: no")
    path = tmp_path / "f.yaml"
    path.write_text(text, encoding="utf-8")
    assert load_flow(path).document["title"] == "no"


def test_flow_version_is_the_hash_of_canonical_content(tmp_path):
    base = load_flow(ROOT / "flows" / "consent.yaml")
    reordered = variant(tmp_path, lambda d: None)  # same content, different formatting
    assert load_flow(reordered).version == base.version
    changed = variant(tmp_path, lambda d: d["prompts"]["goodbye"].update(tr="Hoşça kalın."))
    assert load_flow(changed).version != base.version


def test_engine_is_pure():
    src = "".join((ROOT / "ivr" / "domain" / "flow" / f).read_text() for f in
                  ("engine.py", "loader.py", "model.py"))
    for forbidden in ("flask", "sqlalchemy", "twilio"):
        assert f"import {forbidden}" not in src and f"from {forbidden}" not in src


def test_engine_never_counts_hangup_or_silence_as_consent():
    flow = load_flow(ROOT / "flows" / "consent.yaml")
    state, _ = e.start(flow)
    for inputs in ([e.HangUp()], [e.Timeout()] * 3, [e.Digits("7")] * 3):
        s = state
        for inp in inputs:
            s, actions = e.advance(flow, s, inp)
        assert s.decision in (None, "no_input")
        assert not any(isinstance(a, e.Decide) and a.decision == "granted" for a in actions)


def test_configurable_retries(tmp_path):
    path = variant(tmp_path, lambda d: d["nodes"]["consent"].update(max_timeouts=1,
                                                                    max_invalid=2))
    flow = load_flow(path)
    s, _ = e.start(flow)
    s, actions = e.advance(flow, s, e.Timeout())
    assert s.decision == "no_input"
    s, _ = e.start(flow)
    s, _ = e.advance(flow, s, e.Digits("5"))
    assert s.decision is None
    s, _ = e.advance(flow, s, e.Digits("5"))
    assert s.decision == "no_input"


def test_next_step_enqueue_is_configurable(tmp_path):
    def edit(d):
        d["nodes"]["done"] = {"type": "exit", "prompts": ["goodbye"], "action": "enqueue",
                              "queue": "agents"}
    flow = load_flow(variant(tmp_path, edit))
    s, _ = e.start(flow)
    s, actions = e.advance(flow, s, e.Digits("1"))
    assert actions[-1] == e.Enqueue("agents")


def test_flow_file_example_in_docs_is_minimal_and_valid(tmp_path):
    path = tmp_path / "mini.yaml"
    path.write_text(textwrap.dedent("""
        id: mini
        languages: [tr]
        start: notice
        prompts:
          notice: {tr: "Bilgilendirme."}
          ask: {tr: "Onay için 1."}
          hidden: {tr: "Numaranız gizli; tercih kaydedilemez."}
          bye: {tr: "Güle güle."}
        nodes:
          notice: {type: notice, prompts: [notice], next: known}
          known: {type: branch, if: hidden_caller, then: hidden, else: ask}
          hidden: {type: play, prompts: [hidden], next: bye}
          ask:
            type: menu
            prompts: [ask]
            options:
              "1": {decision: granted, next: bye}
            on_exhausted: {decision: no_input, next: bye}
          bye: {type: exit, prompts: [bye], action: hangup}
    """), encoding="utf-8")
    assert load_flow(path).id == "mini"


def test_a_flow_that_would_ask_a_hidden_caller_is_refused(tmp_path):
    def edit(d):
        d["nodes"]["notice_details"]["next"] = "ask"  # past the hidden_caller branch
        del d["nodes"]["caller_known"]
        del d["nodes"]["hidden_caller"]
        del d["nodes"]["hidden_caller_end"]
    with pytest.raises(InvalidFlow, match="a caller whose number is hidden could be asked"):
        load_flow(variant(tmp_path, edit))


def test_a_hidden_caller_hears_the_notice_and_is_never_asked():
    flow = load_flow(ROOT / "flows" / "consent.yaml")
    s, actions = e.start(flow, {"hidden_caller": True})
    played = [a.prompt for a in actions if isinstance(a, e.Play)]
    assert played == ["greeting", "language_offer", "notice_intro", "notice_body"]
    assert actions[-1].node == "hidden_caller" and s.notice_heard
    for keys in ("1", "2", "3", "5", None):
        _, after = e.advance(flow, s, e.Digits(keys) if keys else e.Timeout())
        assert not any(isinstance(a, e.Decide) for a in after)
        assert [a.prompt for a in after if isinstance(a, e.Play)] == ["hidden_caller_end",
                                                                      "goodbye"]
        assert after[-1] == e.Hangup()
    s2, after = e.advance(flow, s, e.Digits("0"))
    assert s2.language == "en" and after[-1].node == "hidden_caller"


def test_the_engine_refuses_a_decision_for_a_hidden_caller():
    flow = load_flow(ROOT / "flows" / "consent.yaml")
    s, _ = e.start(flow)  # a known caller at the question...
    s = e.State.from_dict({**s.to_dict(), "context": {"hidden_caller": True}})
    with pytest.raises(e.EngineError, match="hidden number cannot decide"):
        e.advance(flow, s, e.Digits("1"))  # ...whose context says hidden: never a decision


def test_a_prompt_may_hold_parts_in_several_languages():
    flow = load_flow(ROOT / "flows" / "consent.yaml")
    tr, en = flow.parts("question", "tr")
    assert (tr.lang, en.lang, en.text) == ("tr", "en", "For English, press 0.")
    # The prompt's text (what records, notice versions and <Say> use) joins the parts.
    assert flow.text("question", "tr") == f"{tr.text} {en.text}"
    assert [p.lang for p in flow.parts("language_offer", "tr")] == ["en"]
    # A plain string is one part in the prompt's own language, its text exactly as written.
    [only] = flow.parts("greeting", "tr")
    assert (only.lang, only.text) == ("tr", flow.text("greeting", "tr"))


def test_the_english_offer_is_an_english_part_in_every_turkish_menu():
    flow = load_flow(ROOT / "flows" / "consent.yaml")
    for node in flow.nodes.values():
        if node.type == "menu" and "0" in node.options:
            for pid in node.prompts:
                assert flow.parts(pid, "tr")[-1].lang == "en", pid
