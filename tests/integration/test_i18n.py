"""Turkish and English: the catalogues, how a request's language is chosen, the switch, and
every page of the workspace rendered in both languages with nothing left untranslated."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.pofile import read_po
from babel.support import Translations

from ivr.services.accounts import User
from ivr.web.current import database
from tests.support.auditor import (
    audio_dir,
    csrf_token,
    login,
    make_user,
    parse_html,
    place_call,
    rendered_audio,
)

from .test_flow_registry import two_versions

__all__ = ["audio_dir", "rendered_audio", "two_versions"]  # fixtures, so pytest finds them

ROOT = Path(__file__).resolve().parents[2]
TRANSLATIONS = ROOT / "ivr" / "translations"
PLACEHOLDER = re.compile(r"%\([a-z_]+\)[sd]")
TAGS = re.compile(r"<script.*?</script>|<style.*?</style>|<[^>]+>", re.S)


def catalogue(lang: str):
    with open(TRANSLATIONS / lang / "LC_MESSAGES" / "messages.po", "rb") as f:
        return read_po(f, locale=lang)


def extracted() -> set:
    """Every msgid the code and templates hold now, extracted as `pybabel extract` does."""
    method_map, options_map = [], {}
    section = None
    for line in (ROOT / "babel.cfg").read_text().splitlines():
        if line.startswith("["):
            method, pattern = line.strip("[]").split(":", 1)
            section = pattern.strip()
            method_map.append((section, method.strip()))
            options_map[section] = {}
    keywords = {**DEFAULT_KEYWORDS, "_l": None}  # what `pybabel extract -k _l` looks for
    ids = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
            str(ROOT), method_map, options_map, keywords=keywords):
        ids.add(message)
    return ids


def msgids(c) -> list:
    return [m.id for m in c if m.id]


def test_every_turkish_message_is_translated_with_the_same_placeholders():
    tr = catalogue("tr")
    assert len(msgids(tr)) > 300
    for m in tr:
        if not m.id:
            continue
        ids = m.id if isinstance(m.id, tuple) else (m.id,)
        strings = m.string if isinstance(m.string, tuple) else (m.string,)
        assert all(s.strip() for s in strings), f"no Turkish for {m.id!r}"
        assert not m.fuzzy, f"fuzzy Turkish for {m.id!r}"
        wanted = set(PLACEHOLDER.findall(ids[-1]))
        for s in strings:
            assert set(PLACEHOLDER.findall(s)) == wanted, (m.id, s)


def test_the_catalogues_hold_exactly_what_the_code_and_templates_say():
    """`pybabel extract` now gives the catalogues' msgids: none missing, none stale."""
    ids = extracted()
    for lang in ("tr", "en"):
        assert set(msgids(catalogue(lang))) == ids, lang


@pytest.mark.parametrize("lang", ["tr", "en"])
def test_the_compiled_catalogues_match_their_sources(lang):
    """The committed .mo files are compiled from the .po files as they are now."""
    with open(TRANSLATIONS / lang / "LC_MESSAGES" / "messages.mo", "rb") as f:
        compiled = Translations(f)
    for m in catalogue(lang):
        if not m.id:
            continue
        if isinstance(m.id, tuple):
            want = m.string[0] or m.id[0]
            assert compiled.ngettext(m.id[0], m.id[1], 1) == want, m.id
        else:
            assert compiled.gettext(m.id) == (m.string or m.id), m.id


def turkish_words() -> dict[str, str]:
    """English sentences (three words or more) and their Turkish, for the leak checks."""
    out = {}
    for m in catalogue("tr"):
        if not m.id or isinstance(m.id, tuple):
            continue
        plain = PLACEHOLDER.sub("", m.id)
        if len(plain.split()) >= 3 and "%" not in plain and "<" not in plain:
            out[m.id] = m.string
    return out


def visible(html: str) -> str:
    return " ".join(TAGS.sub(" ", html).replace("&#39;", "'").replace("&#34;", '"').split())


