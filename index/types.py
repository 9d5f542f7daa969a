"""Plain data shared across the index: articles, chunks, search hits and results, indexing reports."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


@dataclass
class Article:
    """One loaded article. ``text`` is the whole article body (title line included, front matter excluded);
    chunk and citation offsets are offsets into it."""

    id: str
    title: str
    text: str
    url: str | None = None
    source: str | None = None  # the outlet, e.g. "سبوتنيك"
    published: str | None = None  # ISO date, YYYY-MM-DD
    lang: str | None = None
    origin: str = ""  # the file path or URL it was loaded from
    root: str | None = None  # the folder it was found under (for --prune), absolute

    @property
    def content_hash(self) -> str:
        h = hashlib.sha256()
        for part in (self.title, self.text, self.url, self.source, self.published, self.lang):
            h.update((part or "").encode("utf-8"))
            h.update(b"\x00")
        return h.hexdigest()


@dataclass
class Failure:
    """A source (or a part of one) that could not be loaded this time. What it says about the articles it
    held before keeps them from being pruned: their id, the file they came from, or a folder."""

    source: str  # the file path or URL as given (a URL without its user name and password)
    error: str  # one line
    article_id: str | None = None  # when known: an article that failed to load is not pruned
    file: str | None = None  # a file that failed as a whole (JSON), real path: the articles it held are kept
    root: str | None = None  # with keep_prefix: a folder that could not be read, under this given folder…
    keep_prefix: str | None = None  # …the articles whose id starts with this ("" = all of root's) are kept


@dataclass
class LoadResult:
    articles: list[Article] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    roots: list[str] = field(default_factory=list)  # absolute folders that were scanned (for --prune)


@dataclass
class Chunk:
    id: str
    article_id: str
    index: int
    text: str  # == article.text[start:end]
    start: int
    end: int
    lang: str = ""  # its language (``language.passage_language``), set by the indexer; "" when not known


@dataclass
class Hit:
    """One retrieved passage. Besides what ``search --json`` shows, it carries what the search computed about
    it, so that the answer does not compute it again: its sentence spans (offsets in ``text``; None when not
    computed) and, when the stage-1 re-rank encoded them, the stage-1 vectors of those sentences (one row per
    span, the vector of ``text[s:e]``)."""

    rank: int
    score: float
    article_id: str
    title: str | None
    source: str | None
    published: str | None
    url: str | None
    chunk_id: str
    text: str
    start: int
    end: int
    also: list[str] = field(default_factory=list)  # the other outlets of its story (``index.dedup``)
    sentences: list[tuple[int, int]] | None = field(default=None, repr=False, compare=False)
    sentence_vectors: np.ndarray | None = field(default=None, repr=False, compare=False)

    _JSON = ("rank", "score", "article_id", "title", "source", "published", "url", "chunk_id", "text", "start",
             "end", "also")

    def to_json(self) -> dict:
        return {name: getattr(self, name) for name in self._JSON}


@dataclass
class SearchResult:
    """A search and what it computed: the hits, and the question's vectors (stage 1, and stage 2 when the
    accurate ranker ran), so that choosing the quotes does not encode the question again."""

    query: str
    hits: list[Hit]
    qvec: np.ndarray | None = field(default=None, repr=False)  # stage 1 (None: nothing was searched)
    avec: np.ndarray | None = field(default=None, repr=False)  # stage 2, when computed


@dataclass
class IndexReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: list[Failure] = field(default_factory=list)
    chunks: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {
            "added": self.added, "updated": self.updated, "unchanged": self.unchanged,
            "removed": self.removed,
            "failed": [{"source": f.source, "error": f.error} for f in self.failed],
            "chunks": self.chunks, "seconds": round(self.seconds, 3),
        }
