"""Web security: headers on every kind of response, cookie flags, request size limits and
rate limits shared by every worker through the database."""

from __future__ import annotations

import io
import re

import pytest
import requests

from ivr import create_app
from ivr.domain.config import ConfigError
from ivr.services.accounts import add_user
from ivr.web.current import database, session
from ivr.web.proxies import client_address, parse_networks
from ivr.web.security import HSTS, HTML_CSP

from .conftest import AUTH_TOKEN


def _user(app, role="admin", name=None):
    with app.app_context():
        s = session()
        with s.begin():
            _u, secret = add_user(s, name or f"{role}-user", role)
    return secret


def _bearer(secret):
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def https_app(app_config):
    app_config.update(PUBLIC_URL="https://ivr.example.com", WTF_CSRF_ENABLED=False)
    application = create_app(app_config)
    database(application).create_all()
    yield application
    database(application).engine.dispose()


# --- headers ------------------------------------------------------------------------------

def test_auditor_pages_have_the_security_headers(client):
    r = client.get("/login")
    assert r.status_code == 200 and r.mimetype == "text/html"
    assert r.headers["Content-Security-Policy"] == HTML_CSP
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Referrer-Policy"] == "no-referrer"
    assert r.headers["Cache-Control"] == "no-store"
    assert "Strict-Transport-Security" not in r.headers  # plain http: HSTS would be ignored
    # The workspace redirects to the login page with the same headers.
    r = client.get("/auditor/")
    assert r.status_code == 302 and r.headers["X-Frame-Options"] == "DENY"


def test_the_auditor_pages_need_nothing_the_policy_forbids(client):
    html = client.get("/login").get_data(as_text=True)
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script"
    assert not re.search(r"<style|\sstyle=|\son[a-z]+=", html), "inline style or handler"
    for src in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert src.startswith("/") and not src.startswith("//"), src


def test_json_twiml_and_errors_have_headers_too(client, local_caller):
    r = client.get("/api/consents")
    assert r.status_code == 401
    assert r.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert r.headers["Cache-Control"] == "no-store" and r.headers["X-Frame-Options"] == "DENY"
    c = local_caller()
    c.dial()
    r = client.get("/no/such/page")
    assert r.status_code == 404 and r.headers["X-Content-Type-Options"] == "nosniff"


def test_a_page_with_its_own_policy_keeps_it(client):
    from ivr.web.agent import AGENT_CSP

    r = client.get("/agent/transfers/" + "a" * 32)
    assert r.status_code == 200
    assert r.headers["Content-Security-Policy"] == AGENT_CSP != HTML_CSP
    # Its script and styles are files of this origin: nothing inline for the policy to refuse.
    html = r.get_data(as_text=True)
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script"
    assert not re.search(r"<style|\sstyle=|\son[a-z]+=", html), "inline style or handler"


def test_https_adds_hsts_and_secure_cookies(https_app):
    client = https_app.test_client()
    r = client.get("/login", base_url="https://ivr.example.com")
    assert r.headers["Strict-Transport-Security"] == HSTS
    secret = _user(https_app, "auditor", "ayse")
    r = client.post("/login", data={"name": "ayse", "secret": secret},
                    base_url="https://ivr.example.com")
    assert r.status_code == 302, r.get_data(as_text=True)
    cookie = r.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


# --- request size ---------------------------------------------------------------------------

BIG = "x" * (100 * 1024)


@pytest.mark.parametrize("path", ["/voice/incoming", "/voice/status", "/api/consents/withdrawals",
                                  "/api/transfers", "/login", "/auditor/"])
def test_bodies_over_the_limit_are_refused(client, path):
    r = client.post(path, data={"CallSid": "CA" + "0" * 32, "big": BIG})
    assert r.status_code == 413
    r = client.post(path, data=BIG.encode(), content_type="application/json")
    assert r.status_code in (413, 403, 401, 400) and r.status_code < 500


def test_too_many_multipart_fields_are_refused(client):
    # (A url-encoded form is bounded by its byte size alone: 64 KiB.)
    fields = {f"f{i}": "1" for i in range(500)}
    fields["file"] = (io.BytesIO(b"x"), "x.txt")
    r = client.post("/voice/incoming", data=fields, content_type="multipart/form-data")
    assert r.status_code == 413


