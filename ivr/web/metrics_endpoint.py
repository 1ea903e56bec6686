"""GET /metrics: Prometheus text, with IVR_METRICS_TOKEN a bearer token, otherwise loopback only."""

from __future__ import annotations

import hmac
import ipaddress
import os

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST

from .metrics import metrics_text

bp = Blueprint("metrics", __name__)


def _metrics_token(app: Flask) -> str | None:
    return app.config.get("METRICS_TOKEN") or os.environ.get("IVR_METRICS_TOKEN") or None


def _is_loopback(address: str | None) -> bool:
    try:
        return ipaddress.ip_address((address or "").split("%")[0]).is_loopback
    except ValueError:
        return False


@bp.get("/metrics")
def metrics():
    """Prometheus metrics: with IVR_METRICS_TOKEN a bearer token, otherwise loopback only."""
    app = current_app._get_current_object()
    token = _metrics_token(app)
    if token:
        header = request.headers.get("Authorization", "")
        given = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            return Response("Unauthorized: a metrics bearer token is required\n", 401,
                            {"WWW-Authenticate": 'Bearer realm="metrics"'},
                            mimetype="text/plain")
    elif not _is_loopback(request.remote_addr):
        return Response("Forbidden: /metrics answers loopback only (or set IVR_METRICS_TOKEN)"
                        "\n", 403, mimetype="text/plain")
    return Response(metrics_text(app), mimetype=CONTENT_TYPE_LATEST,
                    headers={"Cache-Control": "no-store"})




def init_app(app: Flask) -> None:
    """Register GET /metrics."""
    app.register_blueprint(bp)
