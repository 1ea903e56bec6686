"""The consent menu's truth table, cell by cell, through signed webhooks over real HTTP.

For each prior status (the same on every channel) and each outcome of the call, the
caller hears exactly the prompts the table names, exactly the record it names is
written, the status per channel is what it says, and İYS (the local İYS stand-in, fed
by `iys export --push`) receives and then holds what it says. The Markdown table in the
documentation is checked against the same rows, so the table and the tests cannot drift.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pytest

from ivr.cli.main import cli
from ivr.domain.flow import load_flow
from tests.integration.conftest import ROOT, verified_chain_length
from tests.support.fake_iys import FakeIys

FLOW = load_flow(ROOT / "flows" / "consent.yaml")
PHONE = "+905321234567"
HIDDEN_FROM = "+266696687"  # Twilio's From for a withheld number (ANONYMOUS on a keypad)
HIDDEN_PRIOR = "any (the number is hidden, `Anonymous` or not a valid phone number)"
CHANNELS = ("ARAMA", "MESAJ", "EPOSTA")
TOKEN = "iys-truth-token"
DOCS = (ROOT / "README.md",)
HEADER = "| Before the call | The caller |"

# How the call under test ends: keys for Caller.run ('t' silence, 'h' hang up).
OUTCOMES = {
    "1": ("presses 1", ["1"]),
    "2": ("presses 2", ["2"]),
    "3": ("presses 3", ["3"]),
    "3-not-offered": ("presses 3 (not offered), then hangs up", ["3", "h"]),
    "invalid": ("presses invalid keys 3 times (5, 7, *)", ["5", "7", "*"]),
    "silence": ("stays silent 3 times", ["t", "t", "t"]),
    "hangup": ("hangs up before choosing", ["h"]),
}
Q, QS = "question", "question_short"
W, WS = "question_withdraw", "question_withdraw_short"


@dataclass(frozen=True)
class Cell:
    """One row of the truth table."""

    prior: str  # none | granted | declined | withdrawn, on every channel
    outcome: str  # a key of OUTCOMES
    heard: tuple[str, ...]  # prompt ids heard after the question, in order
    record: str | None  # "decision digits", or None when nothing is written
    after: str  # the status on every channel afterwards
    iys_gets: str | None  # the status sent for every channel, or None
    iys_note: str  # why İYS gets that (the export's decision)
    iys_holds: str | None  # what İYS holds for every channel afterwards
    hidden: bool = False  # the call comes from HIDDEN_FROM, not PHONE

    @property
    def menu(self) -> str:
        """The question the caller hears first."""
        if self.hidden:
            return "hidden_caller"
        return W if self.prior == "granted" else Q


def _cells() -> list[Cell]:
    rows = []
    none_like = {
        # prior: (İYS holds before, İYS note for a decline, what a decline leaves İYS holding)
        "none": (None, "nothing: a first İYS record cannot be RET (H175)", None),
        "declined": (None, "nothing: a first İYS record cannot be RET (H175)", None),
        "withdrawn": ("RET", "nothing: İYS already holds RET (H174)", "RET"),
    }
    for prior, (holds, decline_note, decline_holds) in none_like.items():
        keep = prior
        rows += [
            Cell(prior, "1", ("confirm_granted", "goodbye"), "granted 1", "granted", "ONAY",
                 "ONAY", "ONAY"),
            Cell(prior, "2", ("confirm_declined", "goodbye"), "declined 2", "declined", None,
                 decline_note, decline_holds),
            Cell(prior, "3-not-offered", ("invalid", QS), None, keep, None,
                 "nothing: no decision", holds),
            Cell(prior, "invalid", ("invalid", QS, "invalid", QS, "confirm_no_input", "goodbye"),
                 "no_input 57*", keep, None, "nothing: silence is not a decision", holds),
            Cell(prior, "silence", ("no_entry", QS, "no_entry", QS, "confirm_no_input",
                                    "goodbye"),
                 "no_input (no keys)", keep, None, "nothing: silence is not a decision", holds),
            Cell(prior, "hangup", (), None, keep, None, "nothing: no decision", holds),
        ]
    rows += [
        Cell("granted", "1", ("confirm_granted", "goodbye"), "granted 1", "granted", None,
             "nothing: İYS already holds ONAY", "ONAY"),
        Cell("granted", "2", ("confirm_withdrawn", "goodbye"), "withdrawn 2", "withdrawn",
             "RET", "RET", "RET"),
        Cell("granted", "3", ("confirm_withdrawn", "goodbye"), "withdrawn 3", "withdrawn",
             "RET", "RET", "RET"),
        Cell("granted", "invalid", ("invalid", WS, "invalid", WS, "confirm_no_input_kept",
                                    "goodbye"),
             "no_input 57*", "granted", None, "nothing: silence is not a decision", "ONAY"),
        Cell("granted", "silence", ("no_entry", WS, "no_entry", WS, "confirm_no_input_kept",
                                    "goodbye"),
             "no_input (no keys)", "granted", None, "nothing: silence is not a decision",
             "ONAY"),
        Cell("granted", "hangup", (), None, "granted", None, "nothing: no decision", "ONAY"),
        # Nobody's consent: whatever an earlier caller with the same hidden From pressed,
        # no choice is asked for, none is recorded, and no withdrawal is offered.
        Cell(HIDDEN_PRIOR, "1", ("hidden_caller_end", "goodbye"), None, "none", None,
             "nothing: no number to hold a choice", None, hidden=True),
    ]
    return rows


CELLS = _cells()


# --- the Markdown table ------------------------------------------------------------


def _md_row(c: Cell) -> str:
    heard = ", ".join(f"`{p}`" for p in c.heard) or "nothing more"
    record = f"`{c.record}`" if c.record else "none"
    gets = f"{c.iys_gets} ×3" if c.iys_gets else c.iys_note
    holds = c.iys_holds or "nothing"
    return (f"| {c.prior} | {OUTCOMES[c.outcome][0]} | `{c.menu}`, then {heard} | {record} "
            f"| {c.after} | {gets} | {holds} |")


def markdown_table() -> str:
    """The truth table as README Markdown (`python -m tests.test_consent_truth_table`)."""
    lines = [f"{HEADER} The caller hears | Record written | Status afterwards (each channel) "
             "| İYS gets | İYS holds afterwards |",
             "|---|---|---|---|---|---|---|"]
    return "\n".join(lines + [_md_row(c) for c in CELLS])


def prompt_table() -> str:
    """Every prompt the truth table names, with its Turkish and English words."""
    ids = [Q, W]
    for c in CELLS:
        for p in (c.menu, *c.heard):
            if p not in ids:
                ids.append(p)
    lines = ["| Prompt id | Turkish (what the caller hears) | English (after pressing 0) |",
             "|---|---|---|"]
    lines += [f"| `{p}` | {FLOW.text(p, 'tr')} | {FLOW.text(p, 'en')} |" for p in ids]
    return "\n".join(lines)


def test_the_documented_table_is_the_tested_table():
    doc = next((p for p in DOCS if p.is_file() and HEADER in p.read_text(encoding="utf-8")),
               None)
    assert doc is not None, f"no truth table in {', '.join(str(p) for p in DOCS)}"
    text = doc.read_text(encoding="utf-8")
    assert markdown_table() in text, "regenerate: python -m tests.test_consent_truth_table"
    assert prompt_table() in text, "regenerate: python -m tests.test_consent_truth_table"


def test_every_prior_and_outcome_has_a_row():
    pairs = {(c.prior, c.outcome) for c in CELLS if not c.hidden}
    assert len(pairs) == len(CELLS) - 1
    for prior in ("none", "declined", "withdrawn", "granted"):
        wanted = {"1", "2", "invalid", "silence", "hangup"}
        wanted |= {"3"} if prior == "granted" else {"3-not-offered"}
        assert {o for p, o in pairs if p == prior} == wanted


# --- running a cell ------------------------------------------------------------------


@pytest.fixture
def fake_iys():
    server = FakeIys(TOKEN).start()
    yield server
    server.stop()


@pytest.fixture
def app_config(app_config, tmp_path):
    app_config["IYS_TOKEN"] = TOKEN
    app_config["IYS_OUT_DIR"] = str(tmp_path / "iys-out")
    return app_config


def run_cli(app, *args) -> str:
    result = app.test_cli_runner().invoke(cli, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def push_to_iys(app, fake: FakeIys) -> list[dict]:
    """`iys export --push`: the records İYS received in this export."""
    before = len(fake.requests)
    run_cli(app, "iys", "export", "--push", fake.url)
    return [rec for req in fake.requests[before:] for rec in req.get("batch", [])]


def statuses(app) -> dict[str, str]:
    data = json.loads(run_cli(app, "consents", "status", PHONE, "--json"))
    return {c: data[c]["status"] for c in CHANNELS}


def holds(fake: FakeIys) -> dict[str, str | None]:
    return {c: (fake.state.get((PHONE, c)) or (None,))[0] for c in CHANNELS}


def call(caller, keys: list[str], from_number: str = PHONE):
    """One whole call from PHONE with these keys; the caller's turns hold what was heard."""
    c = caller(from_number=from_number)
    c.run(keys)
    return c