def test_a_chunked_body_over_the_limit_is_refused(live_app):
    def chunks():
        for _ in range(200):
            yield b"CallSid=" + b"x" * 1024 + b"&"

    r = requests.post(live_app.url + "/voice/incoming", data=chunks(), timeout=10,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413


def test_json_nested_too_deep_is_a_400(app, client):
    token = _user(app)
    r = client.post("/api/consents/withdrawals", data="[" * 50000 + "]" * 50000,
                    content_type="application/json", headers=_bearer(token))
    assert r.status_code in (400, 413)
    r = client.post("/api/consents/withdrawals", data="[" * 20000 + "]" * 20000,
                    content_type="application/json", headers=_bearer(token))
    assert r.status_code == 400
    assert r.get_json()["status"] == 400


# --- rate limits ------------------------------------------------------------------------------

@pytest.fixture
def limited(app_config):
    """Two app instances ("workers") on one database, with small limits."""
    app_config.update(RATELIMIT_API="3 per minute", RATELIMIT_LOGIN="2 per minute")
    first = create_app(app_config)
    database(first).create_all()
    second = create_app(app_config)
    yield first, second
    for a in (first, second):
        database(a).engine.dispose()


def test_the_api_limit_is_shared_by_every_worker(limited):
    first, second = limited
    token = _user(first, "auditor")
    a, b = first.test_client(), second.test_client()
    codes = [c.get("/api/consents", headers=_bearer(token)).status_code for c in (a, b, a)]
    assert codes == [200, 200, 200]
    r = b.get("/api/consents", headers=_bearer(token))
    assert r.status_code == 429
    assert r.get_json()["status"] == 429 and int(r.headers["Retry-After"]) > 0
    # Another user has a budget of their own.
    other = _user(first, "auditor", "second-auditor")
    assert a.get("/api/consents", headers=_bearer(other)).status_code == 200


def test_webhooks_are_never_rate_limited(limited):
    first, _ = limited
    from ivr.adapters.simulate import Caller, flask_transport

    client = first.test_client()
    for _ in range(5):
        c = Caller(first.config["PUBLIC_URL"], AUTH_TOKEN, flask_transport(client))
        assert c.dial().gather_action or True
        assert c.status("completed").status == 200
    assert client.get("/healthz").status_code == 200


def test_login_attempts_are_limited_per_address(limited):
    first, second = limited
    first.config["WTF_CSRF_ENABLED"] = second.config["WTF_CSRF_ENABLED"] = False
    a, b = first.test_client(), second.test_client()
    assert a.post("/login", data={"name": "x", "secret": "wrong"}).status_code == 401
    assert b.post("/login", data={"name": "y", "secret": "wrong"}).status_code == 401
    assert a.post("/login", data={"name": "z", "secret": "wrong"}).status_code == 429
    # Another address is not affected; the page itself (GET) is not limited.
    other = {"REMOTE_ADDR": "198.51.100.7"}
    assert b.post("/login", data={"name": "x", "secret": "wrong"},
                  environ_base=other).status_code == 401
    assert a.get("/login").status_code == 200


def test_behind_a_proxy_the_client_address_counts(app_config):
    app_config.update(RATELIMIT_LOGIN="1 per minute", PROXIES=1, WTF_CSRF_ENABLED=False)
    application = create_app(app_config)
    try:
        database(application).create_all()
        client = application.test_client()

        def attempt(ip):
            return client.post("/login", data={"name": "n", "secret": "s"},
                               headers={"X-Forwarded-For": ip}).status_code

        assert attempt("203.0.113.1") == 401
        assert attempt("203.0.113.1") == 429
        assert attempt("203.0.113.2") == 401
        # /metrics sees the real client, not the proxy's loopback address.
        assert client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.1"}
                          ).status_code == 403
    finally:
        database(application).engine.dispose()


@pytest.fixture
def proxied(app_config):
    """An app with a login limit of one a minute behind the proxy settings a test gives."""
    apps = []

    def make(**settings):
        app_config.update(RATELIMIT_LOGIN="1 per minute", WTF_CSRF_ENABLED=False, **settings)
        application = create_app(app_config)
        database(application).create_all()
        apps.append(application)
        return application

    yield make
    for a in apps:
        database(a).engine.dispose()


