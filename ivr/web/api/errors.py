"""JSON errors for the API, in one place."""

from __future__ import annotations

from flask import jsonify
from werkzeug.http import HTTP_STATUS_CODES


def error_response(status: int, message: str | None = None, **extra):
    """A JSON error: {"error": reason phrase, "message": ..., ...extra}."""
    body = {"error": HTTP_STATUS_CODES.get(status, "Unknown error"), "status": status}
    if message:
        body["message"] = message
    body.update(extra)
    response = jsonify(body)
    response.status_code = status
    return response


def bad_request(message: str, **extra):
    """400 with a message."""
    return error_response(400, message, **extra)
