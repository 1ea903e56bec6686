"""Which web pages each role may open, each role's home page, and the refusal page.

A refusal never links back to the page that refused: it names the visitor's own home
(the agent desk for an agent, the workspace for an auditor) and offers to log out, so no
role and page combination can send someone round in a loop.
"""

from __future__ import annotations

from flask import render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from ivr.services.accounts import User

WORKSPACE_ROLES = ("auditor", "admin")
DESK_ROLES = ("agent", "admin")
# Where each role lands after login, and where "/" sends it.
HOMES = {"auditor": "auditor.search", "admin": "auditor.search", "agent": "agent.desk"}
# Path prefix → (the roles that may open it, what it is called); the first match counts.
AREAS = {"/auditor": (WORKSPACE_ROLES, "the auditor workspace"),
         # A transfer's page: the agent who made it (the page checks which), and auditors.
         "/agent/transfers/": (("agent", "auditor", "admin"), "a transfer's page"),
         "/agent/": (DESK_ROLES, "the agent desk")}
# The refusal page's link home, a whole phrase so each language words it its own way.
TITLES = {"auditor.search": _l("Go to the auditor workspace"),
          "agent.desk": _l("Go to the agent desk")}
# Whole sentences per area, so each language words them its own way.
AREA_SENTENCES = {"the auditor workspace": _l("The auditor workspace is for the %(roles)s roles."),
                  "a transfer's page": _l("A transfer's page is for the %(roles)s roles."),
                  "the agent desk": _l("The agent desk is for the %(roles)s roles.")}
ROLE_NAMES = {"auditor": _l("auditor"), "admin": _l("admin"), "agent": _l("agent")}


def home_endpoint(user: User | None) -> str:
    """The endpoint of a user's own start page (the workspace when nobody is logged in)."""
    return HOMES.get(user.role, "auditor.search") if user is not None else "auditor.search"


def home_url(user: User | None) -> str:
    """The URL of a user's own start page."""
    return url_for(home_endpoint(user))


def may_open(user: User, path: str) -> bool:
    """Whether a path lies in an area the user's role may open (other paths: yes)."""
    for prefix, (roles, _name) in AREAS.items():
        if path == prefix.rstrip("/") or path.startswith(prefix):
            return user.role in roles
    return True


def forbidden(user: User, message: str):
    """The 403 page: why, and a link to the user's own home (never the refusing page)."""
    home = home_endpoint(user)
    return render_template("auditor/forbidden.html", code=403, title=_("Not allowed"),
                           message=_("Your account has the %(role)s role.",
                                     role=ROLE_NAMES.get(user.role, user.role)) + " " + message,
                           home=url_for(home), home_title=TITLES[home]), 403


def area_message(roles: tuple[str, ...], area: str) -> str:
    """The sentence saying which roles an area is for."""
    names = [str(ROLE_NAMES.get(r, r)) for r in roles]
    listed = _("%(first)s and %(last)s", first=", ".join(names[:-1]), last=names[-1]) \
        if len(names) > 1 else names[0]
    if area in AREA_SENTENCES:
        return str(AREA_SENTENCES[area]) % {"roles": listed}
    return _("%(area)s is for the %(roles)s roles.", area=area[:1].upper() + area[1:],
             roles=listed)
