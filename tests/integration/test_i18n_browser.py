"""Turkish and English in a real browser: headless Debian Chromium over real HTTP.

A user who chose no language works in Turkish; the login page follows the browser's
Accept-Language; the switch in the header stores English on the account, for every page.
"""

from __future__ import annotations

import pytest

from ivr.services.accounts import User
from ivr.web.current import database
from tests.support.auditor import audio_dir, make_user, rendered_audio
from tests.support.transfer import ACCOUNT, follow, transfers, twilio

from .conftest import CHROMIUM_ARGS, chromium

# Fixtures, so pytest finds them (twilio, the fake Twilio REST API, is autouse here).
__all__ = ["audio_dir", "rendered_audio", "twilio"]

pytestmark = pytest.mark.browser


@pytest.fixture
def browser():
    path = chromium("the language browser test")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield b
        b.close()


def stored_language(app, name: str) -> str | None:
    with app.app_context():
        s = database(app).sessionmaker()
        try:
            return s.query(User).filter_by(name=name).one().language
        finally:
            s.close()


def texts(page, path: str, url: str) -> str:
    page.goto(url + path)
    return page.inner_text("body")


# What each page says in each language: (path, Turkish words, English words).
PAGES = [
    ("/auditor/?phone=0532+123+45+67",
     ["Arama ve onay kayıtlarını ara", "Telefon numarası", "CSV olarak dışa aktar", "Onay",
      "Çıkış yap"],
     ["Search calls and consents", "Phone number", "Export CSV", "granted", "Log out"]),
    ("/auditor/dashboard",
     ["Onay panosu", "Dile göre", "Aydınlatma metni sürümüne göre", "Yanıt yok", "Ret"],
     ["Consent dashboard", "By language", "By notice version", "no input", "declined"]),
    ("/auditor/queues",
     ["Bekleyen İYS kayıtları", "Açık ilgili kişi başvuruları", "Son imha çalışmaları",
      "Karantinada kayıt yok."],
     ["İYS records pending", "Open subject requests", "Recent destruction runs",
      "No record is in quarantine."]),
    ("/auditor/flows",
     ["Akış ve aydınlatma metni kayıtları", "İlk kullanım"],
     ["Flow and notice registry", "First use"]),
    ("/agent/",
     ["Canlı bir aramayı onay akışına gönder", "Aktarımı başlat", "Henüz aktarım yok."],
     ["Send a live call into the consent flow", "Start the transfer", "No transfers yet."]),
]


