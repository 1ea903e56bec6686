"""Helpers shared by the auditor tests (no tests here): accounts, login with the CSRF
token, calls placed through the simulated Twilio, and a few prompts rendered once per
session with the offline audio engine."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from ivr.services.accounts import add_user
from ivr.storage.models import AuditEntry
from ivr.web.current import database

ROOT = Path(__file__).resolve().parents[2]
RENDERED = ("greeting", "language_offer", "notice_intro", "goodbye")
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def audio_flow_yaml() -> str:
    """A small flow with some prompts of the consent flow, word for word, to render."""
    consent = yaml.safe_load((ROOT / "flows" / "consent.yaml").read_text(encoding="utf-8"))
    return yaml.safe_dump({
        "id": "auditor-test-audio", "languages": ["tr", "en"], "default_language": "tr",
        "start": "greeting", "purpose": "marketing", "channels": ["ARAMA"],
        "prompts": {p: consent["prompts"][p] for p in RENDERED},
        "nodes": {
            "greeting": {"type": "play", "prompts": ["greeting", "language_offer"],
                         "next": "notice"},
            "notice": {"type": "notice", "prompts": ["notice_intro"], "next": "done"},
            "done": {"type": "exit", "prompts": ["goodbye"], "action": "hangup"},
        },
    }, allow_unicode=True, sort_keys=False)


@pytest.fixture(scope="session")
def rendered_audio(tmp_path_factory) -> Path:
    """Four consent prompts in both languages, rendered once with the offline engine."""
    from ivr.adapters.audio.build import build

    folder = tmp_path_factory.mktemp("rendered-audio")
    flow = folder.parent / "auditor-test-audio.yaml"
    flow.write_text(audio_flow_yaml(), encoding="utf-8")
    build([flow], folder, engine="offline", progress=False)
    return folder


def copy_audio(rendered: Path, audio_dir: Path) -> None:
    """Put the rendered files and their manifest into an app's audio folder."""
    for f in rendered.iterdir():
        if f.is_file():
            shutil.copy2(f, audio_dir / f.name)


# The fixtures below replace conftest's where a test module imports them.
AUDITOR = "ayse"


@pytest.fixture
def audio_dir(tmp_path, rendered_audio):
    """The app's audio folder, holding a few prompts rendered by the offline engine."""
    d = tmp_path / "audio"
    d.mkdir()
    copy_audio(rendered_audio, d)
    return d


@pytest.fixture
def auditor(app, client):
    """A client logged in as the auditor AUDITOR."""
    secret = make_user(app, AUDITOR, "auditor")
    assert login(client, AUDITOR, secret).status_code == 302
    return client


def make_user(app, name: str, role: str, language: str | None = "en") -> str:
    """Create an account; returns its secret.

    The account has chosen English (the pages' tests check English words), unless `language`
    says otherwise; None leaves the default, Turkish.
    """
    with app.app_context():
        s = database(app).sessionmaker()
        with s.begin():
            user, secret = add_user(s, name, role)
            user.language = language
        s.close()
    return secret


def csrf_token(client, path: str = "/login") -> str:
    """The CSRF token of the form at `path`."""
    html = client.get(path).get_data(as_text=True)
    m = CSRF.search(html)
    assert m, f"no CSRF token in {path}"
    return m.group(1)


def login(client, name: str, secret: str, next_url: str = "", lang: str = "en"):
    """Log in through the form, token and all, the login page in `lang`; returns the response."""
    token = csrf_token(client)
    return client.post("/login", data={"csrf_token": token, "name": name, "secret": secret,
                                       "next": next_url, "lang": lang})


def audit_bodies(app, kind: str | None = None) -> list[dict]:
    """Every audit entry body (optionally of one kind), oldest first."""
    s = database(app).sessionmaker()
    try:
        from sqlalchemy import select

        q = select(AuditEntry).order_by(AuditEntry.seq)
        if kind:
            q = q.where(AuditEntry.kind == kind)
        return [json.loads(e.body) for e in s.scalars(q)]
    finally:
        s.close()


def place_call(make_caller, keys, **kwargs):
    """A whole consent call with these keys; returns the caller (its call_sid)."""
    c = make_caller(**kwargs)
    c.run(keys)
    return c


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


class Node:
    """An HTML element: tag, attributes, children and its text."""

    def __init__(self, tag: str, attrs: dict):
        self.tag, self.attrs, self.children, self.parts = tag, attrs, [], []

    def get(self, name: str, default=None):
        return self.attrs.get(name, default)

    @property
    def text(self) -> str:
        return "".join(p if isinstance(p, str) else p.text for p in self.parts)

    def iter(self):
        yield self
        for c in self.children:
            yield from c.iter()

    def findall(self, tag: str, **attrs) -> list[Node]:
        """Descendants with this tag (or '*') whose attributes include `attrs` (True = any)."""
        out = []
        for n in self.iter():
            if n is self or (tag != "*" and n.tag != tag):
                continue
            if all(n.attrs.get(k.replace("_", "-")) is not None if v is True
                   else n.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items()):
                out.append(n)
        return out

    def find(self, tag: str, **attrs) -> Node | None:
        found = self.findall(tag, **attrs)
        return found[0] if found else None


def parse_html(html: str) -> Node:
    """A small DOM of an HTML page (the standard library's parser, void elements closed)."""
    from html.parser import HTMLParser

    root = Node("#root", {})
    stack = [root]

    class Builder(HTMLParser):
        def handle_starttag(self, tag, attrs):
            node = Node(tag, {k: (v if v is not None else "") for k, v in attrs})
            stack[-1].children.append(node)
            stack[-1].parts.append(node)
            if tag not in VOID:
                stack.append(node)

        def handle_endtag(self, tag):
            for i in range(len(stack) - 1, 0, -1):
                if stack[i].tag == tag:
                    del stack[i:]
                    break

        def handle_data(self, data):
            stack[-1].parts.append(data)

    b = Builder(convert_charrefs=True)
    b.feed(html)
    b.close()
    return root
