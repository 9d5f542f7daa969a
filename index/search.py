"""Search: fuse the evidence each passage has, score-normalised.

Rankers: the stage-1 vectors (USE), the stage-2 accurate vectors (e5) where a passage has them, and BM25
for the passages in the question's language (and, within an article, the latent terms: below). Each ranker's
scores are standardised against its own top-N list (z-scores: cross-lingual cosines are low and shift from
query to query, so no absolute threshold is used anywhere), and a passage's score is the weighted mean over
the rankers that have evidence for it.
Without stage-2 vectors the top few are then re-scored by their best single sentence.

Language: the question's is detected once per search (``language.detect``, ~0.5 ms), each passage's is the one
stored with it (the BM25 index's ``language``: no detection per query). BM25 reads the question only against
passages of its language (across languages it matched names and title words, and lifted passages for sharing
the question's language: English -> German hit@1 0.822 -> 0.869, XQuAD dev, both stages). USE speaks with its
full weight only when the question and the passage are both in languages it was trained on
(``language.USE_LANGUAGES``); otherwise e5 decides and USE only breaks ties (English -> Vietnamese 0.717 ->
0.810, mixed-language index 0.726 -> 0.827 with both changes, ``python -m bench.languages``); beside stage-2
vectors it only breaks ties within one language too, where BM25 and e5 decide (``_dense_weight``). Tried in an
offline replay and not kept (docs/benchmarks/languages.md): standardising each ranker within each language's
candidates (mixed 0.825 -> 0.355: the best passage of every language looks equally good), removing each
language's mean vector (0.781), and letting BM25 only reorder passages within the question's language (0.814).

Two kinds of evidence cross languages without tilting them: the question's numbers (BM25 over its digits in
every language, a small weight: they tell an article's paragraphs apart) and, with stage-2 vectors, an offset
taken off the passages in the question's own language, measured per question as how much closer its e5 vector
is to a fixed sample of passages in its language than to one in the others (``_same_language``). Tried in the
replay and not kept (round 2): a per-language offset for every language from the mean, median or a low
quantile of its cosines (0.76-0.83: with few articles per language it is mostly their topics), a hubness
penalty per passage (its mean cosine to other articles' passages: 0.72-0.81), article-level evidence (a
passage helped by its article's best: no change, 62 of the 106 misses are another paragraph of the right
article) and English-looking names as cross-language evidence (0.80).

With stage-2 vectors, the stage-2 model's latent terms (``index.terms``: sparse features of e5's token
embeddings, aligned across languages) choose between the paragraphs of an article: within each article the
candidates' fused scores are handed out again in the order the terms adjust them to, so they never lift one
article over another (as a ranker of their own they chose articles by topic words). English -> Greek 0.812 ->
0.851, -> Thai 0.848 -> 0.856, mixed-language index 0.838 -> 0.864 (offline replay; ``bench.languages`` for
the measured figures). Across languages where USE is only a tie-breaker (el, hi, ro, vi, ...) the terms weigh
twice as much (``UNTRAINED_TERMS_WEIGHT``): there e5 alone made the fused score. The question's terms are a
second e5 pass, run on another core beside the USE encoding.
And beside stage-2 vectors USE weighs as much as e5 for Chinese passages, where it ranks as well as e5.

``retrieve`` returns what the search computed along with the hits (a ``SearchResult``): the question's vectors,
each returned passage's sentence spans, and the re-rank's sentence vectors; the offline answer uses them
instead of splitting and encoding again. ``search`` returns the hits alone.

Cost per search at 100k passages (``bench/search_scale.py``): the two e5 passes over the question (its vector
and its latent terms, ~26 ms each, in parallel) dominate; the two HNSW queries return ids and distances only,
stored vectors are read only for candidates a ranker missed while stage 2 is filling in (once it is complete
such a candidate is scored just below the ranker's lowest in its top N, without a read), the stored latent terms
(metadata: the slow kind of read) only for the candidates of the first articles (``Searcher._by_terms``), texts
only for the passages returned, and their titles not at all (they come with the articles' versions,
``Store.article_meta``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import dedup, terms as latent_terms
from .chunking import sentences as sentence_spans
from .dates import Filters, prefer_recent
from .embedding import Embedder
from .errors import StoreError
from .language import UNDETERMINED, detect, use_trained
from .lexical import BM25, words
from .store import Store, StoredPassage, split_passage_id
from .types import Hit, SearchResult

log = logging.getLogger(__name__)

CANDIDATES = 50  # each ranker's list, against which its scores are standardised
POOL = 20  # each ranker's best, fused
TERMS_SLOTS = 10  # the latent terms are read for the articles that own one of the first TERMS_SLOTS places
CHECK_SECONDS = 2.0  # how often a search asks the store whether another process changed the articles
RERANK = 3  # without stage-2 vectors, the top passages are re-scored by their best sentence (3 or 5: same hit@1)
SENTENCE_WEIGHT = 0.15
WEIGHTS = {"dense": 0.3, "accurate": 0.7, "lexical": 0.5, "numbers": 0.1, "terms": 0.3}
# "terms": the stage-2 model's latent terms (``index.terms``), scored for the candidates only and standardised
# over them: cross-language evidence at the word level. It only chooses between an article's paragraphs
# (``_reorder_within_articles``): mixed-language index hit@1 0.838 -> 0.864, en->el 0.812 -> 0.851, en->th
# 0.848 -> 0.856, en->vi 0.815 -> 0.835 (offline replay). As a ranker of its own it bought a little more (0.871;
# relative to its article's mean: 0.873) but chose articles by topic words: the seed question "What weapons did
# each side allege?" over the example article and three XQuAD articles landed on the French and Indian War
# "numbers": BM25 over the question's numbers (1565, 2004) in every language: digits are written alike in every
# script, the one lexical evidence that crosses languages without tilting them (en->el 0.806 -> 0.812, en->de
# 0.869 -> 0.876, xquad-dev en->ar 0.856 -> 0.861, stage 1 en->vi 0.271 -> 0.325; offline replay)
LANGUAGE_OFFSET = 0.5  # how much of the question's own language's cosine advantage is taken off (see _same_language)
SAMPLE = 1000  # passages whose stage-2 vectors measure it: a fixed random sample, read once per generation
SAMPLE_MIN = 5  # fewer passages in the question's language (or in the others) in the sample: no offset
# USE's weight when the question or the passage is in a language it was not trained on (el, hi, ro, vi, …):
# its cosines there are close to noise and hurt e5's ranking (mixed index hit@1 0.789 -> 0.825, offline
# replay); a tie-breaker only, and alone (stage 1) its weight does not change the order
UNTRAINED_DENSE_WEIGHT = 0.05
# Passage languages where USE alone ranks as well as e5 alone (English questions over the XQuAD dev articles,
# hit@1: zh 0.770 vs 0.761; everywhere else e5 is ahead by 0.02-0.07: ar 0.750 vs 0.819, ru 0.789 vs 0.851):
# there USE weighs as much as e5 (mixed-language index, Chinese articles 0.66 -> 0.76 with the latent terms;
# en->zh 0.840 -> 0.845; giving USE more weight everywhere instead lost vi and ru in the mixed index)
DENSE_AS_ACCURATE = frozenset({"zh"})
# Beside stage-2 vectors, USE is a tie-breaker too (UNTRAINED_DENSE_WEIGHT) when the question and the passage are
# in one language: there BM25 reads the question's words and e5 its meaning, and USE's cosines only blur them.
# XQuAD dev, X->X hit@1 (session 13, ``python -m bench.replay``): ar 0.928 -> 0.938, tr 0.917 -> 0.925, zh 0.944
# -> 0.951, ru 0.946 -> 0.949, es 0.956 -> 0.958, de 0.936 -> 0.933, th 0.959 -> 0.953, en 0.966 -> 0.964; the
# mixed-language index 0.866 -> 0.871; English questions over other languages are not changed. Stage 1 alone
# (USE the only vector ranker) keeps USE's full weight.
# The latent terms' weight for a passage in another language than the question's, where one of the two is a
# language USE was not trained on: there USE is only a tie-breaker, e5 alone made the fused score, and the terms
# are the one other voice choosing between an article's paragraphs. XQuAD dev, both stages (session 14,
# ``python -m bench.replay``, 0.3 -> 0.6): mixed-language index hit@1 0.866 -> 0.873 (el 0.807 -> 0.842, vi
# 0.729 -> 0.771), en->vi 0.833 -> 0.845, en->ro 0.879 -> 0.886, en->hi 0.879 -> 0.876, en->el 0.850 -> 0.850;
# 0.45 / 0.75 / 0.9 gave mixed 0.871 each. For every passage language across languages (USE trained or not) 0.6
# lost ar, ru, tr and zh in the mixed index (0.860); within one language 0.45 lost vi->vi (session 13).
UNTRAINED_TERMS_WEIGHT = 0.6
# Once stage 2 is complete, a candidate a ranker did not return is scored this far (in z units) below the lowest
# score of that ranker's top N, instead of reading its stored vector (its true score is lower than the lowest;
# see ``_rank``). XQuAD dev, hit@1 against reading the vectors (session 14, ``python -m bench.replay``): 0.25 nets
# 0 questions over the 25 runs (en->el +2, mixed equal), hit@5 +2; 0 (the lowest score itself): mixed -1 (zh
# 0.756 -> 0.732), en->el +3; 0.5 / 0.75 / 1.0: en->el +1, en->vi equal, mixed equal.
MISSED_BELOW = 0.25
_WORKERS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="newsdesk-search")


@dataclass
class Scored:
    passage: StoredPassage
    score: float
    sentences: list[tuple[int, int]] | None = None  # spans in passage.text, once computed
    sentence_vectors: np.ndarray | None = None  # their stage-1 vectors, when the re-rank encoded them


def _release_free_memory() -> None:
    """Hand memory freed after building the lexical index back to the system (glibc keeps it otherwise)."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc


