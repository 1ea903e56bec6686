"""The lifecycle's commands: `consents status`, `iys`, `subject` and `retention`."""

from __future__ import annotations

import json

import click

from ivr.domain import times
from ivr.services.kvkk.status import current_status
from ivr.services.kvkk.withdrawals import WithdrawalError, e164
from ivr.web.current import personal_data, session

from .context import with_app
from .kvkk_iys import iys_cli
from .kvkk_retention import retention_cli
from .kvkk_subject import subject_cli


@click.command("status")
@click.argument("phone")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def consents_status(phone, as_json):
    """A person's current consent status per channel (their latest decision for it)."""

    @with_app
    def run():
        try:
            number = e164(phone)
        except WithdrawalError as e:
            raise click.ClickException(str(e).replace("'phone'", "PHONE")) from None
        s = session()
        with s.begin():
            status = current_status(s, personal_data().fingerprint(number))
        rows = {c: {"status": st.status,
                    "since": st.since.isoformat().replace("+00:00", "Z") if st.since else None,
                    "source": st.source, "consent_id": st.consent_id}
                for c, st in status.items()}
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        click.echo(f"{'channel':<8} {'status':<10} {'since':<63} source")
        for c, r in rows.items():
            click.echo(f"{c:<8} {r['status']:<10} {times.text(r['since']):<63} "
                       f"{times.value_or_dash(r['source'])}")

    run()


def register(cli: click.Group) -> None:
    """Attach the lifecycle's commands to the `python -m ivr` group."""

    consents = cli.commands["consents"]
    if not isinstance(consents, click.Group):  # registered by ivr/cli before this
        raise TypeError("the `consents` command must be a group")
    consents.add_command(consents_status)
    cli.add_command(iys_cli)
    cli.add_command(subject_cli)
    cli.add_command(retention_cli)
