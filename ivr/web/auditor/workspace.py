"""The auditor's workspace on the app: its views attached, CSRF protection, the session's
settings (ivr/web/auditor/ holds the views themselves)."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask, render_template
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFError, CSRFProtect

from . import (  # noqa: F401 - attach the views and the login model
    dashboard_views,
    login,
    queue_views,
    recording_views,
    registry_views,
    views,
)
from .blueprint import bp
from .guards import index
from .timefmt import register_filters

csrf = CSRFProtect()

# Blueprints whose requests are not authenticated by the session cookie, so a forged
# cross-site form gains nothing there: Twilio signs its webhooks, the API wants a bearer token.
CSRF_EXEMPT = ("voice", "api")


def _configure_session(app: Flask) -> None:
    secure = app.config.get("PUBLIC_URL", "").lower().startswith("https://")
    wanted = {
        "PERMANENT_SESSION_LIFETIME": timedelta(minutes=30),  # idle limit, renewed per request
        "SESSION_REFRESH_EACH_REQUEST": True,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": secure,
        "SESSION_COOKIE_NAME": "ivr_session",
        # A CSRF token lives as long as the session that holds it.
        "WTF_CSRF_TIME_LIMIT": None,
        "AUDITOR_SESSION_MAX_AGE": timedelta(hours=8),  # absolute limit from login
    }
    for key, value in wanted.items():
        # Flask's own defaults are replaced; a value set by the deployment or a test is kept.
        if key not in app.config or app.config[key] == Flask.default_config.get(key):
            app.config[key] = value
    if isinstance(app.config["PERMANENT_SESSION_LIFETIME"], int | float):
        app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(
            seconds=app.config["PERMANENT_SESSION_LIFETIME"])


def init_app(app: Flask) -> None:
    """Register the workspace, the login pages, CSRF protection and the session settings."""
    _configure_session(app)
    csrf.init_app(app)
    for name in CSRF_EXEMPT:
        if name in app.blueprints:
            csrf.exempt(app.blueprints[name])
    app.register_blueprint(bp)
    app.register_blueprint(login.bp)
    register_filters(app)

    @app.errorhandler(CSRFError)
    def _csrf_error(exc):
        return render_template("auditor/error.html", code=400, title=_("Form expired"),
                               message=_("The form was missing its security token or the token "
                                         "had expired. Go back, reload the page and try "
                                         "again.")), 400

    if "index" not in app.view_functions:
        app.add_url_rule("/", "index", index)