def prior_state(prior: str, caller, app, fake: FakeIys) -> None:
    """Bring PHONE to `prior` on every channel, with İYS told, through calls."""
    if prior == HIDDEN_PRIOR:  # an earlier caller with the same hidden From pressed 1
        call(caller, ["1"], HIDDEN_FROM)
        assert push_to_iys(app, fake) == []
        return
    if prior == "none":
        return
    call(caller, ["1" if prior in ("granted", "withdrawn") else "2"])
    push_to_iys(app, fake)
    if prior == "withdrawn":
        call(caller, ["3"])
        push_to_iys(app, fake)
    assert statuses(app) == dict.fromkeys(CHANNELS, prior)


BY_TEXT = {FLOW.text(p, "tr"): p for p in FLOW.prompts}


def prompt_ids(turns) -> list[str]:
    """The prompt ids of everything heard in `turns` (all in Turkish)."""
    out = []
    for turn in turns:
        for h in turn.heard:
            assert h.text in BY_TEXT, f"a sentence no prompt says: {h.text!r}"
            out.append(BY_TEXT[h.text])
    return out


@pytest.mark.parametrize("cell", CELLS, ids=[f"{c.prior}-{c.outcome}" for c in CELLS])
def test_truth_table_cell(cell: Cell, caller, live_app, fake_iys):
    assert len(BY_TEXT) == len(FLOW.prompts)  # every Turkish prompt is told apart by its words
    app = live_app.app
    prior_state(cell.prior, caller, app, fake_iys)
    held_before = holds(fake_iys)

    c = call(caller, OUTCOMES[cell.outcome][1], HIDDEN_FROM if cell.hidden else PHONE)

    # What the caller hears: greeting and notice, the question for their status, then
    # exactly the cell's prompts.
    first, *rest = c.turns
    assert prompt_ids([first]) == ["greeting", "language_offer", "notice_intro", "notice_body",
                                   cell.menu]
    assert prompt_ids(rest) == list(cell.heard)
    assert c.turns[-1].end == ("hangup" if cell.heard[-1:] == ("goodbye",) else None)

    # The consent record written by this call, as `calls show --json` lists it.
    shown = json.loads(run_cli(app, "calls", "show", c.call_sid, "--json"))
    records = [f"{r['decision']} {r['digits'] or '(no keys)'}" for r in shown["consents"]]
    assert records == ([cell.record] if cell.record else [])

    # The status per channel afterwards.
    assert statuses(app) == dict.fromkeys(CHANNELS, cell.after)

    # What İYS is sent (the export's own decisions first, then what the stand-in received).
    pending = json.loads(run_cli(app, "iys", "pending", "--json"))
    sent = push_to_iys(app, fake_iys)
    if cell.iys_gets:
        assert sorted((r["type"], r["status"]) for r in sent) == sorted(
            (ch, cell.iys_gets) for ch in CHANNELS)
        assert all(r["recipient"] == PHONE for r in sent)
        assert {p["action"] for p in pending} == {"export"}
    else:
        assert sent == []
        assert {p["action"] for p in pending} <= {"skipped"}
        code = re.search(r"\((H\d{3})[);]", cell.iys_note)
        if code:  # a decision İYS would refuse is recorded as not exported, with the code
            assert len(pending) == 3 and all(code.group(1) in p["reason"] for p in pending)
        elif "ONAY" in cell.iys_note:
            assert len(pending) == 3 and all("already holds ONAY" in p["reason"]
                                             for p in pending)
        else:
            assert pending == []
    assert holds(fake_iys) == dict.fromkeys(CHANNELS, cell.iys_holds)
    if not cell.iys_gets:
        assert holds(fake_iys) == held_before
    assert verified_chain_length(app) > 0


def test_english_read_back_for_a_consenter_is_true(caller, live_app, fake_iys):
    """The same rules in English: a consenter who says nothing hears their choice stands."""
    app = live_app.app
    prior_state("granted", caller, app, fake_iys)
    c = call(caller, ["0", "t", "t", "t"])
    last = c.turns[-1]
    assert [h.text for h in last.heard] == [FLOW.text("confirm_no_input_kept", "en"),
                                            FLOW.text("goodbye", "en")]
    assert c.turns[1].heard[-1].text == FLOW.text(W, "en")
    assert statuses(app) == dict.fromkeys(CHANNELS, "granted")
    assert push_to_iys(app, fake_iys) == []
    c = call(caller, ["0", "2"])
    assert FLOW.text("confirm_withdrawn", "en") in [h.text for h in c.turns[-1].heard]
    assert statuses(app) == dict.fromkeys(CHANNELS, "withdrawn")
    assert {r["status"] for r in push_to_iys(app, fake_iys)} == {"RET"}


if __name__ == "__main__":
    print(markdown_table() + "\n\n" + prompt_table())
