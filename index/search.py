"""Search: fuse the evidence each passage has, score-normalised.

Rankers: the stage-1 vectors (USE), the stage-2 accurate vectors (e5) where a passage has them, and BM25
when the question is in the passage's script. Each ranker's scores are standardised against its own top-N
list (z-scores: cross-lingual cosines are low and shift from query to query, so no absolute threshold is
used anywhere), and a passage's score is the weighted mean over the rankers that have evidence for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .chunking import sentences as sentence_spans
from .embedding import Embedder
from .lexical import BM25, script_of
from .store import Store, StoredPassage
from .types import Hit

CANDIDATES = 50
REFRESH_SECONDS = 60.0
RERANK = 5  # the top passages re-scored with their best sentence
SENTENCE_WEIGHT = 0.15
WEIGHTS = {"dense": 0.3, "accurate": 0.7, "lexical": 0.5}


@dataclass
class Scored:
    passage: StoredPassage
    score: float


def _standardise(scores: dict[str, float], reference: Sequence[float]) -> dict[str, float]:
    ref = np.asarray(reference, dtype=np.float64)
    if ref.size == 0:
        return {}
    mean, std = float(ref.mean()), float(ref.std())
    std = std if std > 1e-9 else 1.0
    return {k: (v - mean) / std for k, v in scores.items()}


class Searcher:
    def __init__(self, store: Store, embedder: Embedder, accurate: Embedder | None) -> None:
        self.store, self.embedder, self.accurate = store, embedder, accurate
        self._lexical: BM25 | None = None
        self._lexical_key: tuple | None = None
        self._registry: dict[str, dict] = {}
        self._built_at = 0.0
        self._fingerprint: list = []
        self._lock = threading.Lock()

    # The lexical index and the article registry are cached and rebuilt when the store changed: after our own
    # writes (``invalidate``), when the counts differ (another process wrote), or after REFRESH_SECONDS.
    def invalidate(self) -> None:
        with self._lock:
            self._lexical_key = None

    def refresh(self) -> None:
        key = (self.store.count(), self.store.count("articles"))
        with self._lock:
            fresh = time.monotonic() - self._built_at < REFRESH_SECONDS
            if key == self._lexical_key and fresh:
                return
        registry = self.store.articles()
        fingerprint = sorted((k, v.get("hash")) for k, v in registry.items())
        with self._lock:
            if key == self._lexical_key and fingerprint == self._fingerprint:
                # same counts and same content hashes: another process changed nothing; keep the lexical index
                self._built_at = time.monotonic()
                return
        lexical = BM25().build((p.chunk_id, p.text) for p, _ in self.store.iter_passages())
        with self._lock:
            self._lexical, self._lexical_key, self._registry = lexical, key, registry
            self._fingerprint = fingerprint
            self._built_at = time.monotonic()

    def registry(self) -> dict[str, dict]:
        self.refresh()
        return self._registry

    def search(self, query: str, k: int = 5) -> list[Hit]:
        self.refresh()
        scored = self.rank(query, k)
        return [self._hit(rank, s) for rank, s in enumerate(scored, start=1)]

    def rank(self, query: str, k: int) -> list[Scored]:
        n = max(CANDIDATES, 4 * k)
        rankers: dict[str, dict[str, float]] = {}
        qvec = self.embedder.queries([query])[0]
        dense = self.store.query_passages(qvec, n)
        passages = {p.chunk_id: p for p in dense}
        rankers["dense"] = _standardise({p.chunk_id: p.score for p in dense}, [p.score for p in dense])

        accurate_vecs: dict[str, np.ndarray] = {}
        if self.accurate is not None and self.store.count("accurate"):
            avec = self.accurate.queries([query])[0]
            acc = self.store.query_accurate(avec, n)
            raw = dict(acc)
            missing = [cid for cid in passages if cid not in raw]
            accurate_vecs = self.store.get_accurate_vectors(missing)
            raw.update({cid: float(v @ avec) for cid, v in accurate_vecs.items()})
            rankers["accurate"] = _standardise(raw, [s for _, s in acc])

        lexical_raw: dict[str, float] = {}
        qscript = script_of(query)
        with self._lock:
            lexical = self._lexical
        if lexical is not None and len(lexical):
            for idx, score in lexical.scores(query).items():
                if lexical.script(idx) == qscript:
                    lexical_raw[lexical.ids[idx]] = score
            top = sorted(lexical_raw.values(), reverse=True)[:n]
            if top:
                keep = {cid for cid, s in lexical_raw.items() if s >= top[-1]}
                rankers["lexical"] = _standardise({c: lexical_raw[c] for c in keep}, top)

        # candidates from every ranker; fill in the dense score of those the dense list did not return
        candidates = set(passages) | set(rankers.get("accurate", {})) | set(rankers.get("lexical", {}))
        missing = [cid for cid in candidates if cid not in passages]
        if missing:
            vecs = self.store.get_passage_vectors(missing)
            ref = [p.score for p in dense]
            extra = {cid: float(v @ qvec) for cid, v in vecs.items()}
            rankers["dense"].update(_standardise(extra, ref))
            passages.update(self.store.get_passages(missing))
        out = []
        for cid in candidates:
            passage = passages.get(cid)
            if passage is None:
                continue
            total = weight = 0.0
            for name, scores in rankers.items():
                if name == "lexical":
                    if script_of(passage.text) != qscript:
                        continue
                    value = scores.get(cid, min(scores.values()) if scores else 0.0)
                elif cid in scores:
                    value = scores[cid]
                else:
                    continue  # no evidence of this kind for this passage (e.g. no accurate vector yet)
                total += WEIGHTS[name] * value
                weight += WEIGHTS[name]
            if weight:
                out.append(Scored(passage, total / weight))
        out.sort(key=lambda s: -s.score)
        self._rerank_by_sentence(qvec, out[:RERANK], [p.score for p in dense])
        out[:RERANK] = sorted(out[:RERANK], key=lambda s: -s.score)
        return out[:k]

    def _rerank_by_sentence(self, qvec: np.ndarray, top: list[Scored], reference: Sequence[float]) -> None:
        """Sentence evidence for the top few: a passage whose best single sentence matches the question
        closely moves up. The sentence cosine is standardised against the dense passage scores of the same
        query, so both speak the same units."""
        if len(top) < 2 or not reference:
            return
        mean, std = float(np.mean(reference)), float(np.std(reference)) or 1.0
        texts, owners = [], []
        for i, s in enumerate(top):
            for a, b in sentence_spans(s.passage.text):
                texts.append(s.passage.text[a:b])
                owners.append(i)
        if not texts:
            return
        sims = self.embedder.passages(texts) @ qvec
        best = np.full(len(top), -np.inf)
        for owner, sim in zip(owners, sims):
            best[owner] = max(best[owner], sim)
        for i, s in enumerate(top):
            if np.isfinite(best[i]):
                s.score = (s.score + SENTENCE_WEIGHT * (best[i] - mean) / std) / (1 + SENTENCE_WEIGHT)

    def _hit(self, rank: int, scored: Scored) -> Hit:
        p = scored.passage
        meta = self._registry.get(p.article_id, {})
        return Hit(rank=rank, score=round(scored.score, 4), article_id=p.article_id,
                   title=meta.get("title") or None, source=meta.get("source") or None,
                   published=meta.get("published") or None, url=meta.get("url") or None,
                   chunk_id=p.chunk_id, text=p.text, start=p.start, end=p.end)