def stored_language(app, name: str) -> str | None:
    with app.app_context():
        s = database(app).sessionmaker()
        try:
            return s.query(User).filter_by(name=name).one().language
        finally:
            s.close()


def switch(client, lang: str, next_url: str = "/auditor/"):
    return client.post("/language", data={"csrf_token": csrf_token(client, "/auditor/"),
                                          "lang": lang, "next": next_url})


@pytest.fixture
def workspace(app, two_versions):
    """An admin (workspace and desk) with no language chosen, logged in; and the pages."""
    old, new, later_sid = two_versions
    secret = make_user(app, "elif", "admin", language=None)
    client = app.test_client()
    assert login(client, "elif", secret, lang="tr").status_code == 302
    return client, old, new, later_sid


def pages(old: str, new: str, sid: str) -> list[tuple[str, int]]:
    return [
        ("/auditor/?phone=0532+123+45+67", 200),
        ("/auditor/?since=99.99.2026&decision=maybe", 400),
        ("/auditor/", 200),
        (f"/auditor/calls/{sid}", 200),
        ("/auditor/calls/CA" + "0" * 32, 404),
        ("/auditor/dashboard", 200),
        ("/auditor/dashboard?since=31.02.2026&step=month", 400),
        ("/auditor/dashboard/hangups?language=tr&phase=notice_body", 200),
        ("/auditor/flows", 200),
        (f"/auditor/flows/{new}", 200),
        (f"/auditor/flows/diff?a={old}&b={new}", 200),
        (f"/auditor/flows/diff?a={old}&b=nothing", 400),
        ("/auditor/queues", 200),
        ("/auditor/flows/" + "f" * 12, 404),
        ("/agent/", 200),
        ("/agent/transfers/" + "0" * 32, 200),
    ]


def test_every_page_renders_in_turkish_by_default_then_in_english(app, workspace):
    client, old, new, sid = workspace
    words = turkish_words()
    english = {en for en, tr in words.items() if en != tr}
    turkish = {tr for en, tr in words.items() if en != tr}
    for lang, leaks in (("tr", english), ("en", turkish)):
        if lang == "en":
            assert switch(client, "en").status_code == 302
            assert stored_language(app, "elif") == "en"
        for path, status in pages(old, new, sid):
            r = client.get(path)
            assert r.status_code == status, (lang, path)
            html = r.get_data(as_text=True)
            assert f'<html lang="{lang}">' in html, (lang, path)
            text = visible(html)
            left = sorted(w for w in leaks if w in text)
            assert left == [], (lang, path, left)


@pytest.mark.parametrize("lang,words", [
    ("tr", ["Arama ve onay kayıtlarını ara", "Onay", "Ret", "Çıkış yap", "Denetçi"]),
    ("en", ["Search calls and consents", "granted", "declined", "Log out", "auditor"]),
])
def test_the_search_shows_decisions_and_roles_in_the_users_language(app, local_caller, lang,
                                                                    words):
    place_call(local_caller, ["1"], from_number="+905321234567")
    place_call(local_caller, ["2"], from_number="+905321234567")
    secret = make_user(app, "deniz", "auditor", language=lang)
    client = app.test_client()
    assert login(client, "deniz", secret, lang="en").status_code == 302
    text = visible(client.get("/auditor/?phone=0532+123+45+67").get_data(as_text=True))
    for w in words:
        assert w in text or w.lower() in text.lower(), w


@pytest.mark.parametrize("header,query,lang", [
    (None, None, "tr"),
    ("en-US,en;q=0.9", None, "en"),
    ("tr-TR,tr;q=0.9,en;q=0.5", None, "tr"),
    ("de-DE,de;q=0.9", None, "tr"),
    ("en-US", "tr", "tr"),
    (None, "en", "en"),
    ("en", "xx", "en"),
])
def test_the_login_page_follows_the_browser_or_the_lang_parameter(client, header, query, lang):
    headers = {"Accept-Language": header} if header else {}
    client.environ_base.pop("HTTP_ACCEPT_LANGUAGE", None)
    url = "/login" + (f"?lang={query}" if query else "")
    html = client.get(url, headers=headers).get_data(as_text=True)
    assert f'<html lang="{lang}">' in html
    title = parse_html(html).find("h1").text.strip()
    assert title == {"tr": "Giriş yap", "en": "Log in"}[lang]
    # The form carries the choice on, so a refusal is in the same language.
    assert f'name="lang" value="{lang}"' in html


