"""`python -m ivr spool status|drain`."""

from __future__ import annotations

import click

from .cli import with_app
from .spool import spool


@click.group("spool")
def spool_cli():
    """Webhooks kept on local disk while the database was unreachable."""


@spool_cli.command("status")
@with_app
def status():
    """How many records wait in this server's spool."""
    click.echo(f"{spool().depth()} record(s) waiting in {spool().directory}")


@spool_cli.command("drain")
@with_app
def drain():
    """Replay the waiting records into the database, in order."""
    from .offline import apply_record

    report = spool().drain(apply_record)
    click.echo(f"applied {report.applied}, waiting {report.waiting}, left {spool().depth()}"
               + (f" ({report.stopped})" if report.stopped else ""))
    for line in report.failed:
        click.echo(f"unreadable: {line}", err=True)
    if report.stopped or report.failed:
        raise SystemExit(1)
