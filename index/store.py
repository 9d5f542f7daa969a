"""The Chroma store: the only module that imports chromadb and llama-index.

Four collections per index name (``NEWSDESK_COLLECTION``, default ``newsdesk``):

- ``<name>-passages``: one record per passage, written through llama-index's ``ChromaVectorStore`` as
  ``TextNode``s with the stage-1 vector; id ``<article_id>#<n>``; metadata ``article_id``, ``chunk_index`` and
  the passage's offsets in its article, ``start`` and ``end``; the collection's metadata records the embedder
  and dimension that built it.
- ``<name>-accurate``: stage-2 vectors (e5) for the same passage ids; a passage without one is "pending".
- ``<name>-articles``: the article registry (title, outlet, date, url, content hash, chunk count, where it
  came from, the chunker version and the store format it was written with). Chroma needs a vector per
  record: these carry a constant 1-d one and are never queried. The collection's metadata holds a
  ``generation`` token, replaced after every change of the articles, so that a reader (the searcher's lexical
  index, possibly in another process) can tell cheaply whether anything changed.
- ``<name>-texts``: each article's whole text (what quotes are checked against), as metadata of a record
  with the article's id and a constant vector. Not a Chroma document: Chroma builds a full-text index of
  every document, which cost 0.28 s per 200 articles (of a 0.46 s write) and holds the GIL while it does,
  stalling the encoders; and not in the registry, which is read whole on every run. Stores written before
  this collection existed keep the text as the registry record's document, which is read as a fallback.

Store format (``FORMAT``, kept in each registry record as ``format``; records without it are format 1).
Format 1 passages have no ``start``/``end`` metadata: their offsets were only inside llama-index's private
serialisation of the node, which we do not read. Such passages are never given a guessed offset: their
offsets are recomputed from the article text (passages are consecutive, non-overlapping slices of it, in
``chunk_index`` order, separated by white space only, so the first occurrence of each passage after the end
of the previous one is exactly where it was cut from). And the indexer treats a format-1 article as changed
(``record_format``), so re-indexing the same files writes it again in the current format.

Writing an article is ordered so that a crash at any point loses nothing already indexed and a re-run repairs
it: first its registry record is removed, then its old passages and accurate vectors, then the new passages
are added, and the registry record (with the content hash) is written last. An article whose record is
missing or whose hash differs is simply indexed again, and deleting by article id first means no duplicates.

Opening: an embedded store is opened on first use, and a read of a store that does not exist yet (no
``<home>/chroma``) is a read of an empty index: read-only commands create nothing. Writing creates it.

Errors: only the failures we know are turned into a ``StoreError`` (chromadb's own errors, sqlite3, httpx,
``OSError``); anything else is a bug and propagates as itself. A full disk says so: chromadb 1.5's embedded
core reports one as an ``InternalError`` (or hangs when not one byte is left), so writes first check the free
space, and a chromadb error on a disk that is (almost) full is reported as a full disk.
"""

from __future__ import annotations

import errno
import inspect
import logging
import shutil
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np  # before chromadb: avoids a circular-import crash when threads are involved
import chromadb
import httpx
from chromadb.config import Settings as ChromaSettings
from chromadb.errors import AuthorizationError, ChromaAuthError, ChromaError, NotFoundError
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.vector_stores.chroma import ChromaVectorStore

from .chunking import VERSION as CHUNKER_VERSION
from .errors import EmbedderMismatchError, StoreError
from .settings import STORE_COLLECTIONS, Settings
from .types import Article, Chunk

log = logging.getLogger(__name__)

FORMAT = 2  # the store format articles are written in (see the module docstring)

_COSINE = {"hnsw": {"space": "cosine"}}
_PAGE = 2000
_IN_BATCH = 500  # ids per `$in` filter
_LOW_SPACE = 8 * 1024 * 1024  # free bytes below which a disk counts as full (what is left for Chroma's own use)
_MB = 1024 * 1024


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


