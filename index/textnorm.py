"""Text normalisation shared by citation verification and evaluation.

``normalize`` folds what differs between a quote and its source without changing meaning: Unicode NFKC,
Arabic diacritics (harakat) and tatweel removed, alef forms (أ إ آ ٱ) unified to ا, typographic quotation
marks unified, white space collapsed. ``normalize_with_map`` also returns, for every character of the
normalised text, the index of the character of the original it came from, so that a match found in
normalised text can be located in the original (citation ``start``/``end``).

Locating a quote (``locate``) is more tolerant than ``normalize``, because the model retypes what it quotes:
its match key also ignores every quotation mark (typographic or ASCII: “ ” „ « » ‘ ’ ' " and the like, so a
model that wrote ``'`` for ``"``, or left the marks out, still matches), case, the Arabic spelling variants
ى/ي and ة/ه, and white space before punctuation (``الكثافة . فمنذ`` = ``الكثافة. فمنذ``); "…" and "..." are
the same (NFKC). Whatever it matches, the caller takes the original's own characters at the offsets found,
so the tolerance never changes what is shown. ``is_substantial`` says whether a quote has enough real words
to back a claim.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

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


# ---- locating quotes -----------------------------------------------------------------------------

# Every quotation mark a model or an article may use, ASCII included: ignored when locating a quote.
QUOTE_MARKS = frozenset("\"'`´“”„‟«»″‘’‚‛‹›′〝〞〟＂＇「」『』")
_MATCH_FOLD = str.maketrans({"ى": "ي", "ة": "ه"})
_PUNCT_AFTER_SPACE = frozenset(".,;:!?،؛؟)]}")


@lru_cache(maxsize=256)  # a passage is searched for every citation of an answer
def match_key(text: str) -> tuple[str, tuple[int, ...]]:
    """The text as ``locate`` compares it (see the module docstring), and for each of its characters the
    offset of the original character it came from."""
    chars: list[str] = []
    mapping: list[int] = []
    for i, ch in enumerate(text):
        if ch in QUOTE_MARKS:
            continue
        for c in _fold_char(ch).casefold().translate(_MATCH_FOLD):
            if c in QUOTE_MARKS:
                continue
            if c.isspace():
                if not chars or chars[-1] == " ":
                    continue
                c = " "
            elif c in _PUNCT_AFTER_SPACE and chars and chars[-1] == " ":
                chars.pop()
                mapping.pop()
            chars.append(c)
            mapping.append(i)
    if chars and chars[-1] == " ":
        chars.pop()
        mapping.pop()
    return "".join(chars), tuple(mapping)


def locate(needle: str, haystack: str, start: int = 0) -> tuple[int, int] | None:
    """Find ``needle`` in ``haystack[start:]``, both compared by their ``match_key`` and the needle without the
    punctuation at its ends (a quote's final "." or "…"); return the (start, end) offsets of the match in the
    original ``haystack``, or None. The match is the haystack's own characters; where the needle has
    punctuation at an end, the span takes the same punctuation of the haystack next to it too (any quotation
    mark for a quotation mark)."""
    n, _ = match_key(needle)
    lead, trail = _edge_run(needle), _edge_run(needle[::-1])
    n = n[len(_edge_run(n)):]
    n = n[:len(n) - len(_edge_run(n[::-1]))]
    if not n:
        return None
    key, mapping = match_key(haystack)
    first = next((j for j, i in enumerate(mapping) if i >= start), len(key))
    pos = key.find(n, first)
    if pos < 0:
        return None
    s, e = mapping[pos], mapping[pos + len(n) - 1] + 1
    lead_marks, trail_marks = _edge_marks(lead), _edge_marks(trail)
    while s > start and haystack[s - 1] in lead_marks:
        s -= 1
    while e < len(haystack) and haystack[e] in trail_marks:
        e += 1
    return s, e


def _edge_marks(run: str) -> frozenset[str]:
    """What a match may be extended over on the side where the needle has ``run``: the punctuation in it, and
    any quotation mark if it has one."""
    marks = frozenset(c for c in run if not c.isspace())
    return marks | QUOTE_MARKS if marks & QUOTE_MARKS else marks


def _edge_run(text: str) -> str:
    """The characters at the start of ``text`` that are neither letters nor digits."""
    i = 0
    while i < len(text) and not text[i].isalnum():
        i += 1
    return text[:i]


# ---- substantial quotes --------------------------------------------------------------------------

MIN_WORDS = 3  # a quote backs a claim with at least this many words of 2+ letters or digits, not all stop words
MIN_CHARS_UNSPACED = 12  # or, in a script written without spaces (Chinese, Japanese, Thai…), this many characters
# Function words that back nothing on their own (compared after ``normalize`` and lower-casing).
STOP_WORDS = frozenset({
    "the", "a", "an", "of", "in", "on", "at", "to", "and", "or", "is", "are", "was", "were", "be", "been", "by",
    "for", "with", "as", "that", "this", "these", "those", "it", "its", "from", "not", "no", "but", "so", "if",
    "he", "she", "they", "we", "you", "his", "her", "their", "our", "has", "have", "had", "will", "would",
    "there", "here", "then", "than", "also", "which", "who", "what", "when", "where", "how", "all", "any",
    "في", "من", "على", "الى", "عن", "ما", "لا", "لم", "لن", "قد", "ثم", "او", "ان", "انه", "انها", "كان",
    "كانت", "مع", "هذا", "هذه", "ذلك", "تلك", "التي", "الذي", "الذين", "هو", "هي", "هم", "بين", "عند", "كل",
    "بعد", "قبل", "حيث", "كما", "وقد", "وفي", "ومن", "وان", "الا", "اي", "و", "ف", "ب", "ل",
})
_WORD = re.compile(r"\w+")
# Scripts written without spaces between words.
_UNSPACED = re.compile("[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
                       "\uf900-\ufaff]")


def is_substantial(quote: str) -> bool:
    """Whether ``quote`` has enough real words to back a claim: at least ``MIN_WORDS`` words of two or more
    letters or digits, not all of them stop words; or, when most of its letters are of a script written
    without spaces, at least ``MIN_CHARS_UNSPACED`` letters and digits. ``the``, ``.`` or ``in the`` never are."""
    text = normalize(quote).lower()
    letters = [c for c in text if c.isalnum()]
    if letters and 2 * sum(1 for c in letters if _UNSPACED.match(c)) >= len(letters):
        return len(letters) >= MIN_CHARS_UNSPACED
    words = [w for w in _WORD.findall(text) if sum(c.isalnum() for c in w) >= 2]
    return len(words) >= MIN_WORDS and any(w not in STOP_WORDS for w in words)


def contains(haystack: str, needle: str) -> bool:
    n = normalize(needle)
    return bool(n) and n in normalize(haystack)
