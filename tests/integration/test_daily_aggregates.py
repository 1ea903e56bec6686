"""The daily aggregates: maintained as calls are stored, equal to a rebuild from the calls.

A random history goes through the real webhooks (and the API): calls over several Istanbul
days and three years back, late and out-of-order status callbacks (one across midnight),
hang-ups during the notice, withdrawals in the call and through the API, agent transfers,
then a retention run. The sequencer's pass keeps the aggregates; `db rebuild-aggregates`
counts them again from the calls, and the two must be the same, row for row.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, time, timedelta

import pytest
from sqlalchemy import func, select

from ivr.cli.main import cli
from ivr.domain.times import LOCAL
from ivr.storage.daily_aggregates import (
    AggregateMark,
    DailyConsents,
    DailyHangups,
    DailyNotices,
    DailyRuns,
)
from ivr.storage.db import database
from tests.support.auditor import auditor, parse_html
from tests.support.transfer import ACCOUNT, QUEUE, follow, make_user, post_transfer, twilio

__all__ = ["auditor", "twilio"]  # fixtures, so pytest finds them

NOW = datetime.now(UTC).replace(microsecond=0)
YEAR = timedelta(days=365)


class Clock:
    """The webhooks' clock, set by the test; a second further at each reading."""

    def __init__(self):
        self.at = NOW

    def __call__(self) -> datetime:
        self.at += timedelta(seconds=1)
        return self.at


@pytest.fixture
def clock(app_config):
    c = Clock()
    app_config["CLOCK"] = c
    return c


def tables(app) -> dict[str, list[tuple]]:
    """Every aggregate row, sorted, and how many marks wait."""
    s = database(app).sessionmaker()
    try:
        out = {}
        for model in (DailyConsents, DailyNotices, DailyRuns, DailyHangups):
            cols = [c for c in model.__table__.columns]
            out[model.__tablename__] = sorted(tuple(r) for r in s.execute(select(*cols)))
        out["marks"] = s.scalar(select(func.count()).select_from(AggregateMark))
        return out
    finally:
        s.close()


def cli_ok(runner, *args) -> str:
    result = runner.invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_rebuilt_aggregates_equal_the_maintained_ones(clock, app, client, local_caller, twilio,  # noqa: C901 - one branch per kind of event in the random history
                                                     runner):
    rnd = random.Random(20261207)
    _agent, token = make_user(app, "ayse", "agent")
    granted: list[str] = []  # numbers with a grant, for withdrawals
    late = []  # calls whose status callback comes later

    def caller(number: str | None = None, **kw):
        return local_caller(from_number=number or f"+90532{rnd.randrange(10**7):07d}", **kw)

    days = [NOW - timedelta(days=d) for d in range(6)] + [NOW - 3 * YEAR, NOW - 4 * YEAR]
    for i in range(40):
        # An instant near an Istanbul midnight now and then: one call, two days.
        at = rnd.choice(days)
        if i % 7 == 0:
            midnight = datetime.combine(at.astimezone(LOCAL).date(), time(), LOCAL)
            at = midnight.astimezone(UTC) - timedelta(seconds=rnd.randrange(2, 30))
        clock.at = at
        kind = rnd.choice(("grant", "decline", "english", "silence", "hangup", "out_of_order",
                           "late", "withdraw_in_call", "withdraw_by_api", "transfer",
                           "hidden"))
        if kind == "grant":
            c = caller()
            c.run(["1"])
            granted.append(c.from_number)
        elif kind == "decline":
            caller().run(["2"])
        elif kind == "english":
            caller().run(["0", rnd.choice("12")])
        elif kind == "silence":
            caller().run(["t", "t", "t"])
        elif kind == "hangup":
            c = caller()
            c.dial()
            c.elapsed = rnd.uniform(0.5, 40)
            c.status("completed", duration=int(c.elapsed) + 1)
        elif kind == "out_of_order":
            c = caller()
            assert c.status("ringing", sequence=1).status == 200
            assert c.status("initiated", sequence=0).status == 200
            c.press(c.dial(), rnd.choice("12"))
            assert c.status("completed", sequence=3, duration=20).status == 200
            assert c.status("in-progress", sequence=2).status == 200
        elif kind == "late":
            c = caller()
            turn = c.dial()
            if rnd.random() < 0.5:
                c.press(turn, "1")
            late.append(c)
        elif kind == "withdraw_in_call" and granted:
            caller(rnd.choice(granted)).run([rnd.choice("32")])
        elif kind == "withdraw_by_api" and granted:
            r = client.post("/api/consents/withdrawals",
                            data=json.dumps({"phone": rnd.choice(granted),
                                             "reason": "asked on the phone"}),
                            content_type="application/json",
                            headers={"Authorization": f"Bearer {token}"})
            assert r.status_code in (200, 201), r.get_data(as_text=True)
        elif kind == "transfer":
            c = local_caller(account_sid=ACCOUNT)
            twilio.calls[c.call_sid] = "in-progress"
            status, doc, _ = post_transfer(client, token, f"k{i}", {"call_sid": c.call_sid,
                                                                   "return_to": QUEUE})
            assert status == 201, doc
            turn = follow(c, twilio.updates()[-1].form["Url"])
            key = rnd.choice(("1", "2", "h"))
            if key == "h":
                c.hang_up()
            else:
                c.press(turn, key)
        elif kind == "hidden":
            caller("Anonymous").run([rnd.choice(("1", "h"))])
        # A late status callback arrives now and then, a day or more after its call.
        if late and rnd.random() < 0.3:
            clock.at += timedelta(days=1)
            c = late.pop(0)
            c.elapsed = rnd.uniform(1, 30)
            assert c.status("completed", duration=int(c.elapsed) + 1).status == 200
    for c in late:
        assert c.status("completed", duration=7).status == 200
    cli_ok(runner, "retention", "run")
    cli_ok(runner, "audit", "integrate", "--once")  # the sequencer's pass counts marked days

    maintained = tables(app)
    assert maintained["marks"] == 0
    assert len({r[0] for r in maintained["daily_consents"]}) >= 4  # several days
    assert {r[3] for r in maintained["daily_consents"]} >= {"inbound", "transfer", "api"}
    assert {r[1] for r in maintained["daily_consents"]} >= {"granted", "withdrawn"}
    assert maintained["daily_hangups"]
    out = cli_ok(runner, "db", "rebuild-aggregates")
    assert "aggregate rows" in out
    assert tables(app) == maintained


