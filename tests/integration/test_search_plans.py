"""The auditor's search uses an index for every criterion it offers, at any page.

A schema is filled with enough calls and consents (then ANALYZEd) that PostgreSQL would
read `calls` or `consents` whole if no index served a search; each search the page allows
is run through `search()` as the page runs it, every statement it sends is captured, and
`EXPLAIN` of that statement, with its own parameters, must not hold a sequential scan of
either table. Page 2 and a deep page (a keyset cursor, no OFFSET) are explained too.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import event, text
from werkzeug.datastructures import MultiDict

from ivr import create_app
from ivr.services.auditor.call_search import Cursor, export_subjects, parse_cursor, search
from ivr.storage.db import database
from ivr.web.auditor.search import parse_search
from ivr.web.current import personal_data

from .conftest import AUTH_TOKEN, ROOT

CALLS = 60_000
PHONES = 20_000
DAYS = 120
ALICE = "+905321234567"

FILL = f"""
INSERT INTO calls (call_sid, phone_hmac, phone_enc, direction, status, started_at,
                   created_at, seen_incoming)
SELECT 'CA' || lpad(to_hex(i), 32, '0'),
       CASE WHEN i % {PHONES} = 0 THEN :alice ELSE md5('p' || (i % {PHONES})) END,
       NULL, 'inbound', 'completed',
       CASE WHEN i % 50 = 0 THEN NULL
            ELSE TIMESTAMPTZ '2026-11-30 20:00:00+00' - (i * interval '{DAYS * 86400 // CALLS} s')
       END,
       TIMESTAMPTZ '2026-11-30 20:00:00+00' - (i * interval '{DAYS * 86400 // CALLS} s'),
       true
FROM generate_series(1, {CALLS}) AS i;

INSERT INTO consents (call_sid, phone_hmac, phone_enc, purpose, channels, decision, digits,
                      language, notice_version, flow_version, captured_at, agent_id,
                      transfer_id, source, audio)
SELECT c.call_sid, c.phone_hmac, 'x', 'marketing', '["sms"]',
       (ARRAY['granted', 'granted', 'declined', 'no_input', 'granted', 'withdrawn'])[1 + i % 6],
       '1', CASE WHEN i % 4 = 0 THEN 'en' ELSE 'tr' END, 'n' || (i % 3), 'v' || (i % 5),
       coalesce(c.started_at, c.created_at) + interval '40 s',
       CASE WHEN i % 10 = 0 THEN 'agent' || (i % 7) END,
       CASE WHEN i % 10 = 0 THEN 'TR' || i END, 'ivr', '{{}}'
FROM generate_series(1, {CALLS}) AS i
JOIN calls c ON c.call_sid = 'CA' || lpad(to_hex(i), 32, '0')
WHERE i % 9 <> 0;

-- Withdrawals through the API: consents without a call.
INSERT INTO consents (call_sid, phone_hmac, phone_enc, purpose, channels, decision, digits,
                      captured_at, source, audio, reason)
SELECT NULL, md5('p' || (i * 37 % {PHONES})), 'x', 'marketing', '["sms"]', 'withdrawn', '',
       TIMESTAMPTZ '2026-11-30 20:00:00+00' - (i * interval '1 hour'), 'api', '{{}}', 'asked'
