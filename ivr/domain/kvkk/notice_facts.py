"""The facts of the privacy notice (purposes, legal bases, recipients, rights) as data."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, TypedDict

import yaml

FACTS = Path(__file__).with_name("notice_facts.yaml")


class Notice(TypedDict):
    """The notice itself: its title, and where it is published."""

    title: str
    url: str


class DataCategory(TypedDict):
    """One category of personal data, with the legal bases and purposes given for it."""

    id: str
    name: str
    data: str
    legal_bases: list[str]
    purposes: list[str]


class Right(TypedDict):
    """One of the rights of KVKK Art. 11."""

    id: str
    right: str


class LocalisedFacts(TypedDict):
    """The notice facts in one language (`localised`)."""

    notice: Notice
    controller: dict[str, str]
    collection_method: str
    data_categories: list[DataCategory]
    recipient_groups: list[str]
    rights: list[Right]
    how_to_apply: str
    withdraw_consent: str


@cache
def facts() -> dict[str, Any]:
    """The notice facts file, parsed (its texts in every language, as YAML gives them)."""
    parsed: dict[str, Any] = yaml.safe_load(FACTS.read_text(encoding="utf-8"))
    return parsed


def localised(lang: str) -> LocalisedFacts:
    """The notice facts in one language (tr or en)."""
    f = facts()

    def t(v: Any) -> Any:
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
