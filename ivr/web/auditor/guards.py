"""Page guards by role, and the site's root that sends each user to their own home."""

from __future__ import annotations

import functools

from flask import redirect, request, url_for

from .login import current_user
from .roles import area_message, forbidden, home_url


def role_required(roles: tuple[str, ...], area: str):
    """Protect a page: log in first (redirect), then hold one of `roles` (a clear 403)."""

    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            user = current_user()
            if user is None:
                return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
            if user.role not in roles:
                return forbidden(user, area_message(roles, area))
            return view(*args, **kwargs)

        return wrapper

    return decorator


def index():
    """The site's root: a logged-in user's own home; the workspace (and its login) otherwise."""
    return redirect(home_url(current_user()))
