"""`python -m ivr retention ...`: the periodic destruction job and its log."""

from __future__ import annotations

import json

import click
from flask import current_app
from sqlalchemy import select

from ivr.adapters.twilio_recordings import TwilioAccount
from ivr.domain.kvkk.policy import PolicyError, load_policy
from ivr.domain.times import utcnow
from ivr.services.kvkk.runner import destroy
from ivr.storage.kvkk_models import DestructionLog
from ivr.web.current import session

from .context import with_app


def load():
    """The app's retention policy, or a one-line error."""
    try:
        return load_policy(current_app.config["RETENTION_FILE"])
    except PolicyError as e:
        raise click.ClickException(str(e)) from None


def twilio_account(config) -> TwilioAccount:
    """Twilio's REST API for deleting recordings."""
    return TwilioAccount.from_config(config)


def print_plan(p, outcome, dry_run: bool) -> None:
    """What was (or would be) destroyed, per category."""
    counts = outcome.counts if outcome else p.counts()
    verb = "Would destroy" if dry_run else "Destroyed"
    click.echo(f"{verb} (deleted or anonymised), per category:")
    for k, v in counts.items():
        click.echo(f"  {k:<21} {v}")
    pruned = outcome.pruned_log if outcome else p.log_prune
    if pruned:
        click.echo(f"  destruction records older than the kept period: {pruned} "
                   f"{'would be ' if dry_run else ''}removed")
    if outcome:
        click.echo(f"Logged in the destruction log as run {outcome.run_id}.")
        for ref, why in sorted(outcome.failures.items()):
            click.echo(f"NOT DONE {ref}: {why} (left for the next run)", err=True)


@click.group("retention")
def retention_cli():
    """Retention policy and the periodic destruction job (run it at least every 6 months)."""


@retention_cli.command("run")
@click.option("--dry-run", is_flag=True, help="Show what is due; change nothing.")
def run_cmd(dry_run):
    """Delete or anonymise personal data whose retention period has ended."""

    @with_app
    def run():
        policy = load()
        p, outcome = destroy(session(), policy, twilio_account(current_app.config),
                             now=utcnow(), dry_run=dry_run, reason="retention period ended",
                             kind="retention.run",
                             audit={"policy_days": policy.describe()})
        print_plan(p, outcome, dry_run)
        if outcome and outcome.failures:
            raise SystemExit(1)

    run()


@retention_cli.command("policy")
def policy_cmd():
    """Print the retention periods in force (days), and the file they come from."""

    @with_app
    def run():
        policy = load()
        click.echo(f"# {current_app.config['RETENTION_FILE']}")
        click.echo(json.dumps(policy.describe(), indent=2))

    run()


@retention_cli.command("log")
@click.option("--limit", type=click.IntRange(1, 100000), default=50, show_default=True)
@click.option("--run", "run_id", default=None, help="Only this run.")
def log_cmd(limit, run_id):
    """The latest entries of the destruction log."""

    @with_app
    def run():
        s = session()
        q = select(DestructionLog).order_by(DestructionLog.id.desc()).limit(limit)
        if run_id:
            q = q.where(DestructionLog.run_id == run_id)
        with s.begin():
            rows = list(s.scalars(q))
        for r in rows:
            click.echo(f"{r.at:%Y-%m-%d %H:%M:%S}Z  {r.run_id[:12]}  {r.category:<21} "
                       f"{r.action:<10} {r.table_name}:{r.row_ref}  ({r.reason})")
        if not rows:
            click.echo("The destruction log is empty.")

    run()
