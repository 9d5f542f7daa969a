"""RSS 2.0, Atom and RDF feeds: each item indexed as an article, and a list of feeds kept up to date.

**Parsing.** A feed is fetched with the safe fetcher (``index.fetch``: private addresses refused unless
``NEWSDESK_ALLOW_PRIVATE_URLS``, one deadline, size cap) and its bytes are given to feedparser, which therefore
never fetches anything itself. A feed that is not well-formed XML, or not a feed at all, is an ``InputError``
with a one-line reason (the line of the XML error; never the parser's own message).

**Items.** Each item is an article: its link's page fetched through the same fetcher (its main text, as for
``newsdesk index URL``), or, when the page cannot be fetched or has no article text, the item's own content
(``content``, else ``summary``/``description``, HTML reduced to paragraphs). Title, outlet (the feed's title),
date (``published``, else ``updated``) and link come from the feed. An item is known by its ``guid`` (Atom
``id``), else its link; its article id is its link (as ``newsdesk index LINK`` would name it), or
``FEED_URL#guid`` when it has none.

**The feed list** (``<home>/feeds.json``, written atomically: a temporary file renamed over it; read-modify-write
under ``<home>/feeds.lock``) holds, per feed, what its last poll learnt: the ETag and Last-Modified validators
(the next poll is a conditional GET: a 304 fetches nothing more), each item's key with its article id and a hash
of what the feed says about it (only new or changed items are fetched and indexed), and the failures: the last
error, when it happened, how many polls in a row failed and when the next try is due (the wait doubles with each
failure, ``backoff``). A poll records its outcome only after its articles are written: a poll killed half-way is
simply done again. An item that leaves the feed stays indexed, unless the poll prunes (``prune``).

Writing goes through the indexer's own steps (``claim``, ``plan``, ``write_stage1``), under the home's writer
lock (``Index.index_loaded``), so a feed's articles are checked, hashed, cut and written exactly as any other.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import indexer, loaders
from .errors import ConfigError, FetchError, InputError, NewsdeskError
from .fetch import fetch_url, strip_userinfo
from .language import UNDETERMINED, detect
from .locks import HomeLock
from .settings import Settings
from .types import Article, Failure, IndexReport, LoadResult

if TYPE_CHECKING:
    from .embedding import Embedder
    from .service import Index
    from .store import Store

log = logging.getLogger(__name__)

# what servers send feeds as; ``newsdesk index URL`` recognises a feed by these (a page fetch refuses them)
FEED_TYPES = ("application/rss+xml", "application/atom+xml", "application/rdf+xml", "application/xml",
              "text/xml", "application/x-rss+xml")
# what a listed feed may be served as (a misconfigured server sends text/html or text/plain: the parser decides)
FETCH_TYPES = (*FEED_TYPES, "text/html", "text/plain", "application/octet-stream")
PAGE_WORKERS = 4  # item pages fetched at once
MAX_BACKOFF_ROUNDS = 16  # a failing feed is tried at least every 16 poll intervals
_REFUSED_TYPE = re.compile(r" is (?P<type>[\w.+-]+/[\w.+-]+), not an HTML or text page$")
_BLOCKS = ("p", "div", "li", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "tr", "section", "article")


# ---------------------------------------------------------------- parsing


@dataclass
class Item:
    key: str  # identity within its feed: the guid, else the link
    article_id: str
    title: str
    link: str | None
    published: str | None  # ISO date when understood, else the feed's own text
    content: str  # the item's own text (plain paragraphs), "" when it has none
    hash: str  # of what the feed says about the item: a change means fetching and indexing it again


@dataclass
class Feed:
    url: str
    title: str | None
    items: list[Item]


def parse_feed(body: bytes, url: str) -> Feed:
    """The feed in ``body`` (fetched from ``url``). Raises InputError (one line) when it is malformed or not an
    RSS, Atom or RDF feed."""
    import feedparser  # only needed for feeds

    parsed = feedparser.parse(body, response_headers={"content-location": url})  # bytes: nothing is fetched
    error = parsed.get("bozo_exception")
    if _is_xml_error(error):
        line = getattr(error, "getLineNumber", lambda: None)()
        raise InputError(f"the feed at {url} is malformed (not well-formed XML" +
                         (f" at line {line})" if line else ")"))
    if not parsed.get("version") and not parsed.entries:
        raise InputError(f"{url} is not an RSS, Atom or RDF feed")
    title = _one_line(parsed.feed.get("title") or "") or None
    items, seen = [], set()
    for entry in parsed.entries:
        item = _item(entry, url)
        if item is not None and item.key not in seen:
            seen.add(item.key)
            items.append(item)
    return Feed(url=url, title=title, items=items)


def _is_xml_error(error: BaseException | None) -> bool:
    import xml.sax

    return isinstance(error, xml.sax.SAXException)


def _item(entry, feed_url: str) -> Item | None:
    link = _http_url(entry.get("link"))
    guid = _one_line(str(entry.get("id") or ""))
    html = entry["content"][0].get("value", "") if entry.get("content") else entry.get("summary", "")
    content = html_text(html or "")
    title = _one_line(entry.get("title") or "")
    key = guid or link or (f"sha256:{hashlib.sha256((title + content).encode()).hexdigest()[:16]}"
                           if title or content else "")
    if not key:
        return None
    published = _date(entry, link or feed_url)
    digest = hashlib.sha256()
    for part in (key, title, link, published, dict.get(entry, "updated"), html):
        digest.update((part or "").encode("utf-8", "replace") + b"\x00")
    return Item(key=key, article_id=link or f"{feed_url}#{guid or key}", title=title or (link or key),
                link=link, published=published, content=content, hash=digest.hexdigest())


def _http_url(value) -> str | None:
    value = strip_userinfo(str(value or "").strip())
    return value if re.match(r"^https?://[^\s/]", value, re.IGNORECASE) else None


def _date(entry, origin: str) -> str | None:
    """The item's date: ``published``, else ``updated``; ISO when understood, else its text as given. (Read
    with ``dict.get``: feedparser's own lookup maps a missing ``updated`` to ``published``, with a warning.)"""
    for name in ("published", "updated"):
        parsed = dict.get(entry, f"{name}_parsed")
        if parsed:
            return f"{parsed.tm_year:04d}-{parsed.tm_mon:02d}-{parsed.tm_mday:02d}"
        raw = _one_line(dict.get(entry, name) or "")
        if raw:
            return loaders.parse_date(raw) or loaders.kept_date(raw, origin)  # kept as text, with a warning
    return None


