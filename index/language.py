"""Language and script of a text: one module for every part that needs them (tokenising, sentence splitting,
ranking, the answer's interface language).

``detect(text)`` names the language with py3langid, whose model ships inside its wheel (nothing is
downloaded at run time): an ISO 639-1 code such as "en", "ar", "zh", or "und" when the text has no letters.
Regional varieties the model tells apart are folded into their language (Egyptian Arabic is "ar", Wu and
Cantonese Chinese are "zh"), because stemmers, stop words and interface text exist per language. On the
XQuAD dev questions (one sentence each) it names the language right 98–100% of the time in eleven of the
twelve languages, 90% in Chinese (most of the rest as Wu, folded into "zh").

``script(text)`` names the dominant writing system of the letters: "Arab", "Latn", "Cyrl", "Grek", "Deva",
"Thai", "Hani" (Chinese characters), "Jpan" (kana), "Hang", "Hebr", … or "Zyyy" (no letters).
"""

from __future__ import annotations

import threading
from functools import lru_cache

UNDETERMINED = "und"

# the 16 languages USE-multilingual-v3 was trained on ("zh" covers zh-TW)
USE_LANGUAGES = frozenset({"ar", "de", "en", "es", "fr", "it", "ja", "ko", "nl", "pl", "pt", "ru", "th", "tr", "zh"})

# varieties py3langid tells apart, folded into the language whose tools (stemmer, stop words) fit them
_FOLD = {
    "arz": "ar", "ary": "ar", "arq": "ar", "apc": "ar", "acm": "ar", "afb": "ar", "ajp": "ar",
    "wuu": "zh", "yue": "zh", "cmn": "zh", "gan": "zh", "hak": "zh", "nan": "zh", "lzh": "zh",
    "nb": "no", "nn": "no",
}

# (first code point, last code point, script): the blocks of letters that matter here, checked in order
_RANGES = (
    (0x0041, 0x024F, "Latn"), (0x1E00, 0x1EFF, "Latn"),
    (0x0370, 0x03FF, "Grek"), (0x1F00, 0x1FFF, "Grek"),
    (0x0400, 0x052F, "Cyrl"),
    (0x0590, 0x05FF, "Hebr"),
    (0x0600, 0x06FF, "Arab"), (0x0750, 0x077F, "Arab"), (0x08A0, 0x08FF, "Arab"), (0xFB50, 0xFDFF, "Arab"),
    (0xFE70, 0xFEFF, "Arab"),
    (0x0900, 0x097F, "Deva"), (0x0980, 0x09FF, "Beng"), (0x0A00, 0x0A7F, "Guru"), (0x0A80, 0x0AFF, "Gujr"),
    (0x0B80, 0x0BFF, "Taml"), (0x0C00, 0x0C7F, "Telu"), (0x0C80, 0x0CFF, "Knda"), (0x0D00, 0x0D7F, "Mlym"),
    (0x0E00, 0x0E7F, "Thai"), (0x0E80, 0x0EFF, "Laoo"), (0x1000, 0x109F, "Mymr"), (0x1780, 0x17FF, "Khmr"),
    (0x10A0, 0x10FF, "Geor"), (0x0530, 0x058F, "Armn"), (0x1200, 0x139F, "Ethi"),
    (0x3040, 0x30FF, "Jpan"), (0x31F0, 0x31FF, "Jpan"),
    (0x1100, 0x11FF, "Hang"), (0x3130, 0x318F, "Hang"), (0xAC00, 0xD7AF, "Hang"),
    (0x3400, 0x4DBF, "Hani"), (0x4E00, 0x9FFF, "Hani"), (0xF900, 0xFAFF, "Hani"), (0x20000, 0x2FA1F, "Hani"),
)

_LOCK = threading.Lock()


def load_identifier() -> None:
    """Load the identifier's model now (~0.5 s; ``embedding.prewarm`` does it beside the imports)."""
    try:
        _identifier()
    except Exception:  # noqa: BLE001 - only a warm-up: the first detection reports any error
        pass


_IDENTIFIER: list = []  # the loaded identifier, once
_LOAD_LOCK = threading.Lock()  # one load, also when the warm-up and a first detection ask at the same time


def _identifier():
    if not _IDENTIFIER:
        with _LOAD_LOCK:
            if not _IDENTIFIER:
                from py3langid.langid import MODEL_FILE, LanguageIdentifier

                _IDENTIFIER.append(LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=False))
    return _IDENTIFIER[0]


@lru_cache(maxsize=4096)
def _char_script(ch: str) -> str | None:
    cp = ord(ch)
    for first, last, name in _RANGES:
        if first <= cp <= last:
            return name
    return "Zzzz" if ch.isalpha() else None


def script_counts(text: str) -> dict[str, int]:
    """How many letters of each script ``text`` has."""
    counts: dict[str, int] = {}
    for ch in text:
        if ch.isalpha() or 0x0E00 <= ord(ch) <= 0x0EFF or 0x0900 <= ord(ch) <= 0x0DFF:  # vowel signs count too
            name = _char_script(ch)
            if name is not None:
                counts[name] = counts.get(name, 0) + 1
    return counts


def script(text: str) -> str:
    """The script most of the letters of ``text`` are written in; "Zyyy" when it has none. Japanese text
    mixes kana and Chinese characters: any kana makes it "Jpan"."""
    counts = script_counts(text)
    if not counts:
        return "Zyyy"
    if counts.get("Jpan") and counts.get("Hani"):
        return "Jpan"
    return max(counts.items(), key=lambda item: item[1])[0]


def detect(text: str, max_chars: int = 2000) -> str:
    """The language of ``text``: an ISO 639-1 code ("en", "ar", "zh", …), or "und" when it has no letters.
    Only the first ``max_chars`` characters are read (enough for a passage). A question is asked its language
    by several parts of one answer (the answer's notices, its date phrases, the search, the bot's interface):
    the last few texts' answers are kept, so it is classified once."""
    return _detect_sample(text[:max_chars])


@lru_cache(maxsize=256)
def _detect_sample(sample: str) -> str:
    if not any(ch.isalpha() for ch in sample):
        return UNDETERMINED
    identifier = _identifier()
    with _LOCK:
        lang, _ = identifier.classify(sample)
    return _FOLD.get(lang, lang)


def use_trained(lang: str) -> bool:
    """Whether USE-multilingual-v3 (the stage-1 encoder) was trained on ``lang``."""
    return lang in USE_LANGUAGES


# Enough of a passage to name its language: all 1,448 passages of xquad-dev-multi (twelve languages, an English
# title line in each) are named right from 200 characters on; py3langid then takes ~0.2 ms a passage.
PASSAGE_CHARS = 400


def passage_language(text: str) -> str:
    """The language of one passage (detected once, when it is indexed)."""
    return detect(text, max_chars=PASSAGE_CHARS)


def article_language(languages: list[str], sizes: list[int]) -> str:
    """The language of an article: the one most of its passages' characters are in (``languages`` and ``sizes``
    per passage); "und" when none is determined."""
    weight: dict[str, int] = {}
    for lang, size in zip(languages, sizes):
        if lang and lang != UNDETERMINED:
            weight[lang] = weight.get(lang, 0) + size
    return max(weight.items(), key=lambda item: item[1])[0] if weight else UNDETERMINED


def char_script(ch: str) -> str | None:
    """The script of one character ("Zzzz": a letter of another script; None: not a letter of any)."""
    return _char_script(ch)
