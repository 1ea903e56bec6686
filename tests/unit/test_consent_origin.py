"""The consent origin rule, one ordered table: each origin's condition is its own rule and
no earlier one, so the search's conditions never overlap and agree with the CASE."""

from __future__ import annotations

import pytest
from sqlalchemy.dialects import postgresql

from ivr.services.consent_origin import ORIGINS, origin_condition, origin_expr


def _sql(clause) -> str:
    return str(clause.compile(dialect=postgresql.dialect(),
                              compile_kwargs={"literal_binds": True}))


def test_each_origin_is_its_rule_and_no_earlier_one():
    assert {o: _sql(origin_condition(o)) for o in ORIGINS} == {
        "transfer": "consents.transfer_id IS NOT NULL",
        "api": "consents.transfer_id IS NULL AND consents.call_sid IS NULL",
        "inbound": "consents.transfer_id IS NULL AND consents.call_sid IS NOT NULL"}


def test_the_case_tries_the_rules_in_the_same_order():
    assert _sql(origin_expr()) == (
        "CASE WHEN (consents.transfer_id IS NOT NULL) THEN 'transfer' "
        "WHEN (consents.call_sid IS NULL) THEN 'api' ELSE 'inbound' END")


def test_an_unknown_origin_is_refused():
    with pytest.raises(ValueError, match="no consent origin 'moon'"):
        origin_condition("moon")