def _known(*langs: str | None) -> list[str]:
    """The languages of these that are known (not None, not "und")."""
    return [lang for lang in langs if lang and lang != UNDETERMINED]


def _dense_weight(qlang: str, plang: str | None, beside_accurate: bool = True) -> float:
    """The stage-1 (USE) ranker's weight for a question in ``qlang`` and a passage in ``plang`` (None or "und":
    not known): its full weight unless either is in a language USE was not trained on; beside stage-2
    evidence, a tie-breaker only when the question and the passage are in the same language, and otherwise as
    much as e5's for a passage in a language where USE ranks as well as e5 (``DENSE_AS_ACCURATE``)."""
    known = _known(qlang, plang)
    if not all(use_trained(lang) for lang in known):
        return UNTRAINED_DENSE_WEIGHT
    if beside_accurate and len(known) == 2 and qlang == plang:  # one language: e5 and BM25 decide (above)
        return UNTRAINED_DENSE_WEIGHT
    return WEIGHTS["accurate"] if beside_accurate and plang in DENSE_AS_ACCURATE else WEIGHTS["dense"]


def _terms_weight(qlang: str, plang: str | None) -> float:
    """The latent terms' weight for a question in ``qlang`` and a passage in ``plang``: UNTRAINED_TERMS_WEIGHT
    across two known languages one of which USE was not trained on, WEIGHTS["terms"] otherwise."""
    known = _known(qlang, plang)
    if len(known) == 2 and qlang != plang and not all(use_trained(lang) for lang in known):
        return UNTRAINED_TERMS_WEIGHT
    return WEIGHTS["terms"]


