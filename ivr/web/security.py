"""Web security for every response: headers, cookie flags, request limits and rate limits.

- Headers: a strict Content-Security-Policy on HTML (scripts, styles and media from this
  origin only; views with a nonce policy of their own keep it), no framing, nosniff, no
  referrer, no caching of pages and JSON, HSTS when the service is reached over HTTPS.
- The session cookie is HttpOnly, SameSite=Lax, and Secure when IVR_PUBLIC_URL is https.
- Request size: MAX_CONTENT_LENGTH (64 KiB) bounds every body, chunked ones included;
  forms are bounded in memory and in number of fields, and JSON nested too deep for the
  parser is a 400 instead of a crash.
- Rate limits (Flask-Limiter): the JSON API per user (per address before login) and login
  attempts per address. Counters are kept in the database by default so every worker and
  machine shares them (ivr/storage/ratelimit.py); IVR_RATELIMIT_STORAGE_URI may name memory:// (per
  process) or a redis:// server instead. Twilio's webhooks, the prompt audio, the health
  probes and /metrics are never limited.
- Proxies (ivr/web/proxies.py): X-Forwarded-For/-Proto give the client's address (for limits
  and the login throttle) and the scheme only when the peer is a trusted proxy:
  IVR_TRUSTED_PROXIES lists their addresses and CIDRs. IVR_PROXIES (how many proxies stand
  in front) bounds the hops read; set alone, it trusts loopback peers only.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import re
import time

from flask import Blueprint, Flask, current_app, request
from flask.json.provider import DefaultJSONProvider
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from sqlalchemy.engine import Engine
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge

from ivr.storage import ratelimit  # noqa: F401 - registers the storage scheme and the table
from ivr.web.current import database

from .proxies import LOOPBACK, TrustedProxies, parse_networks

HTML_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "media-src 'self'; font-src 'self'; connect-src 'self'; object-src 'none'; "
            "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
OTHER_CSP = "default-src 'none'; frame-ancestors 'none'; sandbox"
HSTS = "max-age=31536000; includeSubDomains"

DEFAULTS = {
    "RATELIMIT_API": "300 per minute",
    "RATELIMIT_API_ADDRESS": "3000 per minute",
    "RATELIMIT_LOGIN": "30 per minute",
    "RATELIMIT_STORAGE_URI": "ivr+db://",
    "PROXIES": "0",
    "TRUSTED_PROXIES": "",
    "MAX_FORM_MEMORY_SIZE": 64 * 1024,
    "MAX_FORM_PARTS": 200,
}
_ENV = {"RATELIMIT_API": "IVR_RATELIMIT_API", "RATELIMIT_LOGIN": "IVR_RATELIMIT_LOGIN",
        "RATELIMIT_API_ADDRESS": "IVR_RATELIMIT_API_ADDRESS",
        "RATELIMIT_STORAGE_URI": "IVR_RATELIMIT_STORAGE_URI", "PROXIES": "IVR_PROXIES",
        "TRUSTED_PROXIES": "IVR_TRUSTED_PROXIES"}
# Twilio must always get through (its requests are signed, and a refused webhook is a
# caller hearing an error); probes and scrapes are cheap and protected otherwise.
UNLIMITED_BLUEPRINTS = ("voice", "audio", "health", "metrics")


def _setting(app: Flask, key: str):
    if app.config.get(key) not in (None, ""):
        return app.config[key]
    env = _ENV.get(key)
    value = os.environ.get(env) if env else None
    return value if value not in (None, "") else DEFAULTS[key]


class SafeJSONProvider(DefaultJSONProvider):
    """Flask's JSON, where a document nested past the parser's depth is bad input, not a
    RecursionError (which would be a 500)."""

    def loads(self, s, **kwargs):
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("JSON document nested too deeply") from None


_EVERY_RESPONSE = (
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()"),
)


def security_headers(response):
    """Add the security headers a response does not set itself."""
    h = response.headers
    html = response.mimetype == "text/html"
    wanted = [("Content-Security-Policy", HTML_CSP if html else OTHER_CSP), *_EVERY_RESPONSE]
    if html or response.mimetype == "application/json":
        # Pages and API answers carry personal data: no browser or proxy keeps a copy.
        wanted.append(("Cache-Control", "no-store"))
    if request.is_secure or current_app.config.get("PUBLIC_URL", "").startswith("https://"):
        wanted.append(("Strict-Transport-Security", HSTS))
    # One look at the headers already set (werkzeug's setdefault scans them per name).
    present = {name.lower() for name, _value in h.items()}
    h.extend([(name, value) for name, value in wanted if name.lower() not in present])
    if response.status_code == 429 and "retry-after" not in present:
        h["Retry-After"] = str(_retry_after())
    return response


def _retry_after() -> int:
    """Seconds until the breached limit's window ends (the view did not run: no lock held)."""
    limiter = current_app.extensions.get("ivr_limiter")
    current = limiter.current_limit if limiter else None
    try:
        return max(1, math.ceil(current.reset_at - time.time())) if current else 60
    except Exception:  # the storage went away: a safe guess
        return 60


