"""The facts of the privacy notice (purposes, legal bases, recipients, rights) as data."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml

FACTS = Path(__file__).with_name("notice_facts.yaml")


@cache
def facts() -> dict:
    """The notice facts file, parsed."""
    return yaml.safe_load(FACTS.read_text(encoding="utf-8"))


def localised(lang: str) -> dict:
    """The notice facts in one language (tr or en)."""
    f = facts()

    def t(v):
        return v[lang] if isinstance(v, dict) and lang in v else v

    bases = {k: t(v) for k, v in f["legal_bases"].items()}
    return {
        "notice": {"title": t(f["notice"]["title"]), "url": f["notice"]["url"]},
        "controller": dict(f["controller"]),
        "collection_method": t(f["collection_method"]),
        "data_categories": [{"id": c["id"], "name": t(c["name"]), "data": t(c["data"]),
                             "legal_bases": [bases[b] for b in c["legal_bases"]],
                             "purposes": list(t(c["purposes"]))}
                            for c in f["data_categories"]],
        "recipient_groups": [t(g) for g in f["recipient_groups"]],
        "rights": [{"id": r["id"], "right": t(r)} for r in f["rights"]],
        "how_to_apply": t(f["how_to_apply"]),
        "withdraw_consent": t(f["withdraw_consent"]),
    }
