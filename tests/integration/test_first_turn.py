"""A call's first turn, and each turn a gather URL leads to, is planned once and filled in per
call (ivr/services/webhooks.py): what is filled in must be, byte for byte, what planning
that call from scratch gives, for every flow, every key, and a CallSid that is not Twilio's."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from ivr.domain.runs import run_id_for
from ivr.domain.twilio_form import CallFields, GatherInput
from ivr.services import webhooks
from ivr.web.current import current_context

NOW = datetime(2026, 12, 7, 6, 30, 1, 250000, tzinfo=UTC)
SIDS = ("CA" + "0" * 32, "CA" + "f" * 32, "CA" + "1" * 32, 'CA"odd\\sid<&>')


def _from_scratch(ctx, flow, sid, context):
    return orjson.dumps(webhooks._start_plan(
        ctx, flow, sid=sid, run_id=run_id_for(sid, "incoming"), origin_="incoming",
        context=context, language=None, now=NOW))


@pytest.mark.parametrize("context", [{}, {"has_consent": True}])
def test_filled_template_is_the_planned_turn(app, context):
    with app.app_context():
        ctx = current_context()
        for flow in ctx.flows.by_id.values():
            for sid in SIDS:
                filled = orjson.dumps(webhooks._first_turn(
                    ctx, flow, sid=sid, run_id=run_id_for(sid, "incoming"),
                    context=context, now=NOW))
                assert filled == _from_scratch(ctx, flow, sid, context), (flow.id, sid)


def _gather_url(plan: dict) -> tuple[int, str] | None:
    found = re.search(r'action="([^"]+)"', plan["twiml"])
    if not found:
        return None
    query = parse_qs(urlsplit(html.unescape(found.group(1))).query)
    return int(query["step"][0]), query["s"][0]


@pytest.mark.parametrize("digits", ["1", "2", "3", "9", None])
def test_filled_turn_is_the_planned_turn(app, digits):
    with app.app_context():
        ctx = current_context()
        for flow in ctx.flows.by_id.values():
            first = webhooks._start_plan(ctx, flow, sid=SIDS[0], run_id="r", origin_="incoming",
                                         context={}, language=None, now=NOW)
            url = _gather_url(first)
            if url is None:
                continue
            step, token = url
            for sid in SIDS:
                run = run_id_for(sid, "incoming")
                result = GatherInput(CallFields(sid), digits)
                before = webhooks._from_url(ctx, step, token)
                planned = webhooks._turn(ctx, before, run, sid, result, NOW)
                filled = webhooks._planned_turn(ctx, before, run, sid, result, NOW, token)
                assert orjson.dumps(filled[0]) == orjson.dumps(planned[0]), (flow.id, sid)
                assert list(filled[1:5]) == list(planned[1:]), (flow.id, sid, digits)
                assert filled[5] == before.state.to_dict()