def refuse_large_bodies():
    """413 before anything runs for a body larger than MAX_CONTENT_LENGTH, even where the
    view would never read it."""
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    if not limit:
        return
    if request.content_length is not None:
        if request.content_length > limit:
            raise RequestEntityTooLarge()
        return
    environ = request.environ
    if "wsgi.input_terminated" in environ:
        # A chunked body: Werkzeug would silently cut it at the limit and parse the part.
        # Read it here (at most limit + 1 bytes) and refuse it whole when it is too long.
        stream, parts, size = environ["wsgi.input"], [], 0
        while size <= limit:
            chunk = stream.read(limit + 1 - size)
            if not chunk:
                break
            parts.append(chunk)
            size += len(chunk)
        if size > limit:
            raise RequestEntityTooLarge()
        environ["wsgi.input"] = io.BytesIO(b"".join(parts))


_NUL = re.compile(rb"\x00|%00|\\u0000", re.IGNORECASE)


def refuse_nul():
    """400 for a NUL character anywhere in the path, query or body.

    No input of ours can contain one, and PostgreSQL cannot store one in text (it would be
    a database error, a 500).
    The body is at most MAX_CONTENT_LENGTH (checked before) and stays cached for the view.
    """
    if "\x00" in request.path or _has_nul(request.query_string):
        raise BadRequest("NUL characters are not accepted")
    if request.content_length or "wsgi.input_terminated" in request.environ:
        if _has_nul(request.get_data(cache=True)):
            raise BadRequest("NUL characters are not accepted")


def _has_nul(data: bytes) -> bool:
    """`_NUL.search(data)`, with bytes searches instead of the regular expression (every
    webhook's body passes here)."""
    if b"\x00" in data:
        return True
    lowered = data.lower()
    return b"%00" in lowered or b"\\u0000" in lowered


def _configure_cookies(app: Flask) -> None:
    https = app.config.get("PUBLIC_URL", "").lower().startswith("https://")
    app.config.setdefault("SESSION_COOKIE_HTTPONLY", True)
    app.config.setdefault("SESSION_COOKIE_SAMESITE", "Lax")
    if https:
        app.config["SESSION_COOKIE_SECURE"] = True


def api_rate_key() -> str:
    """Who an API request counts against: its bearer token (so agents behind one NAT address
    each have their own budget), else its address.

    The token is not looked up here: the limiter runs before the view, outside the request's
    transaction, and a lookup would cost every request a round trip. Made-up tokens buy
    nothing: they are refused, and the per-address limit bounds them.
    """
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer " and header[7:].strip():
        return "token:" + hashlib.sha256(header[7:].strip().encode()).hexdigest()[:32]
    return f"addr:{get_remote_address()}"


def address_rate_key() -> str:
    """Every request from one address, whatever its token."""
    return f"addr:{get_remote_address()}"


def login_rate_key() -> str:
    """Login attempts count against the client's address."""
    return "login:" + hashlib.sha256(get_remote_address().encode()).hexdigest()[:32]