def test_a_page_counts_a_day_still_marked_from_the_calls(app, auditor, local_caller):
    """Between two passes a day is marked: the dashboard counts it from the stored rows."""
    app.config["AUDIT_SEQUENCER"] = "off"  # no pass: the day stays marked
    for keys in (["1"], ["2"], ["1"]):
        local_caller(from_number=f"+9053212345{len(keys)}{keys[0]}").run(keys)
    assert tables(app)["marks"] > 0
    assert tables(app)["daily_consents"] == []
    today = datetime.now(LOCAL).date()
    r = auditor.get(f"/auditor/dashboard?since={today:%d.%m.%Y}&until={today:%d.%m.%Y}")
    assert r.status_code == 200
    doc = parse_html(r.get_data(as_text=True))
    row = doc.find("table", id="series").find("tr", data_value="all")
    counts = {td.get("data-decision") or "all": int(td.get("data-count"))
              for td in row.findall("td", data_count=True)}
    assert counts["granted"] == 2 and counts["declined"] == 1


def test_the_hangups_list_pages_by_keyset(app, auditor, local_caller):
    """205 hang-ups: page 1 shows the newest 200 and links to page 2 by the last one shown
    (no OFFSET); together the pages hold every call once."""
    sids = set()
    for n in range(205):
        c = local_caller(from_number=f"+9053300{n:05d}")
        c.dial()
        c.hang_up()
        sids.add(c.call_sid)
    today = datetime.now(LOCAL).date()
    r = auditor.get(f"/auditor/dashboard/hangups?since={today:%d.%m.%Y}"
                    f"&until={today:%d.%m.%Y}&language=tr")
    assert r.status_code == 200
    first = parse_html(r.get_data(as_text=True))
    page1 = [tr.get("data-call") for tr in first.findall("tr", data_call=True)]
    assert len(page1) == 200
    summary = first.find("p", id="hangups-summary").text
    assert "205" in summary
    [link] = [a for a in first.findall("a") if a.get("rel") == "next"]
    assert "before=" in link.get("href") and "offset" not in link.get("href")
    r = auditor.get(link.get("href").replace("&amp;", "&"))
    second = parse_html(r.get_data(as_text=True))
    page2 = [tr.get("data-call") for tr in second.findall("tr", data_call=True)]
    assert len(page2) == 5
    assert set(page1) | set(page2) == sids and not set(page1) & set(page2)
    assert not [a for a in second.findall("a") if a.get("rel") == "next"]
    assert [a for a in second.findall("a") if a.get("rel") == "first"]
