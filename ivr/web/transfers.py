"""Agent transfers: a live call sent into the consent flow, and the caller sent back."""

from __future__ import annotations

from flask import Flask

from ivr.adapters.twilio_rest import TwilioSettings
from ivr.domain.config import ConfigError
from ivr.storage import transfer_models as models  # noqa: F401 - the table, for create_all

from . import agent_desk  # noqa: F401 - the desk's views attach to the agent blueprint
from .agent import bp


def twilio_settings(config) -> TwilioSettings:
    """The REST API settings from the app config; a bad timeout is a ConfigError."""
    try:
        timeout = float(config.get("TWILIO_TIMEOUT", 5))
    except (TypeError, ValueError):
        timeout = 0.0
    if not 0 < timeout <= 60:
        raise ConfigError("IVR_TWILIO_TIMEOUT must be a number of seconds, above 0 and at "
                          "most 60")
    return TwilioSettings(api_url=config["TWILIO_API_URL"].rstrip("/"),
                          account_sid=config["TWILIO_ACCOUNT_SID"],
                          auth_token=config["TWILIO_AUTH_TOKEN"], timeout=timeout)


def init_app(app: Flask) -> None:
    """Register the transfer table and the agent page; check the Twilio REST settings."""

    app.extensions["ivr_twilio_rest"] = twilio_settings(app.config)
    app.register_blueprint(bp)
