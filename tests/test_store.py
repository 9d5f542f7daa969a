"""The Chroma store's boundaries, against a real embedded Chroma and a real `chroma run` server: which failures
become a one-line StoreError (a refused connection, a full disk) and which propagate (bugs), a missing
collection or home read as an empty index, read-only commands that create nothing, a bad collection name, and
passages written before their offsets were explicit metadata."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.vector_stores.chroma import ChromaVectorStore

from newsdesk.bot.cli import main
from newsdesk.index.chunking import VERSION as CHUNKER_VERSION, chunk_article
from newsdesk.index.errors import StoreError
from newsdesk.index.indexer import plan
from newsdesk.index.loaders import load_sources
from newsdesk.index.settings import Settings
from newsdesk.index.store import Store, passage_id, version_tag
from newsdesk.index.types import Article, IndexReport
from tests.conftest import EXAMPLE, run_cli
from tests.fake_openai import FakeOpenAI
from tests.support import ChromaServer

KARABAKH = "karabakh-2020-09-28"
PARAGRAPH = ("The council met on Monday to discuss the new bridge over the river, which has been closed to "
             "traffic since the floods of last spring.")


def settings_for(home: Path, **overrides) -> Settings:
    return replace(Settings.load(environ={}, env_file=None), home=home, **overrides)


def article(article_id: str, text: str) -> Article:
    return Article(article_id, text.split("\n", 1)[0], text)


def write(store: Store, *articles: Article, dim: int = 8) -> None:
    """Write ``articles`` through the store, with random vectors (what the vectors are does not matter here)."""
    rng = np.random.default_rng(0)
    items = []
    for a in articles:
        chunks = chunk_article(a.id, a.text)
        items.append((a, chunks, rng.random((len(chunks), dim), dtype=np.float32)))
    store.write_articles(items, "test-embedder", dim)


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """A process environment with nothing of the developer's newsdesk, OpenAI, Chroma or Telegram settings,
    and a scratch working directory (no .env)."""
    for name in list(os.environ):
        if name.startswith(("NEWSDESK_", "OPENAI_", "CHROMA_", "TELEGRAM_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


# ---- bugs propagate, failures we know say what happened -----------------------------------------------


def test_a_bug_propagates_as_itself_not_as_an_unreachable_store(tmp_path):
    store = Store(settings_for(tmp_path / "home"))
    write(store, article("a", f"Title\n\n{PARAGRAPH}"))
    with pytest.raises(AttributeError):  # our code: a str has no .tolist()
        store.query_passages("not a vector", 3)
    with pytest.raises(ValueError) as info:  # chromadb rejects the ids with a ValueError, not a Chroma error
        store.get_passages([1, 2])
    assert not isinstance(info.value, StoreError)
    assert store.count() == 1  # the store itself is fine


def test_a_stopped_server_asks_whether_it_is_reachable(tmp_path):
    with ChromaServer(tmp_path / "server", startup_timeout=60) as server:
        store = Store(settings_for(tmp_path / "home", chroma_host=server.host, chroma_port=server.port))
        write(store, article("a", f"Title\n\n{PARAGRAPH}"))
        assert list(store.articles()) == ["a"]
        server.stop()
        with pytest.raises(StoreError) as info:
            store.articles()
    message = str(info.value)
    assert message == (f"the index store failed while reading the article registry: is chroma server "
                       f"http://{server.host}:{server.port} reachable?")
    with pytest.raises(StoreError, match=r"^the index store failed while connecting: is chroma server .* reachable\?$"):
        Store(settings_for(tmp_path / "home", chroma_host=server.host, chroma_port=server.port))


def _reads_as_empty(store: Store) -> None:
    assert store.articles() == {} and store.article_meta(["a"]) == {} and store.article_hashes() == {}
    assert store.count() == store.count("accurate") == store.count("articles") == 0
    assert store.generation() == "" and store.embedder_info() is None
    assert store.get_passages(["a#0"]) == {} and list(store.iter_passages()) == []
    assert list(store.passages_of(["a"])) == [] and store.query_passages(np.ones(8, np.float32), 3) == []
    assert store.pending_accurate() == [] and not store.has_accurate()
    assert store.article_text("a") is None
    store.check_embedder("test-embedder", 8)
    store.drop_all()


def test_a_missing_collection_reads_as_empty_on_a_server(chroma_server, tmp_path):
    host, port = chroma_server
    written = Store(settings_for(tmp_path / "home", chroma_host=host, chroma_port=port))
    write(written, article("a", f"Title\n\n{PARAGRAPH}"))  # the server holds another index name
    _reads_as_empty(Store(settings_for(tmp_path / "home", chroma_host=host, chroma_port=port,
                                       collection="other")))
    assert list(written.articles()) == ["a"]


def test_a_missing_collection_or_home_reads_as_empty_embedded(tmp_path):
    home = tmp_path / "home"
    write(Store(settings_for(home)), article("a", f"Title\n\n{PARAGRAPH}"))
    _reads_as_empty(Store(settings_for(home, collection="other")))
    nowhere = tmp_path / "nowhere"
    _reads_as_empty(Store(settings_for(nowhere)))
    assert not nowhere.exists()


# ---- the command line ---------------------------------------------------------------------------------


def test_a_bad_collection_name_is_a_one_line_error(clean_env, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("NEWSDESK_COLLECTION", "bad name!")
    home = tmp_path / "home"
    assert main(["--home", str(home), "stats"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("newsdesk: error: NEWSDESK_COLLECTION must be "), err
    assert "'bad name!'" in err and "Traceback" not in err
    assert not home.exists()


@pytest.mark.parametrize("command", [["stats"], ["list"], ["stats", "--json"], ["search", "bridge"],
                                     ["ask", "Which bridge is closed?"]])
def test_read_only_commands_create_no_home(command, clean_env, tmp_path, capsys):
    home = tmp_path / "no-such-home"
    status = main(["--home", str(home), *command])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert not home.exists() and list(tmp_path.iterdir()) == []
    if command[0] in ("stats", "list", "search"):
        assert status == 0, err
    if command == ["stats", "--json"]:
        assert json.loads(out)["articles"] == 0


# ---- a full disk -------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A real 24 MB file system (tmpfs) mounted for the test; skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_says_so_and_keeps_what_was_indexed(small_disk, tmp_path):
    home = small_disk / "home"
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(60):  # far more than 24 MB once indexed
        paragraphs = [f"Report {i}.{j}: {PARAGRAPH} " * 7 for j in range(40)]
        (docs / f"report-{i:02d}.txt").write_text(f"Report {i}\n\n" + "\n\n".join(paragraphs), encoding="utf-8")
    with FakeOpenAI() as fake:  # a small, fast embedder: the disk fills with passages, not with waiting
        env = {"NEWSDESK_EMBEDDER": "openai", "OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": "sk-test",
               "NEWSDESK_ACCURATE": "off"}
        assert run_cli("index", str(EXAMPLE), "--json", home=home, env=env).returncode == 0
        proc = run_cli("index", str(docs), "--json", home=home, env=env)
        assert proc.returncode == 1 and proc.stdout == ""
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("newsdesk: error: "), proc.stderr
        assert f"the disk holding {home} is full" in lines[0]
        listed = run_cli("list", "--json", home=home, env=env)
        assert listed.returncode == 0 and KARABAKH in {row["id"] for row in json.loads(listed.stdout)}
        assert len(json.loads(listed.stdout)) > 1  # it wrote until the disk was full
        # its first passage, searched for word for word (the fake embedder's vectors only match exactly)
        first = chunk_article(KARABAKH, load_sources([str(EXAMPLE)], settings_for(home)).articles[0].text)[0]
        found = run_cli("search", first.text, "--json", home=home, env=env)
        assert found.returncode == 0, found.stderr
        hit = json.loads(found.stdout)["hits"][0]
        assert (hit["article_id"], hit["start"], hit["end"], hit["text"]) == (KARABAKH, first.start, first.end,
                                                                              first.text)


# ---- passages written before offsets were explicit metadata ------------------------------------------


def _write_format1(store: Store, a: Article) -> None:
    """Write ``a`` as newsdesk did before the store format was kept: passages as llama-index nodes with
    their offsets only in the node (``start_char_idx``), a registry record without ``format``."""
    chunks = chunk_article(a.id, a.text)
    col = store.client.get_or_create_collection(store._names["passages"], configuration={"hnsw": {"space": "cosine"}},
                                                metadata={"embedder": "test-embedder", "dim": 8})
    rng = np.random.default_rng(1)
    ChromaVectorStore(chroma_collection=col).add([TextNode(
        id_=c.id, text=c.text, start_char_idx=c.start, end_char_idx=c.end,
        metadata={"article_id": a.id, "chunk_index": c.index},
        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=a.id)},
        embedding=rng.random(8).tolist()) for c in chunks])
    record = {"title": a.title, "source": "", "published": "", "url": "", "lang": "", "origin": "", "root": "",
              "hash": a.content_hash, "chunks": len(chunks), "chunker": CHUNKER_VERSION, "text_chars": len(a.text)}
    for kind, meta in (("texts", {"text": a.text}), ("articles", record)):
        store.client.get_or_create_collection(store._names[kind]).upsert(ids=[a.id], embeddings=[[1.0]],
                                                                         metadatas=[meta])


def test_passages_without_explicit_offsets_still_quote_their_article(tmp_path):
    # the same paragraph twice: only the order of the passages tells which occurrence each one is
    other = PARAGRAPH.replace("bridge", "school")
    text = f"{PARAGRAPH}\n\n{other}\n\n{PARAGRAPH}\n\n{other}"
    a = article("old", text)
    chunks = chunk_article(a.id, a.text)
    assert len(chunks) == 4 and chunks[0].text == chunks[2].text and chunks[0].start != chunks[2].start
    store = Store(settings_for(tmp_path / "home"))
    store._client(create=True)
    _write_format1(store, a)
    want = {c.id: (c.start, c.end) for c in chunks}
    got = store.get_passages(list(want))
    assert {i: (p.start, p.end) for i, p in got.items()} == want
    assert all(text[p.start:p.end] == p.text for p in got.values())
    assert {p.chunk_id: (p.start, p.end) for p, _ in Store(settings_for(tmp_path / "home")).iter_passages()} == want

    # re-indexing the same file writes it again, in the current format; after that it is unchanged
    report = IndexReport()
    todo = plan([a], store.articles(), report)
    assert [p.article.id for p in todo] == ["old"] and report.unchanged == 0
    write(store, a)
    new_id = passage_id(a.id, 2, version_tag(a, chunks))  # the new version, under its own ids
    meta = store._collection("passages").get(ids=[new_id], include=["metadatas"])["metadatas"][0]
    assert (meta["start"], meta["end"]) == (chunks[2].start, chunks[2].end)
    assert plan([a], store.articles(), report) == [] and report.unchanged == 1
