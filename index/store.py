"""The Chroma store: the only module that imports chromadb and llama-index.

Four collections per index name (``NEWSDESK_COLLECTION``, default ``newsdesk``), and two small ones:

- ``<name>-passages``: one record per passage, written as llama-index ``TextNode``s (serialised by its
  ``node_to_metadata_dict``) with the stage-1 vector; id ``<article_id>#<n>@<version>`` (see "Versions" below);
  metadata ``article_id``, ``chunk_index`` and the passage's offsets in its article, ``start`` and ``end``, and
  its language ``lang`` (absent in passages written before it was kept); the collection's metadata records the
  embedder and dimension that built it.
- ``<name>-accurate``: stage-2 vectors (e5) for the same passage ids; a passage without one is "pending".
- ``<name>-articles``: the article registry (title, outlet, date, url, language, content hash, version, chunk
  count, where it came from, the chunker version and the store format it was written with). Chroma needs a vector per
  record: these carry a constant 1-d one and are never queried. The collection's metadata holds a
  ``generation`` token, replaced after every change of the articles, so that a reader (the searcher's lexical
  index, possibly in another process) can tell cheaply whether anything changed.
- ``<name>-texts``: each article's whole text (what quotes are checked against), as metadata of a record
  with id ``<article_id>#@<version>`` and a constant vector. Not a Chroma document: Chroma builds a full-text
  index of every document, which cost 0.28 s per 200 articles (of a 0.46 s write) and holds the GIL while it
  does, stalling the encoders; and not in the registry, which is read whole on every run. Stores written before
  this collection existed keep the text as the registry record's document, which is read as a fallback.
- ``<name>-journal``: the ids of the articles a write or a removal is working on, until it is done.
- ``<name>-active``: after a ``--rebuild``, which set of collections is the index (see "Rebuilding").

Store format (``FORMAT``, kept in each registry record as ``format``; records without it are format 1).
Format 1 passages have no ``start``/``end`` metadata: their offsets were only inside llama-index's private
serialisation of the node, which we do not read. Such passages are never given a guessed offset: their
offsets are recomputed from the article text (passages are consecutive, non-overlapping slices of it, in
``chunk_index`` order, separated by white space only, so the first occurrence of each passage after the end
of the previous one is exactly where it was cut from). And the indexer treats a format-1 article as changed
(``record_format``), so re-indexing the same files writes it again in the current format. Format 3 adds the
keys a search filters on (``index.dates``: ``published_ts``, the day number of the article's date, and
``source_key``, its outlet folded) to the registry record, the passages' metadata and the accurate vectors'
metadata; a format-2 article is given them in place (``upgrade_metadata``, metadata only: nothing is embedded
again) before the next ``index`` run. Until then no date or outlet filter matches it.

Versions (crash consistency of updates). Each write of an article is a version, named by a 12-hex ``version_tag``
of what its passages are made from (content hash, store format, the passages' spans: the same files give the
same ids, so an interrupted run done again is exactly a fresh index). Its passages and text are written under ids that
carry the version, beside the previous version's, and the registry record, which names the version (``tag``), is
written last: that upsert is the commit point. Only then are the previous version's passages, accurate vectors
and text deleted. Every read serves only passages of an article's current version (the version in the id must
be its record's; the registry records of the few articles a search returns are read for that, one small read per
call), so until the commit a search sees the old version whole, afterwards the new one whole, and a passage
without an article is never served. The journal names the articles being written: a run killed half-way leaves
them there, and the next run (``recover``) deletes what is not their current version. Removing an article
deletes its record first (it is gone at once), then the rest, under the journal too. Records and ids written
before versions existed (no ``tag``; passage ids ``<article_id>#<n>``, text id ``<article_id>``) are version
"": still valid, and replaced like any other version when their article changes. Every write goes to Chroma in
batches of at most ``min(client.get_max_batch_size(), MAX_BATCH)`` records, so an article of any size is
written (a failure half-way is a failure before the commit: the previous version stays).

Rebuilding (``begin_rebuild``): a new set of collections, ``<name>-<kind>-g<8 hex>``, is written beside the
index being served, through a second ``Store`` that reads and writes only those; when the run has written
everything, the pointer collection ``<name>-active`` is switched to them (one metadata write: the commit point)
and the old collections are dropped. A kill before the switch leaves the old index as it was; what a killed
rebuild left (collections of an inactive suffix) is dropped by the next run's ``recover``. Every collection
name is resolved in one method, ``_resolve``, which reads the pointer (``generation`` calls it on every check,
so a reader in another process follows a switch; a store never rebuilt has no pointer and the plain names).

Opening: an embedded store is opened on first use, and a read of a store that does not exist yet (no
``<home>/chroma``) is a read of an empty index: read-only commands create nothing. Writing creates it.
Several processes on one home (``index.locks``): every write (``@_writes``) and every opening runs under the
store lock, opening loads every vector index at once, each write replaces ``<home>/generation``, and a view
whose token is not that file's any more is reopened (``refresh``) before a search and before a write. A
damaged database (``damage``) is a StoreDamagedError naming the recovery, ``index --rebuild`` (``move_aside``).

Errors: only the failures we know are turned into a ``StoreError`` (chromadb's own errors, sqlite3, httpx,
``OSError``); anything else is a bug and propagates as itself. A full disk says so: chromadb 1.5's embedded
core reports one as an ``InternalError`` (or hangs when not one byte is left), so writes first check the free
space, and a chromadb error on a disk that is (almost) full is reported as a full disk.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import hashlib
import inspect
import logging
import shutil
import sqlite3
import re
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np  # before chromadb: avoids a circular-import crash when threads are involved
import chromadb
import httpx
from chromadb.api.shared_system_client import SharedSystemClient
from chromadb.config import Settings as ChromaSettings
from chromadb.errors import AuthorizationError, ChromaAuthError, ChromaError, NotFoundError

from .chunking import VERSION as CHUNKER_VERSION
from .errors import EmbedderMismatchError, StoreDamagedError, StoreError
from .language import UNDETERMINED, article_language
from .locks import HomeLock, ViewLock
from .dates import filter_metadata
from .settings import STORE_COLLECTIONS, Settings
from .terms import Terms, unpack as unpack_terms
from .types import Article, Chunk

log = logging.getLogger(__name__)


def _llama():
    """llama-index, imported when passages are first written (~0.8 s of imports that no read needs: ``ask``,
    ``search``, ``stats`` and the bot's start do without them)."""
    from llama_index.core import schema
    from llama_index.core.vector_stores.utils import node_to_metadata_dict

    return schema, node_to_metadata_dict


FORMAT = 3  # the store format articles are written in (see the module docstring)

_COSINE = {"hnsw": {"space": "cosine"}}
_PAGE = 2000
_IN_BATCH = 500  # ids per `$in` filter
_FILTER_KEYS = ("published_ts", "source_key")  # the metadata searches filter on (``index.dates``)
_LOW_SPACE = 8 * 1024 * 1024  # free bytes below which a disk counts as full (what is left for Chroma's own use)
_MB = 1024 * 1024
_TAGS_KEPT = 100_000  # article versions a reader keeps (``Store._current_tags``)
_HIT_FIELDS = frozenset({"title", "source", "published", "published_ts", "url", "also"})  # what a hit shows
_KEPT_FIELDS = _HIT_FIELDS | {"group"}  # of each registry record read with the versions (``Store._records``)
MAX_BATCH = 1000  # records per Chroma write at most (and never more than the client's get_max_batch_size())
_KINDS = (*STORE_COLLECTIONS, "journal")  # the collections of one set (one suffix); the pointer is outside them
_POINTER = "active"
_SUFFIX = re.compile(r"g[0-9a-f]{8}")  # a rebuilt set's suffix: <name>-<kind>-g<8 hex>


def version_tag(article: Article, chunks: Sequence[Chunk]) -> str:
    """The version an article's passages are written under: what they are made from, the article (its content
    hash), the store format and the passages' spans (see the module docstring)."""
    h = hashlib.sha256(f"{article.content_hash}/{FORMAT}/".encode())
    h.update(",".join(f"{c.start}-{c.end}" for c in chunks).encode())
    return h.hexdigest()[:12]


def passage_id(article_id: str, index: int, tag: str) -> str:
    return f"{article_id}#{index}@{tag}" if tag else f"{article_id}#{index}"


def text_id(article_id: str, tag: str) -> str:
    return f"{article_id}#@{tag}" if tag else article_id


def split_passage_id(chunk_id: str) -> tuple[str, str]:
    """(article id, version) of a passage id; version "" for an id written before versions existed."""
    article_id, _, rest = chunk_id.rpartition("#")
    return article_id, rest.partition("@")[2]


def _pages(col, where: dict | None = None, include: list[str] | None = None) -> Iterator[dict]:
    """The records of ``col`` that match ``where``, one ``get`` of _PAGE at a time, until a short page. Ids
    alone (no ``include``) come in one read: a filtered read paged by offset filters the collection again for
    every page (the latent-terms filter over 100k stage-2 records: 19 s in pages of 2,000, 0.4 s in one), and
    the ids of every record are what the caller keeps anyway."""
    if not include:
        yield col.get(where=where, include=[])
        return
    offset, got = 0, None
    while got is None or len(got["ids"]) == _PAGE:
        got = col.get(where=where, include=include or [], limit=_PAGE, offset=offset)
        offset += _PAGE
        yield got


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


@dataclass
class StoredPassage:
    chunk_id: str
    article_id: str
    text: str
    start: int
    end: int


def chunker_version(record: dict) -> int:
    """The chunker version an article's registry record was written with (records from before the version
    was kept: 1, the chunker they were all cut by)."""
    return int(record.get("chunker", 1))


def record_format(record: dict) -> int:
    """The store format an article's registry record was written in (records from before it was kept: 1)."""
    return int(record.get("format", 1))


def _article_lang(article: Article, chunks: Sequence[Chunk]) -> str:
    """The language recorded for an article: the one most of its passages are in (``Chunk.lang``, detected by
    the indexer), else the one it was loaded with."""
    detected = article_language([c.lang for c in chunks], [len(c.text) for c in chunks])
    return detected if detected != UNDETERMINED else (article.lang or "")


def _wrap(action: str):
    """Decorator: turn the store failures we know (``Store._translate``) into a one-line StoreError, for
    generators too; anything else propagates unchanged."""

    def deco(fn):
        if inspect.isgeneratorfunction(fn):
            def inner(self, *args, **kwargs):
                try:
                    with self._shared.view.shared():
                        yield from fn(self, *args, **kwargs)
                except StoreError:
                    raise
                except BaseException as exc:  # Chroma's Rust core panicking raises a BaseException
                    error = self._translate(action, exc)
                    if error is None:
                        raise
                    raise error from exc
        else:
            def inner(self, *args, **kwargs):
                for attempt in (1, 2):
                    try:
                        with self._shared.view.shared():
                            return fn(self, *args, **kwargs)
                    except StoreError:
                        raise
                    except BaseException as exc:  # Chroma's Rust core panicking raises a BaseException
                        if attempt == 1 and isinstance(exc, NotFoundError) and self._follow_switch():
                            continue  # a rebuild (another process) replaced the collections: once more, on the new
                        error = self._translate(action, exc)
                        if error is None:
                            raise
                        raise error from exc

        inner.__name__ = fn.__name__
        inner.__doc__ = fn.__doc__
        return inner

    return deco


def _writes(fn):
    """Decorator of a method that writes to the store (outside ``_wrap``). Embedded, it runs under the store lock,
    on a view brought up to date first (a write on a stale view would save vector indexes that lack what
    another process wrote), and replaces the generation file afterwards, so that other processes reopen their
    views; a write inside another one just runs."""

    def inner(self, *args, **kwargs):
        if not self.embedded:
            return fn(self, *args, **kwargs)
        with self._shared.store_lock.hold():
            self.refresh()
            try:
                return fn(self, *args, **kwargs)
            finally:
                if self.client is not None:
                    self._mark_written()

    inner.__name__ = fn.__name__
    inner.__doc__ = fn.__doc__
    return inner


class _Shared:
    """What a store shares with its copies (a rebuild's store): the client, the locks, the view's token."""

    def __init__(self, home: Path) -> None:
        self.client = None
        self.store_lock = HomeLock(home / "store.lock")
        self.view = ViewLock()
        self.token: str | None = None  # the generation file's content when the view was opened or last written
        self.open_lock = threading.Lock()
        self.sound_until = 0.0  # until when the database counts as checked and sound (``damage``)


def _is_panic(exc: BaseException) -> bool:
    """Whether ``exc`` is a panic of Chroma's Rust core (pyo3's ``PanicException``, a BaseException whose class
    lives in a module pyo3 creates at run time, so it is recognised by its module and name)."""
    kind = type(exc)
    return kind.__module__ == "pyo3_runtime" and kind.__name__ == "PanicException"


def _http_cause(exc: Exception) -> Exception:
    """chromadb's HTTP client re-raises some httpx errors as a bare ``ValueError`` or ``Exception`` (a refused
    connection when the client is made, an HTTP error status without a Chroma error in the body): the httpx
    error they were raised from, if so, else ``exc`` itself."""
    if type(exc) in (ValueError, Exception) and isinstance(exc.__context__, httpx.HTTPError):
        return exc.__context__
    return exc


class Store:
    _suffix: str | None = None  # the suffix of the collections this store reads and writes (None: not read yet)
    _pinned = False  # a rebuild's store: its suffix is fixed, not read from the pointer
    _max_batch: int | None = None
    _seen_generation = ""  # the last token ``generation()`` read
    _tags_key: tuple | None = None  # what ``_tags_cache`` was read under (see ``_current_tags``)
    _records_owner: dict | None = None  # the ``_tags_cache`` that ``_records_cache`` goes with (see ``_records``)
    _records_cache: dict[str, dict] = {}

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.label = settings.store_label
        name = settings.collection
        self._names = {kind: f"{name}-{kind}" for kind in STORE_COLLECTIONS}
        self._path = settings.home / "chroma"
        self._collections: dict = {}
        self._old_offsets_cache: dict[str, dict[str, tuple[int, int]]] = {}
        self._tags_cache: dict[str, str | None] = {}
        self._matching: dict[tuple, set[str]] = {}  # ``matching_articles``' answers while the articles stay the same
        self._token_path = settings.home / "generation"
        self._shared = _Shared(settings.home)
        if settings.chroma_host:
            self._open_server()

    # -- opening, errors ---------------------------------------------------------------------------------

    @property
    def embedded(self) -> bool:
        return not self.settings.chroma_host

    @property
    def client(self):
        return self._shared.client

    @client.setter
    def client(self, client) -> None:
        self._shared.client = client

    @_wrap("connecting")
    def _open_server(self) -> None:
        client = chromadb.HttpClient(host=self.settings.chroma_host, port=self.settings.chroma_port,
                                     settings=ChromaSettings(anonymized_telemetry=False, allow_reset=False))
        client.heartbeat()
        self.client = client

    def _client(self, create: bool):
        """The Chroma client; an embedded store is opened on first use. None: there is no embedded store yet
        and ``create`` is False (a read: the index is empty)."""
        if self.client is None:
            with self._shared.open_lock:
                if self.client is None:
                    if not create and not self._path.exists():
                        return None
                    self.settings.home.mkdir(parents=True, exist_ok=True)
                    with self._shared.store_lock.hold():
                        self._open_embedded()
        return self.client

    def _open_embedded(self) -> None:
        """Open the embedded store and load every vector index of this index name now (under the store lock,
        held by the caller: loading one may save it), so that no later read loads one while another process
        writes. A damaged database is a StoreDamagedError (see ``damage``), never opened (Chroma would start an
        empty one in place of an empty or missing file)."""
        if (damage := self._missing_database() or self._unreadable_database()) is not None:
            raise StoreDamagedError(self._damaged(damage))
        token = self._read_token()
        try:
            client = chromadb.PersistentClient(path=str(self._path),
                                               settings=ChromaSettings(anonymized_telemetry=False, allow_reset=False))
        except BaseException:
            # a core that panicked while starting stays in chromadb's cache of systems, and every later client
            # of the path would get it, broken: forget it (chromadb has no public route for this)
            SharedSystemClient._identifier_to_system.pop(str(self._path), None)
            SharedSystemClient._identifier_to_refcount.pop(str(self._path), None)
            raise
        try:
            prefix = f"{self.settings.collection}-"
            for col in client.list_collections():
                name = col if isinstance(col, str) else col.name
                if name.startswith(prefix):
                    col = client.get_collection(name, embedding_function=None)
                    first = col.get(limit=1, include=["embeddings"])
                    if first["ids"]:
                        col.query(query_embeddings=[list(first["embeddings"][0])], n_results=1, include=[])
        except BaseException:
            client.close()
            raise
        self._shared.token = token
        self.client = client

    # -- damage -------------------------------------------------------------------------------------------

    def _missing_database(self) -> str | None:
        """What is wrong when the vector indexes are there but their database is missing or empty (a cheap
        check, made at every opening); None otherwise."""
        db = self._path / "chroma.sqlite3"
        segments = self._path.is_dir() and any(p.is_dir() and len(p.name) == 36 for p in self._path.iterdir())
        if not segments:
            return None
        if not db.exists():
            return "chroma.sqlite3 is missing"
        if db.stat().st_size == 0:
            return "chroma.sqlite3 is empty"
        return None

    def _unreadable_database(self) -> str | None:
        """Whether the tables Chroma reads first (when its core opens the store, where damage there makes it
        panic, printing a Rust backtrace) fail to read: a few milliseconds, at every opening."""
        db = self._path / "chroma.sqlite3"
        if not db.exists():
            return None
        try:
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as con:
                for table in ("migrations", "collections", "segments"):
                    con.execute(f"SELECT * FROM {table}").fetchall()  # noqa: S608 - fixed names
        except sqlite3.OperationalError:
            return None  # busy, a table not there yet: Chroma will say
        except sqlite3.DatabaseError:
            return self.damage() or "chroma.sqlite3 cannot be read"
        return None

    def damage(self) -> str | None:
        """What is wrong with the embedded store's database, in a few words, or None when it reads as sound:
        missing or empty beside its vector indexes, not a database, or failing sqlite's ``quick_check`` (which
        reads the whole file: called after a failure, and by ``--rebuild``)."""
        if (missing := self._missing_database()) is not None:
            return missing
        db = self._path / "chroma.sqlite3"
        if not db.exists() or time.monotonic() < self._shared.sound_until:
            return None
        try:
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as con:
                rows = con.execute("PRAGMA quick_check(1)").fetchall()
        except sqlite3.OperationalError:
            return None  # busy, or cannot be opened: not known to be damaged
        except sqlite3.DatabaseError:
            return "chroma.sqlite3 is not a database any more"
        if rows == [("ok",)]:
            self._shared.sound_until = time.monotonic() + 60  # a burst of failures checks the file once
            return None
        return "chroma.sqlite3 fails sqlite's integrity check"

    def _damaged(self, damage: str) -> str:
        return (f"the index store at {self._path} is damaged ({damage}): run `newsdesk index --rebuild PATH…` "
                f"to move it aside and build the index afresh")

    def move_aside(self) -> Path:
        """Rename the (damaged) embedded store to ``chroma.damaged-<time>`` beside it, under the store lock;
        the next write starts a new one. Returns where it went."""
        with self._shared.store_lock.hold():
            self.close()
            dest = self._path.with_name(f"chroma.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
            while dest.exists():
                dest = dest.with_name(dest.name + "-1")
            try:
                self._path.rename(dest)
            except OSError as exc:
                raise StoreError(f"could not move the damaged index store aside: {exc.strerror}") from exc
            self._mark_written()
        return dest

    # -- other processes: the generation file, reopening -------------------------------------------------

    def _read_token(self) -> str:
        """The generation file's content: replaced by every write of any process ("" before the first)."""
        try:
            return self._token_path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError):
            return ""

    def _mark_written(self) -> None:
        """After a write (under the store lock): a new generation file, written atomically; this view is
        current with it."""
        token = uuid.uuid4().hex
        tmp = self._token_path.with_name(f".generation.{uuid.uuid4().hex[:8]}")
        try:
            tmp.write_text(token, encoding="ascii")
            tmp.replace(self._token_path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            log.warning("could not write %s (%s): other processes will not see this write until they restart",
                        self._token_path, exc.strerror or type(exc).__name__)
            return
        self._shared.token = token

    def changed_elsewhere(self) -> bool:
        """Whether another process wrote to the embedded store since this view was opened (one small read;
        always False for a server, which keeps a single view itself, or a store not opened yet)."""
        return self.embedded and self.client is not None and self._read_token() != self._shared.token

    def refresh(self) -> bool:
        """Reopen the view if another process wrote since it was opened, waiting first for a write under way to
        end (the store lock); whether it was reopened."""
        if not self.embedded or self.client is None:
            return False
        with self._shared.store_lock.hold():
            return self._read_token() != self._shared.token and self.reopen()

    def reopen(self) -> bool:
        """Drop this process's view of the embedded store and open a fresh one (under the store lock, so
        between two writes of another process), once no store call is under way in this process. False (and
        nothing done) when calls are still under way after a while, or the caller is inside one."""
        if not self.embedded or self.client is None:
            return False
        with self._shared.store_lock.hold(), self._shared.view.exclusive(timeout=10.0) as alone:
            if not alone:
                return False
            self._close_client()
            try:
                self._open_embedded()
            except Exception as exc:
                error = self._translate("reopening the index", exc)
                if error is None:
                    raise
                raise error from exc
        return True

    def close(self) -> None:
        """Let go of the store (the embedded Chroma system is stopped: its folder may be deleted after)."""
        with self._shared.view.exclusive(timeout=10.0):
            self._close_client()

    def _close_client(self) -> None:
        client, self.client = self.client, None
        self._collections.clear()
        self._old_offsets_cache.clear()
        if not self._pinned:
            self._suffix = None
        if client is not None and self.embedded:
            client.close()

    def _translate(self, action: str, exc: Exception) -> StoreError | None:
        """The StoreError for a failure we know, None for anything else (a bug: it propagates)."""
        exc = _http_cause(exc)
        failed = f"the index store failed while {action}"
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
            return StoreError(f"{failed}: is {self.label} reachable?")
        if isinstance(exc, httpx.HTTPStatusError):
            return StoreError(f"{failed}: {self.label} answered HTTP {exc.response.status_code}")
        if isinstance(exc, httpx.HTTPError):
            return StoreError(f"{failed}: the connection to {self.label} failed ({type(exc).__name__})")
        if isinstance(exc, OSError):
            if exc.errno == errno.ENOSPC:
                return StoreError(f"{failed}: {self._full_disk()}")
            where = f" ({exc.filename})" if exc.filename else ""
            return StoreError(f"{failed}: {exc.strerror or type(exc).__name__}{where}")
        if isinstance(exc, (ChromaError, sqlite3.Error)) or _is_panic(exc):
            free = self._free_space()
            if free is not None and free < _LOW_SPACE:
                return StoreError(f"{failed}: {self._full_disk()}")
            damage = self.damage() if self.embedded else None
            if damage is not None:
                return StoreDamagedError(self._damaged(damage))
            if _is_panic(exc):
                return StoreError(f"{failed} ({self.label}: Chroma's core failed)")
            if isinstance(exc, (ChromaAuthError, AuthorizationError)):
                return StoreError(f"{failed}: {self.label} refused access")
            return StoreError(f"{failed} ({self.label}: {type(exc).__name__})")
        return None

    def _free_space(self) -> int | None:
        """Free bytes on the disk holding the embedded store (None: a server, or nothing to measure)."""
        if not self.embedded:
            return None
        path = self._path
        while not path.exists() and path != path.parent:
            path = path.parent
        try:
            return shutil.disk_usage(path).free
        except OSError:
            return None

    def _full_disk(self, need: int | None = None) -> str:
        free = self._free_space()
        left = f"{free / _MB:.1f} MB free" if free is not None else "no space left"
        needed = f", this write needs about {(need + _LOW_SPACE) / _MB:.1f} MB" if need else ""
        return f"the disk holding {self.settings.home} is full ({left}{needed})"

    def _reserve(self, need: int) -> None:
        """Refuse a write that would fill the disk (an embedded Chroma that runs out of space mid-write
        leaves a write it cannot apply, and stalls when not a byte is left): raise a StoreError when less
        than ``need`` bytes plus a margin are free."""
        free = self._free_space()
        if free is not None and free < need + _LOW_SPACE:
            raise StoreError(f"the index store cannot write: {self._full_disk(need)}")

    # -- collections -------------------------------------------------------------------------------------

    def _collection(self, kind: str, create: bool = True, metadata: dict | None = None):
        if kind in self._collections:
            return self._collections[kind]
        client = self._client(create)
        if client is None:
            return None
        if self._suffix is None:
            self._resolve(client)
        name = self._names[kind]
        if create:
            col = client.get_or_create_collection(name, configuration=_COSINE, metadata=metadata,
                                                  embedding_function=None)
        else:
            try:
                col = client.get_collection(name, embedding_function=None)
            except NotFoundError:  # embedded and over HTTP alike (chromadb 1.5)
                return None
        self._collections[kind] = col
        return col

    @_wrap("checking the embedder")
    def check_embedder(self, name: str, dim: int | None, create: bool = False) -> None:
        """Raise EmbedderMismatchError when the index was built by another embedder (``dim`` None: compare the
        names only, for an embedder that does not know its dimension yet)."""
        col = self._collection("passages", create=create, metadata={"embedder": name, "dim": dim})
        if col is None:
            return
        meta = col.metadata or {}
        if meta.get("embedder") != name or (dim is not None and int(meta.get("dim", dim)) != dim):
            wanted = f"{name} ({dim}-d)" if dim is not None else name
            raise EmbedderMismatchError(
                f"the index was built with the {meta.get('embedder')} embedder ({meta.get('dim')}-d), "
                f"not {wanted}: run `newsdesk index --rebuild PATH…` to rebuild it")

    @_wrap("reading the embedder")
    def embedder_info(self) -> dict | None:
        col = self._collection("passages", create=False)
        return dict(col.metadata or {}) if col is not None else None

    # -- which collections: resolution, rebuilding ----------------------------------------------------

    def _names_for(self, suffix: str) -> dict[str, str]:
        base = self.settings.collection
        return {kind: f"{base}-{kind}" + (f"-{suffix}" if suffix else "") for kind in _KINDS}

    def _resolve(self, client) -> None:
        """Point this store at the active set of collections: the suffix the pointer collection names ("" for
        a store never rebuilt). The one place collection names are decided; when the active set changed since
        the last call (another process rebuilt), cached collection handles are dropped."""
        if self._pinned:
            return
        try:
            pointer = client.get_collection(f"{self.settings.collection}-{_POINTER}", embedding_function=None)
            suffix = str((pointer.metadata or {}).get("suffix", ""))
        except NotFoundError:
            suffix = ""
        if suffix != self._suffix:
            self._suffix = suffix
            self._names = self._names_for(suffix)
            self._collections.clear()
            self._old_offsets_cache.clear()

    def _follow_switch(self) -> bool:
        """After a collection was not found: whether the active set changed (a rebuild switched and dropped the
        set this store was reading), this store now pointing at the new one."""
        if self._pinned or self.client is None:
            return False
        before = self._suffix
        self._resolve(self.client)
        return self._suffix != before

    def _batch_size(self) -> int:
        if self._max_batch is None:
            self._max_batch = max(1, min(int(self._client(create=True).get_max_batch_size()), MAX_BATCH))
        return self._max_batch

    @_writes
    @_wrap("starting a rebuild")
    def begin_rebuild(self) -> Store:
        """A store for rebuilding the index beside the active one: it reads and writes a new, empty set of
        collections (this store keeps serving the active set) until ``finish_rebuild`` switches to it."""
        client = self._client(create=True)
        self._resolve(client)
        self._drop_inactive(client)
        builder = copy.copy(self)  # the same client, settings and locks; its own collections
        builder._pinned = True
        builder._suffix = "g" + uuid.uuid4().hex[:8]
        builder._names = builder._names_for(builder._suffix)
        builder._collections, builder._old_offsets_cache, builder._tags_cache = {}, {}, {}
        return builder

    @_writes
    @_wrap("switching to the rebuilt index")
    def finish_rebuild(self) -> None:
        """(On a rebuild's store.) Make its collections the index, then drop the ones they replace."""
        client = self._client(create=True)
        self._collection("articles")  # an empty rebuild is an empty index, not the old one
        self._bump_generation()
        pointer = client.get_or_create_collection(f"{self.settings.collection}-{_POINTER}", embedding_function=None)
        pointer.modify(metadata={"suffix": self._suffix})
        self._drop_inactive(client)

    @_writes
    @_wrap("dropping an unfinished rebuild")
    def abandon_rebuild(self) -> None:
        """(On a rebuild's store.) Drop its collections: the active index stays as it was."""
        client = self._client(create=False)
        for name in self._names.values():
            try:
                client.delete_collection(name)
            except NotFoundError:
                pass
        self._collections.clear()

    def _own_collections(self, client) -> Iterator[tuple[str, str, str]]:
        """(name, kind, suffix) of the collections of this index name in the store, the pointer included."""
        prefix = f"{self.settings.collection}-"
        for col in client.list_collections():
            name = col if isinstance(col, str) else col.name
            if not name.startswith(prefix):
                continue
            kind, _, suffix = name[len(prefix):].partition("-")
            if kind in _KINDS and (suffix == "" or _SUFFIX.fullmatch(suffix)) or (kind == _POINTER and not suffix):
                yield name, kind, suffix

    def _drop_inactive(self, client) -> None:
        """Drop every collection set of this index name but this store's (the active one): a killed rebuild's,
        or the set a finished rebuild replaced (when the run was killed before it dropped it)."""
        for name, kind, suffix in list(self._own_collections(client)):
            if kind != _POINTER and suffix != self._suffix:
                log.info("dropping %s, left by an earlier run", name)
                try:
                    client.delete_collection(name)
                except NotFoundError:
                    pass  # dropped meanwhile

    @_writes
    @_wrap("deleting the index")
    def drop_all(self) -> None:
        """Delete every collection of this index name (all sets and the pointer)."""
        client = self._client(create=False)
        if client is None:
            return
        for name, _, _ in list(self._own_collections(client)):
            try:
                client.delete_collection(name)
            except NotFoundError:
                pass  # dropped meanwhile
        self._collections.clear()
        self._old_offsets_cache.clear()
        self._suffix = None
        self._names = self._names_for("")

    # -- articles ----------------------------------------------------------------------------------------

    @_wrap("reading the index generation")
    def generation(self) -> str:
        """A token that changes whenever an article is written or removed, or the index is rebuilt (read fresh
        from the store every time: another process may have written)."""
        client = self._client(create=False)
        if client is None:
            return ""
        self._resolve(client)
        try:
            col = client.get_collection(self._names["articles"], embedding_function=None)
        except NotFoundError:  # no articles collection (yet): an empty index
            return ""
        if self._collections.get("articles") is not None and self._collections["articles"].id != col.id:
            self._collections.clear()  # rebuilt by another process: our collection handles are stale
            self._old_offsets_cache.clear()
        token = f"{col.id}:{(col.metadata or {}).get('generation', '')}"
        self._seen_generation = token
        return token

    @_wrap("listing collections")
    def collection_ids(self) -> set[str]:
        """The ids of every collection in the store (of any index name)."""
        client = self._client(create=False)
        return {str(c.id) for c in client.list_collections()} if client is not None else set()

    def _bump_generation(self) -> None:
        self._tags_cache = {}  # the versions of this process's readers (``_current_tags``)
        self._collection("articles").modify(metadata={"generation": uuid.uuid4().hex})

    @_wrap("reading the article registry")
    def article_hashes(self) -> dict[str, str]:
        """Article id -> what its passages were made from: the content hash, the chunker version (an article cut
        again by a new chunker has other passages: see ``chunker_version``) and the version its passages are
        stored under (none for records written before versions existed)."""
        out = {}
        for article_id, meta in self.articles().items():
            tag = f"/{meta['tag']}" if meta.get("tag") else ""
            out[article_id] = f"{meta.get('hash', '')}/{chunker_version(meta)}{tag}"
        return out

    @_wrap("reading the article registry")
    def article_meta(self, article_ids: Sequence[str], cached: bool = False) -> dict[str, dict]:
        """The registry records of these articles. ``cached`` (a search: its hits' titles and dates): only the
        fields a hit shows (``_HIT_FIELDS``), kept from the read of the articles' versions (``_current_tags``,
        once per generation), so a search whose candidates were checked reads nothing more (1.5 ms a search
        at 100k passages)."""
        if cached:
            tags = self._current_tags(set(article_ids))
            records = self._records()
            return {a: {k: v for k, v in records[a].items() if k in _HIT_FIELDS}
                    for a in dict.fromkeys(article_ids) if tags.get(a) is not None and a in records}
        col = self._collection("articles", create=False)
        if col is None or not article_ids:
            return {}
        got = col.get(ids=list(dict.fromkeys(article_ids)), include=["metadatas"])
        return dict(zip(got["ids"], got["metadatas"]))

    @_wrap("reading the article registry")
    def articles(self) -> dict[str, dict]:
        col = self._collection("articles", create=False)
        if col is None:
            return {}
        out: dict[str, dict] = {}
        for offset in range(0, col.count(), _PAGE):
            got = col.get(include=["metadatas"], limit=_PAGE, offset=offset)
            out.update(zip(got["ids"], got["metadatas"]))
        return out

    @staticmethod
    def _write_size(items: Sequence[tuple[Article, Sequence[Chunk], np.ndarray]]) -> int:
        """A generous estimate of the bytes Chroma needs on disk to write ``items`` (measured about 13 kB per
        512-d passage of 1000 characters, log, metadata, full-text and vector index together)."""
        size = 0
        for article, chunks, vectors in items:
            size += 3 * len(article.text.encode()) + 4096
            width = vectors.shape[1] if vectors.ndim == 2 else 0
            size += sum(16 * width + 6 * len(chunk.text.encode()) + 2048 for chunk in chunks)
        return 2 * size

    @_writes
    @_wrap("writing articles")
    def write_articles(self, items: Sequence[tuple[Article, Sequence[Chunk], np.ndarray]], embedder: str,
                       dim: int, fields: dict[str, dict] | None = None) -> None:
        """Write several articles with a few calls per step (each Chroma write has a fixed cost), each as a new
        version beside its previous one (see the module docstring): journal, texts, passages, then the registry
        records (the commit point), then the previous versions deleted and the journal cleared. ``fields``:
        article id -> more registry fields (``index.dedup``'s signature and group)."""
        if not items:
            return
        self._reserve(self._write_size(items))
        self.check_embedder(embedder, dim, create=True)
        ids = [article.id for article, _, _ in items]
        tags = {article.id: version_tag(article, chunks) for article, chunks, _ in items}
        # the articles with a version to replace (a new one has none: what an interrupted run left of it is
        # deleted by ``recover`` before a run writes)
        previous = set(self.article_meta(ids))
        self._journal(ids)
        self._upsert("texts", [text_id(a.id, tags[a.id]) for a, _, _ in items], [[1.0]] * len(items),
                     [{"text": a.text, "article_id": a.id} for a, _, _ in items])
        keys = {a.id: filter_metadata(a.published, a.source) for a, _, _ in items}  # what searches filter on
        schema, node_to_metadata_dict = _llama()
        nodes = [schema.TextNode(
            id_=passage_id(article.id, chunk.index, tags[article.id]), text=chunk.text,
            metadata={"article_id": article.id, "chunk_index": chunk.index, "start": chunk.start, "end": chunk.end,
                      **keys[article.id], **({"lang": chunk.lang} if chunk.lang else {})},
            relationships={schema.NodeRelationship.SOURCE: schema.RelatedNodeInfo(node_id=article.id)},
            embedding=vector.tolist(),
        ) for article, chunks, vectors in items for chunk, vector in zip(chunks, vectors, strict=True)]
        if nodes:
            self._upsert("passages", [n.node_id for n in nodes], [n.get_embedding() for n in nodes],
                         [node_to_metadata_dict(n, remove_text=True, flat_metadata=True) for n in nodes],
                         [n.get_content(metadata_mode=schema.MetadataMode.NONE) for n in nodes])
        records = [{
            "title": article.title or "", "source": article.source or "",
            "published": article.published or "", "url": article.url or "", "lang": _article_lang(article, chunks),
            "origin": article.origin or "",
            "root": article.root or "", "hash": article.content_hash, "tag": tags[article.id], "chunks": len(chunks),
            "chunker": CHUNKER_VERSION, "format": FORMAT, **keys[article.id],
            "text_chars": len(article.text), **(fields or {}).get(article.id, {}),
        } for article, chunks, _ in items]
        self._upsert("articles", ids, [[1.0]] * len(items), records)  # the commit point
        for article_id in ids:
            self._old_offsets_cache.pop(article_id, None)
        self._bump_generation()
        self._delete_other_versions({a: tag for a, tag in tags.items() if a in previous})
        self._journal_done(ids)

    def _upsert(self, kind: str, ids: Sequence[str], embeddings: Sequence, metadatas: Sequence[dict],
                documents: Sequence[str] | None = None) -> None:
        """Upsert records in batches Chroma accepts (an upsert of an id written before, by an interrupted run,
        replaces it)."""
        col, size = self._collection(kind), self._batch_size()
        for i in range(0, len(ids), size):
            col.upsert(ids=list(ids[i:i + size]), embeddings=list(embeddings[i:i + size]),
                       metadatas=list(metadatas[i:i + size]),
                       documents=list(documents[i:i + size]) if documents is not None else None)

    def _delete_ids(self, col, ids: Sequence[str]) -> None:
        for batch in _batches(list(ids), self._batch_size()):
            col.delete(ids=list(batch))

    def _journal(self, article_ids: Sequence[str]) -> None:
        """Note that ``article_ids`` are being written or removed (until ``_journal_done``)."""
        self._upsert("journal", list(article_ids), [[1.0]] * len(article_ids), [{"at": 1}] * len(article_ids))

    def _journal_done(self, article_ids: Sequence[str]) -> None:
        journal = self._collection("journal", create=False)
        if journal is not None:
            self._delete_ids(journal, article_ids)

    def _delete_other_versions(self, current: dict[str, str | None]) -> None:
        """Delete the passages, accurate vectors and texts of each article id in ``current`` that are not of
        the version it maps to (None: of any version)."""
        ids = sorted(current)
        if not ids:
            return
        for kind in ("passages", "accurate", "texts"):
            col = self._collection(kind, create=False)
            if col is None:
                continue
            stale: list[str] = []
            for batch in _batches(ids, _IN_BATCH):
                where = {"article_id": batch[0]} if len(batch) == 1 else {"article_id": {"$in": list(batch)}}
                for got in _pages(col, where, ["metadatas"]):
                    for record_id, meta in zip(got["ids"], got["metadatas"]):
                        want = current.get(str((meta or {}).get("article_id", "")))
                        tag = record_id.rpartition("@")[2] if kind == "texts" else split_passage_id(record_id)[1]
                        if want is None or tag != want:
                            stale.append(record_id)
            if kind == "texts":  # texts written before versions existed: id = article id, no metadata
                stale.extend(a for a in ids if current[a] != "")
            self._delete_ids(col, stale)

    @_writes
    @_wrap("repairing the index")
    def recover(self) -> None:
        """Before a run writes: drop what an interrupted run left, the collections of a rebuild that never
        switched (or those it replaced) and the versions of articles that are not their current one."""
        client = self._client(create=False)
        if client is None:
            return
        self._resolve(client)
        self._drop_inactive(client)
        journal = self._collection("journal", create=False)
        if journal is None:
            return
        ids = journal.get(include=[])["ids"]
        if not ids:
            return
        log.info("cleaning up after an interrupted run: %d articles", len(ids))
        records = self.article_meta(ids)
        self._delete_other_versions({a: str(records[a].get("tag", "")) if a in records else None for a in ids})
        self._journal_done(ids)

    @_writes
    @_wrap("removing an article")
    def remove_article(self, article_id: str) -> None:
        """Remove an article: its registry record first (it is gone at once), then the rest."""
        self._journal([article_id])
        registry = self._collection("articles", create=False)
        if registry is not None:
            registry.delete(ids=[article_id])
        self._old_offsets_cache.pop(article_id, None)
        self._bump_generation()
        self._delete_other_versions({article_id: None})
        self._journal_done([article_id])

    @_writes
    @_wrap("updating the article registry")
    def update_articles(self, fields: dict[str, dict]) -> None:
        """Set registry fields of indexed articles (id -> fields; the record's other fields stay; an id not
        indexed is left out). Only for fields derived from the others (``index.dedup``'s groups), which the
        next run puts right when a kill left them half-written: the passages and the versions are untouched."""
        registry = self._collection("articles", create=False)
        ids = sorted(fields)
        if registry is None or not ids:
            return
        for batch in _batches(ids, self._batch_size()):
            registry.update(ids=list(batch), metadatas=[fields[a] for a in batch])
        self._bump_generation()

    def _current(self, chunk_ids: Sequence[str]) -> set[str]:
        """The passage ids of ``chunk_ids`` that belong to their article's current version."""
        if not chunk_ids:
            return set()
        owners = {cid: split_passage_id(cid) for cid in chunk_ids}
        tags = self._current_tags({a for a, _ in owners.values()})
        return {cid for cid, (article_id, tag) in owners.items() if tags.get(article_id) == tag}

    def _current_tags(self, article_ids: set[str]) -> dict[str, str | None]:
        """Article id -> the version of its current passages (None: not in the registry), read from the registry
        only for the articles this view has not read since the articles last changed. A search checks four
        lists of candidates (each ranker's, and the vectors and texts it reads), so without this it made four
        registry reads (measured at 100k passages: p95 49 -> 59 ms). The versions only change with the
        articles: the cache is dropped when this process writes (``_bump_generation``), when the view is
        reopened after another process wrote (the generation file), and when ``generation()`` (read every
        CHECK_SECONDS by the searcher, the way a server's readers follow) finds another token."""
        key = (self._shared.token, self._seen_generation, self._suffix, id(self.client))
        if key != self._tags_key:
            self._tags_cache, self._tags_key = {}, key
        cache = self._tags_cache
        missing = [a for a in article_ids if a not in cache]
        if missing:
            registry = self._collection("articles", create=False)
            if registry is None:
                return {}
            got = registry.get(ids=missing, include=["metadatas"])
            found = {a: str((m or {}).get("tag", "")) for a, m in zip(got["ids"], got["metadatas"])}
            if len(cache) > _TAGS_KEPT:
                cache.clear()
                self._records().clear()
            cache.update({a: found.get(a) for a in missing})
            self._records().update({a: {k: v for k, v in (m or {}).items() if k in _KEPT_FIELDS}
                                    for a, m in zip(got["ids"], got["metadatas"])})
        return {a: cache.get(a) for a in article_ids}

    def _records(self) -> dict[str, dict]:
        """Article id -> the fields of its registry record that searches use (``_KEPT_FIELDS``: its
        near-duplicate group, ``index.dedup``, and what a hit shows), read with the versions
        (``_current_tags``) and dropped with them."""
        if self._records_owner is not self._tags_cache:
            self._records_owner, self._records_cache = self._tags_cache, {}
        return self._records_cache

    @_wrap("reading the article registry")
    def article_groups(self, article_ids: Sequence[str]) -> dict[str, str]:
        """Article id -> its group's id (its own id when it is alone, or not grouped yet), for the indexed
        articles of ``article_ids``: a search's candidates were read already (``_current_tags``), at no cost."""
        tags = self._current_tags(set(article_ids))
        records = self._records()
        return {a: str(records.get(a, {}).get("group") or a) for a, tag in tags.items() if tag is not None}

    @_wrap("reading an article")
    def article_text(self, article_id: str) -> str | None:
        """The text of the article's current version (None: no such article)."""
        record = self.article_meta([article_id]).get(article_id)
        if record is None:
            return None
        texts = self._collection("texts", create=False)
        if texts is not None:
            got = texts.get(ids=[text_id(article_id, str(record.get("tag", "")))], include=["metadatas"])
            if got["ids"]:
                return str((got["metadatas"][0] or {}).get("text", ""))
        registry = self._collection("articles", create=False)  # a store written before the texts collection
        if registry is None:
            return None
        got = registry.get(ids=[article_id], include=["documents"])
        return got["documents"][0] if got["ids"] else None

    # -- passages ----------------------------------------------------------------------------------------

    def _passage(self, chunk_id: str, text: str, meta: dict) -> StoredPassage:
        article_id = str(meta.get("article_id", ""))
        if "start" in meta:
            start, end = int(meta["start"]), int(meta["end"])
        else:  # a format-1 passage: no offsets of its own
            start, end = self._old_offsets(article_id)[chunk_id]
        return StoredPassage(chunk_id=chunk_id, article_id=article_id, text=text or "", start=start, end=end)

    def _old_offsets(self, article_id: str) -> dict[str, tuple[int, int]]:
        """Passage id -> (start, end) for the passages of a format-1 article, found in its text: each passage
        is the first occurrence of its text after the end of the previous one (see the module docstring)."""
        cached = self._old_offsets_cache.get(article_id)
        if cached is not None:
            return cached
        article = self.article_text(article_id) or ""
        passages = sorted(((pid, text) for pid, _, text, _ in self.passages_of([article_id])),
                          key=lambda p: int(p[0].rpartition("#")[2].partition("@")[0] or 0))
        offsets, pos = {}, 0
        for pid, text in passages:
            start = article.find(text, pos)
            if start < 0 or not text:
                raise StoreError(f"passage {pid} of an index written by an older newsdesk is not in its article's "
                                 f"text: run `newsdesk index --rebuild PATH…` to rebuild the index")
            offsets[pid] = (start, start + len(text))
            pos = start + len(text)
        self._old_offsets_cache[article_id] = offsets
        return offsets

    @_wrap("searching")
    def query_passages(self, vector: np.ndarray, n: int, where: dict | None = None) -> list[tuple[str, float]]:
        """The ``n`` passages nearest to ``vector``: (passage id, cosine similarity), best first. Ids and
        distances only: the texts are read for the few passages a search finally returns. ``where``: only
        passages whose metadata matches (a Chroma filter, ``index.dates.Filters.where``), in the query itself."""
        return self._query("passages", vector, n, where)

    def _query(self, kind: str, vector: np.ndarray, n: int, where: dict | None = None) -> list[tuple[str, float]]:
        col = self._collection(kind, create=False)
        if col is None:
            return []
        got = col.query(query_embeddings=[vector.tolist()], n_results=n, include=["distances"], where=where)
        current = self._current(got["ids"][0])  # not a version being written, or left by an interrupted run
        return [(i, 1.0 - float(d)) for i, d in zip(got["ids"][0], got["distances"][0]) if i in current]

    @_wrap("reading passages")
    def get_passages(self, chunk_ids: Sequence[str]) -> dict[str, StoredPassage]:
        col = self._collection("passages", create=False)
        if col is None or not chunk_ids:
            return {}
        got = col.get(ids=list(chunk_ids), include=["documents", "metadatas"])
        current = self._current(got["ids"])
        return {i: self._passage(i, d, m) for i, d, m in zip(got["ids"], got["documents"], got["metadatas"])
                if i in current}

    @_wrap("reading passages")
    def iter_passages(self, with_vectors: bool = False) -> Iterator[tuple[StoredPassage, np.ndarray | None]]:
        col = self._collection("passages", create=False)
        if col is None:
            return
        include = ["documents", "metadatas"] + (["embeddings"] if with_vectors else [])
        tags = self._tags()
        for offset in range(0, col.count(), _PAGE):
            got = col.get(include=include, limit=_PAGE, offset=offset)
            vecs = got.get("embeddings") if with_vectors else None
            for j, (i, d, m) in enumerate(zip(got["ids"], got["documents"], got["metadatas"])):
                if tags.get(str(m.get("article_id", ""))) != split_passage_id(i)[1]:
                    continue  # not its article's current version
                vector = np.asarray(vecs[j], dtype=np.float32) if vecs is not None else None
                yield self._passage(i, d, m), vector

    def _tags(self, article_ids: Sequence[str] | None = None) -> dict[str, str]:
        """Article id -> the version of its current passages, for ``article_ids`` (None: every article)."""
        records = self.articles() if article_ids is None else self.article_meta(article_ids)
        return {a: str(meta.get("tag", "")) for a, meta in records.items()}

    @_wrap("reading passages")
    def passages_of(self, article_ids: Sequence[str]) -> Iterator[tuple[str, str, str, str]]:
        """(passage id, article id, text, language) of the passages of ``article_ids``: a filtered read for a
        few articles, one pass over the whole collection for many. The language is "" for passages written
        before it was kept."""
        col = self._collection("passages", create=False)
        if col is None or not article_ids:
            return
        wanted = set(article_ids)
        many = len(wanted) > 4 * _IN_BATCH
        tags = self._tags(None if many else sorted(wanted))
        if many:
            for offset in range(0, col.count(), _PAGE):
                got = col.get(include=["documents", "metadatas"], limit=_PAGE, offset=offset)
                for pid, text, meta in zip(got["ids"], got["documents"], got["metadatas"]):
                    owner = str(meta.get("article_id", ""))
                    if owner in wanted and tags.get(owner) == split_passage_id(pid)[1]:
                        yield pid, owner, text or "", str(meta.get("lang", ""))
            return
        ids = sorted(wanted)
        for i in range(0, len(ids), _IN_BATCH):
            batch = ids[i:i + _IN_BATCH]
            where = {"article_id": batch[0]} if len(batch) == 1 else {"article_id": {"$in": batch}}
            got = col.get(where=where, include=["documents", "metadatas"])
            for pid, text, meta in zip(got["ids"], got["documents"], got["metadatas"]):
                owner = str(meta.get("article_id", ""))
                if tags.get(owner) == split_passage_id(pid)[1]:  # its article's current version only
                    yield pid, owner, text or "", str(meta.get("lang", ""))

    @_wrap("counting passages")
    def count(self, kind: str = "passages") -> int:
        col = self._collection(kind, create=False)
        return col.count() if col is not None else 0

    # -- accurate (stage 2) vectors ----------------------------------------------------------------------

    @_wrap("counting accurate vectors")
    def count_with_terms(self) -> int:
        """How many stage-2 records carry latent terms (one filtered read per page of ids)."""
        col = self._collection("accurate", create=False)
        return sum(len(got["ids"]) for got in _pages(col, {"with_terms": True})) if col is not None else 0

    @_wrap("listing passages without accurate vectors")
    def pending_accurate(self, terms: bool = False) -> list[str]:
        """The current passages without a stage-2 vector (``terms``: or without latent terms beside it)."""
        col = self._collection("passages", create=False)
        if col is None:
            return []
        all_ids: list[str] = []
        tags = self._tags()
        for offset in range(0, col.count(), _PAGE):
            all_ids.extend(i for i in col.get(include=[], limit=_PAGE, offset=offset)["ids"]
                           if tags.get(split_passage_id(i)[0]) == split_passage_id(i)[1])
        acc = self._collection("accurate", create=False)
        done: set[str] = set()
        if acc is not None:
            where = {"with_terms": True} if terms else None  # vectors written without terms: done again
            for got in _pages(acc, where):
                done.update(got["ids"])
        return [i for i in all_ids if i not in done]

    @_writes
    @_wrap("writing accurate vectors")
    def add_accurate(self, passages: Sequence[StoredPassage], vectors: np.ndarray, embedder: str,
                     terms: Sequence[str] | None = None) -> None:
        """Stage-2 vectors for ``passages`` and, ``terms``, their packed latent terms (``index.terms``)."""
        passages_col = self._collection("passages", create=False)
        if passages_col is None or not passages:
            return
        self._reserve(2 * len(passages) * (16 * int(vectors.shape[1]) + 2048))
        self._collection("accurate", metadata={"embedder": embedder, "dim": int(vectors.shape[1])})  # created with them
        # a passage may have been replaced since it was read: only keep vectors for current passages
        got = passages_col.get(ids=[p.chunk_id for p in passages], include=["metadatas"])
        present = self._current(got["ids"])
        keys = {i: {k: m[k] for k in _FILTER_KEYS if k in m} for i, m in zip(got["ids"], got["metadatas"]) if m}
        keep = [i for i, p in enumerate(passages) if p.chunk_id in present]
        if keep:  # with the keys searches filter on, as the passage has them
            extra = [{"terms": terms[i], "with_terms": True} if terms is not None else {} for i in keep]
            self._upsert("accurate", [passages[i].chunk_id for i in keep], vectors[keep].tolist(),
                         [{"article_id": passages[i].article_id, **keys.get(passages[i].chunk_id, {}), **more}
                          for i, more in zip(keep, extra)])

    @_wrap("searching accurate vectors")
    def query_accurate(self, vector: np.ndarray, n: int, where: dict | None = None) -> list[tuple[str, float]]:
        return self._query("accurate", vector, n, where)

    @_wrap("filtering articles")
    def matching_articles(self, where: dict) -> set[str]:
        """The ids of the articles whose registry record matches ``where`` (the filter the passages are queried
        with), read in the store: what the lexical ranker is restricted to. Kept for the same filter until the
        articles change (as ``_current_tags`` is: "yesterday" asked again reads nothing)."""
        key = (repr(where), self._shared.token, self._seen_generation, self._suffix, id(self.client))
        if key in self._matching:
            return self._matching[key]
        col = self._collection("articles", create=False)
        if col is None:
            return set()
        out: set[str] = set()
        for got in _pages(col, where):
            out.update(got["ids"])
        if len(self._matching) >= 16:
            self._matching.clear()
        self._matching[key] = out
        return out

    @_writes
    @_wrap("upgrading the index")
    def upgrade_metadata(self) -> int:
        """Give the articles written in store format 2 the keys searches filter on (format 3: see the module
        docstring), in place: the registry record's date and outlet are read, the metadata of its passages and
        accurate vectors updated (Chroma merges the keys), then the record's ``format`` set to 3, last, so that a
        run killed half-way upgrades the article again. How many articles were upgraded."""
        registry = self._collection("articles", create=False)
        if registry is None:
            return 0
        got = registry.get(where={"format": 2}, include=["metadatas"])  # a filtered read: none, once upgraded
        old = dict(zip(got["ids"], got["metadatas"]))
        for batch in _batches(sorted(old), _IN_BATCH):
            keys = {a: filter_metadata(str(old[a].get("published") or ""), str(old[a].get("source") or ""))
                    for a in batch}
            for kind in ("passages", "accurate"):
                col = self._collection(kind, create=False)
                if col is None:
                    continue
                where = {"article_id": batch[0]} if len(batch) == 1 else {"article_id": {"$in": list(batch)}}
                got = col.get(where=where, include=["metadatas"])
                pairs = [(i, keys[str(m.get("article_id"))]) for i, m in zip(got["ids"], got["metadatas"])
                         if m and keys.get(str(m.get("article_id")))]
                for part in _batches(pairs, self._batch_size()):
                    col.update(ids=[i for i, _ in part], metadatas=[k for _, k in part])
            self._collection("articles").update(ids=list(batch), metadatas=[{**keys[a], "format": FORMAT}
                                                                            for a in batch])
        if old:
            log.info("gave %d articles of an older index the date and outlet keys searches filter on", len(old))
        return len(old)

    @_wrap("checking for accurate vectors")
    def has_accurate(self) -> bool:
        col = self._collection("accurate", create=False)
        return col is not None and bool(col.get(limit=1, include=[])["ids"])

    @_wrap("checking for accurate vectors")
    def stage2_state(self) -> tuple[bool, bool]:
        """Whether there are stage-2 vectors, and whether they have latent terms, read from the first one (one
        unfiltered read of one record, as cheap as ``has_accurate``): stage 2 fills an older index in the order
        of the passages, the first first."""
        col = self._collection("accurate", create=False)
        got = col.get(limit=1, include=["metadatas"]) if col is not None else {"ids": []}
        if not got["ids"]:
            return False, False
        return True, bool((got["metadatas"][0] or {}).get("with_terms"))

    @_wrap("counting accurate vectors")
    def stage2_complete(self) -> bool:
        """Whether every passage has its stage-2 vector (two counts; stage 2 keeps one record per passage)."""
        col = self._collection("accurate", create=False)
        return col is not None and col.count() >= self.count()

    @_wrap("checking passages")
    def current(self, chunk_ids: Sequence[str]) -> set[str]:
        """The ids of ``chunk_ids`` that are current passages (their article's version; read from the registry
        only for articles not read since they last changed)."""
        return self._current(list(chunk_ids))

    @_wrap("reading accurate vectors")
    def get_accurate_vectors(self, chunk_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The stage-2 vectors of these passages (their latent terms: ``get_terms``)."""
        return self._vectors("accurate", chunk_ids)

    @_wrap("reading latent terms")
    def get_terms(self, chunk_ids: Sequence[str]) -> dict[str, Terms]:
        """The latent terms stored with these passages' stage-2 vectors (those that have them). Metadata is the
        slow part of a read (~0.2 ms a passage at 100k passages, against ~0.05 ms for a vector)."""
        col = self._collection("accurate", create=False)
        if col is None or not chunk_ids:
            return {}
        got = col.get(ids=list(chunk_ids), include=["metadatas"])
        current = self._current(got["ids"])
        out = {}
        for i, meta in zip(got["ids"], got["metadatas"]):
            packed = (meta or {}).get("terms")
            terms = unpack_terms(packed) if i in current and isinstance(packed, str) else None
            if terms is not None:
                out[i] = terms
        return out

    @_wrap("reading passage vectors")
    def get_passage_vectors(self, chunk_ids: Sequence[str]) -> dict[str, np.ndarray]:
        return self._vectors("passages", chunk_ids)

    def _vectors(self, kind: str, chunk_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vectors (stage 1: "passages", stage 2: "accurate") of the current passages of these."""
        col = self._collection(kind, create=False)
        if col is None or not chunk_ids:
            return {}
        got = col.get(ids=list(chunk_ids), include=["embeddings"])
        current = self._current(got["ids"])
        return {i: np.asarray(v, dtype=np.float32) for i, v in zip(got["ids"], got["embeddings"]) if i in current}