FROM generate_series(1, 300) AS i;
"""

# Every kind of search the page allows, alone and combined (query strings as typed).
SEARCHES = {
    "phone": {"phone": ALICE},
    "call_sid": {"call_sid": "CA" + "0" * 29 + "3e8"},
    "dates": {"since": "2026-10-01", "until": "2026-10-31"},
    "since": {"since": "2026-08-10"},
    "until": {"until": "2026-11-20"},
    "decision": {"decision": "granted"},
    "decision_rare": {"decision": "withdrawn"},
    "decision_none": {"decision": "none"},
    "phone_decision": {"phone": ALICE, "decision": "granted"},
    "phone_dates": {"phone": ALICE, "since": "2026-09-01", "until": "2026-11-30"},
    "dates_decision": {"since": "2026-11-01", "until": "2026-11-07", "decision": "declined"},
    "dates_none": {"since": "2026-11-01", "until": "2026-11-30", "decision": "none"},
    "sid_decision": {"call_sid": "CA" + "0" * 29 + "3e8", "decision": "granted"},
    "consent_days": {"since": "2026-11-01", "until": "2026-11-02", "basis": "consent"},
    "language": {"language": "en"},
    "origin_transfer": {"origin": "transfer"},
    "origin_api": {"origin": "api"},
    "agent": {"agent": "agent3"},
    "flow_notice": {"flow_version": "v2", "notice_version": "n1"},
    "language_dates_decision": {"language": "tr", "since": "2026-11-01",
                                "until": "2026-11-30", "decision": "granted"},
}


@pytest.fixture(scope="module")
def filled(module_database_url, tmp_path_factory):
    """An app on a schema holding CALLS calls, their consents and some call-less ones."""
    tmp = tmp_path_factory.mktemp("plans")
    app = create_app({
        "TESTING": True, "DATABASE_URL": module_database_url,
        "INSTANCE_DIR": str(tmp / "instance"), "AUDIO_DIR": str(tmp),
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "PUBLIC_URL": "http://ivr.test",
        "FLOW": str(ROOT / "flows" / "consent.yaml"), "FLOWS_DIR": str(ROOT / "flows"),
    })
    db = database(app)
    db.create_all()
    with app.app_context(), db.sessionmaker() as s:
        s.execute(text("SELECT 1"))  # the key check runs now, not inside a captured search
        alice = personal_data().fingerprint(ALICE)
    with db.engine.begin() as conn:
        for statement in FILL.split(";\n"):
            if statement.strip():
                conn.execute(text(statement), {"alice": alice})
    with db.engine.begin() as conn:
        conn.execute(text("ANALYZE calls"))
        conn.execute(text("ANALYZE consents"))
    yield app
    db.engine.dispose()


def _statements(app, run) -> list[tuple[str, object]]:
    """The SELECTs `run(session)` sends, with their parameters."""
    sent: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT"):
            sent.append((statement, parameters))

    engine = database(app).engine
    event.listen(engine, "before_cursor_execute", capture)
    try:
        with app.app_context(), database(app).sessionmaker() as s:
            run(s)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    return sent


def _scans(node: dict) -> list[tuple[str, str]]:
    """(node type, relation) of every node of a JSON plan."""
    out = [(node["Node Type"], node.get("Relation Name", ""))]
    for child in node.get("Plans", []):
        out += _scans(child)
    return out


def _seq_scans(app, statements) -> list[str]:
    bad = []
    with database(app).engine.connect() as conn:
        for statement, parameters in statements:
            plan = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement,
                                        parameters).scalar()
            plan = plan if isinstance(plan, list) else json.loads(plan)
            nodes = _scans(plan[0]["Plan"])
            if any(kind == "Seq Scan" and rel in ("calls", "consents") for kind, rel in nodes):
                text_plan = "\n".join(r[0] for r in conn.exec_driver_sql(
                    "EXPLAIN " + statement, parameters))
                bad.append(f"{statement}\n{text_plan}")
    return bad


def _criteria(app, query: dict):
    with app.app_context():
        return parse_search(MultiDict(query), personal_data())


@pytest.mark.parametrize("name", sorted(SEARCHES))
def test_every_search_page_uses_an_index(filled, name):
    crit = _criteria(filled, SEARCHES[name])
    pages: list = []

    def run(s):
        first = search(s, crit, limit=50)
        pages.append(first)
        if first.more:
            cursor = parse_cursor(MultiDict(first.next_cursor()))
            pages.append(search(s, crit, limit=50, cursor=cursor))

    statements = _statements(filled, run)
    assert statements, "the search sent no query"
    bad = _seq_scans(filled, statements)
    assert not bad, "a sequential scan of calls or consents:\n\n" + "\n\n".join(bad)


@pytest.mark.parametrize("name", ["dates", "decision", "language", "phone"])
def test_a_deep_page_and_the_export_use_an_index(filled, name):
    crit = _criteria(filled, SEARCHES[name])

    def run(s):
        # A cursor far down the list: what page 1,000 of a long result sends.
        deep = search(s, crit, limit=1000)
        if deep.calls:
            last = deep.calls[-1]
            search(s, crit, limit=50, cursor=Cursor(
                call=(last.started_at or last.created_at, last.call_sid)))
        export_subjects(s, crit)

    bad = _seq_scans(filled, _statements(filled, run))
    assert not bad, "a sequential scan of calls or consents:\n\n" + "\n\n".join(bad)


def test_the_pages_walk_the_whole_result_once_in_order(filled):
    crit = _criteria(filled, {"since": "2026-11-25", "until": "2026-11-30"})
    with filled.app_context(), database(filled).sessionmaker() as s:
        whole = search(s, crit, limit=100_000)
        assert not whole.more and len(whole.calls) > 1000
        walked, loose, cursor = [], [], None
        while True:
            found = search(s, crit, limit=97, cursor=cursor)
            walked += found.call_sids
            loose += [rec.id for rec in found.loose]
            if not found.more:
                break
            cursor = parse_cursor(MultiDict(found.next_cursor()))
    assert walked == whole.call_sids
    assert loose == [rec.id for rec in whole.loose]
    assert len(set(walked)) == len(walked)