def html_text(value: str) -> str:
    """An item's HTML content as plain paragraphs separated by blank lines (entities decoded)."""
    if "<" not in value:
        return _paragraphs(value.replace("&nbsp;", " "))
    from lxml import etree, html as lxml_html

    try:
        root = lxml_html.fragment_fromstring(value, create_parent="div")
    except (etree.ParserError, ValueError):
        return _paragraphs(re.sub(r"<[^>]*>", " ", value))
    for element in list(root.iter("script", "style")):
        element.drop_tree()
    for element in root.iter(*_BLOCKS):
        element.tail = "\n\n" + (element.tail or "")
    for element in root.iter("br"):
        element.tail = "\n" + (element.tail or "")
    return _paragraphs(root.text_content())


def _paragraphs(text: str) -> str:
    parts = (" ".join(p.split()) for p in re.split(r"\n\s*\n", text.replace("\r", "")))
    return "\n\n".join(p for p in parts if p)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# ---------------------------------------------------------------- items as articles


def fetch_feed(url: str, settings: Settings, etag: str | None = None, last_modified: str | None = None):
    """The feed at ``url`` (conditional when validators are given): ``(page, feed)``, ``feed`` None when the
    server answered 304 Not Modified. Raises InputError (FetchError included)."""
    page = fetch_url(url, settings, accept=FETCH_TYPES, etag=etag, last_modified=last_modified)
    if page.not_modified:
        return page, None
    return page, parse_feed(page.body, strip_userinfo(url))


def load_items(feed: Feed, items: Sequence[Item], settings: Settings) -> LoadResult:
    """The articles of ``items`` (a few pages fetched at once); an item with neither a usable page nor its own
    content is a Failure carrying its article id (so it is never pruned for it)."""
    result = LoadResult()
    if not items:
        return result
    with ThreadPoolExecutor(min(PAGE_WORKERS, len(items)), thread_name_prefix="feed-page") as pool:
        for outcome in pool.map(lambda item: _item_article(feed, item, settings), items):
            (result.failed if isinstance(outcome, Failure) else result.articles).append(outcome)
    return result


def _item_article(feed: Feed, item: Item, settings: Settings) -> Article | Failure:
    reason = "the item has no link and no content"
    if item.link:
        try:
            return _dress(_page_article(item, settings), feed, item)
        except InputError as exc:
            reason = _one_line(str(exc))
            if item.content:
                log.info("feed item %s: %s; indexing the feed's own text instead", item.link, reason)
    if item.content:
        text = f"{item.title}\n\n{item.content}"
        lang = detect(text)
        return Article(id=item.article_id, title=item.title, text=text, url=item.link, source=feed.title,
                       published=item.published, lang=None if lang == UNDETERMINED else lang,
                       origin=item.link or feed.url)
    return Failure(item.link or feed.url, reason, item.article_id)