def _attempts(application, peer, forwarded_for):
    client = application.test_client()
    return [client.post("/login", data={"name": "n", "secret": "s"},
                        environ_base={"REMOTE_ADDR": peer},
                        headers={"X-Forwarded-For": ip}).status_code for ip in forwarded_for]


ROTATED = ["203.0.113.1", "203.0.113.2", "203.0.113.3"]


@pytest.mark.parametrize("settings", [
    {"PROXIES": 1},                                       # trusts loopback peers only
    {"TRUSTED_PROXIES": "10.0.0.0/8"},
    {"TRUSTED_PROXIES": "10.0.0.1, 192.0.2.0/24", "PROXIES": 2},
])
def test_a_rotated_forwarded_for_from_an_untrusted_peer_does_not_bypass_limits(
        proxied, settings):
    application = proxied(**settings)
    # A client reaching the app directly sends a new X-Forwarded-For each time: it is
    # still one address, and its second attempt is refused.
    assert _attempts(application, "198.51.100.9", ROTATED) == [401, 429, 429]


@pytest.mark.parametrize("settings,peer", [
    ({"PROXIES": 1}, "127.0.0.1"),
    ({"TRUSTED_PROXIES": "10.0.0.0/8"}, "10.20.30.40"),
    ({"TRUSTED_PROXIES": "::1, 10.0.0.1"}, "10.0.0.1"),
])
def test_a_trusted_proxy_names_the_client(proxied, settings, peer):
    application = proxied(**settings)
    assert _attempts(application, peer, ROTATED) == [401, 401, 401]
    assert _attempts(application, peer, ROTATED[:1]) == [429]


@pytest.mark.parametrize("peer,header,max_hops,client", [
    ("10.0.0.1", "198.51.100.1", None, "198.51.100.1"),
    ("10.0.0.1", "6.6.6.6, 198.51.100.1, 10.0.0.2", None, "198.51.100.1"),  # spoof on the left
    ("10.0.0.1", "198.51.100.1, 10.0.0.2", 1, "10.0.0.2"),                   # IVR_PROXIES=1
    ("10.0.0.1", "", None, "10.0.0.1"),
    ("10.0.0.1", "not-an-address", None, "10.0.0.1"),
    ("10.0.0.1", "198.51.100.1, garbage", None, "10.0.0.1"),
    ("198.51.100.7", "10.0.0.2", None, "198.51.100.7"),                      # not a proxy
])
def test_client_address_walks_trusted_hops_only(peer, header, max_hops, client):
    networks = parse_networks("10.0.0.0/8")
    assert client_address(peer, header, networks, max_hops)[0] == client


def test_x_forwarded_proto_is_believed_from_a_trusted_proxy_only(proxied):
    application = proxied(TRUSTED_PROXIES="10.0.0.1")
    client = application.test_client()
    https = {"X-Forwarded-Proto": "https"}
    r = client.get("/login", headers=https, environ_base={"REMOTE_ADDR": "198.51.100.9"})
    assert "Strict-Transport-Security" not in r.headers
    r = client.get("/login", headers=https, environ_base={"REMOTE_ADDR": "10.0.0.1"})
    assert r.headers["Strict-Transport-Security"] == HSTS


@pytest.mark.parametrize("value", ["10.0.0.0/33", "proxy.example", "10.0.0.1;10.0.0.2"])
def test_a_wrong_trusted_proxies_setting_stops_the_start(app_config, value):
    app_config["TRUSTED_PROXIES"] = value
    with pytest.raises(ConfigError, match="IVR_TRUSTED_PROXIES"):
        create_app(app_config)


@pytest.mark.parametrize("where", ["path", "query", "form", "json"])
def test_nul_characters_are_refused_everywhere(app, client, where):
    token = _user(app)
    if where == "path":
        r = client.get("/api/transfers/%00", headers=_bearer(token))
    elif where == "query":
        r = client.get("/api/consents?phone=%00", headers=_bearer(token))
    elif where == "form":
        r = client.post("/voice/status", data={"CallSid": "CA\x00"})
    else:
        r = client.post("/api/consents/withdrawals", json={"phone": "\x00", "reason": "x"},
                        headers=_bearer(token))
    assert r.status_code == 400
