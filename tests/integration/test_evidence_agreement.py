"""An evidence package agrees with itself: one checkpoint covers every leaf it mentions, and
every file states the same count and range, for a plain call and for a transferred one.
proof/proof.json is what `audit prove --json --checkpoint N` prints for that checkpoint."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile

import pytest

from tests.support.audit import invoke
from tests.support.auditor import audio_dir, audit_bodies, auditor, place_call, rendered_audio
from tests.support.transfer import ACCOUNT, QUEUE, follow, make_user, post_transfer, twilio

from .test_auditor_evidence import download, jsonl, open_package

__all__ = ["audio_dir", "auditor", "rendered_audio", "twilio"]  # fixtures


def plain_call(app, client, local_caller, twilio):
    return place_call(local_caller, ["1"]).call_sid


def transferred_call(app, client, local_caller, twilio):
    """Agent deniz sends a live call into the flow; the caller consents and goes back."""
    _agent, token = make_user(app, "deniz", "agent")
    c = local_caller(account_sid=ACCOUNT)
    twilio.calls[c.call_sid] = "in-progress"
    status, doc, _ = post_transfer(client, token, "k", {"call_sid": c.call_sid,
                                                         "return_to": QUEUE})
    assert status == 201, doc
    turn = follow(c, twilio.updates()[0].form["Url"])
    turn = c.press(turn, "1")
    assert turn.end.startswith("enqueue"), turn.end
    assert c.hang_up().status == 200
    return c.call_sid


@pytest.mark.parametrize("make_call", [plain_call, transferred_call])
def test_every_file_states_the_same_leaves_and_checkpoint(app, auditor, local_caller, twilio,
                                                          make_call, tmp_path):
    sid = make_call(app, auditor, local_caller, twilio)
    # Auditors look at the call first: their access leaves are about the call too.
    assert auditor.get(f"/auditor/calls/{sid}").status_code == 200
    assert auditor.get(f"/auditor/calls/{sid}").status_code == 200
    r = download(auditor, sid)
    assert r.status_code == 200, r.data[:300]
    files = open_package(r.data, sid)

    entries = jsonl(files["entries.jsonl"])
    indexes = [e["index"] for e in entries]
    kinds = [json.loads(e["body"])["kind"] for e in entries]
    count, first, last = len(entries), indexes[0], indexes[-1]
    access = kinds.count("auditor.access")
    assert access >= 2 and count - access > 5
    if make_call is transferred_call:
        assert "transfer.requested" in kinds and "transfer.returned" in kinds

    # Exactly the leaves about the call that the checkpoint covers, no more, no fewer.
    proof = json.loads(files["proof/proof.json"])
    size = proof["tree_size"]
    stored = [b for b in audit_bodies(app) if b["ref"] == sid]
    assert [json.loads(e["body"]) for e in entries] == stored[:count]
    assert all(i < size for i in indexes)
    assert [leaf["index"] for leaf in proof["leaves"]] == indexes
    assert sorted(int(n[len("proof/leaf-"):-4]) for n in files
                  if n.startswith("proof/leaf-")) == indexes
    # The download itself is a later leaf, beyond the checkpoint.
    later = stored[count:]
    assert [b["data"]["action"] for b in later] == ["export.evidence"]

    # One checkpoint, named the same in every file.
    checkpoints = [json.loads(line) for line in
                   invoke(app, "audit", "checkpoints", "--json").output.splitlines()]
    [cp] = [c for c in checkpoints if c["note"] == proof["checkpoint"]]
    assert cp["tree_size"] == size
    assert files["proof/checkpoint.note"].decode() == proof["checkpoint"]
    line = (f"{count} leaves ({first}..{last}: {count - access} facts of the call, {access} "
            f"records of auditors' access) included in signed checkpoint #{cp['id']} "
            f"(tree size {size})")
    assert line in files["verification.txt"].decode()
    readme = files["README.txt"].decode()
    assert f"#{cp['id']}, tree size {size}," in readme
    assert f"{count} leaves, indexes {first}..{last}." in readme
    assert re.search(rf"- {count - access} are the call's facts", readme)
    assert re.search(rf"- {access} record auditors' access", readme)
    assert "this package\n  cannot contain it" in readme
    assert f"--checkpoint {cp['id']}" in readme
    replay = files["replay.txt"].decode()
    assert (f"Audit entries: {count} leaves ({first}..{last}) included in signed checkpoint "
            f"#{cp['id']} (tree size {size}, signature valid)\n") in replay
    assert "not yet in a checkpoint" not in replay and "queued" not in replay
    assert "Result: OK" in replay
    summary = json.loads(files["call.json"])
    assert summary["evidence"] == {"checkpoint": cp["id"], "tree_size": size, "leaves": count,
                                   "first_index": first, "last_index": last,
                                   "call_facts": count - access, "auditor_access": access}
    assert all(ev["seq"] - 1 in indexes for ev in summary["timeline"])

    # proof.json is `audit prove --json` for the same checkpoint, byte for byte, even now
    # that the log has grown; --size names the same checkpoint.
    invoke(app, "audit", "integrate", "--once")
    for how in (["--checkpoint", str(cp["id"])], ["--size", str(size)]):
        out = invoke(app, "audit", "prove", sid, "--json", *how)
        assert out.exit_code == 0, out.output
        assert out.output.encode() == files["proof/proof.json"]
    assert json.loads(invoke(app, "audit", "prove", sid, "--json").output)["leaves"][-1][
        "index"] > last  # the latest checkpoint has the download's leaf too

    # The bundled checker agrees, with what the README says it needs.
    assert "the `cryptography` package" in readme and "`openssl` command" in readme
    with zipfile.ZipFile(__import__("io").BytesIO(r.data)) as z:
        z.extractall(tmp_path)
    done = subprocess.run([sys.executable, "-I", "verify.py"], cwd=tmp_path / f"evidence-{sid}",
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_prove_names_an_unknown_checkpoint(app, auditor, local_caller):
    sid = place_call(local_caller, ["2"]).call_sid
    out = invoke(app, "audit", "prove", sid, "--json", "--checkpoint", "999")
    assert out.exit_code == 1 and "there is no signed checkpoint #999" in out.output
    out = invoke(app, "audit", "prove", sid, "--json", "--size", "999999")
    assert out.exit_code == 1 and "no signed checkpoint has tree size 999999" in out.output
    out = invoke(app, "audit", "prove", sid, "--checkpoint", "1", "--size", "1")
    assert out.exit_code == 2 and "not both" in out.output
