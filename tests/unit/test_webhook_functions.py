"""The webhook functions' one declaration: the SQL's arguments, the call's keys and the
migrations' frozen copies all come from it."""

from __future__ import annotations

import ast
import re
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ivr.storage import webhook_functions as fn

VERSIONS = Path(fn.__file__).parent / "migrations" / "versions"


def test_the_newest_migration_freezes_the_live_functions():
    """A change to the SQL or a declaration needs a migration with its own copy."""
    frozen = sorted(VERSIONS.glob("*.sql"))
    newest = [p for p in frozen if not p.name.endswith(".down.sql")
              and "ivr_webhook_incoming" in p.read_text("utf-8")][-1]
    assert newest.read_text("utf-8") == fn.create_sql(), (
        f"{newest.name} is not the live SQL: add a migration with a frozen copy of "
        "webhook_functions.create_sql()")


def test_the_newest_migration_freezes_the_live_aggregate_triggers():
    """A change to the daily aggregates' triggers needs a migration with its own copy."""
    from ivr.storage import daily_aggregates

    frozen = [p for p in sorted(VERSIONS.glob("*.sql"))
              if "ivr_mark_day" in p.read_text("utf-8")]
    assert frozen and frozen[-1].read_text("utf-8") == daily_aggregates.create_sql(), (
        "add a migration with a frozen copy of daily_aggregates.create_sql()")


def test_the_frozen_audit_guard_is_the_live_one():
    from ivr.storage.audit_store import guard_statements

    frozen = (VERSIONS / "0002_audit_guard.sql").read_text("utf-8")
    assert frozen.split("\n", 2)[2].strip() == guard_statements()[0].strip()


def test_no_migration_imports_a_live_module():
    """A migration means the same thing whatever later releases change: it imports nothing
    of ours (its SQL is its own frozen copy)."""
    for path in sorted(VERSIONS.glob("*.py")):
        tree = ast.parse(path.read_text("utf-8"))
        for node in ast.walk(tree):
            modules = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                       else [a.name for a in node.names] if isinstance(node, ast.Import)
                       else [])
            assert not any(m == "ivr" or m.startswith("ivr.") for m in modules), path.name


@pytest.mark.parametrize("declaration", fn.DECLARATIONS, ids=lambda d: d.FUNCTION)
def test_every_declared_argument_is_unpacked_and_used(declaration):
    sql = fn.create_sql()
    body = sql[sql.index(f"FUNCTION {declaration.FUNCTION}("):]
    body = body[:body.index("END $$;")]
    for f in fields(declaration):
        assert re.search(rf"\bp_{f.name}\b", body.split("json_to_record", 1)[1]), (
            f"{declaration.FUNCTION} declares {f.name} but never uses it")
    used = set(re.findall(r"\bp_(\w+)", body.split("json_to_record", 1)[1]))
    assert used <= {f.name for f in fields(declaration)}, used - {
        f.name for f in fields(declaration)}


def test_a_call_must_supply_exactly_the_declared_keys():
    base = {"token": None, "path": "/voice/recording", "now": datetime.now(UTC),
            "sid": "CA1", "label": "ok", "account": None, "recording": "RE1",
            "status": "completed", "key": "k", "data": {}, "order": {}, "duration": None,
            "channels": None, "source": None, "track": None, "start": None, "url": None,
            "error": None, "body": "{}"}
    fn.Recording(**base)
    with pytest.raises(TypeError):
        fn.Recording(**{k: v for k, v in base.items() if k != "body"})
    with pytest.raises(TypeError):
        fn.Recording(**base, extra=1)