def test_the_workspace_is_turkish_by_default_and_switches_to_english(live_app, caller,
                                                                    browser):
    app = live_app.app
    secret = make_user(app, "elif", "admin", language=None)
    granted = caller(from_number="+905321234567")
    granted.run(["1"])
    caller(from_number="+905339876543").run(["2"])
    context = browser.new_context(locale="en-US")
    page = context.new_page()

    # Before login the browser's language counts; ?lang=tr switches the login page.
    page.goto(f"{live_app.url}/auditor/")
    assert page.inner_text("h1") == "Log in"
    page.click("#language a[hreflang=tr]")
    assert page.inner_text("h1") == "Giriş yap" and "lang=tr" in page.url
    assert page.locator("html").get_attribute("lang") == "tr"
    page.fill("input[name=name]", "elif")
    page.fill("input[name=secret]", "ivr_wrong")
    page.click("form[action='/login'] button[type=submit]")
    assert "Ad ya da gizli anahtar yanlış." in page.inner_text("main")
    page.fill("input[name=secret]", secret)
    page.click("form[action='/login'] button[type=submit]")
    assert page.url == f"{live_app.url}/auditor/"

    # Logged in with no language chosen: Turkish everywhere, whatever the browser asks for.
    for path, turkish, english in PAGES:
        body = texts(page, path, live_app.url)
        for words in turkish:
            assert words in body, (path, words)
        assert not [w for w in english if w in body and w not in turkish], path
    page.goto(f"{live_app.url}/auditor/calls/{granted.call_sid}")
    call_page = page.inner_text("main")
    for words in ("Karar", "Zincir doğrulaması ve yeniden oynatma", "Zaman çizelgesi",
                  "Dinletilen aydınlatma metni", "Kanıt paketini indir (ZIP)",
                  "Bu aramayı kimler gördü"):
        assert words in call_page, words
    assert page.inner_text("#decision .decision") == "Onay"
    # Dates are written 30.11.2026 in both languages.
    started = page.locator("#summary time").first
    assert started.inner_text()[2] == "." and started.inner_text()[5] == "."
    assert stored_language(app, "elif") is None

    # The switch in the header stores English on the account, and the page comes back.
    page.click("#language button[value=en]")
    assert page.url == f"{live_app.url}/auditor/calls/{granted.call_sid}"
    assert page.inner_text("#decision .decision") == "granted"
    assert page.locator("html").get_attribute("lang") == "en"
    assert stored_language(app, "elif") == "en"
    for path, turkish, english in PAGES:
        body = texts(page, path, live_app.url)
        for words in english:
            assert words in body, (path, words)
        assert not [w for w in turkish if w in body and w not in english], path

    # The choice belongs to the user: a new browser, asking for Turkish, still gets English.
    other = browser.new_context(locale="tr-TR").new_page()
    other.goto(f"{live_app.url}/login")
    assert other.inner_text("h1") == "Giriş yap"
    other.fill("input[name=name]", "elif")
    other.fill("input[name=secret]", secret)
    other.click("form[action='/login'] button[type=submit]")
    assert "Search calls and consents" in other.inner_text("main")
    # And back to Turkish.
    other.click("#language button[value=tr]")
    assert "Arama ve onay kayıtlarını ara" in other.inner_text("main")
    assert stored_language(app, "elif") == "tr"
    context.close()


def test_the_agent_desk_follows_a_transfer_in_turkish(live_app, caller, twilio, browser):
    """The desk's and the transfer page's scripts write their words in the page's language."""
    app = live_app.app
    secret = make_user(app, "ayse", "agent", language=None)
    c = caller(account_sid=ACCOUNT)
    twilio.calls[c.call_sid] = "in-progress"
    page = browser.new_context(locale="en-US").new_page()
    problems = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(f"{live_app.url}/login?lang=tr")
    page.fill("input[name=name]", "ayse")
    page.fill("input[name=secret]", secret)
    page.click("form[action='/login'] button[type=submit]")
    assert page.url == f"{live_app.url}/agent/"
    assert page.inner_text("h1") == "Canlı bir aramayı onay akışına gönder"

    page.fill("input[name=call_sid]", c.call_sid)
    page.check("input[name=return_type][value=queue]")
    page.fill("input[name=queue]", "sales")
    page.click("#transfer-form button[type=submit]")
    assert page.locator(".note.ok").inner_text() == f"{c.call_sid} aramasının aktarımı başladı."
    [t] = transfers(app)
    row = f"tr[data-transfer='{t.id}']"
    assert page.inner_text(f"{row} td:nth-child(3)") == "sales kuyruğu"
    assert page.inner_text(f"{row} .status") == "istendi"

    # The caller decides; the script redraws the row, in Turkish.
    first = follow(c, twilio.updates()[0].form["Url"])
    assert c.press(first, "1").end == "enqueue:sales"
    page.wait_for_selector(f"{row}[data-status=returned]", timeout=15000)
    assert page.inner_text(f"{row} .status") == "geri döndü"
    assert page.inner_text(f"{row} .decision") == "Onay"
    assert page.inner_text(f"{row} td:nth-child(3)") == "sales kuyruğu"
    assert page.inner_text(f"{row} a") == "Ayrıntılar"
    assert page.inner_text("#updated").startswith("Güncellendi: ")

    page.click(f"{row} a")
    page.wait_for_selector("#status[data-status=returned]")
    assert page.inner_text("#status") == "Arayan kişi geri döndü"
    assert page.inner_text("#decision") == "Onay"
    assert page.inner_text("#return_to") == "sales kuyruğu"
    assert page.inner_text("#updated").startswith("Güncellendi: ")
    assert problems == []
