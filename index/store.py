"""The Chroma store: the only module that imports chromadb.

Four collections per index name (``NEWSDESK_COLLECTION``, default ``newsdesk``):

- ``<name>-passages``: one record per passage, written through llama-index's ``ChromaVectorStore`` as
  ``TextNode``s with the stage-1 vector; id ``<article_id>#<n>``; the collection's metadata records the
  embedder and dimension that built it.
- ``<name>-accurate``: stage-2 vectors (e5) for the same passage ids; a passage without one is "pending".
- ``<name>-articles``: the article registry (title, outlet, date, url, content hash, chunk count, where it
  came from). Chroma needs a vector per record: these carry a constant 1-d one and are never queried. The
  collection's metadata holds a ``generation`` token, replaced after every change of the articles, so that a
  reader (the searcher's lexical index, possibly in another process) can tell cheaply whether anything
  changed.
- ``<name>-texts``: each article's whole text (what quotes are checked against), as metadata of a record
  with the article's id and a constant vector. Not a Chroma document: Chroma builds a full-text index of
  every document, which cost 0.28 s per 200 articles (of a 0.46 s write) and holds the GIL while it does,
  stalling the encoders; and not in the registry, which is read whole on every run. Stores written before
  this collection existed keep the text as the registry record's document, which is read as a fallback.

Writing an article is ordered so that a crash at any point loses nothing already indexed and a re-run repairs
it: first its registry record is removed, then its old passages and accurate vectors, then the new passages
are added, and the registry record (with the content hash) is written last. An article whose record is
missing or whose hash differs is simply indexed again, and deleting by article id first means no duplicates.
"""

from __future__ import annotations

import inspect
import logging
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np  # before chromadb: avoids a circular-import crash when threads are involved
import chromadb
from chromadb.config import Settings as ChromaSettings
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.vector_stores.chroma import ChromaVectorStore

from .chunking import VERSION as CHUNKER_VERSION
from .errors import EmbedderMismatchError, StoreError
from .settings import Settings
from .types import Article, Chunk

log = logging.getLogger(__name__)

_COSINE = {"hnsw": {"space": "cosine"}}
_PAGE = 2000
_IN_BATCH = 500  # ids per `$in` filter


@dataclass
class StoredPassage:
    chunk_id: str
    article_id: str
    text: str
    start: int
    end: int
    score: float = 0.0  # cosine similarity, for query results


def chunker_version(record: dict) -> int:
    """The chunker version an article's registry record was written with (records from before the version
    was kept: 1, the chunker they were all cut by)."""
    return int(record.get("chunker", 1))


def _wrap(action: str):
    """Decorator: turn any chromadb/transport failure into a one-line StoreError (for generators too)."""

    def translate(self, exc: Exception) -> StoreError:
        if isinstance(exc, (ValueError, TypeError)):
            return StoreError(f"the index store failed while {action} ({type(exc).__name__})")
        # chromadb raises many unrelated types (httpx, grpc, sqlite…)
        return StoreError(f"the index store failed while {action}: is {self.label} reachable?")

    def deco(fn):
        if inspect.isgeneratorfunction(fn):
            def inner(self, *args, **kwargs):
                try:
                    yield from fn(self, *args, **kwargs)
                except StoreError:
                    raise
                except Exception as exc:
                    raise translate(self, exc) from exc
        else:
            def inner(self, *args, **kwargs):
                try:
                    return fn(self, *args, **kwargs)
                except StoreError:
                    raise
                except Exception as exc:
                    raise translate(self, exc) from exc

        inner.__name__ = fn.__name__
        inner.__doc__ = fn.__doc__
        return inner

    return deco


