"""The auditor's blueprint, /auditor."""

from flask import Blueprint

bp = Blueprint("auditor", __name__, url_prefix="/auditor")
