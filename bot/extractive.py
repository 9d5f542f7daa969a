"""The offline answer: the sentences of the retrieved passages that best answer the question, quoted verbatim.

Relevance is judged relative to scores, never by a fixed cosine cut-off (cross-lingual cosines are low and
vary by query):
- each candidate sentence is compared with the question and the similarity is standardised against the same
  question's similarity to a set of unrelated sentences (``prompts/null_sentences.txt``): how far above
  "irrelevant" it stands, in standard deviations of irrelevant;
- the best sentence must stand at least ``MIN_NULL_Z`` above irrelevant, else the engine abstains;
- further sentences are kept while they stay close to the best one (``KEEP_RATIO`` of its standing);
- a follow-up ("and where did she publish it?") is read both as written and with the previous question, and
  the best quotes of each reading are shown (see ``Extractor.select``).

What the search computed is used, not computed again: the question's stage-1 vector (``SearchResult.qvec``),
each passage's sentence spans (``Hit.sentences``) and, where the search's re-rank encoded them, the sentences'
vectors (``Hit.sentence_vectors``). Only what is missing is computed here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from itertools import takewhile, zip_longest

import numpy as np

from newsdesk.index.chunking import sentences as sentence_spans
from newsdesk.index.embedding import Embedder
from newsdesk.index.textnorm import normalize
from newsdesk.index.types import Hit

from .answers import Citation, Sentence

MIN_NULL_Z = 3.0  # the best sentence must stand this many null standard deviations above irrelevant
KEEP_RATIO = 0.75  # keep sentences whose standing is at least this share of the best one's
MAX_QUOTES = 5
MAX_PER_PASSAGE = 2
PASSAGE_WEIGHT = 0.25  # how much the passage's own retrieval rank adds to a sentence's standing


@dataclass
class _Candidate:
    hit: Hit
    start: int  # offsets in the article text
    end: int
    text: str
    key: str  # the normalised text: the same quote from two passages is shown once
    vector: np.ndarray | None = None  # the search's vector of the scored text, when it has one
    score: float = 0.0


def _null_sentences() -> list[str]:
    text = resources.files("newsdesk.prompts").joinpath("null_sentences.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


class Extractor:
    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self._null: np.ndarray | None = None

    def _null_vectors(self) -> np.ndarray:
        if self._null is None:
            self._null = self.embedder.passages(_null_sentences())
        return self._null

    def relevance(self, qvec: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        """Each sentence vector's similarity to the question vector, in null standard deviations above
        irrelevant."""
        null = self._null_vectors() @ qvec
        sims = vectors @ qvec if len(vectors) else np.zeros(0)
        return (sims - null.mean()) / max(float(null.std()), 1e-6)

    def _question_vector(self, question: str, known: Mapping[str, np.ndarray]) -> np.ndarray:
        vector = known.get(question)
        return vector if vector is not None else self.embedder.queries([question])[0]

    def _sentence_vectors(self, candidates: list[_Candidate]) -> np.ndarray:
        """The vectors of the candidates' scored texts: the search's where it has them, the rest encoded."""
        missing = [_content(c.text) for c in candidates if c.vector is None]
        encoded = iter(self.embedder.passages(missing)) if missing else iter(())
        return np.vstack([c.vector if c.vector is not None else next(encoded) for c in candidates])

    def select(self, question: str, hits: list[Hit], follow_up: str | None = None,
               query_vectors: Mapping[str, np.ndarray] | None = None) -> list[_Candidate]:
        """The quotes to show, in article order, or [] when nothing is relevant enough.

        ``follow_up``: the latest message as the user wrote it, when ``question`` is that message read
        together with the previous question. Offline there is no way to tell what "she" or "it" refers to,
        so the quotes that best match each reading are taken in turn (the follow-up's first), each reading
        keeping the sentences close to its own best; the answer abstains only when neither reading finds
        anything. ``query_vectors``: the stage-1 vectors the searches computed, by question text (a reading
        without one is encoded here)."""
        candidates: list[_Candidate] = []
        bonus: list[float] = []  # the passage's retrieval rank, a little
        for position, hit in enumerate(hits):
            title = normalize(hit.title or "")
            spans = hit.sentences if hit.sentences is not None else sentence_spans(hit.text)
            vectors = hit.sentence_vectors if hit.sentence_vectors is not None else [None] * len(spans)
            for (s, e), vector in zip(spans, vectors, strict=True):
                text = hit.text[s:e]
                key = normalize(text)
                # skip fragments too short to stand as a quote, and the headline: it names the story,
                # it does not answer a question about it
                if len(key) >= 12 and key != title:
                    # the search encoded the sentence as written: its vector serves unless a dateline is cut off
                    vector = vector if _content(text) == text else None
                    candidates.append(_Candidate(hit, hit.start + s, hit.start + e, text, key, vector))
                    bonus.append(PASSAGE_WEIGHT * (len(hits) - position) / len(hits))
        if not candidates:
            return []
        vectors = self._sentence_vectors(candidates)
        readings = [question] if follow_up is None or follow_up == question else [follow_up, question]
        known = query_vectors or {}
        standings = [self.relevance(self._question_vector(q, known), vectors) for q in readings]
        if max(float(z.max()) for z in standings) < MIN_NULL_Z:
            return []
        ranked_lists = [_close_to_best(z, np.asarray(bonus)) for z in standings]
        for c, z in zip(candidates, standings[-1], strict=True):
            c.score = float(z)
        chosen: list[_Candidate] = []
        seen_text: set[str] = set()
        per_passage: dict[str, int] = {}
        for turn in zip_longest(*ranked_lists):
            for i in turn:
                if i is None or len(chosen) >= MAX_QUOTES:
                    continue
                c = candidates[i]
                if c.key in seen_text or per_passage.get(c.hit.chunk_id, 0) >= MAX_PER_PASSAGE:
                    continue
                seen_text.add(c.key)
                per_passage[c.hit.chunk_id] = per_passage.get(c.hit.chunk_id, 0) + 1
                chosen.append(c)
        # keep each article's order: articles by their best retrieval position, quotes by position
        article_rank: dict[str, int] = {}
        for position, hit in enumerate(hits):
            article_rank.setdefault(hit.article_id, position)
        chosen.sort(key=lambda c: (article_rank[c.hit.article_id], c.start))
        return chosen


_DATELINE = re.compile(r"^\s*\([^()]{3,120}\)\s*")


def _content(sentence: str) -> str:
    """What a sentence is scored on: without a leading dateline such as "(Reuters - 28 September 2020)",
    which says nothing about the question but weighs on a short sentence's vector. The quote stays whole."""
    return _DATELINE.sub("", sentence) or sentence


def _close_to_best(standing: np.ndarray, bonus: np.ndarray) -> list[int]:
    """Candidates by standing plus their passage's rank bonus, while they stay within ``KEEP_RATIO`` of the
    best standing."""
    best = float(standing.max())
    if best <= 0:
        return []
    order = np.argsort(-(standing + bonus), kind="stable")
    return list(takewhile(lambda i: standing[i] >= KEEP_RATIO * best, (int(i) for i in order)))


def build(chosen: list[_Candidate]) -> tuple[list[Sentence], list[Citation]]:
    sentences, citations = [], []
    for n, c in enumerate(chosen, start=1):
        hit = c.hit
        citations.append(Citation(n=n, article_id=hit.article_id, title=hit.title, source=hit.source,
                                  published=hit.published, url=hit.url, quote=c.text, start=c.start, end=c.end,
                                  verified=True, chunk_id=hit.chunk_id, passage=hit.text, also=list(hit.also)))
        sentences.append(Sentence(text=c.text, citations=[n]))
    return sentences, citations