def _reorder_within_articles(fused: list[tuple[float, str]], adjust: dict[str, float]) -> list[tuple[float, str]]:
    """Within each article, its passages' fused scores handed out again in the order ``adjust`` (weighted
    z-scores; 0 where missing) moves them to: the evidence chooses between an article's paragraphs and never
    lifts or lowers the article, whose best score stays what the other rankers gave it."""
    by_article: dict[str, list[tuple[float, str]]] = {}
    for score, cid in fused:
        by_article.setdefault(split_passage_id(cid)[0], []).append((score, cid))
    out: list[tuple[float, str]] = []
    for members in by_article.values():
        if len(members) < 2:
            out.extend(members)
            continue
        slots = sorted((score for score, _ in members), reverse=True)
        order = sorted(members, key=lambda m: -(m[0] + adjust.get(m[1], 0.0)))
        out.extend((slot, cid) for slot, (_, cid) in zip(slots, order))
    return out


def _standardise(scores: dict[str, float], reference: Sequence[float]) -> dict[str, float]:
    ref = np.asarray(reference, dtype=np.float64)
    if ref.size == 0:
        return {}
    mean, std = float(ref.mean()), float(ref.std())
    std = std if std > 1e-9 else 1.0
    return {k: (v - mean) / std for k, v in scores.items()}


