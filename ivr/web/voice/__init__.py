"""Twilio voice webhooks: thin handlers from HTTP to the call verbs and back to TwiML."""

from flask import Flask

from ivr.adapters.audio import library

from . import transfer_routes  # noqa: F401 - attach the transfer webhook to bp
from .routes import bp
from .twiml import TwimlRenderer


def init_app(app: Flask) -> None:
    """Register the voice blueprint and its TwiML renderer."""
    app.register_blueprint(bp)
    with app.app_context():
        app.extensions["ivr_renderer"] = TwimlRenderer(app.config["PUBLIC_URL"], library())
