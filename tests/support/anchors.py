"""Helpers for the anchoring tests: a witness run as `python -m ivr witness serve` in its own
process, and an insider who rewrites the Merkle log with the database and the signing key."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from ivr.audit import merkle, note
from ivr.web.current import database

from .audit import drop_guards

ROOT = Path(__file__).resolve().parents[2]


class WitnessProcess:
    """`python -m ivr witness serve` on 127.0.0.1 (port 0), with its own key and state."""

    def __init__(self, folder: Path, log_vkeys: list[str], name: str = "witness.test/dpo"):
        self.folder = folder
        self.name = name
        self.state = folder / "state.json"
        folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "ivr", "witness", "serve", "--name", name,
             "--key", str(folder / "witness.key"), "--state", str(self.state), "--port", "0",
             *[a for v in log_vkeys for a in ("--log", v)]],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = self.proc.stdout.readline()
        assert first.startswith("witness "), first + self.proc.stderr.read()
        self.vkey = first.split()[1]
        listening = self.proc.stderr.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/add-checkpoint", listening)
        assert m, listening
        self.url = f"http://127.0.0.1:{m.group(1)}"

    def known(self) -> dict:
        """The state file: the last cosigned size and root per log."""
        return json.loads(self.state.read_text()) if self.state.exists() else {}

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.proc.stdout.close()
        self.proc.stderr.close()


def rewrite_log(app, key: Ed25519PrivateKey, origin: str, change) -> list[str]:
    """The insider: `change(body) -> body` on every leaf, then every stored leaf hash and
    node recomputed, and every checkpoint signed again over the new tree with the log's key
    (same ids and sizes). The new notes, in checkpoint order."""
    drop_guards(app)
    engine = database(app).engine
    with engine.begin() as conn:
        leaves = conn.execute(text("SELECT seq, body FROM audit_log ORDER BY seq")).all()
        tree = merkle.CompactRange()
        nodes = []
        for seq, body in leaves:
            new = change(body)
            if new != body:
                conn.execute(text("UPDATE audit_log SET body = :b WHERE seq = :s"),
                             {"b": new, "s": seq})
            h = merkle.leaf_hash(new.encode())
            nodes.append((0, seq - 1, h))
            tree.append(h, lambda level, idx, hh: nodes.append((level, idx, hh)))
        conn.execute(text("DELETE FROM audit_tree"))
        conn.execute(text("INSERT INTO audit_tree (level, idx, hash) VALUES (:l, :i, :h)"),
                     [{"l": lv, "i": i, "h": h} for lv, i, h in nodes])
        hashes = [h for lv, _i, h in nodes if lv == 0]
        out = []
        for hid, size in conn.execute(text("SELECT id, tree_size FROM audit_tree_heads "
                                           "ORDER BY tree_size, id")).all():
            root = merkle.root_of(hashes[:size])
            signed = note.sign_checkpoint(note.Checkpoint(origin, size, root), origin, key)
            conn.execute(text("UPDATE audit_tree_heads SET root_hash = :r, note = :n "
                              "WHERE id = :id"), {"r": root.hex(), "n": signed, "id": hid})
            out.append(signed)
    return out
