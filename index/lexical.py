"""BM25 over the passages, in every language: words segmented per script, Snowball-stemmed and stop words
removed per language, and each passage's language kept with it.

Lexical matching is strong when the question and the article share a language and useless across
languages: each passage's language (``language.passage_language``, detected once when it is indexed, or read
from the store) is kept, so that the searcher can restrict BM25 to the question's language
(``top(..., languages=...)``) and ask any passage's language (``BM25.language``). A passage in language L is
scored with the question's words read as L (its stemmer, its stop words), so a short question whose language
cannot be told ("chess final") still matches the words of passages in every language.

The index is kept per article: it remembers the content hash of every article it holds, so bringing it up to
date after a change re-tokenises only the articles that were added or changed (``BM25.updated``), and it is
saved next to the store (``save``/``load``) so that a new process starts from it instead of re-reading and
re-tokenising every passage. Postings are flat numpy arrays (compressed sparse rows), about 25 bytes per
(passage, distinct term) pair: ~170 MB at 100k passages of news text.
"""

from __future__ import annotations

import functools
import glob
import json
import logging
import lzma
import math
import os
import re
import threading
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import snowballstemmer  # uses the C stemmers of PyStemmer when it is installed (a dependency)

from .language import UNDETERMINED, char_script as _char_script, passage_language
from .textnorm import normalize

log = logging.getLogger(__name__)

FORMAT = 3  # bump when tokenising or the file layout changes: older files are then ignored (and rebuilt)
_ARABIC = re.compile(r"[\u0600-\u06ff]")


