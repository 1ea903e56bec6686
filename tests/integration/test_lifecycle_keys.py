"""Personal data at rest: phone numbers are not readable in the database, and a lost or
wrong key fails loudly (one clear line naming the key), never silently."""

from __future__ import annotations

import re
from pathlib import Path

from cryptography.fernet import Fernet
from sqlalchemy import inspect, select, text, update

from ivr import create_app
from ivr.storage.models import Consent, Setting
from ivr.web.current import database
from tests.support.lifecycle import PHONE, run_cli, session, token

SECRET_NUMBER = "+905551237788"


def forms(number: str) -> list[bytes]:
    """Every way the number could appear in plain bytes."""
    digits = number.lstrip("+")
    out = []
    for s in (number, digits, digits[2:], digits[-7:]):
        out += [s.encode(), s.encode("utf-16-le")]
    return out


def readable(form: bytes, raw: bytes) -> bool:
    """Whether `form` stands in `raw` as a number of its own. A 7-digit tail also turns up by
    chance inside hex digests, SIDs and Fernet tokens (about once in a few hundred runs), so
    it only counts when no letter or digit touches it; the longer forms count anywhere."""
    if len(form) > 8:
        return form in raw
    return re.search(rb"(?<![0-9A-Za-z])" + re.escape(form) + rb"(?![0-9A-Za-z])", raw) is not None


def fill(app, local_caller, client):
    c = local_caller(from_number=SECRET_NUMBER)
    c.run(["1"])
    agent = token(app, "agent")
    r = client.post("/api/consents/withdrawals", headers={"Authorization": f"Bearer {agent}"},
                    json={"phone": SECRET_NUMBER, "channels": ["MESAJ"], "reason": "istemiyor"})
    assert r.status_code == 201
    run_cli(app, "subject", "request", "open", SECRET_NUMBER, "--kind", "information")
    run_cli(app, "subject", "report", SECRET_NUMBER)
    run_cli(app, "iys", "export", "--out", str(Path(app.config["INSTANCE_DIR"]) / "iys"))


def test_phone_numbers_are_not_readable_at_rest(app, local_caller, client):
    fill(app, local_caller, client)
    # Every column of every table, as the database returns it.
    engine = database(app).engine
    with engine.connect() as conn:
        tables = inspect(conn).get_table_names()
        assert "consents" in tables and "calls" in tables and "subject_requests" in tables
        for table in tables:
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                dump = repr(tuple(row))
                for form in forms(SECRET_NUMBER)[::2]:
                    assert not readable(form, dump.encode()), (table, dump[:200])
    # ...while the application still reads it back with the key.
    assert f"Telefon numarası: {SECRET_NUMBER}" in run_cli(app, "subject", "report",
                                                           SECRET_NUMBER).output


def other_app(app_config, **keys):
    cfg = dict(app_config)
    cfg.update(keys)
    return create_app(cfg)


def test_a_wrong_data_key_fails_loudly(app, app_config, local_caller, client):
    local_caller().run(["1"])
    wrong = other_app(app_config, PII_KEY=Fernet.generate_key().decode(),
                      HMAC_KEY=app.config["HMAC_KEY"])
    try:
        r = run_cli(wrong, "consents", "status", PHONE, ok=False)
        assert r.exit_code == 1
        [line] = r.output.strip().splitlines()
        assert line.startswith("Error: IVR_PII_KEY is not the key") and "Traceback" not in r.output
        r = run_cli(wrong, "subject", "report", PHONE, ok=False)
        assert "IVR_PII_KEY" in r.output and r.exit_code == 1
        api = wrong.test_client().post("/api/consents/withdrawals", json={"phone": PHONE,
                                                                          "reason": "x"},
                                       headers={"Authorization": "Bearer whatever"})
        assert api.status_code == 503 and "IVR_PII_KEY" in api.get_json()["message"]
        # A caller still hears valid TwiML (an apology), and nothing is stored.
        from ivr.adapters.simulate import Caller, flask_transport
        from tests.integration.conftest import AUTH_TOKEN

        caller = Caller(wrong.config["PUBLIC_URL"], AUTH_TOKEN,
                        flask_transport(wrong.test_client()), from_number="+905550001122")
        turn = caller.dial()
        assert turn.heard and turn.gather_action is None
        s = session(app)
        assert s.scalar(text("SELECT count(*) FROM calls")) == 1
        s.close()
    finally:
        database(wrong).engine.dispose()
    wrong_hmac = other_app(app_config, PII_KEY=app.config["PII_KEY"], HMAC_KEY="another")
    try:
        r = run_cli(wrong_hmac, "iys", "pending", ok=False)
        assert r.exit_code == 1 and "IVR_HMAC_KEY is not the key" in r.output
    finally:
        database(wrong_hmac).engine.dispose()
    # The right keys still work.
    assert run_cli(app, "consents", "status", PHONE).exit_code == 0


def test_a_database_from_before_key_checks_is_checked_on_its_data(app, app_config,
                                                                  local_caller):
    local_caller().run(["1"])
    s = session(app)
    with s.begin():
        s.execute(Setting.__table__.delete())
    s.close()
    wrong = other_app(app_config, PII_KEY=Fernet.generate_key().decode(),
                      HMAC_KEY=app.config["HMAC_KEY"])
    try:
        r = run_cli(wrong, "consents", "status", PHONE, ok=False)
        assert r.exit_code == 1 and "IVR_PII_KEY" in r.output
    finally:
        database(wrong).engine.dispose()
    wrong = other_app(app_config, PII_KEY=app.config["PII_KEY"], HMAC_KEY="different")
    try:
        assert "IVR_HMAC_KEY" in run_cli(wrong, "consents", "status", PHONE, ok=False).output
    finally:
        database(wrong).engine.dispose()
    s = session(app)
    assert s.scalar(select(Setting.value).where(Setting.name == "pii_key_check")) is None
    s.close()
    # With the right keys the check values are stored on first use.
    fresh = other_app(app_config)
    try:
        assert run_cli(fresh, "consents", "status", PHONE).exit_code == 0
        s = session(fresh)
        names = set(s.scalars(select(Setting.name)))
        s.close()
        assert {"pii_key_check", "hmac_key_check"} <= names
    finally:
        database(fresh).engine.dispose()


def test_one_undecryptable_value_is_a_data_key_error_too(app, local_caller, client):
    local_caller().run(["1"])
    s = session(app)
    with s.begin():
        s.execute(update(Consent).values(
            phone_enc=Fernet(Fernet.generate_key()).encrypt(PHONE.encode()).decode()))
    s.close()
    r = run_cli(app, "iys", "export", ok=False)
    assert r.exit_code == 1 and "IVR_PII_KEY cannot decrypt stored personal data" in r.output
    r = run_cli(app, "consents", "export", ok=False)
    assert r.exit_code == 1 and "IVR_PII_KEY" in r.output and "Traceback" not in r.output
    auditor = token(app, "auditor")
    api = client.get(f"/api/consents?phone={PHONE}",
                     headers={"Authorization": f"Bearer {auditor}"})
    assert api.status_code >= 500 and "IVR_PII_KEY" in api.get_json()["message"]
