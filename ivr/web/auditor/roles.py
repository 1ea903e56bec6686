"""Which web pages each role may open, each role's home page, and the refusal page.

A refusal never links back to the page that refused: it names the visitor's own home
(the agent desk for an agent, the workspace for an auditor) and offers to log out, so no
role and page combination can send someone round in a loop.
"""

from __future__ import annotations

from flask import render_template, url_for

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
TITLES = {"auditor.search": "the auditor workspace", "agent.desk": "the agent desk"}


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
    return render_template("auditor/forbidden.html", code=403, title="Not allowed",
                           message=f"Your account has the {user.role} role. {message}",
                           home=url_for(home), home_title=TITLES[home]), 403


def area_message(roles: tuple[str, ...], area: str) -> str:
    """The sentence saying which roles an area is for."""
    return f"{area[0].upper()}{area[1:]} is for the {' and '.join(roles)} roles."
