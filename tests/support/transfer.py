"""Helpers for the transfer tests: the fake Twilio wired into the app, accounts, requests."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from ivr.adapters.simulate import parse_twiml
from ivr.services.accounts import add_user
from ivr.storage.transfer_models import Transfer
from ivr.web.current import session
from tests.integration.conftest import AUTH_TOKEN
from tests.support.fake_twilio import FakeTwilio

ACCOUNT = "AC" + "1" * 32  # the conftest app's TWILIO_ACCOUNT_SID
QUEUE = {"type": "queue", "name": "sales"}


@pytest.fixture(autouse=True)
def twilio(app_config):
    """The fake Twilio REST API, and the app pointed at it (before the app is built).

    Autouse in every test module that imports it: the app's REST calls go to it.
    """
    fake = FakeTwilio(account_sid=ACCOUNT, auth_token=AUTH_TOKEN).start()
    app_config["TWILIO_API_URL"] = fake.url
    app_config["TWILIO_TIMEOUT"] = 5
    yield fake
    fake.stop()


def make_user(app, name: str, role: str) -> tuple[str, str]:
    """Create an account (English chosen: the pages' tests check English words); returns
    (its id as agent_id, its bearer token)."""
    with app.app_context():
        s = session()
        with s.begin():
            user, secret = add_user(s, name, role)
            user.language = "en"
        return str(user.id), secret


def auth(token: str, key: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {token}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return headers


def post_transfer(client, token: str, key: str | None, body) -> tuple[int, dict, dict]:
    """POST /api/transfers through the Flask test client; (status, JSON, headers)."""
    data = body if isinstance(body, str) else json.dumps(body)
    r = client.post("/api/transfers", data=data, headers=auth(token, key),
                    content_type="application/json")
    return r.status_code, r.get_json(), r.headers


def get_transfer(client, token: str, transfer_id: str) -> tuple[int, dict]:
    r = client.get(f"/api/transfers/{transfer_id}", headers=auth(token))
    return r.status_code, r.get_json()


def follow(caller, url: str):
    """Fetch the URL Twilio was given, as Twilio does for the redirected call."""
    reply = caller.signed_post(url, caller.params())
    assert reply.status == 200, reply.body
    assert "xml" in reply.content_type
    turn = parse_twiml(url, reply.body)
    caller.turns.append(turn)
    return turn


def transfers(app) -> list[Transfer]:
    """Every stored transfer."""
    with app.app_context():
        s = session()
        with s.begin():
            return list(s.scalars(select(Transfer).order_by(Transfer.requested_at)))


def texts(turn) -> list[str]:
    return [h.text for h in turn.heard]
