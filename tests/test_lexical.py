"""The lexical (BM25) index: kept up to date article by article, saved next to the store, and brought up to
date in a running searcher when another process changes the articles."""

import time

import pytest

from newsdesk.index.lexical import BM25
from newsdesk.index.service import Index
from tests.conftest import make_settings, run_cli, run_cli_process

DOCS = {
    "volcano": [("volcano#0", "The Fagradalsfjall volcano erupted near Grindavik on Tuesday."),
                ("volcano#1", "Lava flowed for three kilometres towards the town.")],
    "chess": [("chess#0", "The chess final in Madrid ended in a draw after ninety-four moves.")],
    "port": [("port#0", "انفجار ضخم في مرفأ بيروت يدمر أحياء كاملة من المدينة.")],
}


def _docs(articles: dict) -> list[tuple[str, str, str]]:
    return [(pid, article, text) for article, passages in articles.items() for pid, text in passages]


def test_update_reads_only_changed_articles_and_equals_a_fresh_build():
    first = BM25().build(_docs(DOCS), {a: "h1" for a in DOCS})
    assert first.top("Madrid chess", 3)[0][0] == "chess#0"

    changed = {**DOCS, "chess": [("chess#0", "The chess final in Lisbon was won by the challenger.")],
               "flood": [("flood#0", "Floods in Valencia closed the Madrid railway line.")]}
    del changed["volcano"]
    hashes = {"chess": "h2", "flood": "h1", "port": "h1"}
    asked = []

    def fetch(article_ids):
        asked.append(sorted(article_ids))
        return [d for d in _docs(changed) if d[1] in article_ids]

    updated = first.updated(hashes, fetch)
    assert asked == [["chess", "flood"]]  # unchanged "port" was not read again; "volcano" was dropped
    fresh = BM25().build(_docs(changed), hashes)
    for query in ("Madrid", "Lisbon chess", "volcano lava", "مرفأ بيروت"):
        assert [c for c, _ in updated.top(query, 5)] == [c for c, _ in fresh.top(query, 5)], query
    assert [c for c, _ in updated.top("Madrid", 5)] == ["flood#0"]  # the old chess text is gone
    assert updated.top("volcano lava", 5) == []
    assert first.updated(hashes, fetch) is not None and updated.updated(hashes, fetch) is None  # no change


def test_top_keeps_to_the_languages_asked_and_n():
    index = BM25().build(_docs(DOCS))
    assert [c for c, _ in index.top("بيروت", 5, languages={"ar"})] == ["port#0"]
    assert index.top("بيروت", 5, languages={"en"}) == []
    assert len(index.top("the town volcano chess lava", 2)) == 2


def test_saved_index_round_trip_and_a_damaged_file_is_ignored(tmp_path):
    index = BM25().build(_docs(DOCS), {a: "h" for a in DOCS})
    index.tag = "collection:1"
    path = tmp_path / "lexical" / "x.npz"
    index.save(path)
    loaded = BM25.load(path)
    assert loaded.tag == "collection:1" and loaded.articles == index.articles
    assert loaded.top("lava town", 5) == index.top("lava town", 5)
    path.write_bytes(b"not an index")
    assert BM25.load(path) is None
    assert BM25.load(tmp_path / "missing.npz") is None


@pytest.fixture
def english_articles(tmp_path):
    folder = tmp_path / "articles"
    folder.mkdir()
    (folder / "chess.txt").write_text("Chess final ends in a draw\n\nThe world chess championship final in Madrid "
                                      "ended in a draw after ninety-four moves.\n", encoding="utf-8")
    return folder


def test_a_running_searcher_follows_another_process_changes(tmp_path, english_articles):
    home = tmp_path / "home"
    run_cli("index", "--fast", str(english_articles), home=home, check=True)
    index = Index(make_settings(home))
    assert index.search("chess final", 1)[0].article_id == "chess"
    assert index.searcher.lexical.top("Zanzibar", 5) == []

    (english_articles / "chess.txt").write_text(
        "Chess final moves to Zanzibar\n\nThe chess championship final will be replayed in Zanzibar in May, "
        "the federation said.\n", encoding="utf-8")
    run_cli_process("index", "--fast", str(english_articles), home=home, check=True)  # another process
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not index.searcher.lexical.top("Zanzibar", 5):
        index.search("chess", 1)  # a search notices the change; the update runs in the background
        time.sleep(0.2)
    assert [c.partition("@")[0] for c, _ in index.searcher.lexical.top("Zanzibar", 5)] == ["chess#0"]  # (its version)
    assert index.searcher.lexical.top("Madrid", 5) == []  # the replaced text no longer matches

    # a new process starts from the saved index, already up to date
    files = list(make_settings(home).lexical_dir.glob("*.npz"))
    assert len(files) == 1
    saved = BM25.load(files[0])
    assert saved is not None and [c.partition("@")[0] for c, _ in saved.top("Zanzibar", 5)] == ["chess#0"]
