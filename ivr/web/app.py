"""The app factory: settings from the environment, then one init_app per part, in order."""

from __future__ import annotations

import logging

import click
from flask import Flask
from flask.sessions import SecureCookieSessionInterface

from ivr.domain import config
from ivr.services import anchoring, audit_sequencer, personal_data_keys
from ivr.storage import accounts as _accounts  # noqa: F401 - register the accounts table
from ivr.storage import db, flowstore, spool

from . import (
    audio_files,
    audit_checkpoint,
    current,
    health,
    i18n,
    kvkk,
    logs,
    metrics,
    metrics_endpoint,
    security,
    transfers,
    voice,
)
from .api import routes as api_routes
from .auditor import workspace


class CookieSessions(SecureCookieSessionInterface):
    """Flask's cookie sessions, with the signing serializer made once per secret key:
    Flask makes a new one for every request (~0.1 ms). Twilio's webhooks get none: Twilio
    sends no cookie and no voice view reads or writes the session, so a webhook skips the
    cookie's lookup and signature check (about 2 % of a webhook's worker CPU)."""

    def __init__(self):
        self._serializer: tuple | None = None
        # The session opens before the URL is matched: the voice blueprint's own prefix.
        self._without = f"{voice.bp.url_prefix}/"

    def open_session(self, app: Flask, request):
        if request.path.startswith(self._without):
            return self.make_null_session(app)  # read-only and empty; no cookie is set
        return super().open_session(app, request)

    def get_signing_serializer(self, app: Flask):
        key = (app.secret_key, tuple(app.config.get("SECRET_KEY_FALLBACKS") or ()),
               app.config.get("SESSION_COOKIE_NAME"))
        kept = self._serializer
        if kept is None or kept[0] != key:
            kept = (key, super().get_signing_serializer(app))
            self._serializer = kept
        return kept[1]


@click.command("init-db")
def init_db_command() -> None:
    """Create the database schema."""
    current.database().create_all()
    click.echo("Database ready.")


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app: settings from the environment, then one init_app per subsystem."""
    # Named for the package: templates and static files are found in ivr/.
    app = Flask("ivr", instance_relative_config=False)
    app.session_interface = CookieSessions()
    settings = config.from_env()
    if test_config:
        settings.update(test_config)
    app.config.update(config.finalize(settings))
    # Twilio's forms are a few kB; nothing we accept needs more than this.
    app.config["MAX_CONTENT_LENGTH"] = app.config.get("MAX_CONTENT_LENGTH") or 64 * 1024
    logging.basicConfig(level=app.config["LOG_LEVEL"])

    db.init_app(app)
    current.init_app(app)  # closes the request's session
    app.cli.add_command(init_db_command)
    audit_checkpoint.init_app(app)
    anchoring.init_app(app)  # a bad IVR_TSA_* or IVR_WITNESSES stops start-up here
    audit_sequencer.init_app(app)  # needs the engine above
    personal_data_keys.init_app(app)
    kvkk.init_app(app)
    spool.init_app(app)
    flowstore.init_app(app)
    audio_files.init_app(app)
    voice.init_app(app)
    health.init_app(app)
    api_routes.init_app(app)
    transfers.init_app(app)
    workspace.init_app(app)  # last: its CSRF protection exempts the voice and api blueprints
    i18n.init_app(app)  # after the login pages: a user's stored language needs them
    # After every blueprint: headers and limits see all.
    logs.configure_logging(app)
    metrics_endpoint.init_app(app)
    metrics.init_app(app)
    security.init_app(app)
    return app
