"""The JSON API's routes: each audience's module adds its views to the `api` blueprint when
it is imported here."""

from flask import Flask

from . import (
    auditor_api,  # noqa: F401 - GET /api/calls/<sid>, GET /api/consents
    consents_api,  # noqa: F401 - POST /api/consents/withdrawals
    transfers,  # noqa: F401 - POST/GET /api/transfers
)
from .blueprint import bp


def init_app(app: Flask) -> None:
    """Register the API blueprint with its routes."""
    app.register_blueprint(bp)
