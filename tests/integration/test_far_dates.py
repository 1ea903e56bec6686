"""Far dates on every page and API that reads one: each follows the API's input rules
(ivr/domain/inputs.py), so a day far out is clamped or refused with a message, never a
500. The pages are crawled: every GET route without a path parameter, with far `since`
and `until` in both ways a day is written."""

from __future__ import annotations

import pytest

from tests.support.auditor import login, make_user

FAR = [("25.12.9999", "31.12.9999"), ("01.01.0001", "02.01.0001"), ("31.12.9999", ""),
       ("", "01.01.0001"), ("9999-12-31", "9999-12-31"), ("0001-01-01", "0001-01-01"),
       ("01.01.0001", "31.12.9999"), ("30.12.9999", "30.12.9999")]
STEPS = ["day", "week"]


@pytest.fixture
def admin(app, client):
    secret = make_user(app, "root", "admin")
    assert login(client, "root", secret).status_code == 302
    return client, secret


def _get_routes(app) -> list[str]:
    return sorted({r.rule for r in app.url_map.iter_rules()
                   if "GET" in r.methods and not r.arguments
                   and r.rule not in ("/metrics", "/readyz")})  # no dates; 503 without audio


def test_every_page_answers_far_dates_without_failing(app, admin):
    client, secret = admin
    routes = _get_routes(app)
    assert {"/auditor/dashboard", "/auditor/dashboard/hangups", "/auditor/",
            "/api/consents"} <= set(routes)
    bearer = {"Authorization": f"Bearer {secret}"}
    for path in routes:
        for since, until in FAR:
            for step in STEPS:
                query = {"since": since, "until": until, "step": step, "language": "tr",
                         "phase": "before"}
                r = client.get(path, query_string=query, headers=bearer)
                assert r.status_code < 500, (path, since, until, step, r.status_code)


@pytest.mark.parametrize("since,until,status", [
    ("25.12.9999", "31.12.9999", 200),  # the open end clamped to the last day held
    ("30.12.9999", "30.12.9999", 200),
    ("31.12.9999", "31.12.9999", 400),  # a start after the last day matches nothing
    ("01.01.0001", "02.01.0001", 200),  # the first day clamped to the first held
])
def test_the_dashboard_and_its_hang_up_lists_clamp_or_refuse(admin, since, until, status):
    client, _ = admin
    for step in STEPS:
        r = client.get("/auditor/dashboard", query_string={"since": since, "until": until,
                                                            "step": step})
        assert r.status_code == status, r.get_data(as_text=True)[:300]
        r = client.get("/auditor/dashboard/hangups",
                       query_string={"since": since, "until": until, "language": "tr"})
        assert r.status_code == status
    if status == 400:
        r = client.get("/auditor/dashboard", query_string={"since": since, "until": until})
        assert "Use a day from 02.01.0001 to 30.12.9999." in r.get_data(as_text=True)