def _wrap(action: str):
    """Decorator: turn the store failures we know (``Store._translate``) into a one-line StoreError, for
    generators too; anything else propagates unchanged."""

    def deco(fn):
        if inspect.isgeneratorfunction(fn):
            def inner(self, *args, **kwargs):
                try:
                    yield from fn(self, *args, **kwargs)
                except StoreError:
                    raise
                except Exception as exc:
                    error = self._translate(action, exc)
                    if error is None:
                        raise
                    raise error from exc
        else:
            def inner(self, *args, **kwargs):
                try:
                    return fn(self, *args, **kwargs)
                except StoreError:
                    raise
                except Exception as exc:
                    error = self._translate(action, exc)
                    if error is None:
                        raise
                    raise error from exc

        inner.__name__ = fn.__name__
        inner.__doc__ = fn.__doc__
        return inner

    return deco


def _http_cause(exc: Exception) -> Exception:
    """chromadb's HTTP client re-raises some httpx errors as a bare ``ValueError`` or ``Exception`` (a refused
    connection when the client is made, an HTTP error status without a Chroma error in the body): the httpx
    error they were raised from, if so, else ``exc`` itself."""
    if type(exc) in (ValueError, Exception) and isinstance(exc.__context__, httpx.HTTPError):
        return exc.__context__
    return exc


