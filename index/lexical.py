"""BM25 over the passages, with Snowball stemming for Arabic and English.

Lexical matching is strong when the question and the article share a language and useless across
languages, so the searcher only weighs it in when they do (see ``script_of``).

The index is kept per article: it remembers the content hash of every article it holds, so bringing it up to
date after a change re-tokenises only the articles that were added or changed (``BM25.updated``), and it is
saved next to the store (``save``/``load``) so that a new process starts from it instead of re-reading and
re-tokenising every passage. Postings are flat numpy arrays (compressed sparse rows), about 25 bytes per
(passage, distinct term) pair: ~170 MB at 100k passages of news text.
"""

from __future__ import annotations

import glob
import json
import logging
import lzma
import math
import os
import re
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import snowballstemmer  # uses the C stemmers of PyStemmer when it is installed (a dependency)

from .textnorm import normalize

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"\w+", re.UNICODE)
_ARABIC = re.compile(r"[\u0600-\u06ff]")
_STEMMERS = {"ar": snowballstemmer.stemmer("arabic"), "en": snowballstemmer.stemmer("english")}
_STEM_LOCK = threading.Lock()  # stemmer objects keep state between calls: one caller at a time
_STEMS: dict[str, str] = {}  # token -> stem; the vocabulary is far smaller than the token count
_STEMS_MAX = 2_000_000
_STEMS_KEEP = 100_000
_STOP = {
    "the", "a", "an", "of", "in", "on", "at", "to", "and", "or", "is", "are", "was", "were", "be", "by",
    "for", "with", "as", "that", "this", "it", "its", "from", "what", "which", "who", "whom", "when", "where",
    "why", "how", "did", "do", "does", "many", "much", "there", "their", "his", "her", "they", "he", "she",
    "في", "من", "على", "الى", "إلى", "عن", "ما", "ماذا", "هل", "كم", "التي", "الذي", "هو", "هي", "و", "او",
    "أو", "ان", "أن", "إن", "كان", "كانت", "مع", "هذا", "هذه", "ذلك", "تلك",
}
FORMAT = 2  # bump when tokenising or the file layout changes: older files are then ignored


