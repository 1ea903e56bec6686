"""Bearer tokens on the API: who is asking, and whether their role may."""

from __future__ import annotations

import functools

from flask import g, request

from ivr.services.accounts import authenticate
from ivr.storage.accounts import User
from ivr.web.current import session

from .api.errors import error_response


def bearer_user() -> User | None:
    """The user of this request's `Authorization: Bearer` token, if any."""
    if "bearer_user" not in g:
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else None
        g.bearer_user = authenticate(session(), token)
    return g.bearer_user


def token_user() -> User:
    """The user of an API view that require_token let in: its views need no None check."""
    user = bearer_user()
    if user is None:  # a view without require_token
        raise RuntimeError("no bearer token user: this view needs require_token")
    return user


def require_token(*roles: str):
    """Protect an API view: a valid bearer token with one of `roles` (admin always passes)."""
    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            user = bearer_user()
            if user is None:
                return error_response(401, "a valid bearer token is required")
            if user.role != "admin" and user.role not in roles:
                return error_response(403, f"the {user.role} role cannot use this")
            return view(*args, **kwargs)

        return wrapper

    return decorator
