"""`python -m ivr users add|list|disable|enable|rotate`: the accounts' lifecycle."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import click
from flask import current_app

from ivr.domain.times import utcnow
from ivr.services.accounts import (
    ROLES,
    AccountError,
    add_user,
    find_user,
    list_users,
    rotate_secret,
    set_active,
)
from ivr.web.current import session

from .context import with_app


@click.group("users")
def users_cli():
    """Accounts for auditors, agents and admins."""


@users_cli.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True)
def users_add(name, role):
    """Create an account and print its one-time secret, alone on the last line."""
    @with_app
    def run():
        s = session()
        try:
            with s.begin():
                user, secret = add_user(s, name, role)
        except AccountError as e:
            raise click.ClickException(str(e)) from None
        click.echo(f"Created {user.role} account {user.name!r} (id {user.id}). "
                   "Its secret is shown once; it works as password and bearer token:")
        click.echo(secret)

    run()


LOCAL = ZoneInfo("Europe/Istanbul")
BY = click.option("--by", default=None, help="Who does this (recorded in the audit log).")


def _account_command(change):
    """Run `change(s, user, now)` on the named account in one transaction; errors exit 1."""
    @with_app
    def run(name):
        s = session()
        try:
            with s.begin():
                user = find_user(s, name)
                result = change(s, user, utcnow())
        except AccountError as e:
            raise click.ClickException(str(e)) from None
        return user, result

    return run


def _ended(n: int) -> str:
    return f"{n} web session{'' if n == 1 else 's'} ended"


@users_cli.command("list")
@BY
def users_list(by):
    """Every account: id, name, role, status, live web sessions and when it was created."""
    @with_app
    def run():
        s, cfg = session(), current_app.config
        with s.begin():
            rows = list_users(s, utcnow(), cfg["PERMANENT_SESSION_LIFETIME"],
                              cfg["AUDITOR_SESSION_MAX_AGE"], by)
        if not rows:
            click.echo("No accounts yet. Create one: python -m ivr users add NAME --role auditor")
            return
        width = max(4, *(len(u.name) for u, _ in rows))
        click.echo(f"{'ID':>4}  {'NAME':<{width}}  {'ROLE':<7}  {'STATUS':<8}  SESSIONS  "
                   "CREATED (Europe/Istanbul)")
        for u, live in rows:
            created = u.created_at.astimezone(LOCAL).strftime("%d.%m.%Y %H:%M")
            status = "active" if u.active else "disabled"
            click.echo(f"{u.id:>4}  {u.name:<{width}}  {u.role:<7}  {status:<8}  "
                       f"{live:>8}  {created}")

    run()


@users_cli.command("disable")
@click.argument("name")
@BY
def users_disable(name, by):
    """Disable an account: its web sessions and its bearer token stop working at once."""
    user, ended = _account_command(lambda s, u, now: set_active(s, u, False, now, by))(name)
    click.echo(f"Disabled {user.role} account {user.name!r} (id {user.id}); {_ended(ended)}.")


@users_cli.command("enable")
@click.argument("name")
@BY
def users_enable(name, by):
    """Enable a disabled account again (with the secret it had)."""
    user, _ = _account_command(lambda s, u, now: set_active(s, u, True, now, by))(name)
    click.echo(f"Enabled {user.role} account {user.name!r} (id {user.id}).")


@users_cli.command("rotate")
@click.argument("name")
@BY
def users_rotate(name, by):
    """Give an account a new secret, printed alone on the last line; the old one stops
    working and every web session of the account ends."""
    user, (secret, ended) = _account_command(lambda s, u, now: rotate_secret(s, u, now, by))(name)
    note = "" if user.active else " The account stays disabled until `users enable`."
    click.echo(f"New secret for {user.role} account {user.name!r} (id {user.id}); "
               f"the old one no longer works, {_ended(ended)}.{note} "
               "It is shown once; it works as password and bearer token:")
    click.echo(secret)