class Searcher:
    """Ranks passages for a question. Holds the lexical (BM25) index, which it keeps in step with the store:

    - on first use it loads the index saved in ``lexical_dir`` (or builds it) and brings it up to date; the
      file is named after the collection's id, so an embedded store and a server on the same data share it;
    - after this process's own writes, ``sync()`` updates it at once (only the changed articles);
    - every CHECK_SECONDS a search reads the store's generation token (one small read); when another process
      changed the articles, a background thread builds the updated index while searches keep using the
      current one, and swaps it in when done;
    - embedded, before every search it also asks the store whether another process wrote (the generation file,
      a read of 32 bytes): if so the store's view is reopened first, and the generation checked at once. A
      search that fails while another process wrote meanwhile (this process's view lacks what the lexical
      index already has) is run again once on a reopened view.
    """

    def __init__(self, store: Store, embedder: Embedder, accurate: Embedder | None,
                 lexical_dir: Path | None = None, latent_terms: bool = True) -> None:
        self.store, self.embedder, self.accurate = store, embedder, accurate
        self.latent_terms = latent_terms and accurate is not None and accurate.has_terms
        self.lexical_dir = lexical_dir
        self._lexical: BM25 | None = None
        self._has_accurate = False
        self._has_terms = False
        self._complete = False  # every passage has its stage-2 vector (read with _has_accurate)
        self._checked_at = -float("inf")
        self._update_lock = threading.Lock()
        self._updater: threading.Thread | None = None
        self._sample: tuple[str, float, np.ndarray, np.ndarray] | None = None  # tag, when, languages, vectors

    # -- keeping the lexical index in step with the store --------------------------------------------------

    @property
    def lexical(self) -> BM25:
        """The current lexical index (brought up to date first if there is none yet)."""
        if self._lexical is None:
            self.sync()
        return self._lexical

    def sync(self) -> None:
        """Bring the lexical index up to date with the store now."""
        with self._update_lock:
            generation = self.store.generation()
            current = self._lexical
            if current is None:
                current = self._load(generation)
            if current.tag != generation:
                updated = current.updated(self.store.article_hashes(), self.store.passages_of)
                current = updated or current
                current.tag = generation
                self._save(current)
                if updated is not None:
                    _release_free_memory()
            self._lexical = current
            self._has_accurate, self._has_terms = self.store.stage2_state()
            self._complete = self._has_accurate and self.store.stage2_complete()
            self._checked_at = time.monotonic()

    def lexical_file(self, generation: str) -> Path | None:
        """Where the lexical index of the collection behind ``generation`` is saved (None: not saved)."""
        collection_id = generation.split(":")[0]
        if self.lexical_dir is None or not collection_id:
            return None
        return self.lexical_dir / f"{collection_id}.npz"

    def _load(self, generation: str) -> BM25:
        path = self.lexical_file(generation)  # named after this collection's id: saved from this very collection
        saved = BM25.load(path) if path is not None else None
        return saved if saved is not None else BM25()

    def _save(self, lexical: BM25) -> None:
        path = self.lexical_file(lexical.tag)
        if path is None:
            return
        try:
            lexical.save(path)
            existing = self.store.collection_ids()
            for other in path.parent.glob("*.npz"):  # indexes of collections deleted since (--rebuild)
                if other.stem not in existing:
                    other.unlink(missing_ok=True)
        except (OSError, StoreError) as exc:  # only a cache: the next process rebuilds it
            log.warning("could not save the lexical index to %s (%s)", path, type(exc).__name__)

    def _maybe_refresh(self) -> None:
        if self._lexical is None:
            self.sync()
            return
        now = time.monotonic()
        reopened = self.store.changed_elsewhere() and self.store.refresh()
        if now - self._checked_at < CHECK_SECONDS and not reopened:
            return
        self._checked_at = now
        self._has_accurate, self._has_terms = self.store.stage2_state()
        self._complete = self._has_accurate and self.store.stage2_complete()
        if self.store.generation() != self._lexical.tag and not (self._updater and self._updater.is_alive()):
            self._updater = threading.Thread(target=self._background_sync, name="lexical-update", daemon=True)
            self._updater.start()

    def _background_sync(self) -> None:
        try:
            self.sync()
        except Exception as exc:  # noqa: BLE001 - searches go on with the current index; retried later
            log.warning("updating the lexical index failed (%s); retrying later", type(exc).__name__)

    # -- searching ---------------------------------------------------------------------------------------

    def search(self, query: str, k: int = 5, filters: Filters | None = None) -> list[Hit]:
        return self.retrieve(query, k, filters).hits

    def retrieve(self, query: str, k: int = 5, filters: Filters | None = None) -> SearchResult:
        """The best ``k`` passages for ``query``, with the question's vectors and each passage's sentences.
        ``filters``: only passages of the articles they let through, filtered in each store query (and the
        lexical ranker restricted to those articles); ``latest``: recent articles preferred."""
        self._maybe_refresh()
        try:
            return self._retrieve(query, k, filters)
        except StoreError:
            if not self.store.refresh():  # not another process's write: a real failure
                raise
            return self._retrieve(query, k, filters)

    def _retrieve(self, query: str, k: int, filters: Filters | None = None) -> SearchResult:
        scored, qvec, avec = self._rank(query, k, filters)
        meta = self.store.article_meta([s.passage.article_id for s in scored], cached=True)
        hits = [self._hit(rank, s, meta.get(s.passage.article_id) or {}) for rank, s in enumerate(scored, start=1)]
        return SearchResult(query=query, hits=hits, qvec=qvec, avec=avec)

    def rank(self, query: str, k: int) -> list[Scored]:
        return self._rank(query, k)[0]

    def _rank(self, query: str, k: int, filters: Filters | None = None
              ) -> tuple[list[Scored], np.ndarray, np.ndarray | None]:
        """The scored passages, and the question's stage-1 and stage-2 vectors (None: not computed)."""
        n = max(CANDIDATES, 4 * k)
        where = filters.where() if filters is not None else None  # in each store query, never after it
        # the stage-2 ranker (the slowest step: encoding the question with e5) runs on another core meanwhile
        accurate = _WORKERS.submit(self._accurate_top, query, n, where) if self._has_accurate else None
        # the question's latent terms (a second e5 pass, as long as the first) on the other core beside USE
        qterms = _WORKERS.submit(self.accurate.terms, [query]) if self._has_terms and self.latent_terms else None
        try:
            qvec = self.embedder.queries([query])[0]
            dense = dict(self.store.query_passages(qvec, n, where))
            qlang = detect(query)  # once per question: BM25's reading of it and the rankers' weights follow it
            lexical = self._lexical
            allowed = self.store.matching_articles(where) if where is not None else None
            # BM25 only over the passages in the question's language: across languages it matches names and
            # title words, and lifts passages for sharing the question's language
            lex = lexical.top(query, n, languages={qlang}, articles=allowed) if lexical is not None else []
            numbers = " ".join(dict.fromkeys(w for w in words(query) if w.isdigit()))
            num = dict(lexical.top(numbers, n, articles=allowed)) if numbers and lexical is not None else {}
        finally:
            avec, acc_raw = accurate.result() if accurate is not None else (None, {})
            query_terms = qterms.result()[0] if qterms is not None else None
        if not dense:
            return [], qvec, avec
        dense_ref = list(dense.values())
        rankers: dict[str, dict[str, float]] = {"dense": _standardise(dense, dense_ref)}
        acc_ref = list(acc_raw.values())

        # candidates from every ranker; the scores a ranker did not return come from the stored vectors or,
        # once stage 2 is complete, from just below that ranker's list
        candidates = list(dict.fromkeys([*list(dense)[:POOL], *list(acc_raw)[:POOL], *(c for c, _ in lex[:POOL])]))
        missing = [c for c in candidates if c not in dense]
        # Once every passage has its stage-2 vector, a candidate one ranker did not return (below its top N) is
        # scored just below that ranker's lowest score there (MISSED_BELOW) instead of reading its stored vector:
        # no store read between the rankers' lists and the fused order (100k passages, bench.search_scale: p50
        # 49 -> 46 ms embedded, 57 -> 50 ms against a Chroma server, where each read is a round trip; p95 61 ->
        # 61 / 71 -> 64 ms).
        # hit@1 on the XQuAD dev sets within two questions either way (bench.replay, session 14: en->el 0.850 ->
        # 0.853, mixed 0.873 -> 0.873; 15 of 25 hit@1 equal, hit@5 +2 questions). While stage 2 fills, the
        # vectors are read: a passage without its stage-2 vector has no e5 evidence, not a score below e5's list.
        complete = self._complete and avec is not None and bool(acc_ref)
        if missing and complete:
            current = self.store.current([c for c in missing if c not in acc_raw])
            floor = min(rankers["dense"].values()) - MISSED_BELOW
            rankers["dense"].update({c: floor for c in missing if c in acc_raw or c in current})
        elif missing:
            vecs = self.store.get_passage_vectors(missing)
            rankers["dense"].update(_standardise({c: float(v @ qvec) for c, v in vecs.items()}, dense_ref))
        if missing:
            candidates = [c for c in candidates if c in rankers["dense"]]  # (gone if deleted meanwhile)
        if avec is not None and acc_ref:
            absent = [c for c in candidates if c not in acc_raw]  # the vectors the e5 top-50 did not return
            if complete:
                rankers["accurate"] = _standardise(acc_raw, acc_ref)
                floor = min(rankers["accurate"].values()) - MISSED_BELOW
                rankers["accurate"].update({c: floor for c in absent})
            else:
                stored = self.store.get_accurate_vectors(absent) if absent else {}
                acc_raw.update({c: float(v @ avec) for c, v in stored.items()})
                rankers["accurate"] = _standardise(acc_raw, acc_ref)  # no vector yet: no evidence of this kind
        # each candidate's language (the one stored with it), read once
        plangs = {c: lexical.language(c) if lexical is not None else None for c in candidates}
        if lex and lexical is not None:
            lex_scores = _standardise(dict(lex), [s for _, s in lex])
            floor = min(lex_scores.values())
            rankers["lexical"] = {c: lex_scores.get(c, floor) for c in candidates if plangs[c] == qlang}
        if num:  # every candidate has this evidence (0: none of the numbers), standardised over the candidates
            values = [num.get(c, 0.0) for c in candidates]
            rankers["numbers"] = _standardise(dict(zip(candidates, values)), values)
        offset = self._same_language(avec, qlang, acc_ref) if "accurate" in rankers and lexical is not None else 0.0

        fused = []
        for cid in candidates:
            plang = plangs[cid]
            total = weight = 0.0
            for name, scores in rankers.items():
                value = scores.get(cid)
                if value is not None:
                    w = _dense_weight(qlang, plang, "accurate" in rankers) if name == "dense" else WEIGHTS[name]
                    total += w * value
                    weight += w
            if weight:
                fused.append((total / weight - (offset if plang == qlang else 0.0), cid))
        if query_terms is not None and "accurate" in rankers:
            weights = {c: _terms_weight(qlang, plang) for c, plang in plangs.items()}
            fused = self._by_terms(fused, query_terms, weights, k, everything=filters is not None and filters.latest)
        fused.sort(key=lambda x: -x[0])
        if filters is not None and filters.latest:  # "latest": recent articles first among about as good ones
            meta = self.store.article_meta([split_passage_id(c)[0] for _, c in fused], cached=True)
            days = {c: (meta.get(split_passage_id(c)[0]) or {}).get("published_ts") for _, c in fused}
            fused = prefer_recent(fused, days)
        owners = {c: split_passage_id(c)[0] for _, c in fused}  # near-duplicate stories: one passage each
        fused = dedup.fold(fused, owners, self.store.article_groups(list(set(owners.values()))))
        fused = fused[:max(k, RERANK)]
        passages = self.store.get_passages([cid for _, cid in fused])  # texts only for what is returned
        out = [Scored(passages[cid], score) for score, cid in fused if cid in passages]
        if "accurate" not in rankers and not (filters is not None and filters.latest):  # (latest: date order)
            # stage 1 only: sentence evidence helps (English -> Arabic hit@1 0.719 -> 0.740 on XQuAD); with
            # stage-2 vectors it does not pay for its cost (0.863 -> 0.856, ar->ar equal, en->en 0.962 -> 0.967)
            # at ~2 ms per sentence encoded
            self._rerank_by_sentence(qvec, out[:RERANK], dense_ref)
            out[:RERANK] = sorted(out[:RERANK], key=lambda s: -s.score)
        return out[:k], qvec, avec

    def _by_terms(self, fused: list[tuple[float, str]], query_terms: latent_terms.Terms, weights: dict[str, float],
                  k: int, everything: bool = False) -> list[tuple[float, str]]:
        """The latent terms choose between each article's candidates (``_reorder_within_articles``). They never
        move an article, so they are read (a store read of metadata, the slow kind: ~0.2 ms a passage at 100k
        passages, ~11 ms a search when every candidate's were read) only where they can change what is
        returned: for the candidates of the articles that own one of the first ``TERMS_SLOTS`` places and
        have more than one candidate (``everything``: every candidate, for an order that is changed again
        after this, by date). Standardised over the candidates read (hit@1 on the XQuAD dev sets the same as
        over every candidate, within a question or two: ``docs/benchmarks/search_scale_terms.md``)."""
        ranked = sorted(fused, key=lambda x: -x[0])
        owner = {c: split_passage_id(c)[0] for _, c in ranked}
        count = Counter(owner.values())
        top = set(owner.values()) if everything else {owner[c] for _, c in ranked[:max(TERMS_SLOTS, 2 * k)]}
        want = [c for _, c in ranked if owner[c] in top and count[owner[c]] > 1]
        terms_of = self.store.get_terms(want) if len(want) >= 2 else {}
        have = [c for c in want if c in terms_of]
        if len(have) < 2:
            return fused
        values = latent_terms.scores(query_terms, [terms_of[c] for c in have])
        z = _standardise(dict(zip(have, values)), values)
        return _reorder_within_articles(fused, {c: weights[c] * v for c, v in z.items()})

    def _same_language(self, avec: np.ndarray, qlang: str, reference: Sequence[float]) -> float:
        """What is taken off the fused score of the passages in the question's language: LANGUAGE_OFFSET times
        how much closer (stage-2 cosines, in the units of the question's z-scores) the question is to a sample
        of passages in its own language than to a sample of passages in the others. Cross-lingual cosines are
        lower than monolingual ones, so a passage would otherwise win for sharing the question's language
        (mixed-language index hit@1 0.827 -> 0.838, el 0.70 -> 0.75, de 0.70 -> 0.73; an index of one
        language is not changed). Round 1's per-language calibrations (a per-language z-score, each
        language's mean vector removed) made every language's best look alike and lost 0.04-0.47."""
        if not qlang or qlang == UNDETERMINED or not reference:
            return 0.0
        sample = self._language_sample()
        if sample is None:
            return 0.0
        langs, vectors = sample
        same = langs == qlang
        if same.sum() < SAMPLE_MIN or (~same).sum() < SAMPLE_MIN:
            return 0.0
        sims = vectors @ avec
        std = float(np.std(reference)) or 1.0
        return LANGUAGE_OFFSET * float(sims[same].mean() - sims[~same].mean()) / std

    def _language_sample(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The languages and stage-2 vectors of a fixed random sample of up to SAMPLE passages (seeded: the
        same passages every time), read once per generation of the index (again after CHECK_SECONDS while
        stage 2 is still filling in). None: fewer than two languages."""
        lexical = self._lexical
        if lexical is None or len(lexical.languages()) < 2:
            return None
        cached = self._sample
        if cached is not None and cached[0] == lexical.tag and (
                len(cached[2]) >= min(SAMPLE, len(lexical)) or time.monotonic() - cached[1] < CHECK_SECONDS):
            return cached[2], cached[3]
        ids = lexical.ids if len(lexical) <= SAMPLE else random.Random(0).sample(lexical.ids, SAMPLE)
        vectors = self.store.get_accurate_vectors(ids)
        kept = [i for i in ids if i in vectors]
        langs = np.array([lexical.language(i) or UNDETERMINED for i in kept])
        matrix = np.stack([vectors[i] for i in kept]) if kept else np.zeros((0, 1), dtype=np.float32)
        self._sample = (lexical.tag, time.monotonic(), langs, matrix)
        return langs, matrix

    def _accurate_top(self, query: str, n: int, where: dict | None = None
                      ) -> tuple[np.ndarray | None, dict[str, float]]:
        if self.accurate is None:
            return None, {}
        avec = self.accurate.queries([query])[0]
        return avec, dict(self.store.query_accurate(avec, n, where))

    def _rerank_by_sentence(self, qvec: np.ndarray, top: list[Scored], reference: Sequence[float]) -> None:
        """Sentence evidence for the top few: a passage whose best single sentence matches the question
        closely moves up. The sentence cosine is standardised against the dense passage scores of the same
        query, so both speak the same units. Each passage keeps its sentence spans and their vectors."""
        if len(top) < 2 or not reference:
            return
        mean, std = float(np.mean(reference)), float(np.std(reference)) or 1.0
        texts, owners = [], []
        for i, s in enumerate(top):
            s.sentences = sentence_spans(s.passage.text)
            for a, b in s.sentences:
                texts.append(s.passage.text[a:b])
                owners.append(i)
        if not texts:
            return
        vectors = self.embedder.passages(texts)
        offset = 0
        for s in top:
            s.sentence_vectors = vectors[offset:offset + len(s.sentences)]
            offset += len(s.sentences)
        sims = vectors @ qvec
        best = np.full(len(top), -np.inf)
        for owner, sim in zip(owners, sims):
            best[owner] = max(best[owner], sim)
        for i, s in enumerate(top):
            if np.isfinite(best[i]):
                s.score = (s.score + SENTENCE_WEIGHT * (best[i] - mean) / std) / (1 + SENTENCE_WEIGHT)

    @staticmethod
    def _hit(rank: int, scored: Scored, meta: dict) -> Hit:
        p = scored.passage
        return Hit(rank=rank, score=round(scored.score, 4), article_id=p.article_id,
                   title=meta.get("title") or None, source=meta.get("source") or None,
                   published=meta.get("published") or None, url=meta.get("url") or None,
                   chunk_id=p.chunk_id, text=p.text, start=p.start, end=p.end, also=dedup.also_reported(meta),
                   sentences=scored.sentences if scored.sentences is not None else sentence_spans(p.text),
                   sentence_vectors=scored.sentence_vectors)