def test_a_refused_login_answers_in_the_login_pages_language(app, client):
    make_user(app, "ali", "auditor")
    client.environ_base.pop("HTTP_ACCEPT_LANGUAGE", None)
    r = login(client, "ali", "ivr_wrong", lang="tr")
    assert r.status_code == 401 and "Ad ya da gizli anahtar yanlış." in r.get_data(as_text=True)
    r = login(client, "ali", "ivr_wrong", lang="en")
    assert r.status_code == 401 and "Wrong name or secret." in r.get_data(as_text=True)


def test_a_users_choice_outlives_the_session_and_wins_over_the_browser(app):
    secret = make_user(app, "elif", "auditor", language=None)
    first = app.test_client()
    assert login(first, "elif", secret, lang="en").status_code == 302
    assert '<html lang="tr">' in first.get("/auditor/").get_data(as_text=True)
    r = switch(first, "en", "/auditor/dashboard")
    assert r.status_code == 302 and r.headers["Location"] == "/auditor/dashboard"
    second = app.test_client()
    assert login(second, "elif", secret, lang="tr").status_code == 302
    html = second.get("/auditor/", headers={"Accept-Language": "tr"}).get_data(as_text=True)
    assert '<html lang="en">' in html and "Search calls and consents" in html


@pytest.mark.parametrize("data,status,location,stored", [
    ({"lang": "xx", "next": "/auditor/"}, 302, "/auditor/", None),
    ({"lang": "en", "next": "https://evil.example/"}, 302, "/auditor/", "en"),
    ({"lang": "en", "next": "//evil.example/"}, 302, "/auditor/", "en"),
    ({"lang": "tr", "next": "/auditor/queues"}, 302, "/auditor/queues", "tr"),
])
def test_the_switch_stores_only_known_languages_and_stays_on_the_site(app, data, status,
                                                                      location, stored):
    secret = make_user(app, "elif", "auditor", language=None)
    client = app.test_client()
    assert login(client, "elif", secret).status_code == 302
    r = client.post("/language", data={"csrf_token": csrf_token(client, "/auditor/"), **data})
    assert r.status_code == status and r.headers["Location"] == location
    assert stored_language(app, "elif") == stored


def test_the_switch_needs_the_forms_token(app):
    secret = make_user(app, "elif", "auditor", language=None)
    client = app.test_client()
    assert login(client, "elif", secret).status_code == 302
    r = client.post("/language", data={"lang": "en", "next": "/auditor/"})
    assert r.status_code == 400
    assert stored_language(app, "elif") is None


def test_before_login_the_switch_goes_to_the_login_page_in_that_language(client):
    r = client.post("/language", data={"csrf_token": csrf_token(client), "lang": "tr",
                                       "next": "/auditor/queues"})
    assert r.status_code == 302
    assert r.headers["Location"] == "/login?lang=tr&next=/auditor/queues"


def test_a_refusal_names_the_role_and_the_area_in_turkish(app):
    secret = make_user(app, "ali", "agent", language=None)
    client = app.test_client()
    assert login(client, "ali", secret).status_code == 302
    r = client.get("/auditor/queues")
    assert r.status_code == 403
    alert = parse_html(r.get_data(as_text=True)).find("p", role="alert").text
    assert alert == ("Hesabınızın rolü: temsilci. Denetçi çalışma alanı denetçi ve yönetici "
                     "rolleri içindir.")