def script_of(text: str) -> str:
    """'ar' when most letters are Arabic script, else 'latin' (for its callers; ``language.script`` says more)."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return "latin"
    arabic = sum(1 for c in letters if _ARABIC.match(c))
    return "ar" if arabic * 2 >= len(letters) else "latin"


# -- words ------------------------------------------------------------------------------------------------
#
# A word is a run of letters, digits and combining marks: a vowel sign or virama (Devanagari, Thai, …) stays
# with its base letter, where ``\w+`` would cut "भाषाएँ" into four pieces. Runs in scripts written without
# spaces between words (Chinese, Japanese, Thai, Lao, Khmer, Myanmar) are cut into words by ICU's word break
# iterator (dictionary based); when icu4py cannot be imported, into overlapping pairs of characters (grapheme
# clusters for Thai and the like), the usual fallback.


def _char_class(first: int, last: int, category: str) -> str:
    """A regular expression character class body of the code points in [first, last] of ``category``*."""
    cps = [cp for cp in range(first, last + 1) if unicodedata.category(chr(cp)).startswith(category)]
    spans: list[list[int]] = []
    for cp in cps:
        if spans and spans[-1][1] == cp - 1:
            spans[-1][1] = cp
        else:
            spans.append([cp, cp])
    return "".join(f"\\u{a:04x}" if a == b else f"\\u{a:04x}-\\u{b:04x}" for a, b in spans)


_MARKS = _char_class(0x0300, 0xFFFF, "M")  # combining marks of the BMP (~1,300 code points in ~190 ranges)
_WORD = re.compile(rf"(?:\w|[{_MARKS}])+")
_CLUSTER = re.compile(rf".[{_MARKS}]*", re.DOTALL)
# scripts written without spaces between words: Thai, Lao, Myanmar, Khmer, kana, Chinese characters
_UNSPACED = re.compile("[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf"
                       "\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]")
_TURKIC_CAPITALS = str.maketrans({"I": "ı", "İ": "i"})  # Turkish and Azerbaijani dotless and dotted i
_DOTTED_CAPITAL = str.maketrans({"İ": "i"})  # lower() makes "i" + a combining dot of it

try:
    from icu4py.breakers import WordBreaker
except ImportError:  # pragma: no cover - icu4py ships wheels for the usual platforms
    WordBreaker = None


def _segment(run: str) -> list[str]:
    """The words of a run of letters written without spaces."""
    if WordBreaker is not None:
        return [word for word in WordBreaker(run, "root") if not word.isspace()]
    clusters = _CLUSTER.findall(run)
    if len(clusters) < 2:
        return clusters
    return [a + b for a, b in zip(clusters, clusters[1:])]


def words(text: str, lang: str | None = None) -> list[str]:
    """The words of ``text`` after ``normalize`` and lower-casing (Turkish i rules for tr/az), unstemmed."""
    text = normalize(text)
    if lang in ("tr", "az"):
        text = text.translate(_TURKIC_CAPITALS)
    elif "İ" in text:
        text = text.translate(_DOTTED_CAPITAL)
    runs = _WORD.findall(text.lower())
    if not _UNSPACED.search(text):
        return runs
    out: list[str] = []
    for run in runs:
        if _UNSPACED.search(run):
            out.extend(_segment(run))
        else:
            out.append(run)
    return out


# -- stemming and stop words ------------------------------------------------------------------------------

# ISO 639-1 code -> Snowball algorithm (PyStemmer's C stemmers), for the languages that have one
_SNOWBALL = {
    "ar": "arabic", "hy": "armenian", "eu": "basque", "ca": "catalan", "cs": "czech", "da": "danish", "nl": "dutch",
    "en": "english", "eo": "esperanto", "et": "estonian", "fi": "finnish", "fr": "french", "de": "german",
    "el": "greek", "hi": "hindi", "hu": "hungarian", "id": "indonesian", "ga": "irish", "it": "italian",
    "lt": "lithuanian", "ne": "nepali", "no": "norwegian", "fa": "persian", "pl": "polish", "pt": "portuguese",
    "ro": "romanian", "ru": "russian", "sr": "serbian", "es": "spanish", "sv": "swedish", "ta": "tamil",
    "tr": "turkish", "yi": "yiddish",
}
STEMMED_LANGUAGES = frozenset(code for code, name in _SNOWBALL.items() if name in snowballstemmer.algorithms())
# without a language (``tokenize(text)``): each word is stemmed as the main language of its script
_SCRIPT_LANGUAGE = {"Latn": "en", "Arab": "ar", "Cyrl": "ru", "Grek": "el", "Deva": "hi", "Armn": "hy", "Taml": "ta"}
_STEMMERS: dict[str, object] = {}
_STEM_LOCK = threading.Lock()  # stemmer objects keep state between calls: one caller at a time
_STEMS: dict[str, dict[str, str]] = {}  # language -> token -> stem; a vocabulary is far smaller than its text
_STEMS_MAX = 2_000_000
_STEMS_KEEP = 100_000
_STOP: dict[str | None, frozenset[str]] = {}


def _stemmer(lang: str):
    stemmer = _STEMMERS.get(lang)
    if stemmer is None:
        stemmer = _STEMMERS.setdefault(lang, snowballstemmer.stemmer(_SNOWBALL[lang]))
    return stemmer


def _stem(token: str, lang: str) -> str:
    cache = _STEMS.get(lang)
    if cache is None:
        cache = _STEMS.setdefault(lang, {})
    stem = cache.get(token)
    if stem is None:
        stemmer = _stemmer(lang)
        with _STEM_LOCK:
            stem = stemmer.stemWord(token)
        if len(cache) < _STEMS_MAX:
            cache[token] = stem
    return stem


def _stems(tokens: list[str], lang: str, stop: frozenset[str]) -> list[str]:
    """The stems of ``tokens`` that are not stop words (the stems known already are looked up in one pass)."""
    cache = _STEMS.get(lang) or {}
    return [cache.get(w) or _stem(w, lang) for w in tokens if w not in stop]


def stop_words(lang: str | None) -> frozenset[str]:
    """The stop words of ``lang`` (``stopwords.json`` beside this module: function words only, compared as
    ``words`` gives them); with no language, those of the main language of every script."""
    stop = _STOP.get(lang)
    if stop is None:
        lists = _stop_lists()
        langs = set(_SCRIPT_LANGUAGE.values()) if lang is None else {lang}
        stop = _STOP.setdefault(lang, frozenset(
            w for code in langs for word in lists.get(code, "").split() for w in words(word, lang)))
    return stop


@functools.lru_cache(maxsize=1)
def _stop_lists() -> dict[str, str]:
    """Language -> its stop words, separated by spaces. Lists of maintained packages (stopwords-iso, stop-words)
    were tried: they hold content words that news needs ("москва", "world", "million", "research")."""
    with open(Path(__file__).with_name("stopwords.json"), encoding="utf-8") as fh:
        return {code: text for code, text in json.load(fh).items() if not code.startswith("_")}


def tokenize(text: str, lang: str | None = None) -> list[str]:
    """The terms of ``text`` read as language ``lang`` (an ISO 639-1 code): its words without its stop words,
    stemmed by its Snowball stemmer when it has one. Without ``lang`` each word is stemmed as the main language
    of its script (Latin as English, Arabic as Arabic, Cyrillic as Russian, …)."""
    stop = stop_words(lang)
    if lang is not None:
        if lang not in STEMMED_LANGUAGES:
            return [w for w in words(text, lang) if w not in stop]
        return _stems(words(text, lang), lang, stop)
    out = []
    for word in words(text):
        if word in stop:
            continue
        by = _SCRIPT_LANGUAGE.get(script_of_word(word))
        out.append(_stem(word, by) if by in STEMMED_LANGUAGES else word)
    return out


def script_of_word(word: str) -> str:
    """The script of a word's first letter ("Zyyy" when it has none)."""
    for ch in word:
        name = _char_script(ch)
        if name is not None:
            return name
    return "Zyyy"


