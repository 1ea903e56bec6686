"""The JSON API for agents, auditors and other systems (bearer tokens)."""

from flask import Blueprint, Flask
from werkzeug.exceptions import HTTPException

from .errors import error_response

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.errorhandler(HTTPException)
def _http_error(exc):
    return error_response(exc.code or 500, exc.description)


def init_app(app: Flask) -> None:
    """Register the API blueprint with its routes."""
    from ..transfers import api as _transfers  # noqa: F401 - POST/GET /api/transfers
    from . import (
        auditor_api,  # noqa: F401 - GET /api/calls/<sid>, GET /api/consents
        consents_api,  # noqa: F401 - POST /api/consents/withdrawals
        routes,  # noqa: F401 - attach the views to bp
    )

    app.register_blueprint(bp)