@pytest.mark.parametrize("lang", ["tr", "en"])
def test_the_csv_export_keeps_its_documented_column_names(app, local_caller, lang):
    place_call(local_caller, ["1"], from_number="+905321234567")
    secret = make_user(app, "deniz", "auditor", language=lang)
    client = app.test_client()
    assert login(client, "deniz", secret).status_code == 302
    r = client.post("/auditor/export.csv", data={"csrf_token": csrf_token(client, "/auditor/"),
                                                 "phone": "+905321234567"})
    assert r.status_code == 200
    from ivr.services.auditor.call_search import EXPORT_FIELDS

    header = next(csv.reader(io.StringIO(r.get_data(as_text=True))))
    assert header == EXPORT_FIELDS


# The timeline's English, as ivr/services/timeline.py writes it, and the call page's Turkish of it.
TIMELINE = [
    ("title", "Call started", "Arama başladı"),
    ("title", "Key pressed: 1", "Basılan tuş: 1"),
    ("title", "No key pressed (timeout)", "Tuşa basılmadı (süre doldu)"),
    ("title", "Caller hung up", "Arayan kişi kapattı"),
    ("title", "Prompts played", "Anonslar dinletildi"),
    ("title", "Notice part played (tr): notice_intro, notice_body",
     "Aydınlatma metni bölümü dinletildi (tr): notice_intro, notice_body"),
    ("title", "Decision: granted", "Karar: Onay"),
    ("title", "Decision: no_input", "Karar: Yanıt yok"),
    ("title", "Call status: completed", "Arama durumu: tamamlandı"),
    ("title", "Recording completed", "Ses kaydı: tamamlandı"),
    ("title", "telepathy.sent", "telepathy.sent"),
    ("detail", "inbound · flow consent (0be5dc303424) · language tr",
     "gelen arama · akış consent (0be5dc303424) · dil tr"),
    ("detail", "step 2", "adım 2"),
    ("detail", "recording started; waited up to 5 s for a key",
     "ses kaydı başladı; tuş için en fazla 5 sn beklendi"),
    ("detail", "waited for a key; sent to a queue; connected onward; hung up",
     "tuş beklendi; kuyruğa gönderildi; bağlantı aktarıldı; kapatıldı"),
    ("detail", "part hash 0be5dc303424 · the notice version is the hash over every part "
               "heard in en",
     "bölüm özeti 0be5dc303424 · aydınlatma metni sürümü, en dilinde dinletilen tüm "
     "bölümlerin özetidir"),
    ("detail", "keys 1 · tr · purpose marketing · channels ARAMA, SMS · notice version ab12",
     "tuşlar 1 · tr · amaç pazarlama (reklam, kampanya, promosyon) · kanallar ARAMA, "
     "SMS · aydınlatma metni sürümü ab12"),
    ("detail", "Twilio sequence 3 · duration 12 s · arrived out of order",
     "Twilio sıra no 3 · süre 12 sn · sırasız geldi"),
    ("detail", "RE0123 · 1 s · 2 channel(s) · StartCallRecordingTwiML",
     "RE0123 · 1 sn · 2 kanal · StartCallRecordingTwiML"),
]


@pytest.mark.parametrize("part,english,turkish", TIMELINE)
def test_the_call_pages_timeline_reads_in_both_languages(app, part, english, turkish):
    from flask_babel import force_locale

    from ivr.web.i18n import event_detail, event_title

    def say(text):  # as read: identifiers are in <code>, which a reader does not see
        return re.sub(r"<[^>]+>", "", str((event_title if part == "title" else event_detail)(
            text)))

    with app.test_request_context("/"):
        with force_locale("en"):
            assert say(english) == english
        with force_locale("tr"):
            assert say(english) == turkish


def test_the_call_page_tells_its_timeline_in_turkish(app, workspace):
    client, _old, _new, sid = workspace
    text = visible(client.get(f"/auditor/calls/{sid}").get_data(as_text=True))
    for words in ("Arama başladı", "Anonslar dinletildi", "Aydınlatma metni bölümü dinletildi",
                  "Karar: Onay", "Basılan tuş: 1"):
        assert words in text, words
    for words in ("Call started", "Prompts played", "Notice part played", "Decision: granted",
                  "Key pressed"):
        assert words not in text, words
