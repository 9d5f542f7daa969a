"""A small in-memory BM25 index over the passages, with Snowball stemming for Arabic and English.

Lexical matching is strong when the question and the article share a language and useless across
languages, so the searcher only weighs it in when they do (see ``script_of``).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable

import snowballstemmer

from .textnorm import normalize

_TOKEN = re.compile(r"\w+", re.UNICODE)
_ARABIC = re.compile(r"[\u0600-\u06ff]")
_STEMMERS = {"ar": snowballstemmer.stemmer("arabic"), "en": snowballstemmer.stemmer("english")}
_STOP = {
    "the", "a", "an", "of", "in", "on", "at", "to", "and", "or", "is", "are", "was", "were", "be", "by", "for",
    "with", "as", "that", "this", "it", "its", "from", "what", "which", "who", "whom", "when", "where", "why",
    "how", "did", "do", "does", "many", "much", "there", "their", "his", "her", "they", "he", "she",
    "في", "من", "على", "الى", "إلى", "عن", "ما", "ماذا", "من", "هل", "كم", "التي", "الذي", "هو", "هي", "و", "او",
    "أو", "ان", "أن", "إن", "كان", "كانت", "مع", "هذا", "هذه", "ذلك", "تلك",
}


def script_of(text: str) -> str:
    """'ar' when most letters are Arabic script, else 'latin'."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return "latin"
    arabic = sum(1 for c in letters if _ARABIC.match(c))
    return "ar" if arabic * 2 >= len(letters) else "latin"


def tokenize(text: str) -> list[str]:
    out = []
    for tok in _TOKEN.findall(normalize(text).lower()):
        if tok in _STOP:
            continue
        stemmer = _STEMMERS["ar" if _ARABIC.match(tok) else "en"]
        out.append(stemmer.stemWord(tok))
    return out


class BM25:
    def __init__(self, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.ids: list[str] = []
        self.scripts: list[str] = []
        self._tf: list[Counter] = []
        self._len: list[int] = []
        self._df: Counter = Counter()
        self._postings: dict[str, list[int]] = {}

    def build(self, docs: Iterable[tuple[str, str]]) -> BM25:
        for doc_id, text in docs:
            tokens = tokenize(text)
            tf = Counter(tokens)
            idx = len(self.ids)
            self.ids.append(doc_id)
            self.scripts.append(script_of(text))
            self._tf.append(tf)
            self._len.append(len(tokens))
            for term in tf:
                self._df[term] += 1
                self._postings.setdefault(term, []).append(idx)
        return self

    def __len__(self) -> int:
        return len(self.ids)

    def scores(self, query: str) -> dict[int, float]:
        """BM25 score of every document that shares a term with the query (by position)."""
        n = len(self.ids)
        if not n:
            return {}
        avg = sum(self._len) / n or 1.0
        out: dict[int, float] = {}
        for term in set(tokenize(query)):
            df = self._df.get(term)
            if not df:
                continue
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            for idx in self._postings[term]:
                tf = self._tf[idx][term]
                denom = tf + self.k1 * (1 - self.b + self.b * self._len[idx] / avg)
                out[idx] = out.get(idx, 0.0) + idf * tf * (self.k1 + 1) / denom
        return out