def _page_article(item: Item, settings: Settings) -> Article:
    """The article at the item's link, as ``newsdesk index LINK`` reads it."""
    page = fetch_url(item.link, settings)
    if page.is_html:
        return loaders.article_from_html(page.body, item.article_id, origin=item.link, base_url=page.url_final,
                                         charset=page.charset)
    return loaders.article_from_text(loaders.decode_text(page.body, page.charset), item.article_id,
                                     origin=item.link)


def _dress(article: Article, feed: Feed, item: Item) -> Article:
    """What the feed says about the item wins over what the page says: id, title, outlet, date, link."""
    article.id = item.article_id
    article.title = item.title or article.title
    article.source = feed.title or article.source
    article.published = item.published or article.published
    article.url = item.link
    article.origin, article.root = item.link, None
    return article


def write_loaded(store: Store, embedder: Embedder, loaded: LoadResult, *, remove: Sequence[str] = (),
                 batch: int = 32, show_progress: bool | None = None) -> IndexReport:
    """Write ``loaded`` as ``newsdesk index`` writes what it loaded (conflicts refused, unchanged articles
    skipped by their content hash, the rest cut, embedded and written), then remove the articles ``remove``.
    The caller holds the writer lock."""
    started = time.monotonic()
    report = IndexReport()
    store.recover()
    store.check_embedder(embedder.name, None)

    def remove_listed(registry: dict[str, dict]) -> list[str]:
        removed = [article_id for article_id in dict.fromkeys(remove) if article_id in registry]
        for article_id in removed:
            store.remove_article(article_id)
        return removed

    indexer.write_loaded(store, embedder, loaded, report, batch=batch, show_progress=show_progress,
                         remove=remove_listed)
    report.seconds = time.monotonic() - started
    return report


def merge(into: IndexReport, other: IndexReport) -> None:
    """Add ``other``'s counts and failures to ``into``."""
    for name in ("added", "updated", "unchanged", "removed", "chunks", "seconds"):
        setattr(into, name, getattr(into, name) + getattr(other, name))
    into.failed.extend(other.failed)


# ---------------------------------------------------------------- `newsdesk index FEED_URL`


def refused_feeds(sources: Sequence[str], report: IndexReport) -> list[tuple[str, Failure]]:
    """The URL sources of an ``index`` run that its page fetch refused for being a feed type (RSS, Atom, XML),
    each with that failure: they are indexed as feeds instead."""
    by_shown = {strip_userinfo(s.strip()): s for s in sources if re.match(r"^https?://", s.strip(), re.I)}
    out = []
    for failure in report.failed:
        match = _REFUSED_TYPE.search(failure.error)
        if match and match.group("type") in FEED_TYPES and failure.source in by_shown:
            out.append((by_shown[failure.source], failure))
    return out


def index_feeds(settings: Settings, store: Store, embedder: Embedder, sources: Sequence[str],
                report: IndexReport, show_progress: bool | None = None) -> None:
    """Index every feed among ``sources`` that the page loader refused (``refused_feeds``) into ``report``, which
    loses those failures: each item an article. A malformed feed raises InputError (one line) before anything of
    it is written. The caller holds the writer lock."""
    for url, failure in refused_feeds(sources, report):
        try:
            page = fetch_url(url, settings, accept=FETCH_TYPES)
        except FetchError as exc:  # unreachable this time: a failed source, as any URL
            failure.error = _one_line(str(exc))
            continue
        feed = parse_feed(page.body, strip_userinfo(url))
        report.failed.remove(failure)
        merge(report, write_loaded(store, embedder, load_items(feed, feed.items, settings),
                                   batch=settings.embed_batch, show_progress=show_progress))


# ---------------------------------------------------------------- the feed list


def check_feed_url(url: str) -> str:
    """``url`` as it is kept in the list; ConfigError (one line) when it cannot be one."""
    url = url.strip()
    if not re.match(r"^https?://[^\s/?#]+[^\s]*$", url, re.IGNORECASE):
        raise ConfigError(f"not an http(s) feed URL: {strip_userinfo(url)!r}")
    if strip_userinfo(url) != url:
        raise ConfigError("a feed URL with a user name and password cannot be kept in the feed list "
                          "(it would be stored in the clear)")
    return url


