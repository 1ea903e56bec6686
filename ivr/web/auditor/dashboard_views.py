"""The dashboard page: consent outcomes and the notice drop-off, with links to the calls."""

from __future__ import annotations

from datetime import datetime

from flask import current_app, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from markupsafe import Markup, escape

from ivr.domain.vocabulary import DECISIONS
from ivr.services.auditor.access import record_access, transaction
from ivr.services.auditor.dashboard_figures import DIMENSIONS, figures, hang_up_page
from ivr.services.notice_dropoff import AFTER, BEFORE, audio_seconds
from ivr.web.current import flows
from ivr.web.current import session as db_session
from ivr.web.i18n import ORIGINS, name_of

from .blueprint import bp
from .dashboard import PeriodError, day_text, local_today, parse_period
from .login import current_user, workspace_required
from .svgchart import Bar, Series, stacked_bars

COLOURS = {"granted": "#1b7a3d", "declined": "#b3261e", "no_input": "#c98a00",
           "withdrawn": "#5b2e91"}
LABELS = {"granted": _l("granted"), "declined": _l("declined"), "no_input": _l("no input"),
          "withdrawn": _l("withdrawn")}
TITLES = {"language": _l("By language"), "origin": _l("By origin"), "agent": _l("By agent"),
          "flow_version": _l("By flow version"), "notice_version": _l("By notice version")}
HEADS = {"language": _l("Language"), "origin": _l("Origin"), "agent": _l("Agent"),
         "flow_version": _l("Flow version"), "notice_version": _l("Notice version")}
SERIES = [Series(d, LABELS[d], COLOURS[d]) for d in DECISIONS]


def search_url(criteria: dict, decision: str | None = None) -> str:
    """The search page listing the calls behind one number."""
    args = dict(criteria)
    if decision:
        args["decision"] = decision
    return url_for("auditor.search", **args)


def remembered(link):
    """`link` (criteria, decision) → URL, each distinct link built once: the charts and the
    tables link the same numbers, and url_for is a large part of a long period's page."""
    built: dict[tuple, str] = {}

    def cached(criteria: dict, decision: str | None = None) -> str:
        key = (tuple(sorted(criteria.items())), decision)
        if key not in built:
            built[key] = link(criteria, decision)
        return built[key]

    return cached


def _chart(title: str, rows, short: bool = False, width: int = 760, name=None,
           link=search_url) -> object:
    """A stacked bar chart; each bar named as the table names its row."""
    def label(value: str | None) -> str:
        if not value:
            return _("none recorded")
        return name(value) if name else (value[:12] if short else value)

    bars = [Bar(label(r.label), r.counts,
                {d: link(r.criteria, d) for d in r.counts}) for r in rows]
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
    with transaction(s):
        shown = figures(s, period, audio_seconds(current_app.config["AUDIO_DIR"]),
                        flows().default.notice_prompts())
    result, drop = shown.outcomes, shown.dropoff
    title = (_("Consent outcomes per week") if period.step == "week"
             else _("Consent outcomes per day"))
    link = remembered(search_url)
    charts = {"series": _chart(title, result.series, link=link)}
    names = {"origin": lambda o: name_of(ORIGINS, o),
             "agent": lambda a: f"{a} {result.agent_names[a]}" if result.agent_names.get(a)
             else a}
    for name in DIMENSIONS:
        # Drawn half as wide: the breakdowns sit two to a row.
        charts[name] = _chart(str(TITLES[name]), result.breakdowns[name],
                              short=name.endswith("_version"), width=480,
                              name=names.get(name), link=link)
    days = {"since": period.since.isoformat(), "until": period.until.isoformat()}
    return render_template(
        "auditor/dashboard.html", period=period, errors=errors, args=request.args,
        result=result, drop=drop, charts=charts, decisions=DECISIONS, labels=LABELS,
        dimensions=DIMENSIONS, titles=TITLES, heads=HEADS, search_url=link,
        hangups_url=lambda **kw: url_for("auditor.hangups", **days, **kw),
        since_text=day_text(period.since), until_text=day_text(period.until)), \
        (400 if errors else 200)


LIST_LIMIT = 200
LIST_BATCH = 500  # hang-ups read at a time while a page of one phase fills


def phase_text(phase: str) -> str:
    """A notice phase as the pages name it."""
    if phase == BEFORE:
        return _("before the notice")
    if phase == AFTER:
        return _("after the notice")
    return escape(_("during %(part)s")) % {
        "part": Markup("<code>{}</code>").format(phase)}


def _cursor(text: str) -> tuple[datetime, str] | None:
    """A list cursor (`start~run id` of the last call shown), None if absent or unreadable."""
    at, _sep, run = (text or "").partition("~")
    try:
        return (datetime.fromisoformat(at), run[:32]) if run else None
    except ValueError:
        return None


@bp.get("/dashboard/hangups")
@workspace_required
def hangups():
    """The calls behind one drop-off number: hung up in one phase, in one language; newest
    first, a page at a time (keyset: `before` names the last call of the previous page)."""
    try:
        period = parse_period(request.args, local_today())
    except PeriodError as e:
        return render_template("auditor/error.html", code=400, title=_("Cannot list the calls"),
                               message="; ".join(e.errors.values())), 400
    language = (request.args.get("language") or "")[:100]
    phase = (request.args.get("phase") or "")[:100]
    before = _cursor(request.args.get("before", ""))
    durations = audio_seconds(current_app.config["AUDIO_DIR"])
    s = db_session()
    with transaction(s):
        found = hang_up_page(s, period, durations, language=language, phase=phase,
                             before=before, limit=LIST_LIMIT, batch=LIST_BATCH)
        calls, total, more = found.calls, found.total, found.more
        record_access(s, current_user(), "view.hangups", via="web",
                      query={"since": period.since.isoformat(),
                             "until": period.until.isoformat(), "language": language,
                             "phase": phase, "before": request.args.get("before", "")},
                      call_sids=[h.call_sid for h in calls])
    args = {"since": period.since.isoformat(), "until": period.until.isoformat(),
            "language": language, "phase": phase}
    next_url = (url_for("auditor.hangups", **args,
                        before=f"{calls[-1].started_at.isoformat()}~{calls[-1].run_id}")
                if more else None)
    return render_template("auditor/hangups.html", calls=calls, total=total,
                           language=language, phase=phase_text(phase) if phase else "",
                           since_text=day_text(period.since), until_text=day_text(period.until),
                           phase_text=phase_text, next_url=next_url,
                           first_url=(url_for("auditor.hangups", **args)
                                      if request.args.get("before") else None))