def script_of(text: str) -> str:
    """'ar' when most letters are Arabic script, else 'latin'."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return "latin"
    arabic = sum(1 for c in letters if _ARABIC.match(c))
    return "ar" if arabic * 2 >= len(letters) else "latin"


def _stem(token: str) -> str:
    stem = _STEMS.get(token)
    if stem is None:
        with _STEM_LOCK:
            stem = _STEMMERS["ar" if _ARABIC.match(token) else "en"].stemWord(token)
        if len(_STEMS) < _STEMS_MAX:
            _STEMS[token] = stem
    return stem


def tokenize(text: str) -> list[str]:
    return [_stem(tok) for tok in _TOKEN.findall(normalize(text).lower()) if tok not in _STOP]


Doc = tuple[str, str, str]  # (passage id, article id, text)


class BM25:
    """An immutable BM25 index: ``updated`` returns a new one, so searches can keep using the old one while a
    new one is built."""

    def __init__(self, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.vocab: dict[str, int] = {}
        self.ids: list[str] = []
        self.doc_articles: list[str] = []
        self.articles: dict[str, str] = {}  # article id -> content hash of what is indexed
        self.tag = ""  # what the index was built from (the store's generation), for the owner's bookkeeping
        self._positions: dict[str, int] = {}
        self._scripts = np.zeros(0, dtype=np.uint8)  # 1 = Arabic script
        # per passage: its distinct terms and their frequencies (rows of a CSR matrix)
        self._doc_ptr = np.zeros(1, dtype=np.int64)
        self._doc_terms = np.zeros(0, dtype=np.int32)
        self._doc_tfs = np.zeros(0, dtype=np.uint16)
        # per term: the passages that contain it (the same matrix, transposed)
        self._term_ptr = np.zeros(1, dtype=np.int64)
        self._post_docs = np.zeros(0, dtype=np.int32)
        self._post_tfs = np.zeros(0, dtype=np.float32)
        self._lengths = np.zeros(0, dtype=np.float32)
        self._avg = 1.0

    def __len__(self) -> int:
        return len(self.ids)

    # -- building ----------------------------------------------------------------------------------------

    def build(self, docs: Iterable[Doc], hashes: dict[str, str] | None = None) -> BM25:
        """Index ``docs``; ``hashes`` (article id -> content hash) is what ``updated`` compares against."""
        fresh = BM25(self.k1, self.b)
        fresh._assemble(fresh, np.zeros(0, dtype=bool), docs, hashes or {})  # from nothing: its own empty state
        return fresh

    def updated(self, hashes: dict[str, str], fetch: Callable[[list[str]], Iterable[Doc]]) -> BM25 | None:
        """A new index for the articles ``hashes`` (article id -> content hash), keeping this index's passages
        of unchanged articles and reading only the others' through ``fetch(article_ids)``. None when nothing
        changed."""
        stale = {a for a, h in self.articles.items() if hashes.get(a) != h}
        new = [a for a, h in hashes.items() if self.articles.get(a) != h]
        if not stale and not new:
            return None
        keep = np.fromiter((a not in stale for a in self.doc_articles), dtype=bool,
                           count=len(self.doc_articles))
        kept_hashes = {a: h for a, h in self.articles.items() if a not in stale}
        wanted = set(new)
        fresh = BM25(self.k1, self.b)
        fresh._assemble(self, keep, (d for d in fetch(new) if d[1] in wanted),
                        {**kept_hashes, **{a: hashes[a] for a in new}})
        return fresh

    def _assemble(self, base: BM25, keep: np.ndarray, docs: Iterable[Doc], hashes: dict[str, str]) -> None:
        vocab = dict(base.vocab)  # terms only ever get added: ids of kept postings stay valid
        ids = [i for i, k in zip(base.ids, keep) if k]
        doc_articles = [a for a, k in zip(base.doc_articles, keep) if k]
        lengths = np.diff(base._doc_ptr)
        entry_keep = np.repeat(keep, lengths) if len(keep) else np.zeros(0, dtype=bool)
        terms = [base._doc_terms[entry_keep]]
        tfs = [base._doc_tfs[entry_keep]]
        sizes = [lengths[keep]]
        scripts = [base._scripts[keep]]
        new_sizes, new_scripts, new_terms, new_tfs = [], [], [], []

        def flush() -> None:  # into numpy every few thousand passages: Python lists of ints are 8x larger
            terms.append(np.asarray(new_terms, dtype=np.int32))
            tfs.append(np.asarray(new_tfs, dtype=np.uint16))
            sizes.append(np.asarray(new_sizes, dtype=np.int64))
            scripts.append(np.asarray(new_scripts, dtype=np.uint8))
            for buffer in (new_sizes, new_scripts, new_terms, new_tfs):
                buffer.clear()

        seen = set(ids)
        for doc_id, article_id, text in docs:
            if doc_id in seen:
                continue
            seen.add(doc_id)
            counts: dict[int, int] = {}
            for token in tokenize(text):
                term = vocab.setdefault(token, len(vocab))
                counts[term] = counts.get(term, 0) + 1
            ids.append(doc_id)
            doc_articles.append(article_id)
            new_sizes.append(len(counts))
            new_scripts.append(script_of(text) == "ar")
            new_terms.extend(counts)
            new_tfs.extend(min(c, 65535) for c in counts.values())
            if len(new_sizes) >= 4096:
                flush()
        flush()
        if len(_STEMS) > _STEMS_KEEP:
            _STEMS.clear()  # a big build filled it: don't keep hundreds of thousands of stems for ever
        self._set(vocab, ids, doc_articles, hashes, np.concatenate(scripts),
                  np.concatenate([[0], np.cumsum(np.concatenate(sizes))]).astype(np.int64),
                  np.concatenate(terms), np.concatenate(tfs))

    def _set(self, vocab, ids, doc_articles, hashes, scripts, doc_ptr, doc_terms, doc_tfs) -> None:
        self.vocab, self.ids, self.doc_articles, self.articles = vocab, ids, doc_articles, hashes
        self._positions = {doc_id: i for i, doc_id in enumerate(ids)}
        self._scripts, self._doc_ptr, self._doc_terms, self._doc_tfs = scripts, doc_ptr, doc_terms, doc_tfs
        n_docs = len(ids)
        owners = np.repeat(np.arange(n_docs, dtype=np.int32), np.diff(doc_ptr))
        order = np.argsort(doc_terms, kind="stable")
        self._post_docs = owners[order]
        self._post_tfs = doc_tfs[order].astype(np.float32)
        self._term_ptr = np.zeros(len(vocab) + 1, dtype=np.int64)
        np.cumsum(np.bincount(doc_terms, minlength=len(vocab)), out=self._term_ptr[1:])
        self._lengths = np.zeros(n_docs, dtype=np.float32)
        np.add.at(self._lengths, owners, doc_tfs.astype(np.float32))
        self._avg = float(self._lengths.mean()) if n_docs and self._lengths.mean() > 0 else 1.0

    # -- searching ---------------------------------------------------------------------------------------

    def script(self, doc_id: str) -> str | None:
        """The script of an indexed passage, or None when it is not indexed."""
        idx = self._positions.get(doc_id)
        if idx is None:
            return None
        return "ar" if self._scripts[idx] else "latin"

    def top(self, query: str, n: int, script: str | None = None) -> list[tuple[str, float]]:
        """The ``n`` best passages for ``query`` (only those in ``script`` when given), best first."""
        n_docs = len(self.ids)
        if not n_docs:
            return []
        total = np.zeros(n_docs, dtype=np.float32)
        for token in set(tokenize(query)):
            term = self.vocab.get(token)
            if term is None:
                continue
            lo, hi = self._term_ptr[term], self._term_ptr[term + 1]
            if lo == hi:
                continue
            docs, tfs = self._post_docs[lo:hi], self._post_tfs[lo:hi]
            df = hi - lo
            idf = math.log(1 + (n_docs - df + 0.5) / (df + 0.5))
            denom = tfs + self.k1 * (1 - self.b + self.b * self._lengths[docs] / self._avg)
            total[docs] += idf * tfs * (self.k1 + 1) / denom
        if script is not None:
            total[self._scripts != (1 if script == "ar" else 0)] = 0.0
        hit = np.flatnonzero(total)
        if len(hit) > n:
            hit = hit[np.argpartition(-total[hit], n - 1)[:n]]
        hit = hit[np.argsort(-total[hit], kind="stable")]
        return [(self.ids[i], float(total[i])) for i in hit]

    # -- persistence -------------------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write atomically (a temporary file, flushed to disk, renamed over the old one): a reader never sees
        half a file, and a crash or power cut mid-save leaves the previous file. Temporary files left by
        processes that died mid-save are removed."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        header = {"format": FORMAT, "k1": self.k1, "b": self.b, "tag": self.tag, "articles": self.articles}
        try:
            with open(tmp, "wb") as fh:
                np.savez(fh, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
                         vocab=_joined(sorted(self.vocab, key=self.vocab.__getitem__)),
                         ids=_joined(self.ids), doc_articles=_joined(self.doc_articles),
                         scripts=self._scripts,
                         doc_ptr=self._doc_ptr, doc_terms=self._doc_terms, doc_tfs=self._doc_tfs)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        _remove_stale_temporaries(path)

    @staticmethod
    def saved_tag(path: Path) -> str | None:
        """The tag of the index saved at ``path`` (its header only), or None."""
        try:
            with np.load(path, allow_pickle=False) as data:
                header = _header(data)
                return header.get("tag", "") if header is not None else None
        except _DAMAGED:
            return None

    @classmethod
    def load(cls, path: Path) -> BM25 | None:
        """The index saved at ``path``; None when there is none, it is of another format, or it is damaged
        (truncated, emptied, bit flips, not a zip at all: logged once, as a warning, and the caller rebuilds it
        from the store)."""
        try:
            with np.load(path, allow_pickle=False) as data:
                header = _header(data)
                if header is None:
                    return None
                out = cls(float(header["k1"]), float(header["b"]))
                out.tag = str(header.get("tag", ""))
                vocab, ids, doc_articles = _split(data["vocab"]), _split(data["ids"]), _split(data["doc_articles"])
                arrays = [data[name] for name in ("scripts", "doc_ptr", "doc_terms", "doc_tfs")]
                _check_consistent(len(vocab), len(ids), len(doc_articles), *arrays)
                out._set({t: i for i, t in enumerate(vocab)}, ids, doc_articles, dict(header["articles"]), *arrays)
                return out
        except FileNotFoundError:
            return None
        except _DAMAGED as exc:
            log.warning("the saved lexical index %s is damaged (%s): rebuilding it from the store",
                        path, type(exc).__name__)
            return None


# What loading a missing, unreadable or damaged file raises: OSError (cannot read; bz2's bad data), EOFError and
# BadZipFile (truncated or emptied; bad CRC: a bit flip in the data), RuntimeError (zipfile's "encrypted" and
# NotImplementedError "compression method": a flipped flag), zlib/lzma errors (a flipped compression method),
# ValueError (not a zip, nor an .npy: numpy refuses to unpickle; bad UTF-8 or JSON; an inconsistent layout),
# KeyError (a member missing), TypeError (a header field of the wrong type).
_DAMAGED = (OSError, EOFError, zipfile.BadZipFile, RuntimeError, zlib.error, lzma.LZMAError, ValueError, KeyError,
            TypeError)


def _check_consistent(n_terms: int, n_ids: int, n_articles: int, scripts: np.ndarray, doc_ptr: np.ndarray,
                      doc_terms: np.ndarray, doc_tfs: np.ndarray) -> None:
    """Raise ValueError unless the saved arrays fit together (a file that unzips but cannot be a saved index)."""
    ok = (n_articles == n_ids and scripts.shape == (n_ids,) and doc_ptr.shape == (n_ids + 1,)
          and doc_ptr.dtype == np.int64 and doc_terms.dtype == np.int32 and doc_tfs.dtype == np.uint16
          and doc_terms.shape == doc_tfs.shape == (int(doc_ptr[-1]),) and int(doc_ptr[0]) == 0
          and bool(np.all(np.diff(doc_ptr) >= 0))
          and (not len(doc_terms) or (int(doc_terms.min()) >= 0 and int(doc_terms.max()) < n_terms)))
    if not ok:
        raise ValueError("inconsistent saved lexical index")


def _remove_stale_temporaries(path: Path) -> None:
    """Delete the temporary files of saves of ``path`` whose process is gone (killed mid-save)."""
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:].split(".")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _header(data) -> dict | None:
    """The header of a saved index, or None when it was saved in another format."""
    header = json.loads(data["header"].tobytes().decode())
    if not isinstance(header, dict):
        raise ValueError("the header of a saved lexical index is not an object")
    return header if header.get("format") == FORMAT else None


_SEP = "\x00"


def _joined(items: list[str]) -> np.ndarray:
    return np.frombuffer(_SEP.join(items).encode(), dtype=np.uint8)


def _split(array: np.ndarray) -> list[str]:
    text = array.tobytes().decode()
    return text.split(_SEP) if text else []