class FeedList:
    """The listed feeds and what their polls remembered (``<home>/feeds.json``: ``{"feeds": {url: entry}}``)."""

    VERSION = 1

    def __init__(self, home: Path) -> None:
        self.home = home
        self.path = home / "feeds.json"
        self._lock = HomeLock(home / "feeds.lock")

    def load(self) -> dict[str, dict]:
        """Every listed feed's entry, in the order they were added. ConfigError when the file is damaged."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise ConfigError(f"cannot read the feed list {self.path}: {exc.strerror or 'I/O error'}") from exc
        try:
            data = json.loads(raw.decode("utf-8"))
            feeds = data["feeds"]
            if not isinstance(feeds, dict) or not all(isinstance(v, dict) for v in feeds.values()):
                raise ValueError
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise ConfigError(f"the feed list {self.path} is damaged: repair it, or delete it and add the feeds "
                              f"again") from None
        return feeds

    @contextlib.contextmanager
    def editing(self) -> Iterator[dict[str, dict]]:
        """The entries, to change in place; saved (atomically) when the block ends without an error."""
        self.home.mkdir(parents=True, exist_ok=True)
        with self._lock.hold():
            feeds = self.load()
            yield feeds
            self._save(feeds)

    def _save(self, feeds: dict[str, dict]) -> None:
        data = json.dumps({"version": self.VERSION, "feeds": feeds}, ensure_ascii=False, indent=1)
        fd, tmp = tempfile.mkstemp(prefix=".feeds-", suffix=".tmp", dir=self.home)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def add(self, url: str, now: float | None = None) -> bool:
        """List ``url``; False when it was listed already."""
        url = check_feed_url(url)
        with self.editing() as feeds:
            if url in feeds:
                return False
            feeds[url] = {"added": now or time.time(), "items": {}}
        return True

    def remove(self, url: str) -> bool:
        """Stop polling ``url`` (its articles stay indexed); False when it was not listed."""
        url = url.strip()
        if not self.path.exists():
            return False
        with self.editing() as feeds:
            return feeds.pop(url, None) is not None

    def record(self, url: str, changes: dict) -> None:
        """Merge a poll's outcome into ``url``'s entry (nothing when the feed was removed meanwhile)."""
        with self.editing() as feeds:
            if url in feeds:
                feeds[url].update(changes)


def summary(home: Path) -> list[dict]:
    """Each listed feed as ``stats``/``feeds list`` show it: url, title, items known, last success, and its
    failures (last error, when, how many in a row, next try)."""
    rows = []
    for url, entry in FeedList(home).load().items():
        rows.append({"url": url, "title": entry.get("title"), "items": len(entry.get("items") or {}),
                     "last_ok": entry.get("last_ok"), "last_error": entry.get("last_error"),
                     "last_error_at": entry.get("last_error_at"), "failures": int(entry.get("failures") or 0),
                     "retry_at": entry.get("retry_at")})
    return rows


# ---------------------------------------------------------------- polling


@dataclass
class PollResult:
    """One feed's poll: ``outcome`` is "indexed", "not modified", "failed" or "waiting" (a failing feed whose
    next try is not due yet)."""

    url: str
    outcome: str
    report: IndexReport | None = None
    error: str | None = None
    failures: int = 0
    retry_at: float | None = None
    items: int = 0

    def to_json(self) -> dict:
        out = {"feed": self.url, "outcome": self.outcome, "items": self.items}
        if self.report is not None:
            out.update(self.report.to_json())
        if self.error is not None:
            out.update({"error": self.error, "failures": self.failures, "retry_at": self.retry_at})
        return out


def backoff(interval: float, failures: int) -> float:
    """Seconds until a feed that failed ``failures`` polls in a row is tried again: the next poll after the first
    failure, then 1, 3, 7… intervals skipped, at most ``MAX_BACKOFF_ROUNDS`` intervals."""
    return interval * min(2 ** (failures - 1) - 1, MAX_BACKOFF_ROUNDS) if failures > 0 else 0.0


def poll(index: Index, *, prune: bool = False, accurate: bool = True, interval: float | None = None,
         should_stop: Callable[[], bool] = lambda: False, on_result: Callable[[PollResult], None] | None = None,
         clock: Callable[[], float] = time.time) -> list[PollResult]:
    """Poll every listed feed once, one after the other (``should_stop`` is asked between feeds); a failing feed
    is recorded and the next one polled. ``interval`` (default ``NEWSDESK_FEED_INTERVAL``) paces the retries."""
    interval = index.settings.feed_interval if interval is None else interval
    feeds = FeedList(index.settings.home)
    results = []
    for url, entry in feeds.load().items():
        if should_stop():
            break
        if (entry.get("retry_at") or 0) > clock():
            result = PollResult(url, "waiting", error=entry.get("last_error"), failures=entry.get("failures", 0),
                                retry_at=entry.get("retry_at"), items=len(entry.get("items") or {}))
        else:
            result = poll_feed(index, feeds, url, entry, prune=prune, accurate=accurate, interval=interval,
                               clock=clock)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def poll_feed(index: Index, feeds: FeedList, url: str, entry: dict, *, prune: bool, accurate: bool,
              interval: float, clock: Callable[[], float] = time.time) -> PollResult:
    """Poll one feed: a conditional GET, then only its new and changed items fetched and indexed (and, with
    ``prune``, the articles of items that left it removed); the outcome recorded in the feed list."""
    known: dict[str, dict] = {key: dict(value) for key, value in (entry.get("items") or {}).items()}
    try:
        page, feed = fetch_feed(url, index.settings, entry.get("etag"), entry.get("last_modified"))
        if feed is None and not (prune and any(value.get("gone") for value in known.values())):
            result, changes = PollResult(url, "not modified", items=len(known)), {}
        else:
            result, changes = _index_changes(index, url, feed, known, prune=prune, accurate=accurate)
        changes.update(etag=page.etag, last_modified=page.last_modified, last_ok=clock(), failures=0,
                       retry_at=None)
    except NewsdeskError as exc:
        failures = int(entry.get("failures") or 0) + 1
        now = clock()
        result = PollResult(url, "failed", error=_one_line(str(exc)), failures=failures,
                            retry_at=now + backoff(interval, failures), items=len(known))
        changes = {"last_error": result.error, "last_error_at": now, "failures": failures,
                   "retry_at": result.retry_at}
        log.warning("feed %s failed (%d in a row): %s", url, failures, result.error)
    feeds.record(url, changes)
    return result


def _index_changes(index: Index, url: str, feed: Feed | None, known: dict[str, dict], *, prune: bool,
                   accurate: bool) -> tuple[PollResult, dict]:
    """Index the new and changed items of ``feed`` (None: not modified since the last poll), mark those that
    left it ``gone`` (or, with ``prune``, remove their articles); ``known`` is updated in place."""
    items = feed.items if feed is not None else []
    changed = [item for item in items if (known.get(item.key) or {}).get("hash") != item.hash]
    if feed is not None:
        current = {item.key for item in items}
        for key, value in known.items():
            value["gone"] = key not in current
    gone = [key for key, value in known.items() if value.get("gone")]
    remove = [known[key]["id"] for key in gone if known[key].get("id")] if prune else []
    if changed or remove:
        loaded = load_items(feed, changed, index.settings) if feed is not None else LoadResult()
        report = index.index_loaded(loaded, remove=remove, accurate=accurate)
    else:  # nothing to write: the writer lock is not even taken
        report = IndexReport()
    report.unchanged += len(items) - len(changed)
    failed_ids = {f.article_id for f in report.failed if f.article_id}
    failed_sources = {f.source for f in report.failed}
    for item in changed:  # a failed item is tried again next time
        if item.article_id not in failed_ids and (item.link or url) not in failed_sources:
            known[item.key] = {"id": item.article_id, "hash": item.hash, "gone": False}
    for key in gone if prune else ():
        known.pop(key, None)
    changes: dict = {"items": known}
    if feed is None:
        return PollResult(url, "not modified", report=report, items=len(known)), changes
    changes["title"] = feed.title
    return PollResult(url, "indexed", report=report, items=len(items)), changes


@dataclass
class Watcher:
    """``newsdesk watch``: poll every ``interval`` seconds until ``stop()`` (a signal handler calls it); a stop
    is seen between two feeds and during the wait."""

    index: Index
    interval: float
    prune: bool = False
    accurate: bool = True
    stopped: bool = False

    def stop(self) -> None:
        self.stopped = True

    def run(self, once: bool, on_result: Callable[[PollResult], None],
            sleep: Callable[[float], None] = time.sleep) -> list[PollResult]:
        """Poll rounds; the results of the last round."""
        while True:
            results = poll(self.index, prune=self.prune, accurate=self.accurate, interval=self.interval,
                           should_stop=lambda: self.stopped, on_result=on_result)
            if once or self.stopped:
                return results
            deadline = time.monotonic() + self.interval
            while not self.stopped and (left := deadline - time.monotonic()) > 0:
                sleep(min(left, 0.2))
