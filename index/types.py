"""Plain data shared across the index: articles, chunks, search hits and indexing reports."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field


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
    source: str  # the file path or URL as given
    error: str  # one line
    article_id: str | None = None  # when known: an article that failed to load is not pruned


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


@dataclass
class Hit:
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

    def to_json(self) -> dict:
        return asdict(self)


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
