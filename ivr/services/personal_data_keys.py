"""The app's personal-data keys: one PersonalData per app, from IVR_PII_KEY and IVR_HMAC_KEY."""

from __future__ import annotations

from flask import Flask

from ivr.domain.pii import PersonalData


def personal_data_of(app: Flask) -> PersonalData:
    """The app's PersonalData (views and commands: ivr.web.current.personal_data)."""
    return app.extensions["ivr_pii"]


def init_app(app: Flask) -> None:
    """Set up encryption from IVR_PII_KEY and IVR_HMAC_KEY (see config)."""
    app.extensions["ivr_pii"] = PersonalData(
        app.config["PII_KEY"].encode(), app.config["HMAC_KEY"].encode()
    )
