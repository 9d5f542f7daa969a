"""Indexing: load sources, skip what has not changed, chunk, embed in batches, write; then stage 2.

Stage 1 (what makes an article searchable): passages with the fast embedder's vectors (the searcher's lexical
index follows the store by itself: see ``index.search``). Stage 2: accurate vectors for every passage that
lacks one, and the stage-2 model's latent terms beside it (``index.terms``) when the model gives them;
resumable, since "pending" is simply "has no accurate vector yet" (or none with terms: an index written before
latent terms gets them in its next stage 2).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .chunking import VERSION as CHUNKER_VERSION, chunk_article
from .embedding import Embedder
from .language import passage_language
from . import dedup, loaders
from .progress import Progress
from .errors import StoreError
from .settings import Settings
from .store import Store, chunker_version, record_format, FORMAT as STORE_FORMAT
from .terms import pack as pack_terms
from .types import Article, Chunk, Failure, IndexReport, LoadResult

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    article: Article
    chunks: list[Chunk]
    is_new: bool
    vectors: list[np.ndarray] = field(default_factory=list)


def embed_text(title: str | None, text: str) -> str:
    """What is embedded for a passage: the passage with its article's title as context (a passage rarely
    names the subject its article is about), unless it already starts with the title."""
    if title and not text.startswith(title):
        return f"{title}\n{text}"
    return text


def plan(articles: Sequence[Article], registry: dict[str, dict], report: IndexReport) -> list[_Pending]:
    """Decide per article: unchanged (skip), new, or changed; duplicates within one batch fail. An article
    cut by another chunker version, or written in an older store format, counts as changed: it is cut,
    embedded and written again."""
    todo, seen = [], set()
    for article in articles:
        if article.id in seen:
            report.failed.append(Failure(article.origin or article.id,
                                         f"another source in this batch has the same article id {article.id!r}",
                                         article.id))
            continue
        seen.add(article.id)
        old = registry.get(article.id)
        if (old is not None and old.get("hash") == article.content_hash
                and chunker_version(old) == CHUNKER_VERSION and record_format(old) == STORE_FORMAT):
            report.unchanged += 1
            continue
        chunks = chunk_article(article.id, article.text)
        for chunk in chunks:  # each passage's language, detected once: kept with it in the store and in BM25
            chunk.lang = passage_language(chunk.text)
        todo.append(_Pending(article, chunks, is_new=old is None))
    return todo


WRITE_EVERY = 256  # passages per store write: each write has a fixed cost (several Chroma calls)


def write_stage1(store: Store, embedder: Embedder, todo: list[_Pending], report: IndexReport,
                 batch: int = 32, show_progress: bool | None = None, fields: dict[str, dict] | None = None) -> None:
    """Embed the passages of ``todo`` in batches across articles. Articles whose passages all have vectors
    are handed to a writer thread, about WRITE_EVERY passages at a time and in order, so that writing to the
    store overlaps with encoding the next batches; the last groups shrink, so that the write still to do when
    encoding ends is small. A failed write stops the encoding and is raised here. ``fields``: article id ->
    more registry fields to write with it (``Store.write_articles``)."""
    work = [(p, c) for p in todo for c in p.chunks]
    bar = Progress("indexing", len(work), show_progress)
    writer = _Writer(store, embedder, report, fields)
    done_articles = ready = 0
    try:
        for i in range(0, len(work), batch):
            writer.check()
            part = work[i:i + batch]
            vectors = embedder.passages([embed_text(p.article.title, c.text) for p, c in part], bulk=True)
            for (pending, _), vector in zip(part, vectors):
                pending.vectors.append(vector)
            while ready < len(todo) and len(todo[ready].vectors) == len(todo[ready].chunks):
                ready += 1
            waiting = sum(len(p.chunks) for p in todo[done_articles:ready])
            # about WRITE_EVERY passages per write; towards the end, groups as large as what is still to
            # encode, so that little is left to write once the last batch is encoded
            if waiting and waiting >= min(WRITE_EVERY, len(work) - i - len(part)):
                writer.put(todo[done_articles:ready])
                done_articles = ready
            bar.advance(len(part))
        writer.put(todo[done_articles:])  # the rest, and articles with no passages at all
    finally:
        writer.close()
        bar.close()


class _Writer:
    """One background thread that writes groups of articles in the order they are given."""

    def __init__(self, store: Store, embedder: Embedder, report: IndexReport,
                 fields: dict[str, dict] | None = None) -> None:
        self.store, self.embedder, self.report, self.fields = store, embedder, report, fields
        self._queue: queue.Queue = queue.Queue(maxsize=2)  # bounded: encoding can't run far ahead of writing
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="index-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (group := self._queue.get()) is not None:
            if self._error is None:
                try:
                    _write(self.store, self.embedder, group, self.report, self.fields)
                except BaseException as exc:  # noqa: BLE001 - handed to the encoding thread
                    self._error = exc

    def check(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, group: Sequence[_Pending]) -> None:
        self.check()
        if group:
            self._queue.put(list(group))

    def close(self) -> None:
        """Wait for the writes handed over so far; raise the first error."""
        self._queue.put(None)
        self._thread.join()
        self.check()


def _write(store: Store, embedder: Embedder, group: Sequence[_Pending], report: IndexReport,
           fields: dict[str, dict] | None = None) -> None:
    writable = []
    for pending in group:
        if pending.chunks:
            writable.append(pending)
        else:
            report.failed.append(Failure(pending.article.origin or pending.article.id, "no text to index",
                                         pending.article.id))
    if not writable:
        return
    store.write_articles([(p.article, p.chunks, np.vstack(p.vectors)) for p in writable], embedder.name,
                         embedder.dim, fields)
    for pending in writable:
        report.chunks += len(pending.chunks)
        if pending.is_new:
            report.added += 1
        else:
            report.updated += 1


def claim(articles: Sequence[Article], registry: dict[str, dict], report: IndexReport) -> list[Article]:
    """The articles that may be written: one whose id is taken by an indexed article from another place (another
    folder, file, source or host: ``loaders.conflict``) is a failure, and the indexed one stays as it is."""
    out = []
    for article in articles:
        record = registry.get(article.id)
        reason = loaders.conflict(article, record) if record is not None else None
        if reason is None:
            out.append(article)
        else:
            report.failed.append(Failure(article.origin or article.id, reason))
    return out


def prune(store: Store, registry: dict[str, dict], loaded: LoadResult) -> list[str]:
    """Remove articles that were found under one of the folders scanned (``loaded.roots``) before and are not
    there any more; never one that a failure of this run may still hold (``_held``): a file that failed to
    load, a JSON file or line that failed, a folder that could not be read. Returns the ids removed."""
    roots = {str(Path(r)) for r in loaded.roots}
    keep = {a.id for a in loaded.articles}
    removed = []
    for article_id, meta in registry.items():
        if meta.get("root") in roots and article_id not in keep and not _held(article_id, meta, loaded.failed):
            store.remove_article(article_id)
            removed.append(article_id)
    return removed


def _held(article_id: str, meta: dict, failures: Sequence[Failure]) -> bool:
    """Whether one of ``failures`` may be the indexed article ``article_id`` (registry record ``meta``)."""
    origin = str(meta.get("origin") or "")
    for failure in failures:
        if failure.article_id == article_id or (origin and failure.source == origin):
            return True
        if failure.file and origin and os.path.realpath(loaders.origin_file(origin)) == failure.file:
            return True
        if (failure.keep_prefix is not None and failure.root == meta.get("root")
                and article_id.startswith(failure.keep_prefix)):
            return True
    return False


def fill_accurate(store: Store, embedder: Embedder, batch: int = 16, show_progress: bool | None = None,
                  limit: int | None = None, should_stop=None) -> int:
    """Stage 2: give every pending passage an accurate vector, and its latent terms when the embedder gives
    them. Safe to interrupt: each batch is written as soon as it is encoded. Returns how many passages were done."""
    with_terms = embedder.has_terms
    pending = store.pending_accurate(terms=with_terms)
    titles = {aid: meta.get("title") for aid, meta in store.articles().items()} if pending else {}
    if limit is not None:
        pending = pending[:limit]
    bar = Progress("accurate vectors", len(pending), show_progress)
    done = 0
    try:
        for i in range(0, len(pending), batch):
            if should_stop is not None and should_stop():
                break
            passages = list(store.get_passages(pending[i:i + batch]).values())
            if passages:
                # an index written before latent terms has its vectors already: only their terms are computed
                kept = store.get_accurate_vectors([p.chunk_id for p in passages]) if with_terms else {}
                fresh = [p for p in passages if p.chunk_id not in kept]
                encoded = iter(embedder.passages([embed_text(titles.get(p.article_id), p.text) for p in fresh],
                                                 bulk=True) if fresh else ())
                vectors = np.vstack([kept[p.chunk_id] if p.chunk_id in kept else next(encoded) for p in passages])
                # latent terms of the passage's own text (no title: an article's passages would share its terms)
                packed = [pack_terms(t) for t in embedder.terms([p.text for p in passages], bulk=True)] \
                    if with_terms else None
                store.add_accurate(passages, vectors, embedder.name, terms=packed)
            done += len(passages)
            bar.advance(len(pending[i:i + batch]))
    finally:
        bar.close()
    return done


def index_sources(settings: Settings, store: Store, embedder: Embedder, sources: Sequence[str], *,
                  prune_missing: bool = False, rebuild: bool = False,
                  show_progress: bool | None = None) -> IndexReport:
    """Index ``sources``. First what an interrupted run left is cleaned up (``Store.recover``). ``rebuild``:
    everything is written to new collections beside the index being served, which are switched to only once
    stage 1 is complete (a failure or a kill before that leaves the old index as it was)."""
    store.recover()
    if not rebuild:
        return _index_into(settings, store, embedder, sources, prune_missing, show_progress)
    builder = store.begin_rebuild()
    try:
        report = _index_into(settings, builder, embedder, sources, prune_missing, show_progress)
        builder.finish_rebuild()
    except BaseException:
        try:
            builder.abandon_rebuild()
        except StoreError as exc:  # the next run drops it (``recover``)
            log.warning("could not drop the unfinished rebuild (%s)", exc)
        raise
    store.generation()  # follow the switch: this store serves the rebuilt collections from now on
    return report


def _index_into(settings: Settings, store: Store, embedder: Embedder, sources: Sequence[str],
                prune_missing: bool, show_progress: bool | None) -> IndexReport:
    started = time.monotonic()
    report = IndexReport()
    # by name only: an OpenAI-compatible embedder learns its dimension from its first answer (the dimension is
    # checked again when the first article is written)
    store.check_embedder(embedder.name, None)
    loaded = loaders.load_sources(sources, settings)
    write_loaded(store, embedder, loaded, report, batch=settings.embed_batch, show_progress=show_progress,
                 remove=(lambda registry: prune(store, registry, loaded)) if prune_missing else None)
    report.seconds = time.monotonic() - started
    return report


def write_loaded(store: Store, embedder: Embedder, loaded: LoadResult, report: IndexReport, *, batch: int,
                 show_progress: bool | None = None,
                 remove: Callable[[dict[str, dict]], list[str]] | None = None) -> None:
    """Write what was loaded: conflicts refused, unchanged articles skipped by their content hash, the rest cut,
    embedded and written (stage 1); then ``remove(registry)`` removes articles and returns their ids; the
    near-duplicate groups (``index.dedup``) are kept up to date with all of it. The caller holds the writer
    lock; ``newsdesk index`` and the feed poller both write this way."""
    report.failed.extend(loaded.failed)
    registry = store.articles()
    todo = plan(claim(loaded.articles, registry, report), registry, report)
    # near-duplicate groups: computed with what is about to be written, kept in the registry
    records, fields, grouped = dedup.plan(registry, [p.article for p in todo if p.chunks])
    write_stage1(store, embedder, todo, report, batch=batch, show_progress=show_progress, fields=fields)
    removed = remove(registry) if remove is not None else []
    report.removed += len(removed)
    dedup.regroup(store, records, grouped, removed)  # the groups of what was removed are formed again
