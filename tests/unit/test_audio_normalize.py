"""Text normalisation: what the engines are given to say."""

import pytest

from ivr.adapters.audio.normalize import normalize, number_tr, ordinal_tr


@pytest.mark.parametrize("n, words", [
    (0, "sıfır"), (1, "bir"), (10, "on"), (11, "on bir"), (100, "yüz"), (101, "yüz bir"),
    (1000, "bin"), (1001, "bin bir"), (2024, "iki bin yirmi dört"),
    (6698, "altı bin altı yüz doksan sekiz"), (1_000_000, "bir milyon"),
    (2_500_000, "iki milyon beş yüz bin"),
])
def test_turkish_cardinals(n, words):
    assert number_tr(n) == words


@pytest.mark.parametrize("n, words", [
    (1, "birinci"), (2, "ikinci"), (3, "üçüncü"), (4, "dördüncü"), (6, "altıncı"),
    (9, "dokuzuncu"), (10, "onuncu"), (11, "on birinci"), (40, "kırkıncı"),
    (100, "yüzüncü"), (1000, "bininci"),
])
def test_turkish_ordinals(n, words):
    assert ordinal_tr(n) == words


@pytest.mark.parametrize("text, spoken", [
    ("6698 sayılı Kanun", "altı bin altı yüz doksan sekiz sayılı Kanun"),
    ("Kanunun 11. maddesindeki haklar", "Kanunun on birinci maddesindeki haklar"),
    ("11'inci madde", "on birinci madde"),
    ("Onay için 1'e, ret için 2'ye, tekrar için 9'a basın.",
     "Onay için bire, ret için ikiye, tekrar için dokuza basın."),
    ("4'e basın", "dörde basın"),
    ("12.05.2024 tarihinde", "on iki Mayıs iki bin yirmi dört tarihinde"),
    ("2024-05-12'de", "on iki Mayıs iki bin yirmi dörtte"),
    ("saat 14:30'da", "saat on dört otuzda"),
    ("saat 09.05'te", "saat dokuz sıfır beşte"),
    ("KVKK kapsamında", "ka ve ka ka kapsamında"),
    ("KVKK'nın", "ka ve ka kanın"),
    ("T.C. kimlik numarası", "Türkiye Cumhuriyeti kimlik numarası"),
    ("Pronet Güvenlik Hizmetleri A.Ş.'dir.", "Pronet Güvenlik Hizmetleri Anonim Şirketidir."),
    ("Pronet A.Ş. Bu görüşme", "Pronet Anonim Şirketi. Bu görüşme"),
    ("SMS ve e-posta", "es em es ve e-posta"),
    ("kvkk@pronet.com.tr", "kvkk et pronet nokta com nokta te er"),
    ("başvurularınız için kvkk@pronet.com.tr.",
     "başvurularınız için kvkk et pronet nokta com nokta te er."),
    ("Metnin tamamı www.pronet.com.tr adresinde",
     "Metnin tamamı ve ve ve nokta pronet nokta com nokta te er adresinde"),
    ("https://www.pronet.com.tr/kvkk", "ve ve ve nokta pronet nokta com nokta te er eğik "
                                       "çizgi ka ve ka ka"),
    ("%20 indirim", "yüzde yirmi indirim"),
    ("1.500 TL", "bin beş yüz Türk lirası"),
    ("3,5 puan", "üç virgül beş puan"),
    ("0850 123 45 67", "sıfır sekiz yüz elli, yüz yirmi üç, kırk beş, altmış yedi"),
    ("Pronet'in", "Pronetin"),
    ("* tuşuna basın", "yıldız tuşuna basın"),
    ("Hoş  geldiniz.\n", "Hoş geldiniz."),
])
def test_turkish_normalisation(text, spoken):
    assert normalize(text, "tr") == spoken


@pytest.mark.parametrize("text, spoken", [
    ("write to kvkk@pronet.com.tr.", "write to kvkk at pronet dot com dot tee ar."),
    ("The notice is at www.pronet.com.tr; thanks",
     "The notice is at double you double you double you dot pronet dot com dot tee ar; "
     "thanks"),
    ("by SMS", "by ess em ess"),
    ("on 12.05.2024", "on 12 May 2024"),
    ("Hizmetleri A.Ş. This call", "Hizmetleri ay ess. This call"),
    ("Press 1 to consent.", "Press 1 to consent."),
])
def test_english_normalisation(text, spoken):
    assert normalize(text, "en") == spoken


def test_unknown_language_only_tidies_whitespace():
    assert normalize("  Hallo   Welt 12 ", "de") == "Hallo Welt 12"
