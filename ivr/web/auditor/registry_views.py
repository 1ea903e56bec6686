"""The flow and notice registry pages: the list, one version with its diagram, and a diff."""

from __future__ import annotations

from flask import render_template, request
from flask_babel import gettext as _
from werkzeug.exceptions import NotFound

from ivr.services.auditor.access import transaction
from ivr.services.auditor.flow_registry import (
    UnknownVersion,
    two_versions,
    version_detail,
    versions,
)
from ivr.web.current import flows
from ivr.web.current import session as db_session

from .blueprint import bp
from .flowgraph import GraphError, flow_svg
from .login import workspace_required
from .registry import describe_node, diff_nodes, diff_prompts


def _error(code: int, title: str, message: str):
    return render_template("auditor/error.html", code=code, title=title, message=message), code


@bp.get("/flows", endpoint="flows")
@workspace_required
def flow_list():
    """Every flow version ever used, with its use and its notice versions."""
    s = db_session()
    with transaction(s):
        rows = versions(s)
    return render_template("auditor/flows.html", versions=rows,
                           a=request.args.get("a", ""), b=request.args.get("b", ""))


@bp.get("/flows/<version>")
@workspace_required
def flow_version(version: str):
    """One flow version: its use, its diagram, its prompts and its nodes."""
    s = db_session()
    with transaction(s):
        detail = version_detail(s, flows(), version)
    if detail is None:
        raise NotFound()
    use, flow, audio = detail.use, detail.heard.flow, detail.heard.audio
    try:
        graph, graph_error = flow_svg(flow), None
    except GraphError as e:
        graph, graph_error = None, str(e)
    prompts = diff_prompts(flow, flow, audio, audio)
    nodes = [(n.id, describe_node(n)) for n in flow.nodes.values()]
    return render_template("auditor/flow.html", use=use, flow=flow, graph=graph,
                           graph_error=graph_error, prompts=prompts, nodes=nodes)


@bp.get("/flows/diff")
@workspace_required
def flow_diff():
    """Two flow versions side by side: prompts (words and audio hash) and nodes."""
    s = db_session()
    with transaction(s):
        given = request.args.get("a", "").strip(), request.args.get("b", "").strip()
        if not all(given):
            return _error(400, _("Cannot compare"),
                          _("Two versions must be chosen to compare: pick a first and a second "
                            "version in the list of flow versions."))
        try:
            a, b = two_versions(s, flows(), *given)
        except UnknownVersion as e:
            missing = (_("The first version is not a stored flow version.") if e.which == 0
                       else _("The second version is not a stored flow version."))
            return _error(400, _("Cannot compare"),
                          missing + " " + _("Choose two versions from the list."))
    flow_a, flow_b, audio_a, audio_b = a.flow, b.flow, a.audio, b.audio
    prompts = diff_prompts(flow_a, flow_b, audio_a, audio_b)
    nodes = diff_nodes(flow_a, flow_b)
    return render_template("auditor/flow_diff.html", a=flow_a, b=flow_b, prompts=prompts,
                           nodes=nodes,
                           changed=sum(1 for p in prompts if p.state != "same")
                           + sum(1 for n in nodes if n.state != "same"))
