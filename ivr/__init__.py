"""An IVR voice-flow engine for KVKK notices and marketing consent, driven by Twilio."""

from __future__ import annotations

import logging

from flask import Flask

from . import config


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app: settings from the environment, then one init_app per subsystem."""
    app = Flask(__name__, instance_relative_config=False)
    settings = config.from_env()
    if test_config:
        settings.update(test_config)
    app.config.update(config.finalize(settings))
    # Twilio's forms are a few kB; nothing we accept needs more than this.
    app.config["MAX_CONTENT_LENGTH"] = app.config.get("MAX_CONTENT_LENGTH") or 64 * 1024
    logging.basicConfig(level=app.config["LOG_LEVEL"])

    from . import accounts, api, audio, db, flowstore, health, kvkk, pii, spool, transfers, voice

    db.init_app(app)
    pii.init_app(app)
    kvkk.init_app(app)
    spool.init_app(app)
    flowstore.init_app(app)
    audio.init_app(app)
    voice.init_app(app)
    health.init_app(app)
    accounts.init_app(app)
    api.init_app(app)
    transfers.init_app(app)
    from . import auditor  # last: its CSRF protection exempts the voice and api blueprints
    auditor.init_app(app)
    from . import i18n  # after the login pages: a user's stored language needs them
    i18n.init_app(app)
    from . import observability, security  # after every blueprint: headers and limits see all
    observability.init_app(app)
    security.init_app(app)
    return app