class Store:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.label = settings.store_label
        name = settings.collection
        self._names = {k: f"{name}-{k}" for k in ("passages", "accurate", "articles", "texts")}
        chroma_settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
        try:
            if settings.chroma_host:
                self.client = chromadb.HttpClient(host=settings.chroma_host, port=settings.chroma_port,
                                                  settings=chroma_settings)
                self.client.heartbeat()
            else:
                settings.home.mkdir(parents=True, exist_ok=True)
                self.client = chromadb.PersistentClient(path=str(settings.home / "chroma"),
                                                        settings=chroma_settings)
        except Exception as exc:
            raise StoreError(f"cannot open the index store ({self.label})") from exc
        self._collections: dict = {}

    # -- collections -------------------------------------------------------------------------------------

    def _collection(self, kind: str, create: bool = True, metadata: dict | None = None):
        if kind in self._collections:
            return self._collections[kind]
        name = self._names[kind]
        if create:
            col = self.client.get_or_create_collection(name, configuration=_COSINE, metadata=metadata,
                                                       embedding_function=None)
        else:
            try:
                col = self.client.get_collection(name, embedding_function=None)
            except Exception:  # NotFoundError in embedded mode, a 404 wrapped differently over HTTP
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

    def _vector_store(self) -> ChromaVectorStore:
        return ChromaVectorStore(chroma_collection=self._collection("passages"))

    @_wrap("deleting the index")
    def drop_all(self) -> None:
        for kind, name in self._names.items():
            try:
                self.client.delete_collection(name)
            except Exception:
                pass  # did not exist
            self._collections.pop(kind, None)

    # -- articles ----------------------------------------------------------------------------------------

    @_wrap("reading the index generation")
    def generation(self) -> str:
        """A token that changes whenever an article is written or removed, or the index is rebuilt (read fresh
        from the store every time: another process may have written)."""
        try:
            col = self.client.get_collection(self._names["articles"], embedding_function=None)
        except Exception:  # no articles collection (yet): an empty index
            return ""
        if self._collections.get("articles") is not None and self._collections["articles"].id != col.id:
            self._collections.clear()  # rebuilt by another process: our collection handles are stale
        return f"{col.id}:{(col.metadata or {}).get('generation', '')}"

    @_wrap("listing collections")
    def collection_ids(self) -> set[str]:
        """The ids of every collection in the store (of any index name)."""
        return {str(c.id) for c in self.client.list_collections()}

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

    @_wrap("writing an article")
    def write_article(self, article: Article, chunks: Sequence[Chunk], vectors: np.ndarray,
                      embedder: str, dim: int) -> None:
        self.write_articles([(article, chunks, vectors)], embedder, dim)

    @_wrap("writing articles")
    def write_articles(self, items: Sequence[tuple[Article, Sequence[Chunk], np.ndarray]], embedder: str,
                       dim: int) -> None:
        """Write several articles with one call per step (each Chroma write has a fixed cost), in the same
        crash-safe order as for one: registry records removed, old passages and accurate vectors removed, new
        passages added, registry records written last."""
        if not items:
            return
        self.check_embedder(embedder, dim, create=True)
        self._delete_articles([article.id for article, _, _ in items])
        nodes = []
        for article, chunks, vectors in items:
            for chunk, vector in zip(chunks, vectors, strict=True):
                nodes.append(TextNode(
                    id_=chunk.id, text=chunk.text, start_char_idx=chunk.start, end_char_idx=chunk.end,
                    metadata={"article_id": article.id, "chunk_index": chunk.index},
                    relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=article.id)},
                    embedding=vector.tolist(),
                ))
        if nodes:
            self._vector_store().add(nodes)
        records = [{
            "title": article.title or "", "source": article.source or "",
            "published": article.published or "", "url": article.url or "", "lang": article.lang or "",
            "origin": article.origin or "",
            "root": article.root or "", "hash": article.content_hash, "chunks": len(chunks),
            "chunker": CHUNKER_VERSION,
            "text_chars": len(article.text),
        } for article, chunks, _ in items]
        ids = [article.id for article, _, _ in items]
        self._collection("texts").upsert(ids=ids, embeddings=[[1.0]] * len(items),
                                         metadatas=[{"text": article.text} for article, _, _ in items])
        self._collection("articles").upsert(ids=ids, embeddings=[[1.0]] * len(items), metadatas=records)
        self._bump_generation()

    def _delete_articles(self, article_ids: Sequence[str]) -> None:
        ids = list(article_ids)
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

    @staticmethod
    def _passage(chunk_id: str, text: str, meta: dict, score: float = 0.0) -> StoredPassage:
        start = int(meta.get("start", meta.get("start_char_idx", 0)) or 0)
        node_content = meta.get("_node_content")
        if node_content:
            import json

            info = json.loads(node_content)
            start = int(info.get("start_char_idx") or 0)
        return StoredPassage(chunk_id=chunk_id, article_id=str(meta.get("article_id", "")), text=text or "",
                             start=start, end=start + len(text or ""), score=score)

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
        if not chunk_ids:
            return {}
        got = self._collection("passages").get(ids=list(chunk_ids), include=["documents", "metadatas"])
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
            for passage, _ in self.iter_passages():
                if passage.article_id in wanted:
                    yield passage.chunk_id, passage.article_id, passage.text
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
        col = self._collection("accurate", metadata={"embedder": embedder, "dim": int(vectors.shape[1])})
        # a passage may have been replaced since it was read: only keep vectors for passages still present
        present = set(self._collection("passages").get(ids=[p.chunk_id for p in passages], include=[])["ids"])
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
        if not chunk_ids:
            return {}
        got = self._collection("passages").get(ids=list(chunk_ids), include=["embeddings"])
        return {i: np.asarray(v, dtype=np.float32) for i, v in zip(got["ids"], got["embeddings"])}
