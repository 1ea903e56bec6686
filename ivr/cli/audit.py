"""`python -m ivr audit ...`: integrate, verify, prove, checkpoints, the public key, replay."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
from flask import current_app
from sqlalchemy import select

from ivr.audit import checkpoint as cps
from ivr.audit import cosignature, note, timestamps
from ivr.audit.errors import AuditError, VerificationError
from ivr.audit.proofs import b64, proof_json
from ivr.audit.verify import max_queue_age_default
from ivr.cli.context import parse_when, with_app
from ivr.domain.times import AUDIT, utc_iso, utcnow
from ivr.services import anchoring, audit_keys
from ivr.services.anchor_verify import AnchorSummary, check_cosignatures, check_timestamps
from ivr.services.audit_replay import replay_call, replay_range
from ivr.services.audit_sequencer import log_origin, mmd, note_verifier, run_pass
from ivr.services.audit_verify import verify_from_checkpoint, verify_log
from ivr.storage import anchor_store
from ivr.storage.audit_tree import checkpoint_head, latest_head, prove_call
from ivr.storage.audit_tree import consistency as consistency_proof
from ivr.storage.models import AuditEntry, AuditTreeHead
from ivr.web import current
from ivr.web.current import flows, session


def _read_checkpoints(paths) -> tuple[list, list[str]]:
    """Checkpoints kept outside the database: hash-chain JSON documents and signed notes."""
    chain, notes = [], []
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, ValueError) as e:
            raise click.ClickException(f"{path}: cannot read a checkpoint: {e}") from None
        if not text.lstrip().startswith("{"):
            notes.append(text)
            continue
        try:
            chain.append(cps.from_document(json.loads(text), f"checkpoint file {path}"))
        except (AuditError, ValueError) as e:
            raise click.ClickException(f"{path}: {e}") from None
    return chain, notes


def _read_public_keys(paths) -> tuple[dict, list | None]:
    """PEM keys for the hash chain's checkpoints, vkeys for the Merkle log's (plus the app's)."""
    keys = audit_keys.app_public_keys(current.app().config)
    vkeys = []
    for path in paths:
        try:
            data = Path(path).read_bytes()
            if data.lstrip().startswith(b"-----BEGIN"):
                keys.update(cps.public_keys(cps.load_public_key(data)))
            else:
                vkeys.append(note.parse_vkey(data.decode()))
        except (OSError, AuditError, note.NoteError, UnicodeDecodeError) as e:
            raise click.ClickException(f"{path}: {e}") from None
    return keys, vkeys


@click.group("audit")
def audit_cli():
    """The verifiable audit log: integrate, verify, prove, checkpoints, public key, replay."""


@audit_cli.command("verify")
@click.option("--checkpoint", "checkpoint_files", multiple=True,
              type=click.Path(dir_okay=False),
              help="A checkpoint kept outside the database: a signed note, or a hash-chain "
                   "checkpoint JSON (repeatable).")
@click.option("--public-key", "key_files", multiple=True, type=click.Path(dir_okay=False),
              help="A signer's key besides the app's own: a signed-note vkey, or a PEM public "
                   "key for hash-chain checkpoints (repeatable).")
@click.option("--max-queue-age", type=float, default=None,
              help="Fail if a leaf has been queued longer than this many seconds "
                   "(default: 60, or 10 MMD if longer).")
@click.option("--tsa-ca", "tsa_ca", type=click.Path(dir_okay=False), default=None,
              help="PEM roots of the time-stamp authorities (default: IVR_TSA_CA_FILE).")
@click.option("--witness", "witness_keys", multiple=True,
              help="A witness's cosignature/v1 verifier key (type 0x04), or a file holding "
                   "one, whose cosignatures are required (repeatable).")
@click.option("--quorum", type=int, default=None,
              help="How many of the --witness keys must cosign (default: all of them).")
@click.option("--max-cosign-age", type=float, default=60.0, show_default=True,
              help="Checkpoints younger than this many seconds may still wait for their "
                   "cosignatures.")
@click.option("--from-checkpoint", "from_checkpoint", type=click.IntRange(min=1), default=None,
              help="Check only what came after signed checkpoint #N (its id in `audit "
                   "checkpoints`), which an earlier run verified: its signature and root from "
                   "the stored tree, every later leaf and checkpoint, and the consistency "
                   "proof to the latest one. The summary names the N for the next run.")
@click.option("--progress", is_flag=True, help="Report progress on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def verify(checkpoint_files, key_files, max_queue_age, tsa_ca, witness_keys, quorum,
           max_cosign_age, from_checkpoint, progress, as_json):
    """Recompute the Merkle tree from every leaf and check every signed checkpoint, the hash
    chain from before the Merkle log, the queue, and that every fact has its leaf; then
    every time-stamp token and, with --witness, the witnesses' cosignatures. With
    --from-checkpoint N, only the leaves and checkpoints after #N (see docs/auditors.md).

    Exits 0 with a summary, or 1 naming the first bad leaf index (or seq of the hash chain,
    or checkpoint) and the kind of tampering.
    """
    witnesses = [_read_witness(k) for k in witness_keys]
    if quorum is None:
        quorum = len(witnesses)
    if witnesses and not 1 <= quorum <= len(witnesses):
        raise click.BadParameter(f"between 1 and {len(witnesses)}", param_hint="--quorum")

    @with_app
    def run():
        chain, notes = _read_checkpoints(checkpoint_files)
        keys, vkeys = _read_public_keys(key_files)
        s = session()
        origin = log_origin(s, current_app)
        s.rollback()
        own = [note_verifier(current_app, origin, k) for k in [_own_key()] if k is not None]
        report = (lambda n: click.echo(f"  verified up to leaf {n}", err=True)) \
            if progress else None
        bound = max_queue_age if max_queue_age is not None else \
            max_queue_age_default(mmd(current_app))
        roots = _tsa_roots(tsa_ca)
        cfg = anchoring.settings(current_app)
        anchors = AnchorSummary()
        try:
            if from_checkpoint is not None:
                summary = verify_from_checkpoint(s, from_checkpoint, verifiers=own + vkeys,
                                                 origin=origin, progress=report, notes=notes,
                                                 max_queue_age=bound)
            else:
                summary = verify_log(s, public_keys=keys, verifiers=own + vkeys, origin=origin,
                                     progress=report, checkpoints=chain, notes=notes,
                                     max_queue_age=bound)
            now = utcnow()
            # From a checkpoint, the anchors of the checkpoints from it on.
            floor = summary.from_size if from_checkpoint is not None else 0
            check_timestamps(s, roots, anchors, now=now, min_size=floor,
                             interval=cfg.interval if cfg.tsa_urls else None)
            check_cosignatures(s, witnesses, quorum, anchors, max_age=max_cosign_age, now=now,
                               min_size=floor)
        except VerificationError as e:
            if as_json:
                click.echo(json.dumps({"ok": False, **e.to_dict()}))
            else:
                click.echo(f"FAILED at {e.unit} {e.seq}: {e.problem}: expected {e.expected}, "
                           f"found {e.found}" + (f" ({e.detail})" if e.detail else ""))
            sys.exit(1)
        except AuditError as e:
            raise click.ClickException(str(e)) from None
        if as_json:
            click.echo(json.dumps({**summary.to_dict(), "anchors": anchors.to_dict()}))
        else:
            extra = anchors.line() if anchors.timestamps or anchors.unchecked_timestamps \
                or anchors.cosigned else ""
            click.echo(f"{summary.line()}; {extra}" if extra else summary.line())

    run()


def _read_witness(value: str) -> cosignature.Cosigner:
    """A --witness: a vkey, or a file that holds one."""
    text = value
    if "+" not in value or Path(value).is_file():
        try:
            text = Path(value).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise click.BadParameter(f"{value}: {e}", param_hint="--witness") from None
    try:
        return cosignature.parse_vkey(text)
    except note.NoteError as e:
        raise click.BadParameter(str(e), param_hint="--witness") from None


def _tsa_roots(path: str | None) -> list:
    """The authorities' roots: --tsa-ca, else IVR_TSA_CA_FILE."""
    if path is None:
        return anchoring.verifier_roots(current_app)
    try:
        return timestamps.load_roots(Path(path).read_bytes(), path)
    except (OSError, ValueError) as e:
        raise click.ClickException(f"--tsa-ca: {e}") from None


@audit_cli.command("anchor")
@click.option("--once", is_flag=True,
              help="One pass, then exit; every wanted anchor is tried now, whatever its "
                   "back-off says (after an outage, fill the gap at once).")
def anchor(once):
    """Fetch the time-stamps and witness cosignatures the checkpoints are waiting for.

    The servers do this in a background thread; this command does the same from a shell
    (cron, or a worker of its own). Without --once it runs until interrupted.
    """

    @with_app
    def run():
        app = current.app()
        while True:
            report = anchoring.run_anchoring(app, retry_now=once, wait=30.0 if once else 0.0)
            if report is None:
                if once:
                    raise click.ClickException("another process is anchoring; try again")
            elif once or report.stamped or report.cosigned or report.failures:
                click.echo(f"time-stamped {report.stamped}, cosigned {report.cosigned}, "
                           f"skipped {report.skipped}, failed {len(report.failures)}")
                for f in report.failures:
                    click.echo(f"  {f}", err=True)
            if once:
                return
            time.sleep(anchoring.settings(app).period)

    run()


@audit_cli.command("timestamps")
@click.option("--json", "as_json", is_flag=True,
              help='JSON lines {"tree_size", "note", "tsa", "token"}: the public contract.')
def timestamps_cmd(as_json):
    """Every time-stamp token held, oldest checkpoint first.

    A token is the base64 DER TimeStampResp of the authority; its message imprint is the
    SHA-256 of the note's signed body (the text up to and including its final newline).
    """

    @with_app
    def run():
        for a, head in anchor_store.done(session(), anchor_store.TIMESTAMP):
            if as_json:
                click.echo(json.dumps({"tree_size": head.tree_size, "note": head.note,
                                       "tsa": a.target, "token": a.data}))
            else:
                at = utc_iso(a.anchored_at, AUDIT)
                click.echo(f"#{head.id}\t{head.tree_size}\t{at}\t{a.target}")

    run()


def _own_key():
    try:
        return audit_keys.signing_key(current.app().config, create=False)
    except AuditError as e:
        raise click.ClickException(str(e)) from None


@audit_cli.command("integrate")
@click.option("--once", is_flag=True,
              help="One pass (then sign a checkpoint if the tree grew) and exit.")
def integrate(once):
    """Run the sequencer: integrate queued leaves into the tree and sign checkpoints.

    Without --once it runs until interrupted, a pass every MMD / 2, like the servers' threads;
    only one sequencer works at a time.
    """


    @with_app
    def run():
        app = current.app()
        while True:
            try:
                result = run_pass(app, force_checkpoint=once, wait=10.0 if once else 0.0)
            except AuditError as e:
                raise click.ClickException(str(e)) from None
            if result is None and once:
                raise click.ClickException("another sequencer holds the lock; try again")
            if result is not None and (once or result.integrated or result.checkpoint):
                cp = (f"; signed checkpoint #{result.checkpoint.id} at size "
                      f"{result.checkpoint.tree_size}" if result.checkpoint else "")
                click.echo(f"integrated {result.integrated} leaves; tree size "
                           f"{result.tree_size}{cp}")
            if result is not None and result.refused:
                click.echo(f"refused to sign a checkpoint: {result.refused}", err=True)
                if once:
                    sys.exit(1)
            if once:
                return
            time.sleep(mmd(app) / 2)

    run()


@audit_cli.command("checkpoint")
def checkpoint():
    """Integrate the queue, sign a checkpoint of the tree now, and print its signed note."""

    @with_app
    def run():
        try:
            run_pass(current.app(), force_checkpoint=True, wait=10.0)
        except AuditError as e:
            raise click.ClickException(str(e)) from None

        head = latest_head(session())
        if head is None:
            raise click.ClickException("the audit log is empty: there is nothing to checkpoint")
        click.echo(head.note, nl=False)

    run()


@audit_cli.command("checkpoints")
@click.option("--json", "as_json", is_flag=True, help="JSON lines, each with the whole note.")
def checkpoints(as_json):
    """List the signed checkpoints, oldest first: id, tree size, time and root hash."""

    @with_app
    def run():
        for h in session().scalars(select(AuditTreeHead).order_by(AuditTreeHead.tree_size,
                                                                  AuditTreeHead.id)):
            root = b64(bytes.fromhex(h.root_hash))
            at = utc_iso(h.at, AUDIT)
            if as_json:
                click.echo(json.dumps({"id": h.id, "tree_size": h.tree_size, "at": at,
                                       "root_hash": root, "note": h.note}))
            else:
                click.echo(f"#{h.id}\t{h.tree_size}\t{at}\t{root}")

    run()


@audit_cli.command("public-key")
@click.option("--note", "as_note", is_flag=True,
              help="The signed-note verifier key: <name>+<hex key hash>+<base64 key>.")
def public_key(as_note):
    """Print the checkpoint signing key's public half (PEM, or --note for the vkey)."""

    @with_app
    def run():
        try:
            key = audit_keys.signing_key(current.app().config)
        except AuditError as e:
            raise click.ClickException(str(e)) from None
        if as_note:
            click.echo(note_verifier(current_app, log_origin(session(), current_app), key).vkey())
            return
        click.echo(f"key id {cps.key_id(key)}", err=True)
        click.echo(cps.public_key_pem(key), nl=False)

    run()


@audit_cli.command("prove")
@click.argument("call_sid")
@click.option("--json", "as_json", is_flag=True, help="The proof document (the public contract).")
@click.option("--checkpoint", "checkpoint_id", type=click.IntRange(min=1), default=None,
              help="Prove to signed checkpoint #N (its id in `audit checkpoints`): the call's "
                   "leaves it covers. Default: the latest checkpoint, covering every leaf.")
@click.option("--size", "tree_size", type=click.IntRange(min=1), default=None,
              help="Prove to the signed checkpoint of this tree size (like --checkpoint).")
def prove(call_sid, as_json, checkpoint_id, tree_size):
    """The call's leaves with inclusion proofs to a signed checkpoint (the latest by default).

    Exits 1 for an unknown call, or, without --checkpoint/--size, while its leaves are not
    yet in a checkpoint. An evidence package's proof/proof.json is this document for the
    checkpoint its README names.
    """
    if checkpoint_id is not None and tree_size is not None:
        raise click.UsageError("give --checkpoint or --size, not both")

    @with_app
    def run():
        s = session()
        try:
            head = None if checkpoint_id is None and tree_size is None else \
                checkpoint_head(s, checkpoint=checkpoint_id, size=tree_size)
            doc = prove_call(s, call_sid, head)
        except AuditError as e:
            raise click.ClickException(str(e)) from None
        if as_json:
            click.echo(proof_json(doc), nl=False)
            return
        click.echo(doc["checkpoint"], nl=False)
        click.echo(f"\ntree size {doc['tree_size']}, root {doc['root_hash']}")
        for leaf in doc["leaves"]:
            click.echo(f"leaf {leaf['index']}: {len(leaf['proof'])} proof hashes")

    run()


@audit_cli.command("consistency")
@click.argument("old_size", type=int)
@click.argument("new_size", type=int)
def consistency(old_size, new_size):
    """Print the RFC 9162 consistency proof between two tree sizes, as JSON."""
    @with_app
    def run():
        try:
            doc = consistency_proof(session(), old_size, new_size)
        except AuditError as e:
            raise click.ClickException(str(e)) from None
        click.echo(json.dumps(doc))

    run()


@audit_cli.command("entries")
@click.option("--from", "first", type=int, default=1, show_default=True, help="First seq.")
@click.option("--to", "last", type=int, default=None, help="Last seq (default: the head).")
@click.option("--call", "call_sid", default=None, help="Only this call's entries.")
def entries(first, last, call_sid):
    """Print leaves as JSON lines {seq, index, body}, for outside verification."""

    @with_app
    def run():
        q = (select(AuditEntry.seq, AuditEntry.body).order_by(AuditEntry.seq)
             .execution_options(yield_per=5000))
        if call_sid:
            q = q.where(AuditEntry.ref == call_sid)
        else:
            q = q.where(AuditEntry.seq >= first)
            if last is not None:
                q = q.where(AuditEntry.seq <= last)
        for r in session().execute(q):
            click.echo(json.dumps({"seq": r.seq, "index": r.seq - 1, "body": r.body},
                                  ensure_ascii=False))

    run()


@audit_cli.command("replay")
@click.argument("call_sid", required=False)
@click.option("--since", default=None, help="ISO date/time (UTC), inclusive.")
@click.option("--until", default=None, help="ISO date/time (UTC), exclusive.")
@click.option("--verbose", "-v", is_flag=True, help="With --since/--until: every path in full.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (JSON lines).")
def replay(call_sid, since, until, verbose, as_json):
    """Re-run a call's recorded inputs through the engine and compare with the record.

    Give a CALL_SID, or --since/--until for every call whose flow started in that range.
    Exits 1 if any replay differs from what was stored, naming where the paths diverge.
    """
    if bool(call_sid) == bool(since or until):
        raise click.UsageError("give either CALL_SID or --since/--until")
    start, end = parse_when(since), parse_when(until)

    @with_app
    def run():
        s = session()
        try:
            if call_sid:
                results = [replay_call(s, flows(), call_sid)]
            else:
                results = replay_range(s, flows(), start, end)
            bad = total = 0
            for r in results:
                total += 1
                bad += not r.ok
                if as_json:
                    click.echo(json.dumps(r.to_dict(), ensure_ascii=False))
                elif call_sid or verbose:
                    click.echo(r.render())
                else:
                    click.echo(r.summary())
                s.rollback()  # read-only: a fresh snapshot for the next call
        except AuditError as e:
            raise click.ClickException(str(e)) from None
        if not call_sid and not as_json:
            click.echo(f"replayed {total} calls: {total - bad} ok, {bad} mismatched")
        if bad:
            sys.exit(1)

    run()
