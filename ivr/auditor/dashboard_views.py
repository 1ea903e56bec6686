"""The dashboard page: consent outcomes and the notice drop-off, with links to the calls."""

from __future__ import annotations

from pathlib import Path

from flask import current_app, render_template, request, url_for

from ..audio.errors import AudioError
from ..audio.manifest import MANIFEST, read_manifest
from ..db import session as db_session
from ..flow.model import DECISIONS
from ..flowstore import flows
from . import bp
from .access import transaction
from .dashboard import (
    DIMENSIONS,
    PeriodError,
    day_text,
    local_today,
    outcomes,
    parse_period,
)
from .dropoff import notice_dropoff
from .login import workspace_required
from .svgchart import Bar, Series, stacked_bars

COLOURS = {"granted": "#1b7a3d", "declined": "#b3261e", "no_input": "#c98a00",
           "withdrawn": "#5b2e91"}
LABELS = {"granted": "granted", "declined": "declined", "no_input": "no input",
          "withdrawn": "withdrawn"}
TITLES = {"language": "By language", "origin": "By origin", "agent": "By agent",
          "flow_version": "By flow version", "notice_version": "By notice version"}
HEADS = {"language": "Language", "origin": "Origin", "agent": "Agent",
         "flow_version": "Flow version", "notice_version": "Notice version"}
SERIES = [Series(d, LABELS[d], COLOURS[d]) for d in DECISIONS]


def audio_seconds(audio_dir: str) -> dict[str, float]:
    """Each rendered prompt's length in seconds, by the SHA-256 of its file."""
    try:
        entries = read_manifest(Path(audio_dir) / MANIFEST)
    except AudioError:
        return {}
    return {e.sha256: e.duration_ms / 1000 for e in entries}


def search_url(criteria: dict, decision: str | None = None) -> str:
    """The search page listing the calls behind one number."""
    args = dict(criteria)
    if decision:
        args["decision"] = decision
    return url_for("auditor.search", **args)


def _chart(title: str, rows, short: bool = False, width: int = 760) -> object:
    bars = [Bar((r.label[:12] if short else r.label) or "none", r.counts,
                {d: search_url(r.criteria, d) for d in r.counts}) for r in rows]
    return stacked_bars(title, SERIES, bars, width=width)


@bp.get("/dashboard")
@workspace_required
def dashboard():
    """Consent outcomes per day or week, their breakdowns, and the notice drop-off."""
    today = local_today()
    errors: dict[str, str] = {}
    try:
        period = parse_period(request.args, today)
    except PeriodError as e:
        errors = e.errors
        period = parse_period({}, today)
    s = db_session()
    lo, hi = period.bounds()
    with transaction(s):
        result = outcomes(s, period)
        drop = notice_dropoff(s, lo, hi, flows().default.notice_prompts(),
                              audio_seconds(current_app.config["AUDIO_DIR"]))
    charts = {"series": _chart("Consent outcomes per " + period.step, result.series)}
    for name in DIMENSIONS:
        # Drawn half as wide: the breakdowns sit two to a row.
        charts[name] = _chart(TITLES[name], result.breakdowns[name],
                              short=name.endswith("_version"), width=480)
    undecided = {"since": period.since.isoformat(), "until": period.until.isoformat(),
                 "decision": "none"}
    return render_template(
        "auditor/dashboard.html", period=period, errors=errors, args=request.args,
        result=result, drop=drop, charts=charts, decisions=DECISIONS, labels=LABELS,
        dimensions=DIMENSIONS, titles=TITLES, heads=HEADS, search_url=search_url, day_text=day_text,
        undecided_url=url_for("auditor.search", **undecided),
        since_text=day_text(period.since), until_text=day_text(period.until)), \
        (400 if errors else 200)

