"""The message catalogue: every text a user reads, in one JSON file per language (``bot/locales/<lang>.json``,
flat ``"key": "text"`` maps, packaged with ``newsdesk.bot``), looked up with :func:`t`.

English (``en.json``) is complete and is the fallback: a key missing from another language's file is given in
English, a key missing from English is a bug (``KeyError``). Texts are ``str.format`` templates; :func:`t`
fills them only when keyword arguments are given, so a text with literal braces needs none.

Which language a user reads: :func:`interface_language` (the Telegram client's ``language_code`` when there is a
catalogue for it, else the language of what they wrote); which language an answer's notices are in:
:func:`answer_language` (the question's, for every language whose file has the ``answer.*`` notices).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from newsdesk.index.language import detect, script

FALLBACK = "en"
LOCALES = Path(__file__).with_name("locales")
ANSWER_KEYS = ("answer.extractive", "answer.abstain", "answer.empty", "answer.fallback", "answer.unverifiable")
# when the detector names a language without a catalogue (a short question is often misread: "hello" → "br"),
# the script of the text still says which catalogue fits it best
_SCRIPT_LANGUAGE = {"Arab": "ar", "Cyrl": "ru", "Hani": "zh", "Thai": "th", "Deva": "hi", "Grek": "el"}


@lru_cache(maxsize=64)
def catalogue(lang: str) -> dict[str, str]:
    """The texts of ``lang`` (empty when it has no file). Read once per process."""
    path = LOCALES / f"{lang}.json"
    if not lang.isalpha() or not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def languages() -> frozenset[str]:
    """The languages that have a catalogue file (some only with the answer notices)."""
    return frozenset(p.stem for p in LOCALES.glob("*.json"))


@lru_cache(maxsize=1)
def interface_languages() -> frozenset[str]:
    """The languages whose catalogue is complete enough for the whole interface (it has the Telegram texts)."""
    return frozenset(lang for lang in languages() if "tg.apology" in catalogue(lang))


def t(key: str, lang: str | None = FALLBACK, /, **kw) -> str:
    """The text of ``key`` in ``lang`` (English when that language lacks it), filled with ``kw``."""
    text = catalogue(lang or FALLBACK).get(key)
    if text is None:
        text = catalogue(FALLBACK)[key]
    return text.format(**kw) if kw else text


def normalise(code: str | None) -> str:
    """A language tag as Telegram or a browser gives it ("pt-br", "zh_TW", "EN") → its language ("pt", "zh", "en")."""
    return (code or "").replace("_", "-").split("-", 1)[0].lower()


def _text_language(text: str, usable: frozenset[str]) -> str | None:
    """The language of ``text`` among ``usable``: the detector's, else the one its script suggests."""
    if not text or not text.strip():
        return None
    lang = detect(text)
    if lang in usable:
        return lang
    by_script = _SCRIPT_LANGUAGE.get(script(text))
    return by_script if by_script in usable else None


def interface_language(language_code: str | None, text: str = "") -> str:
    """The language to talk to a user in: their Telegram client's ``language_code`` when there is a full
    catalogue for it, else the language of ``text`` (their question) when there is one, else English."""
    usable = interface_languages()
    code = normalise(language_code)
    if code in usable:
        return code
    return _text_language(text, usable) or FALLBACK


def answer_language(question: str) -> str:
    """The language of an answer's notices (offline intro, abstention, fallback): the question's when a
    catalogue has them, else English."""
    usable = frozenset(lang for lang in languages() if ANSWER_KEYS[0] in catalogue(lang))
    return _text_language(question, usable) or FALLBACK


def months(lang: str) -> list[str]:
    """The twelve short month names of ``lang`` (for "28 Sep" in source buttons)."""
    return t("date.months", lang).split()


def short_date(published: str | None, lang: str) -> str:
    """``2020-09-28`` (or a longer ISO timestamp) → "28 Sep" in ``lang``; anything unparseable → as given
    (cut to 10 characters), None → ""."""
    if not published:
        return ""
    parts = published[:10].split("-")
    if len(parts) == 3 and all(p.isdigit() for p in parts) and 1 <= int(parts[1]) <= 12:
        return t("date.day_month", lang, day=int(parts[2]), month=months(lang)[int(parts[1]) - 1])
    return published[:10]


def long_date(published: str | None, lang: str) -> str:
    """``2020-09-28`` → "28 Sep 2020" in ``lang``; anything unparseable → as given, None → ""."""
    if not published:
        return ""
    parts = published[:10].split("-")
    if len(parts) == 3 and all(p.isdigit() for p in parts) and 1 <= int(parts[1]) <= 12:
        return t("date.day_month_year", lang, day=int(parts[2]), month=months(lang)[int(parts[1]) - 1],
                 year=parts[0])
    return published
