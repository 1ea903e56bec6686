"""`python -m ivr witness ...`: a C2SP tlog-witness run by someone other than the controller.

It needs no database and no IVR settings: its own key file, its own state file, and the
verifier keys of the logs it witnesses.
"""

from __future__ import annotations

import os
from pathlib import Path

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ivr.adapters.witness_server import StateFile, Witness, http_server
from ivr.audit import cosignature, note
from ivr.audit.checkpoint import load_private_key, private_key_pem
from ivr.audit.errors import AuditError


def _key(path: str) -> Ed25519PrivateKey:
    """The witness's key from a PKCS#8 PEM file, made (mode 0600) if the file is missing."""
    p = Path(path)
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(private_key_pem(Ed25519PrivateKey.generate()))
    try:
        return load_private_key(p.read_text())
    except (OSError, AuditError) as e:
        raise click.ClickException(f"{path}: {e}") from None


def _name(name: str) -> str:
    try:
        cosignature.cosigner(name, Ed25519PrivateKey.generate())
    except note.NoteError as e:
        raise click.BadParameter(str(e), param_hint="--name") from None
    return name


_name_option = click.option("--name", required=True,
                            help="The witness's name, a schema-less URL (witness.example/dpo).")
_key_option = click.option("--key", "key_file", required=True, type=click.Path(dir_okay=False),
                           help="The witness's Ed25519 key (PKCS#8 PEM); made if missing.")


@click.group("witness")
def witness_cli():
    """A transparency-log witness (C2SP tlog-witness) with its own key and state."""


@witness_cli.command("vkey")
@_name_option
@_key_option
def vkey(name, key_file):
    """Print the witness's cosignature/v1 verifier key (type 0x04), for IVR_WITNESSES."""
    click.echo(cosignature.cosigner(_name(name), _key(key_file)).vkey())


@witness_cli.command("serve")
@_name_option
@_key_option
@click.option("--state", "state_file", required=True, type=click.Path(dir_okay=False),
              help="The JSON file that keeps the last cosigned size and root of each log.")
@click.option("--log", "log_keys", multiple=True, required=True,
              help="A witnessed log's verifier key, as `python -m ivr audit public-key "
                   "--note` prints it; its name is the log's origin (repeatable).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8700, show_default=True, type=int)
@click.option("--prefix", default="", help="URL prefix of add-checkpoint (default: none).")
def serve(name, key_file, state_file, log_keys, host, port, prefix):
    """Serve POST <prefix>/add-checkpoint and GET <prefix>/<origin hash>/checkpoint."""
    key = _key(key_file)
    try:
        logs = [note.parse_vkey(k) for k in log_keys]
    except note.NoteError as e:
        raise click.BadParameter(str(e), param_hint="--log") from None
    w = Witness(_name(name), key, logs, StateFile(Path(state_file)))
    server = http_server(w, host, port, prefix)
    click.echo(f"witness {w.cosigner.vkey()}")
    click.echo(f"listening on http://{host}:{server.server_port}{prefix}/add-checkpoint "
               f"for {', '.join(sorted(w.logs))}", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
