"""Text normalisation before synthesis: what a prompt says, written the way it is spoken.

Speech engines read "6698", "11. madde", "12.05.2024", "A.Ş." or an e-mail address badly
or not at all (espeak spells "TL" and reads "14:30" as "on dört otuz" only by luck), so
both engines get the same spelled-out text. The manifest keeps the original and this.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable

# Turkish letters, for word boundaries that \w would get wrong around ç ğ ı ö ş ü.
_TR_LOWER = "a-zçğıöşüâîû"
_TR_UPPER = "A-ZÇĞİÖŞÜÂÎÛ"
_TR_LETTER = _TR_LOWER + _TR_UPPER
_APOSTROPHE = "['’]"
# A suffix written after an apostrophe: "1'e", "KVKK'nın", "A.Ş.'dir".
_SUFFIX = rf"(?:{_APOSTROPHE}(?P<suffix>[{_TR_LETTER}]+))?"

_ONES = ["", "bir", "iki", "üç", "dört", "beş", "altı", "yedi", "sekiz", "dokuz"]
_TENS = ["", "on", "yirmi", "otuz", "kırk", "elli", "altmış", "yetmiş", "seksen", "doksan"]
_SCALES = [(10**12, "trilyon"), (10**9, "milyar"), (10**6, "milyon"), (10**3, "bin")]
_MONTHS_TR = ["Ocak", "Şubat", "Mart", "Nisan", "Mayıs", "Haziran", "Temmuz", "Ağustos",
              "Eylül", "Ekim", "Kasım", "Aralık"]
_MONTHS_EN = ["January", "February", "March", "April", "May", "June", "July", "August",
              "September", "October", "November", "December"]

# How a letter is read when an abbreviation or a domain label is spelled out. The issue
# asks for "tr" -> "te er", the way Turkish callers say a country code.
_LETTERS_TR = {
    "a": "a", "b": "be", "c": "ce", "ç": "çe", "d": "de", "e": "e", "f": "fe", "g": "ge",
    "ğ": "yumuşak ge", "h": "he", "ı": "ı", "i": "i", "j": "je", "k": "ka", "l": "le",
    "m": "me", "n": "ne", "o": "o", "ö": "ö", "p": "pe", "q": "kü", "r": "er", "s": "se",
    "ş": "şe", "t": "te", "u": "u", "ü": "ü", "v": "ve", "w": "çift ve", "x": "iks",
    "y": "ye", "z": "ze",
}
_LETTERS_EN = {
    "a": "ay", "b": "bee", "c": "see", "d": "dee", "e": "ee", "f": "eff", "g": "gee",
    "h": "aitch", "i": "eye", "j": "jay", "k": "kay", "l": "el", "m": "em", "n": "en",
    "o": "oh", "p": "pee", "q": "cue", "r": "ar", "s": "ess", "t": "tee", "u": "you",
    "v": "vee", "w": "double you", "x": "ex", "y": "why", "z": "zed",
}
_DIGITS_EN = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

# Abbreviations, longest first so "Ltd. Şti." wins over "Şti.". Values are spoken forms.
_ABBREVIATIONS_TR = {
    "Ltd. Şti.": "Limited Şirketi", "T.C.": "Türkiye Cumhuriyeti", "A.Ş.": "Anonim Şirketi",
    "KVKK": "ka ve ka ka", "SMS": "es em es", "İYS": "i ye se", "KDV": "ka de ve",
    "TL": "Türk lirası", "Şti.": "Şirketi", "vb.": "ve benzeri", "vs.": "vesaire",
    "örn.": "örneğin", "bkz.": "bakınız", "Tel.": "telefon", "No.": "numara",
    "Sn.": "sayın", "Dr.": "doktor", "Prof.": "profesör", "Av.": "avukat",
    "Mah.": "mahallesi", "Cad.": "caddesi", "Sok.": "sokak",
}
_ABBREVIATIONS_EN = {
    "T.C.": "tee see", "A.Ş.": "ay ess", "KVKK": "kay vee kay kay", "SMS": "ess em ess",
    "TL": "Turkish lira", "e.g.": "for example", "i.e.": "that is", "No.": "number",
}
_SYMBOLS_TR = {"₺": " Türk lirası", "&": " ve ", "+": " artı ", "#": " kare ", "*": " yıldız ",
               "€": " avro", "$": " dolar"}
_SYMBOLS_EN = {"₺": " Turkish lira", "&": " and ", "+": " plus ", "#": " hash ", "*": " star ",
               "€": " euro", "$": " dollar"}

# Domain labels that are said as words; any other label of two or three letters is spelled.
_SPOKEN_LABELS = {"com", "net", "org", "gov", "edu", "info", "biz", "mail"}
_TLDS = r"(?:com|net|org|gov|edu|info|biz|io|tr|uk|de|eu)"

_EMAIL = re.compile(r"(?<![\w.])(?P<local>[A-Za-z0-9][A-Za-z0-9._%+-]*)@"
                    r"(?P<domain>[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})" + _SUFFIX)
_URL = re.compile(
    r"(?<![\w@.])(?P<url>(?:https?://)?(?:www\.)?[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
    rf"\.{_TLDS}(?![A-Za-z0-9-])(?:/[^\s'’]*)?){_SUFFIX}",
    re.IGNORECASE,
)


def number_tr(n: int) -> str:
    """A non-negative integer in Turkish words: 6698 -> 'altı bin altı yüz doksan sekiz'."""
    if n == 0:
        return "sıfır"
    words = []
    for value, name in _SCALES:
        count, n = divmod(n, value)
        if count:
            # Turkish says "bin", never "bir bin"; "bir milyon" keeps its "bir".
            words.append(name if (value == 1000 and count == 1) else f"{_below_1000(count)} {name}")
    if n:
        words.append(_below_1000(n))
    return " ".join(words)


def _below_1000(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    tens, ones = divmod(rest, 10)
    words = []
    if hundreds:
        words.append("yüz" if hundreds == 1 else f"{_ONES[hundreds]} yüz")
    if tens:
        words.append(_TENS[tens])
    if ones:
        words.append(_ONES[ones])
    return " ".join(words)


def _harmony(word: str, front: str = "i", back: str = "ı", front_round: str = "ü",
             back_round: str = "u") -> str:
    """The high vowel that follows the last vowel of `word` (Turkish vowel harmony)."""
    for ch in reversed(word.lower()):
        if ch in "aı":
            return back
        if ch in "ei":
            return front
        if ch in "ou":
            return back_round
        if ch in "öü":
            return front_round
    return front


def ordinal_tr(n: int) -> str:
    """An ordinal in Turkish words: 11 -> 'on birinci', 4 -> 'dördüncü'."""
    words = number_tr(n).split()
    last = words[-1]
    vowel = _harmony(last)
    if last == "dört":
        last = "dörd"  # the final t softens before a vowel
    if last[-1] in "aeıioöuü":
        words[-1] = f"{last}nc{vowel}"
    else:
        words[-1] = f"{last}{vowel}nc{vowel}"
    return " ".join(words)


def _attach(spoken: str, suffix: str | None) -> str:
    """Join a suffix written after an apostrophe to the spoken form: 'dört' + 'e' -> 'dörde'."""
    if not suffix:
        return spoken
    if spoken.endswith("dört") and suffix[0] in "aeıioöuü":
        spoken = spoken[:-1] + "d"
    elif spoken[-1:] in "çfhkpsşt" and suffix[0] in "dc":
        # After a voiceless consonant d/c harden: "dört" + "de" is said "dörtte".
        suffix = {"d": "t", "c": "ç"}[suffix[0]] + suffix[1:]
    return spoken + suffix


def _digits_tr(digits: str) -> str:
    """A digit string as a Turkish number; leading zeros are read one by one ('0850')."""
    stripped = digits.lstrip("0")
    zeros = ["sıfır"] * (len(digits) - len(stripped))
    if not stripped:
        return " ".join(zeros)
    if len(stripped) > 15:  # too long to be a quantity: read it digit by digit
        return " ".join(zeros + [number_tr(int(d)) for d in stripped])
    return " ".join(zeros + [number_tr(int(stripped))])


def _spell(word: str, letters: dict[str, str], digits: Callable[[str], str]) -> str:
    out = []
    for ch in word:
        low = ch.lower() if ch != "İ" else "i"
        if ch.isdigit():
            out.append(digits(ch))
        elif low in letters:
            out.append(letters[low])
    return " ".join(out)


def _address_words(text: str, language: str) -> str:
    """An e-mail local part, host or path in words: dots, dashes and spelled labels."""
    tr = language == "tr"
    letters = _LETTERS_TR if tr else _LETTERS_EN
    digit = (lambda d: number_tr(int(d))) if tr else (lambda d: _DIGITS_EN[int(d)])
    names = ({".": "nokta", "-": "tire", "_": "alt çizgi", "/": "eğik çizgi", "+": "artı",
              "%": "yüzde", "=": "eşittir", "?": "soru işareti", "&": "ve"} if tr else
             {".": "dot", "-": "dash", "_": "underscore", "/": "slash", "+": "plus",
              "%": "percent", "=": "equals", "?": "question mark", "&": "and"})
    out = []
    for token in re.findall(r"[A-Za-z]+|\d|[^A-Za-z\d]", text):
        if token in names:
            out.append(names[token])
        elif token.isdigit():
            out.append(digit(token))
        elif token.lower() == "www":
            out.append("ve ve ve" if tr else "double you double you double you")
        elif token.isalpha():
            low = token.lower()
            # Short labels (tr, uk, io) and vowel-less ones are spelled; words are said.
            said = low in _SPOKEN_LABELS or (len(low) > 3 and re.search("[aeiouy]", low))
            out.append(low if said else _spell(low, letters, digit))
    return " ".join(out)


def _email(m: re.Match, language: str) -> str:
    at = "et" if language == "tr" else "at"
    local = m.group("local")
    # The local part is read as written ("kvkk"), not spelled; only its symbols are named.
    local_words = " ".join(
        _address_words(part, language) if not part.isalpha() else part.lower()
        for part in re.findall(r"[A-Za-z]+|[^A-Za-z]+", local)
    )
    domain = _attach(_address_words(m.group("domain"), language), m.group("suffix"))
    return f" {local_words} {at} {domain} "


def _url(m: re.Match, language: str) -> str:
    url = m.group("url")
    trailing = ""
    while url and url[-1] in ".,;:!?)'’":  # sentence punctuation is not part of the address
        trailing = url[-1] + trailing
        url = url[:-1]
    url = re.sub(r"^https?://", "", url, flags=re.IGNORECASE)
    spoken = _attach(_address_words(url.rstrip("/"), language), m.group("suffix"))
    return f" {spoken}{trailing}"


def _addresses(text: str, language: str) -> str:
    text = _EMAIL.sub(lambda m: _email(m, language), text)
    return _URL.sub(lambda m: _url(m, language), text)


def _abbreviations(text: str, table: dict[str, str], turkish: bool) -> str:
    for abbr in sorted(table, key=len, reverse=True):
        pattern = rf"(?<![{_TR_LETTER}\w]){re.escape(abbr)}"
        if abbr[-1].isalpha():
            pattern += rf"(?![{_TR_LETTER}\w])"
        pattern += _SUFFIX if turkish else ""
        if abbr.endswith("."):
            # The abbreviation's dot may also end the sentence: keep that full stop.
            pattern += rf"(?P<stop>(?=\s+[{_TR_UPPER}])|$)?"
        spoken = table[abbr]
        text = re.sub(pattern, functools.partial(_expand, spoken=spoken), text)
    return text


def _expand(m: re.Match, spoken: str) -> str:
    groups = m.groupdict()
    out = _attach(spoken, groups.get("suffix"))
    return out + "." if groups.get("stop") is not None and not groups.get("suffix") else out


def _dates(text: str, months: list[str], say: Callable[[int], str]) -> str:
    def dmy(m: re.Match) -> str:
        day, month, year = int(m.group("d")), int(m.group("m")), int(m.group("y"))
        if not (1 <= day <= 31 and 1 <= month <= 12):
            return m.group(0)
        return _attach(f"{say(day)} {months[month - 1]} {say(year)}", m.groupdict().get("suffix"))

    suffix = _SUFFIX
    text = re.sub(rf"\b(?P<d>\d{{1,2}})[./](?P<m>\d{{1,2}})[./](?P<y>\d{{4}})\b{suffix}", dmy, text)
    return re.sub(rf"\b(?P<y>\d{{4}})-(?P<m>\d{{2}})-(?P<d>\d{{2}})\b{suffix}", dmy, text)


def _times_tr(text: str) -> str:
    def said(m: re.Match) -> str:
        hour, minute = int(m.group("h")), int(m.group("min"))
        words = number_tr(hour)
        if minute:
            words += (" sıfır " if minute < 10 else " ") + number_tr(minute)
        return _attach(words, m.group("suffix"))

    # "14:30" anywhere; "14.30" only after "saat", where it cannot be a decimal.
    text = re.sub(rf"\b(?P<h>[01]?\d|2[0-3]):(?P<min>[0-5]\d)(?!\d){_SUFFIX}", said, text)
    return re.sub(rf"(?<=\bsaat )(?P<h>[01]?\d|2[0-3])\.(?P<min>[0-5]\d)(?!\d){_SUFFIX}", said,
                  text, flags=re.IGNORECASE)


def _numbers_tr(text: str) -> str:
    # Phone numbers: read in their groups, with a pause between them.
    def phone(m: re.Match) -> str:
        groups = re.findall(r"\d+", m.group(0))
        if m.group(0).lstrip().startswith("+90"):
            groups = ["artı doksan"] + groups[1:]
        return ", ".join(g if not g.isdigit() else _digits_tr(g) for g in groups)

    text = re.sub(r"(?<!\d)(?:\+90\s?)?\(?0?\d{3}\)?\s\d{3}\s\d{2}\s\d{2}(?!\d)", phone, text)
    # Percentages come before the number: "%20" -> "yüzde yirmi".
    text = re.sub(r"%\s?(?=\d)", "yüzde ", text)
    # Ordinals: "11. madde", and "11'inci".
    text = re.sub(rf"\b(\d+)\.(?=\s+[{_TR_LOWER}])", lambda m: ordinal_tr(int(m.group(1))), text)
    text = re.sub(rf"\b(\d+){_APOSTROPHE}(?:[ıiuü]?nc[ıiuü])(?P<rest>[{_TR_LETTER}]*)",
                  lambda m: ordinal_tr(int(m.group(1))) + m.group("rest"), text)
    # Thousands separators ("1.500.000") go; a decimal comma is read "virgül".
    text = re.sub(r"\b\d{1,3}(?:\.\d{3})+(?![.\d])", lambda m: m.group(0).replace(".", ""), text)

    def cardinal(m: re.Match) -> str:
        words = _digits_tr(m.group("int"))
        if m.group("frac"):
            words += " virgül " + _digits_tr(m.group("frac"))
        return _attach(words, m.group("suffix"))

    return re.sub(rf"(?P<int>\d+)(?:,(?P<frac>\d+))?{_SUFFIX}", cardinal, text)


def _symbols(text: str, table: dict[str, str]) -> str:
    for sym, spoken in table.items():
        text = text.replace(sym, spoken)
    return text


def _tidy(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"\s+([,.;:!?])", r"\1", text)


def normalize_tr(text: str) -> str:
    """Turkish text as it should be spoken: numbers, dates, times, abbreviations, addresses."""
    text = unicodedata.normalize("NFC", text)
    text = _addresses(text, "tr")
    text = _dates(text, _MONTHS_TR, number_tr)
    text = _times_tr(text)
    text = _abbreviations(text, _ABBREVIATIONS_TR, turkish=True)
    # Vowel-less capitals that no table knows ("ABC" has vowels and is left alone) are spelled.
    text = re.sub(rf"(?<![{_TR_LETTER}])(?P<w>[BCÇDFGĞHJKLMNPRSŞTVYZ]{{2,6}})(?![{_TR_LETTER}])"
                  f"{_SUFFIX}",
                  lambda m: _attach(_spell(m.group("w"), _LETTERS_TR, _digits_tr),
                                    m.group("suffix")), text)
    text = _numbers_tr(text)
    text = _symbols(text, _SYMBOLS_TR)
    # A proper-noun apostrophe ("Pronet'in") makes espeak pause mid-word; the word is one word.
    text = re.sub(rf"(?<=[{_TR_LETTER}]){_APOSTROPHE}(?=[{_TR_LETTER}])", "", text)
    return _tidy(text)


def normalize_en(text: str) -> str:
    """English text as it should be spoken: e-mail 'at'/'dot', dates, abbreviations."""
    text = unicodedata.normalize("NFC", text)
    text = _addresses(text, "en")
    text = _dates(text, _MONTHS_EN, str)
    text = _abbreviations(text, _ABBREVIATIONS_EN, turkish=False)
    text = re.sub(r"%\s?(\d+(?:\.\d+)?)", r"\1 percent", text)
    text = re.sub(r"(\d+(?:\.\d+)?)\s?%", r"\1 percent", text)
    text = _symbols(text, _SYMBOLS_EN)
    return _tidy(text)


_NORMALISERS: dict[str, Callable[[str], str]] = {"tr": normalize_tr, "en": normalize_en}


def normalize(text: str, language: str) -> str:
    """`text` as it should be spoken in `language` (unknown languages: whitespace only)."""
    return _NORMALISERS.get(language, lambda t: _tidy(unicodedata.normalize("NFC", t)))(text)