Doc = tuple[str, ...]  # (passage id, article id, text) or (…, language): "" or none: detected when it is added


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
        self._langs = np.zeros(0, dtype=np.uint8)  # per passage: its language, an index into _lang_names
        self._lang_names: list[str] = []
        self._present: list[int] = []  # the codes of the languages some passage is in
        self._masks: dict[tuple[int, ...], np.ndarray] = {}  # languages -> which passages are in them
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
        langs = [base._langs[keep]]
        lang_names = list(base._lang_names)  # names only ever get added: codes of kept passages stay valid
        lang_codes = {name: i for i, name in enumerate(lang_names)}
        new_sizes, new_langs, new_terms, new_tfs = [], [], [], []

        def flush() -> None:  # into numpy every few thousand passages: Python lists of ints are 8x larger
            terms.append(np.asarray(new_terms, dtype=np.int32))
            tfs.append(np.asarray(new_tfs, dtype=np.uint16))
            sizes.append(np.asarray(new_sizes, dtype=np.int64))
            langs.append(np.asarray(new_langs, dtype=np.uint8))
            for buffer in (new_sizes, new_langs, new_terms, new_tfs):
                buffer.clear()

        seen = set(ids)
        for doc in docs:
            doc_id, article_id, text = doc[0], doc[1], doc[2]
            if doc_id in seen:
                continue
            seen.add(doc_id)
            lang = (doc[3] if len(doc) > 3 else "") or passage_language(text)
            code = lang_codes.get(lang)
            if code is None:
                if len(lang_names) > 255:  # (py3langid knows 97 languages)
                    raise ValueError("more than 256 languages in one lexical index")
                code = lang_codes[lang] = len(lang_names)
                lang_names.append(lang)
            counts: dict[int, int] = {}
            for token in tokenize(text, None if lang == UNDETERMINED else lang):
                term = vocab.setdefault(token, len(vocab))
                counts[term] = counts.get(term, 0) + 1
            ids.append(doc_id)
            doc_articles.append(article_id)
            new_sizes.append(len(counts))
            new_langs.append(code)
            new_terms.extend(counts)
            new_tfs.extend(min(c, 65535) for c in counts.values())
            if len(new_sizes) >= 4096:
                flush()
        flush()
        if sum(len(cache) for cache in _STEMS.values()) > _STEMS_KEEP:
            _STEMS.clear()  # a big build filled it: don't keep hundreds of thousands of stems for ever
        self._set(vocab, ids, doc_articles, hashes, lang_names, np.concatenate(langs),
                  np.concatenate([[0], np.cumsum(np.concatenate(sizes))]).astype(np.int64),
                  np.concatenate(terms), np.concatenate(tfs))

    def _set(self, vocab, ids, doc_articles, hashes, lang_names, langs, doc_ptr, doc_terms, doc_tfs) -> None:
        self.vocab, self.ids, self.doc_articles, self.articles = vocab, ids, doc_articles, hashes
        self._positions = {doc_id: i for i, doc_id in enumerate(ids)}
        self._lang_names, self._langs = lang_names, langs
        self._present = [int(c) for c in np.flatnonzero(np.bincount(langs, minlength=len(lang_names)))]
        self._masks: dict[tuple[int, ...], np.ndarray] = {}
        self._doc_ptr, self._doc_terms, self._doc_tfs = doc_ptr, doc_terms, doc_tfs
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

    def language(self, doc_id: str) -> str | None:
        """The language of an indexed passage (an ISO 639-1 code, "und" when it has no letters), or None when it
        is not indexed."""
        idx = self._positions.get(doc_id)
        return None if idx is None else self._lang_names[self._langs[idx]]

    def languages(self) -> dict[str, int]:
        """How many passages of each language the index holds."""
        counts = np.bincount(self._langs, minlength=len(self._lang_names))
        return {self._lang_names[c]: int(counts[c]) for c in self._present}

    def top(self, query: str, n: int, *, languages: set[str] | frozenset[str] | None = None,
            articles: set[str] | None = None) -> list[tuple[str, float]]:
        """The ``n`` best passages for ``query``, best first: only those in one of ``languages`` when given
        (ISO 639-1 codes, as ``language`` names them). The passages of each language are scored with the
        question's terms read as that language (its stemmer and stop words). ``articles``: only passages of
        these article ids."""
        n_docs = len(self.ids)
        wanted = [c for c in self._present if languages is None or self._lang_names[c] in languages]
        if not n_docs or not wanted:
            return []
        total = np.zeros(n_docs, dtype=np.float32)
        others = len(wanted) < len(self._present)  # passages of other languages are left out at the end
        for term, codes in self._query_terms(query, wanted).items():
            lo, hi = self._term_ptr[term], self._term_ptr[term + 1]
            if lo == hi:
                continue
            docs, tfs = self._post_docs[lo:hi], self._post_tfs[lo:hi]
            df = hi - lo
            idf = math.log(1 + (n_docs - df + 0.5) / (df + 0.5))
            if len(codes) < len(wanted):  # the question's term when read as some of the languages only
                keep = self._langs[docs] == codes[0] if len(codes) == 1 else np.isin(self._langs[docs], codes)
                docs, tfs = docs[keep], tfs[keep]
            denom = tfs + self.k1 * (1 - self.b + self.b * self._lengths[docs] / self._avg)
            total[docs] += idf * tfs * (self.k1 + 1) / denom
        if others:
            total[~self._mask(wanted)] = 0.0
        if articles is not None:  # only the passages of these articles (a date or outlet filter's)
            total[np.fromiter((a not in articles for a in self.doc_articles), dtype=bool,
                              count=len(self.doc_articles))] = 0.0
        hit = np.flatnonzero(total)
        if len(hit) > n:
            hit = hit[np.argpartition(-total[hit], n - 1)[:n]]
        hit = hit[np.argsort(-total[hit], kind="stable")]
        return [(self.ids[i], float(total[i])) for i in hit]

    def _mask(self, codes: list[int]) -> np.ndarray:
        """Per passage: whether it is in one of the languages ``codes`` (cached: the index never changes)."""
        key = tuple(codes)
        mask = self._masks.get(key)
        if mask is None:
            mask = np.isin(self._langs, codes)
            if len(self._masks) < 64:
                self._masks[key] = mask
        return mask

    def _query_terms(self, query: str, codes: list[int]) -> dict[int, list[int]]:
        """Term id -> the language codes (of ``codes``) whose reading of ``query`` has that term."""
        out: dict[int, list[int]] = {}
        for code in codes:
            name = self._lang_names[code]
            for token in set(tokenize(query, None if name == UNDETERMINED else name)):
                term = self.vocab.get(token)
                if term is not None:
                    out.setdefault(term, []).append(code)
        return out

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
                         lang_names=_joined(self._lang_names), langs=self._langs,
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
                lang_names = _split(data["lang_names"])
                arrays = [data[name] for name in ("langs", "doc_ptr", "doc_terms", "doc_tfs")]
                _check_consistent(len(vocab), len(ids), len(doc_articles), len(lang_names), *arrays)
                out._set({t: i for i, t in enumerate(vocab)}, ids, doc_articles, dict(header["articles"]), lang_names,
                         *arrays)
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


def _check_consistent(n_terms: int, n_ids: int, n_articles: int, n_langs: int, langs: np.ndarray,
                      doc_ptr: np.ndarray, doc_terms: np.ndarray, doc_tfs: np.ndarray) -> None:
    """Raise ValueError unless the saved arrays fit together (a file that unzips but cannot be a saved index)."""
    ok = (n_articles == n_ids and langs.shape == (n_ids,) and langs.dtype == np.uint8
          and (not n_ids or int(langs.max()) < n_langs) and doc_ptr.shape == (n_ids + 1,)
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
