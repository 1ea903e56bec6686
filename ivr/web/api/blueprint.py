"""The API blueprint, /api, and its JSON error answer for HTTP errors."""

from flask import Blueprint
from werkzeug.exceptions import HTTPException

from .errors import error_response

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.errorhandler(HTTPException)
def _http_error(exc):
    return error_response(exc.code or 500, exc.description)
