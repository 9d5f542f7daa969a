"""Text normalisation shared by citation verification and evaluation.

``normalize`` folds what differs between a quote and its source without changing meaning: Unicode NFKC,
Arabic diacritics (harakat) and tatweel removed, alef forms (أ إ آ ٱ) unified to ا, typographic quotation
marks unified, white space collapsed. ``normalize_with_map`` also returns, for every character of the
normalised text, the index of the character of the original it came from, so that a match found in
normalised text can be located in the original (citation ``start``/``end``).
"""

from __future__ import annotations

import re
import unicodedata

_DIACRITICS = re.compile("[\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06dc\u06df-\u06e8\u06ea-\u06ed\u0640]")
_ALEF = str.maketrans({"أ": "ا", "إ": "ا", "آ": "ا", "ٱ": "ا"})
_QUOTES = str.maketrans({
    "“": '"', "”": '"', "„": '"', "‟": '"', "«": '"', "»": '"', "″": '"',
    "‘": "'", "’": "'", "‚": "'", "‛": "'", "‹": "'", "›": "'", "′": "'",
})
_SPACE = re.compile(r"\s+")


def _fold_char(ch: str) -> str:
    out = unicodedata.normalize("NFKC", ch)
    out = _DIACRITICS.sub("", out)
    out = out.translate(_ALEF).translate(_QUOTES)
    return out


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = _DIACRITICS.sub("", text)
    text = text.translate(_ALEF).translate(_QUOTES)
    return _SPACE.sub(" ", text).strip()


def normalize_with_map(text: str) -> tuple[str, list[int]]:
    """Normalise ``text`` character by character; return the result and a map from each of its characters
    to the offset of the original character it came from. Leading/trailing space is kept as a single space."""
    out: list[str] = []
    mapping: list[int] = []
    prev_space = False
    for i, ch in enumerate(text):
        folded = _fold_char(ch)
        for c in folded:
            if c.isspace():
                if prev_space:
                    continue
                c = " "
                prev_space = True
            else:
                prev_space = False
            out.append(c)
            mapping.append(i)
    return "".join(out), mapping


def locate(needle: str, haystack: str) -> tuple[int, int] | None:
    """Find ``needle`` in ``haystack`` after normalising both; return the (start, end) offsets of the match in
    the original ``haystack``, or None."""
    n = normalize(needle)
    if not n:
        return None
    norm, mapping = normalize_with_map(haystack)
    pos = norm.find(n)
    if pos < 0:
        return None
    start = mapping[pos]
    end = mapping[pos + len(n) - 1] + 1
    return start, end


def contains(haystack: str, needle: str) -> bool:
    n = normalize(needle)
    return bool(n) and n in normalize(haystack)