class Store:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.label = settings.store_label
        name = settings.collection
        self._names = {kind: f"{name}-{kind}" for kind in STORE_COLLECTIONS}
        self._path = settings.home / "chroma"
        self._collections: dict = {}
        self._old_offsets_cache: dict[str, dict[str, tuple[int, int]]] = {}
        self._open_lock = threading.Lock()
        self.client = None
        if settings.chroma_host:
            self._open_server()

    # -- opening, errors ---------------------------------------------------------------------------------

    @property
    def embedded(self) -> bool:
        return not self.settings.chroma_host

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
            with self._open_lock:
                if self.client is None:
                    if not create and not self._path.exists():
                        return None
                    self.settings.home.mkdir(parents=True, exist_ok=True)
                    self.client = chromadb.PersistentClient(
                        path=str(self._path), settings=ChromaSettings(anonymized_telemetry=False, allow_reset=False))
        return self.client

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
        if isinstance(exc, (ChromaError, sqlite3.Error)):
            free = self._free_space()
            if free is not None and free < _LOW_SPACE:
                return StoreError(f"{failed}: {self._full_disk()}")
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

    @_wrap("deleting the index")
    def drop_all(self) -> None:
        client = self._client(create=False)
        if client is None:
            return
        for kind, name in self._names.items():
            try:
                client.delete_collection(name)
            except NotFoundError:
                pass  # did not exist
            self._collections.pop(kind, None)
        self._old_offsets_cache.clear()

    # -- articles ----------------------------------------------------------------------------------------

    @_wrap("reading the index generation")
    def generation(self) -> str:
        """A token that changes whenever an article is written or removed, or the index is rebuilt (read fresh
        from the store every time: another process may have written)."""
        client = self._client(create=False)
        if client is None:
            return ""
        try:
            col = client.get_collection(self._names["articles"], embedding_function=None)
        except NotFoundError:  # no articles collection (yet): an empty index
            return ""
        if self._collections.get("articles") is not None and self._collections["articles"].id != col.id:
            self._collections.clear()  # rebuilt by another process: our collection handles are stale
            self._old_offsets_cache.clear()
        return f"{col.id}:{(col.metadata or {}).get('generation', '')}"

    @_wrap("listing collections")
    def collection_ids(self) -> set[str]:
        """The ids of every collection in the store (of any index name)."""
        client = self._client(create=False)
        return {str(c.id) for c in client.list_collections()} if client is not None else set()

    def _bump_generation(self) -> None:
        self._collection("articles").modify(metadata={"generation": uuid.uuid4().hex})

    @_wrap("reading the article registry")
    def article_hashes(self) -> dict[str, str]:
        """Article id -> what its passages were made from: the content hash and the chunker version (an
        article cut again by a new chunker has other passages: see ``chunker_version``)."""
        return {article_id: f"{meta.get('hash', '')}/{chunker_version(meta)}"
                for article_id, meta in self.articles().items()}

    @_wrap("reading the article registry")
    def article_meta(self, article_ids: Sequence[str]) -> dict[str, dict]:
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

    @_wrap("writing articles")
    def write_articles(self, items: Sequence[tuple[Article, Sequence[Chunk], np.ndarray]], embedder: str,
                       dim: int) -> None:
        """Write several articles with one call per step (each Chroma write has a fixed cost), in the same
        crash-safe order as for one: registry records removed, old passages and accurate vectors removed, new
        passages added, registry records written last."""
        if not items:
            return
        self._reserve(self._write_size(items))
        self.check_embedder(embedder, dim, create=True)
        self._delete_articles([article.id for article, _, _ in items])
        nodes = []
        for article, chunks, vectors in items:
            for chunk, vector in zip(chunks, vectors, strict=True):
                nodes.append(TextNode(
                    id_=chunk.id, text=chunk.text,
                    metadata={"article_id": article.id, "chunk_index": chunk.index, "start": chunk.start,
                              "end": chunk.end},
                    relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=article.id)},
                    embedding=vector.tolist(),
                ))
        if nodes:
            ChromaVectorStore(chroma_collection=self._collection("passages")).add(nodes)
        records = [{
            "title": article.title or "", "source": article.source or "",
            "published": article.published or "", "url": article.url or "", "lang": article.lang or "",
            "origin": article.origin or "",
            "root": article.root or "", "hash": article.content_hash, "chunks": len(chunks),
            "chunker": CHUNKER_VERSION, "format": FORMAT,
            "text_chars": len(article.text),
        } for article, chunks, _ in items]
        ids = [article.id for article, _, _ in items]
        self._collection("texts").upsert(ids=ids, embeddings=[[1.0]] * len(items),
                                         metadatas=[{"text": article.text} for article, _, _ in items])
        self._collection("articles").upsert(ids=ids, embeddings=[[1.0]] * len(items), metadatas=records)
        self._bump_generation()

    def _delete_articles(self, article_ids: Sequence[str]) -> None:
        ids = list(article_ids)
        for article_id in ids:
            self._old_offsets_cache.pop(article_id, None)
        where = {"article_id": ids[0]} if len(ids) == 1 else {"article_id": {"$in": ids}}
        for kind in ("articles", "texts"):  # records keyed by the article id
            col = self._collection(kind, create=False)
            if col is not None:
                col.delete(ids=ids)
        self._collection("passages").delete(where=where)
        accurate = self._collection("accurate", create=False)
        if accurate is not None:
            accurate.delete(where=where)

    @_wrap("removing an article")
    def remove_article(self, article_id: str) -> None:
        self._delete_articles([article_id])
        self._bump_generation()

    @_wrap("reading an article")
    def article_text(self, article_id: str) -> str | None:
        texts = self._collection("texts", create=False)
        if texts is not None:
            got = texts.get(ids=[article_id], include=["metadatas"])
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
        passages = sorted(((pid, text) for pid, _, text in self.passages_of([article_id])),
                          key=lambda p: int(p[0].rpartition("#")[2] or 0))
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
    def query_passages(self, vector: np.ndarray, n: int) -> list[tuple[str, float]]:
        """The ``n`` passages nearest to ``vector``: (passage id, cosine similarity), best first. Ids and
        distances only: the texts are read for the few passages a search finally returns."""
        return self._query("passages", vector, n)

    def _query(self, kind: str, vector: np.ndarray, n: int) -> list[tuple[str, float]]:
        col = self._collection(kind, create=False)
        if col is None:
            return []
        got = col.query(query_embeddings=[vector.tolist()], n_results=n, include=["distances"])
        return [(i, 1.0 - float(d)) for i, d in zip(got["ids"][0], got["distances"][0])]

    @_wrap("reading passages")
    def get_passages(self, chunk_ids: Sequence[str]) -> dict[str, StoredPassage]:
        col = self._collection("passages", create=False)
        if col is None or not chunk_ids:
            return {}
        got = col.get(ids=list(chunk_ids), include=["documents", "metadatas"])
        return {i: self._passage(i, d, m) for i, d, m in zip(got["ids"], got["documents"], got["metadatas"])}

    @_wrap("reading passages")
    def iter_passages(self, with_vectors: bool = False) -> Iterator[tuple[StoredPassage, np.ndarray | None]]:
        col = self._collection("passages", create=False)
        if col is None:
            return
        include = ["documents", "metadatas"] + (["embeddings"] if with_vectors else [])
        for offset in range(0, col.count(), _PAGE):
            got = col.get(include=include, limit=_PAGE, offset=offset)
            vecs = got.get("embeddings") if with_vectors else None
            for j, (i, d, m) in enumerate(zip(got["ids"], got["documents"], got["metadatas"])):
                vector = np.asarray(vecs[j], dtype=np.float32) if vecs is not None else None
                yield self._passage(i, d, m), vector

    @_wrap("reading passages")
    def passages_of(self, article_ids: Sequence[str]) -> Iterator[tuple[str, str, str]]:
        """(passage id, article id, text) of the passages of ``article_ids``: a filtered read for a few
        articles, one pass over the whole collection for many."""
        col = self._collection("passages", create=False)
        if col is None or not article_ids:
            return
        wanted = set(article_ids)
        if len(wanted) > 4 * _IN_BATCH:
            for offset in range(0, col.count(), _PAGE):
                got = col.get(include=["documents", "metadatas"], limit=_PAGE, offset=offset)
                for pid, text, meta in zip(got["ids"], got["documents"], got["metadatas"]):
                    if str(meta.get("article_id", "")) in wanted:
                        yield pid, str(meta.get("article_id", "")), text or ""
            return
        ids = sorted(wanted)
        for i in range(0, len(ids), _IN_BATCH):
            batch = ids[i:i + _IN_BATCH]
            where = {"article_id": batch[0]} if len(batch) == 1 else {"article_id": {"$in": batch}}
            got = col.get(where=where, include=["documents", "metadatas"])
            for pid, text, meta in zip(got["ids"], got["documents"], got["metadatas"]):
                yield pid, str(meta.get("article_id", "")), text or ""

    @_wrap("counting passages")
    def count(self, kind: str = "passages") -> int:
        col = self._collection(kind, create=False)
        return col.count() if col is not None else 0

    # -- accurate (stage 2) vectors ----------------------------------------------------------------------

    @_wrap("listing passages without accurate vectors")
    def pending_accurate(self) -> list[str]:
        col = self._collection("passages", create=False)
        if col is None:
            return []
        all_ids: list[str] = []
        for offset in range(0, col.count(), _PAGE):
            all_ids.extend(col.get(include=[], limit=_PAGE, offset=offset)["ids"])
        acc = self._collection("accurate", create=False)
        done: set[str] = set()
        if acc is not None:
            for offset in range(0, acc.count(), _PAGE):
                done.update(acc.get(include=[], limit=_PAGE, offset=offset)["ids"])
        return [i for i in all_ids if i not in done]

    @_wrap("writing accurate vectors")
    def add_accurate(self, passages: Sequence[StoredPassage], vectors: np.ndarray, embedder: str) -> None:
        passages_col = self._collection("passages", create=False)
        if passages_col is None or not passages:
            return
        self._reserve(2 * len(passages) * (16 * int(vectors.shape[1]) + 2048))
        col = self._collection("accurate", metadata={"embedder": embedder, "dim": int(vectors.shape[1])})
        # a passage may have been replaced since it was read: only keep vectors for passages still present
        present = set(passages_col.get(ids=[p.chunk_id for p in passages], include=[])["ids"])
        keep = [i for i, p in enumerate(passages) if p.chunk_id in present]
        if keep:
            col.upsert(ids=[passages[i].chunk_id for i in keep], embeddings=vectors[keep].tolist(),
                       metadatas=[{"article_id": passages[i].article_id} for i in keep])

    @_wrap("searching accurate vectors")
    def query_accurate(self, vector: np.ndarray, n: int) -> list[tuple[str, float]]:
        return self._query("accurate", vector, n)

    @_wrap("checking for accurate vectors")
    def has_accurate(self) -> bool:
        col = self._collection("accurate", create=False)
        return col is not None and bool(col.get(limit=1, include=[])["ids"])

    @_wrap("reading accurate vectors")
    def get_accurate_vectors(self, chunk_ids: Sequence[str]) -> dict[str, np.ndarray]:
        col = self._collection("accurate", create=False)
        if col is None or not chunk_ids:
            return {}
        got = col.get(ids=list(chunk_ids), include=["embeddings"])
        return {i: np.asarray(v, dtype=np.float32) for i, v in zip(got["ids"], got["embeddings"])}

    @_wrap("reading passage vectors")
    def get_passage_vectors(self, chunk_ids: Sequence[str]) -> dict[str, np.ndarray]:
        col = self._collection("passages", create=False)
        if col is None or not chunk_ids:
            return {}
        got = col.get(ids=list(chunk_ids), include=["embeddings"])
        return {i: np.asarray(v, dtype=np.float32) for i, v in zip(got["ids"], got["embeddings"])}