def _blueprint(app: Flask, name: str) -> Blueprint | None:
    # app.blueprints holds Flask's sans-IO base type; the limiter takes flask.Blueprint,
    # which is what every registered blueprint is.
    bp = app.blueprints.get(name)
    return bp if isinstance(bp, Blueprint) else None


def _limiter(app: Flask) -> Limiter:
    uri = str(_setting(app, "RATELIMIT_STORAGE_URI"))
    options: dict[str, Engine] = {}
    if uri.startswith("ivr+db"):

        options["engine"] = database(app).engine
    limiter = Limiter(
        get_remote_address, app=app, storage_uri=uri,
        # flask-limiter types its options as str | int (a URI's settings), but it hands
        # them to the storage as they are: ours takes the engine (storage/ratelimit.py).
        storage_options=options,  # type: ignore[arg-type]
        strategy="fixed-window", key_prefix="ivr",
        # A storage outage must not take the service down with it: requests pass unlimited.
        # No X-RateLimit-* headers: filling them reads the counters again after the view,
        # one more round trip per request.
        swallow_errors=True, headers_enabled=False,
        enabled=app.config.get("RATELIMIT_ENABLED", True))
    if (api := _blueprint(app, "api")) is not None:
        limiter.limit(lambda: str(_setting(current_app, "RATELIMIT_API")),
                      key_func=api_rate_key)(api)
        limiter.limit(lambda: str(_setting(current_app, "RATELIMIT_API_ADDRESS")),
                      key_func=address_rate_key, scope="api-address")(api)
    if (auth := _blueprint(app, "auth")) is not None:
        limiter.limit(lambda: str(_setting(current_app, "RATELIMIT_LOGIN")),
                      key_func=login_rate_key, methods=["POST"])(auth)
    for name in UNLIMITED_BLUEPRINTS:
        if (unlimited := _blueprint(app, name)) is not None:
            limiter.exempt(unlimited)
    _skip_exempt_blueprints(app, limiter)
    return limiter


def _skip_exempt_blueprints(app: Flask, limiter: Limiter) -> None:
    """Let the limiter's check return at once for the exempt blueprints (the Twilio
    webhooks among them): finding out that they are exempt costs it ~0.2 ms a request."""
    funcs = app.before_request_funcs.get(None, [])
    check = limiter._check_request_limit  # the hook init_app registered
    for i, fn in enumerate(funcs):
        if fn == check:
            def skipping(check=check):
                if request.blueprint in UNLIMITED_BLUEPRINTS:
                    return None
                return check()

            funcs[i] = skipping


def _trust_proxies(app: Flask) -> None:
    proxies = int(_setting(app, "PROXIES") or 0)
    networks = parse_networks(str(_setting(app, "TRUSTED_PROXIES")))
    if not networks and proxies > 0:
        # The proxy count alone says nothing about who may send the header: a client that
        # reaches the app directly would choose its own address. A proxy on this machine
        # is the safe reading; anything else must be named.
        networks = LOOPBACK
        logging.getLogger("ivr.security").warning(
            "IVR_PROXIES=%d without IVR_TRUSTED_PROXIES: X-Forwarded-For is believed from "
            "loopback peers only; list your proxies' addresses in IVR_TRUSTED_PROXIES",
            proxies)
    if networks:
        # Flask's documented way to add WSGI middleware, which mypy sees as replacing a method.
        app.wsgi_app = TrustedProxies(  # type: ignore[method-assign]
            app.wsgi_app, networks, proxies or None)


def init_app(app: Flask) -> None:
    """Install the headers, cookie flags, request limits and rate limits (call it last)."""
    _trust_proxies(app)
    for key in ("MAX_FORM_MEMORY_SIZE", "MAX_FORM_PARTS"):
        # Flask ships 500 kB and 1000 parts; ours are tighter unless a setting says otherwise.
        if app.config.get(key) in (None, Flask.default_config.get(key)):
            app.config[key] = DEFAULTS[key]
    app.json = SafeJSONProvider(app)
    _configure_cookies(app)
    app.before_request(refuse_large_bodies)
    app.before_request(refuse_nul)
    app.after_request(security_headers)
    app.extensions["ivr_limiter"] = _limiter(app)
