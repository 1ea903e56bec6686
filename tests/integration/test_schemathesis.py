"""schemathesis against the served OpenAPI document (/static/openapi.yaml), with an admin,
an agent and no token: every check passes.

The run is deterministic (a fixed seed, a bounded number of examples, no example
database), so a failure here is the same failure on every machine.
"""

from __future__ import annotations

import pytest
import requests
import schemathesis
import yaml
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events

from tests.support.auditor import make_user
from tests.support.transfer import twilio

from .conftest import LiveServer

__all__ = ["twilio"]  # a fixture: the fake Twilio REST API the app's transfers go to

# 422 joins the statuses that schema-valid data may get: GET /api/consents with `until` not
# after `since`, a rule between two parameters that JSON Schema cannot state.
CONFIG = """
seed = 20261130
[generation]
mode = "all"
max-examples = 15
deterministic = true
database = "none"
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429"]
[phases.stateful]
enabled = false
"""

DOCUMENT = "/static/openapi.yaml"
ROLES = ["admin", "agent", "anonymous"]


@pytest.fixture
def server(twilio, app_config):
    """The app over real HTTP, its transfers going to the fake Twilio. Rate limits are off:
    they would cut the run short with 429s (they have tests of their own)."""
    app_config["RATELIMIT_ENABLED"] = False
    live = LiveServer(app_config).start()
    yield live
    live.stop()


def load(live: LiveServer, token: str | None):
    """The document the server serves, fetched over HTTP, with the role's token."""
    r = requests.get(live.url + DOCUMENT, timeout=10)
    assert r.status_code == 200
    config = SchemathesisConfig.from_str(f'base-url = "{live.url}"\n' + CONFIG)
    schema = schemathesis.openapi.from_dict(yaml.safe_load(r.text), config=config)
    if token:
        schema.config.headers = {"Authorization": f"Bearer {token}"}
    schema.location = live.url + DOCUMENT
    return schema


def failures(schema) -> list[str]:
    """Every failed check and every error of a whole schemathesis run, as text."""
    found = []
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.status == Status.FAILURE:
                        info = check.failure_info
                        found.append(f"{event.recorder.label}: {check.name}: "
                                     f"{info.failure.title}\n{info.failure.message}\n"
                                     f"{info.code_sample}")
        elif isinstance(event, events.NonFatalError | events.FatalError):
            found.append(f"{type(event).__name__}: {event.info.format()}")
    return found


@pytest.mark.parametrize("role", ROLES)
def test_api_matches_its_document(server, role):
    token = make_user(server.app, f"schemathesis-{role}", role) if role != "anonymous" else None
    problems = failures(load(server, token))
    assert not problems, "\n\n".join(dict.fromkeys(problems))

