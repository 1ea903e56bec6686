"""ivr/web/ holds views and HTTP concerns only: no SQL and no ORM query in it. Queries live
in ivr/services/ (or ivr/storage/), which a page and a CLI command call alike."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ivr

WEB = Path(ivr.__file__).parent / "web"
# SQL builders a query is written with.
SQL_NAMES = {"select", "text", "insert", "update", "delete", "func", "and_", "or_", "exists",
             "union", "literal_column"}
# Session methods that run a statement or touch rows.
RUNS_SQL = {"execute", "scalars", "scalar", "query"}
WRITES_ROWS = {"add", "add_all", "delete", "merge", "flush"}
SESSION_NAMES = {"s", "session", "db", "db_session"}


def queries_in(source: str) -> list[str]:
    """Each SQL or ORM query the module's code holds, as `line: what`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
            found += [f"{node.lineno}: imports sqlalchemy's {a.name}" for a in node.names
                      if a.name in SQL_NAMES]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            attr, target = node.func.attr, node.func.value
            receiver = target.id if isinstance(target, ast.Name) else (
                target.func.id if isinstance(target, ast.Call)
                and isinstance(target.func, ast.Name) else "")
            model_get = (attr == "get" and len(node.args) == 2
                         and isinstance(node.args[0], ast.Name) and node.args[0].id[:1].isupper())
            if attr in RUNS_SQL or model_get or (attr in WRITES_ROWS
                                                 and receiver in SESSION_NAMES):
                found.append(f"{node.lineno}: .{attr}(...)")
    return found


def test_the_detector_sees_queries():
    source = ("from sqlalchemy import select\n"
              "def f(s):\n"
              "    s.execute(x)\n    s.get(Call, 'CA1')\n    s.add(row)\n"
              "    db_session().scalars(q)\n    {}.get('k', 1)\n")
    assert queries_in(source) == ["1: imports sqlalchemy's select", "3: .execute(...)",
                                  "4: .get(...)", "5: .add(...)", "6: .scalars(...)"]


THIN = sorted(str(p.relative_to(WEB)) for p in WEB.rglob("*.py"))


@pytest.mark.parametrize("path", THIN)
def test_no_query_in_the_web_layer(path):
    assert queries_in((WEB / path).read_text(encoding="utf-8")) == [], (
        f"ivr/web/{path} queries the database; move the query to ivr/services/")

