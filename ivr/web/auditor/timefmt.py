"""Times for auditors: shown in Europe/Istanbul, with the exact UTC instant on hover."""

from __future__ import annotations

from datetime import datetime

from flask import Flask
from markupsafe import Markup, escape

from ivr.domain.times import LABEL, LOCAL, form_value, local_day, local_text, parse_utc, utc_iso

__all__ = ["LOCAL", "parse_utc", "register_filters", "time_tag", "utc_iso"]


def time_tag(value) -> Markup:
    """<time> in Istanbul time with the UTC instant as its title (shown on hover)."""
    dt = parse_utc(value)
    if dt is None:
        return Markup('<span class="none">—</span>')
    iso = utc_iso(dt)
    return Markup('<time datetime="{0}" title="UTC {0}">{1}</time>').format(
        escape(iso), escape(local_text(dt)))


def _utc_iso_or_blank(value: datetime | str | None) -> str:
    dt = parse_utc(value)
    return utc_iso(dt) if dt else ""


def register_filters(app: Flask) -> None:
    """Make the time filters available to every template."""
    app.jinja_env.filters["istanbul"] = time_tag
    app.jinja_env.filters["utc_iso"] = _utc_iso_or_blank
    app.jinja_env.filters["day"] = local_day
    app.jinja_env.filters["day_field"] = lambda v: form_value(v) if v else ""
    app.jinja_env.globals["TIME_ZONE"] = LABEL
