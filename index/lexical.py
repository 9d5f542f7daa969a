"""A small in-memory BM25 index over the passages, with Snowball stemming for Arabic and English.

Lexical matching is strong when the question and the article share a language and useless across
languages, so the searcher only weighs it in when they do (see ``script_of``).
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable

import numpy as np
import snowballstemmer

from .textnorm import normalize

_TOKEN = re.compile(r"\w+", re.UNICODE)
_ARABIC = re.compile(r"[\u0600-\u06ff]")
_STEMMERS = {"ar": snowballstemmer.stemmer("arabic"), "en": snowballstemmer.stemmer("english")}
_STOP = {
    "the", "a", "an", "of", "in", "on", "at", "to", "and", "or", "is", "are", "was", "were", "be", "by", "for",
    "with", "as", "that", "this", "it", "its", "from", "what", "which", "who", "whom", "when", "where", "why",
    "how", "did", "do", "does", "many", "much", "there", "their", "his", "her", "they", "he", "she",
    "في", "من", "على", "الى", "إلى", "عن", "ما", "ماذا", "هل", "كم", "التي", "الذي", "هو", "هي", "و", "او",
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
    """Postings as numpy arrays (term -> document positions and term frequencies): compact enough for a
    few hundred thousand passages, and scoring is vectorised."""

    def __init__(self, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.ids: list[str] = []
        self.scripts = bytearray()  # 1 = Arabic script, 0 = other
        self._lengths = np.zeros(0, dtype=np.float32)
        self._postings: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def build(self, docs: Iterable[tuple[str, str]]) -> BM25:
        postings: dict[str, list[tuple[int, int]]] = defaultdict(list)
        lengths: list[int] = []
        for doc_id, text in docs:
            idx = len(self.ids)
            tokens = tokenize(text)
            self.ids.append(doc_id)
            self.scripts.append(script_of(text) == "ar")
            lengths.append(len(tokens))
            for term, tf in Counter(tokens).items():
                postings[term].append((idx, tf))
        self._lengths = np.asarray(lengths, dtype=np.float32)
        self._postings = {
            term: (np.fromiter((i for i, _ in pl), dtype=np.int32, count=len(pl)),
                   np.fromiter((tf for _, tf in pl), dtype=np.float32, count=len(pl)))
            for term, pl in postings.items()
        }
        return self

    def __len__(self) -> int:
        return len(self.ids)

    def script(self, idx: int) -> str:
        return "ar" if self.scripts[idx] else "latin"

    def scores(self, query: str) -> dict[int, float]:
        """BM25 score of every document that shares a term with the query (by position)."""
        n = len(self.ids)
        if not n:
            return {}
        avg = float(self._lengths.mean()) or 1.0
        total = np.zeros(n, dtype=np.float32)
        for term in set(tokenize(query)):
            posting = self._postings.get(term)
            if posting is None:
                continue
            idxs, tfs = posting
            df = len(idxs)
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            denom = tfs + self.k1 * (1 - self.b + self.b * self._lengths[idxs] / avg)
            total[idxs] += idf * tfs * (self.k1 + 1) / denom
        hit = np.nonzero(total)[0]
        return dict(zip(hit.tolist(), total[hit].tolist()))
