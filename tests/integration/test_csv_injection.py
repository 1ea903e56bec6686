"""CSV exports open in a spreadsheet as data: a cell that would start a formula (`=`, `+`,
`-`, `@`, tab, CR) is written with a leading apostrophe (OWASP, "CSV Injection"). The
values come in through signed webhooks, as an attacker would send them: a CallSid and keys
that are formulas."""

from __future__ import annotations

import csv
import io

from ivr.cli.main import cli
from tests.support.auditor import auditor, csrf_token  # noqa: F401 - a fixture

FORMULA = '=HYPERLINK("http://evil/","x")'
STARTS = ("=", "+", "-", "@", "\t", "\r")
PHONE = "+905321234567"


def _calls(local_caller) -> None:
    """A formula as the CallSid, and keys that are formulas (three invalid: no_input)."""
    local_caller(call_sid=FORMULA).run(["@SUM(1)", "-2", "+3"])
    local_caller(call_sid="-CA-minus", from_number="+905321234568").run(["1"])


def _check(rows: list[dict]) -> None:
    assert rows, "nothing exported"
    for row in rows:
        for name, value in row.items():
            assert not (value or "").startswith(STARTS), (name, value)
    by_sid = {r["call_sid"]: r for r in rows}
    got = by_sid["'" + FORMULA]
    assert got["digits"] == "'@SUM(1)-2+3" and got["decision"] == "no_input"
    assert got["phone"] == "'" + PHONE  # an E.164 number starts with +: kept as text
    assert by_sid["'-CA-minus"]["decision"] == "granted"


def test_the_cli_csv_export_neutralises_formulas(app, local_caller):
    _calls(local_caller)
    out = app.test_cli_runner().invoke(cli, ["consents", "export", "--format", "csv"])
    assert out.exit_code == 0, out.output
    _check(list(csv.DictReader(io.StringIO(out.output))))
    # JSON lines carry the values as they are.
    out = app.test_cli_runner().invoke(cli, ["consents", "export", "--format", "jsonl"])
    assert FORMULA.replace('"', '\\"') in out.output


def test_the_auditor_csv_export_neutralises_formulas(app, auditor, local_caller):  # noqa: F811
    _calls(local_caller)
    rows = []
    for decision in ("no_input", "granted"):
        r = auditor.post("/auditor/export.csv", data={
            "csrf_token": csrf_token(auditor, "/auditor/"), "decision": decision})
        assert r.status_code == 200, r.get_data(as_text=True)[:300]
        rows += list(csv.DictReader(io.StringIO(r.get_data(as_text=True))))
    _check(rows)
