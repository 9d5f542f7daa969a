"""The article index as a user meets it: the real `newsdesk` command (in-process), the real encoder, the
real embedded Chroma and a real `chroma run` server, with the seed article and xquad-dev as data.

Covered: chunking (paragraph/sentence boundaries, offsets that quote the file), cross-language search,
re-indexing (unchanged, changed, --prune, --rebuild), the embedder recorded on the collection, bad input in a
batch, kill -9 during stage 1 and stage 2, server mode. The --json formats of the commands are in
test_cli_index.py.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from newsdesk.index import chunking
from newsdesk.index.chunking import chunk_article
from newsdesk.index.loaders import load_sources
from newsdesk.index.settings import Settings
from tests.conftest import (EXAMPLE, NEWSDESK, ROOT, SEED_QUESTIONS, XQUAD, clean_env, free_port, run_cli,
                            run_python)
from tests.fake_openai import FakeOpenAI

KARABAKH = "karabakh-2020-09-28"
WEAPONS_Q = "What weapons did each side allege?"
XQUAD_AR = XQUAD / "articles-ar"
XQUAD_EN = XQUAD / "articles-en"
ENDS = ".!?؟…"  # sentence ends (chunking also cuts at line breaks)
CLAUSE_ENDS = "،؛;,:"
CLOSERS = "\"'”»)]"


# ---- helpers -------------------------------------------------------------------------------------


def cli_env(home: Path | None, extra: dict | None = None) -> dict:
    """The environment run_cli gives the command (nothing from the developer's NEWSDESK_/CHROMA_/OPENAI_)."""
    return clean_env(home, **(extra or {}))


def cli_json(*args: str, home: Path | None = None, env: dict | None = None, status: int = 0):
    proc = run_cli(*args, home=home, env=env)
    assert proc.returncode == status, (
        f"newsdesk {' '.join(args)} → {proc.returncode}, not {status}:\n{proc.stderr}"
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout)


def index(
    *sources,
    home: Path,
    env: dict | None = None,
    status: int = 0,
    fast: bool = True,
    extra: tuple[str, ...] = (),
) -> dict:
    args = ["index", *map(str, sources), "--json", *extra] + (["--fast"] if fast else [])
    return cli_json(*args, home=home, env=env, status=status)


def stats(home: Path, env: dict | None = None) -> dict:
    return cli_json("stats", "--json", home=home, env=env)


def search(query: str, home: Path, k: int = 5, env: dict | None = None) -> list[dict]:
    return cli_json("search", query, "--k", str(k), "--json", home=home, env=env)["hits"]


def search_many(queries: list[str], home: Path, k: int = 5, env: dict | None = None) -> list[list[dict]]:
    """`newsdesk search --questions FILE --json` (one process for many queries): the hits of each query."""
    qfile = home.parent / f"queries-{time.monotonic_ns()}.jsonl"
    qfile.write_text(
        "".join(json.dumps({"question": q}, ensure_ascii=False) + "\n" for q in queries), encoding="utf-8"
    )
    proc = run_cli("search", "--questions", str(qfile), "--k", str(k), "--json", home=home, env=env)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["question"] for r in results] == queries
    return [r["hits"] for r in results]


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """A failed command's stderr: one line, `newsdesk: error: …`, no traceback."""
    assert proc.returncode not in (0, 2), proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("newsdesk: error: "), proc.stderr
    return lines[0]


_DUMP = r"""
import json, sys
from dataclasses import replace
from newsdesk.index.settings import Settings
from newsdesk.index.store import Store
settings = Settings.load(env_file=None)
store = Store(settings)
passages = [[p.chunk_id, p.article_id, p.text, p.start] for p, _ in store.iter_passages()]
acc = store._collection("accurate", create=False)
accurate = []
if acc is not None:
    for offset in range(0, acc.count(), 1000):
        accurate.extend(acc.get(include=[], limit=1000, offset=offset)["ids"])
articles = store.articles()
texts = store._collection("texts", create=False)
out = {"passages": passages, "accurate": accurate, "articles": articles, "embedder": store.embedder_info(),
       "texts": {a: store.article_text(a) for a in articles},
       "text_ids": [i.rpartition("#@")[0] or i for i in texts.get(include=[])["ids"]] if texts is not None else []}
print(json.dumps(out, ensure_ascii=False))
"""


def dump(home: Path, env: dict | None = None) -> dict:
    """Everything the store holds, read afresh as by a separate process (``run_python``: the store's client is
    released afterwards, so no client state is cached across the commands that change it)."""
    proc = run_python(_DUMP, cli_env(home, env), ROOT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def file_text(path: Path) -> str:
    """An article file as the index sees it: line endings normalised, surrounding blank space removed."""
    return path.read_text(encoding="utf-8-sig").replace("\r\n", "\n").strip()


def body_paragraphs(text: str) -> list[tuple[int, int]]:
    """(start, end) of each paragraph after the title line, in the article text."""
    spans, pos = [], 0
    for part in text.split("\n\n"):
        spans.append((pos, pos + len(part)))
        pos += len(part) + 2
    return spans[1:]


def copy_articles(dest: Path, *files: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy(f, dest / f.name)
    return dest


def wait_partial(proc: subprocess.Popen, home: Path, is_partial, timeout: float = 240) -> dict | None:
    """Poll `newsdesk stats --json` while ``proc`` runs; return the stats once ``is_partial`` holds (the
    caller
    then kills it), None if the process ended first."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        got = run_cli("stats", "--json", home=home)
        if got.returncode == 0:
            data = json.loads(got.stdout)
            if is_partial(data):
                return data
        time.sleep(0.2)
    return None


def kill_when_partial(args: list[str], home: Path, is_partial, tries: int = 3, grow=None) -> dict:
    """Start `newsdesk ARGS`, SIGKILL it once the store is partly written. If it finished before a partial
    state
    was seen (a fast machine), ``grow()`` adds work and the run starts again on a fresh home."""
    for attempt in range(tries):
        proc = subprocess.Popen(
            [*NEWSDESK, *args],
            env=cli_env(home),
            cwd=home.parent,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            seen = wait_partial(proc, home, is_partial)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        if seen is not None and proc.returncode == -signal.SIGKILL:
            print(f"killed on attempt {attempt + 1} at {seen}")
            return seen
        if grow is None or attempt == tries - 1:
            break
        grow()
    pytest.fail(f"newsdesk {' '.join(args)} finished before the store was seen partly written")


# ---- shared indexes (built once per module) ------------------------------------------------------


@pytest.fixture(scope="module")
def xquad_home(tmp_path_factory) -> tuple[Path, dict]:
    """articles-ar of xquad-dev plus the seed article, stage 1 (the encoder does the work; e5 is too slow for
    120 paragraphs here). Read-only: copy it before writing."""
    home = tmp_path_factory.mktemp("xquad") / "home"
    report = index(XQUAD_AR, EXAMPLE, home=home)
    return home, report


@pytest.fixture
def xquad_copy(xquad_home, tmp_path) -> Path:
    home = tmp_path / "home"
    shutil.copytree(xquad_home[0], home)
    return home


# ---- chunking ------------------------------------------------------------------------------------


def _cut_after(text: str, i: int) -> bool:
    """True when position ``i`` (an exclusive end) is a sentence or clause end or a line end."""
    if i == len(text) or text[i] == "\n":
        return True
    j = i
    while j > 0 and text[j - 1] in CLOSERS:
        j -= 1
    return j > 0 and text[j - 1] in ENDS + CLAUSE_ENDS


def _cut_before(text: str, i: int) -> bool:
    """True when position ``i`` starts the text or follows a sentence/clause end or a line break."""
    if i == 0:
        return True
    j = i
    while j > 0 and text[j - 1].isspace():
        if text[j - 1] == "\n":
            return True
        j -= 1
    return j < i and _cut_after(text, j)


@pytest.mark.parametrize("folder", [XQUAD_AR, XQUAD_EN], ids=["ar", "en"])
def test_xquad_passages_are_about_a_paragraph_and_quote_the_text(folder):
    loaded = load_sources([str(folder)], Settings())
    assert not loaded.failed and len(loaded.articles) == 24
    lengths, paragraphs = [], 0
    for article in loaded.articles:
        text = article.text
        assert text == file_text(folder / f"{article.id}.txt")
        chunks = chunk_article(article.id, text)
        paras = body_paragraphs(text)
        paragraphs += len(paras)
        assert [c.index for c in chunks] == list(range(len(chunks)))
        assert [c.id for c in chunks] == [f"{article.id}#{i}" for i in range(len(chunks))]
        covered = 0
        for c in chunks:
            assert text[c.start : c.end] == c.text and c.text == c.text.strip()
            assert _cut_before(text, c.start) and _cut_after(text, c.end), (article.id, c.index)
            assert c.start >= covered  # in order, no overlap
            covered = c.end
            lengths.append(len(c.text))
            # a passage crosses a paragraph break only to keep a short paragraph (the title) with another
            inside = [p for p in [(0, text.index("\n\n"))] + paras if p[0] < c.end and p[1] > c.start]
            if len(inside) > 1:
                assert sum(1 for s, e in inside if e - s >= chunking.MIN_PASSAGE) <= 1, (article.id, c.index)
        # nothing but white space is left out of the passages
        outside = list(text)
        for c in chunks:
            outside[c.start : c.end] = [" "] * (c.end - c.start)
        assert "".join(outside).strip() == ""
    mean = sum(lengths) / len(lengths)
    assert mean <= 1200, f"mean passage {mean:.0f} chars"
    assert 0.8 * paragraphs <= len(lengths) <= 1.6 * paragraphs, (len(lengths), paragraphs)


def _arabic_sentence(n: int, end: str) -> str:
    return (
        f"قال المتحدث باسم الوزارة في البيان رقم {n} إن القوات واصلت عملياتها في المنطقة الشمالية "
        f"وإن الوضع الإنساني ما زال صعباً للغاية بحسب المنظمات الدولية العاملة هناك{end}"
    )


@pytest.mark.parametrize("end", ["؟", ".", "!"])
def test_long_arabic_paragraph_is_cut_at_sentence_ends(end):
    title = "عنوان الخبر"
    long_paragraph = " ".join(_arabic_sentence(i, end) for i in range(30))
    text = f"{title}\n\n{long_paragraph}\n\nفقرة أخيرة قصيرة."
    chunks = chunk_article("a", text)
    assert len(chunks) >= 3
    for c in chunks:
        assert text[c.start : c.end] == c.text
        assert len(c.text) <= chunking.MAX_PASSAGE
        assert c.text[-1] in end + ".", c.text[-20:]  # the last one ends with the short paragraph's "."
        assert _cut_before(text, c.start)


@pytest.mark.parametrize("mark", ["،", "؛"])
def test_overlong_arabic_sentence_is_cut_at_clause_marks(mark):
    clause = "وأضاف أن المفاوضات بين الطرفين ستستأنف الأسبوع المقبل في العاصمة بحضور الوسطاء الدوليين"
    sentence = f"{mark} ".join(f"{clause} {i}" for i in range(40)) + "."
    text = f"العنوان الرئيسي للخبر المنشور اليوم\n\n{sentence}"
    chunks = chunk_article("a", text)
    assert len(chunks) >= 2
    for c in chunks[:-1]:
        assert text[c.start : c.end] == c.text
        assert c.text.endswith(mark), c.text[-10:]
        assert len(c.text) <= chunking.MAX_PASSAGE
    assert chunks[-1].text.endswith(".")


def test_arabic_question_mark_ends_a_sentence():
    text = "هل انتهت الحرب؟ لا أحد يعرف. وماذا بعد؟"
    spans = chunking.sentences(text)
    assert [text[s:e] for s, e in spans] == ["هل انتهت الحرب؟", "لا أحد يعرف.", "وماذا بعد؟"]


def test_search_hits_quote_the_article_files(xquad_home):
    home, _ = xquad_home
    files = {p.stem: p for p in XQUAD_AR.glob("*.txt")} | {KARABAKH: EXAMPLE}
    texts = {aid: file_text(path) for aid, path in files.items()}
    queries = [WEAPONS_Q, "Super Bowl 50", "نهر الأمازون", "oxygen combustion", "مارتن لوثر"]
    seen = set()
    for hits in search_many(queries, home, k=5):
        assert len(hits) == 5
        for hit in hits:
            text = texts[hit["article_id"]]
            assert text[hit["start"] : hit["end"]] == hit["text"], hit["chunk_id"]
            seen.add(hit["chunk_id"])
    assert len(seen) > 10


# ---- search across languages ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed_home(tmp_path_factory) -> Path:
    """The seed article among xquad articles about wars and armies (the ones stage 1 alone confuses with it),
    both stages."""
    base = tmp_path_factory.mktemp("mixed")
    docs = copy_articles(
        base / "docs",
        EXAMPLE,
        XQUAD_AR / "xquad-46-french-and-indian-war.txt",
        XQUAD_AR / "xquad-02-normans.txt",
        XQUAD_AR / "xquad-12-oxygen.txt",
    )
    index(docs, home=base / "home", fast=False)
    return base / "home"


def _weapons_evidence() -> list[str]:
    seed = [
        json.loads(line) for line in SEED_QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    return next(q["evidence"] for q in seed if q["question"] == WEAPONS_Q)


def test_english_question_finds_the_karabakh_article(mixed_home):
    hits = search(WEAPONS_Q, mixed_home, k=5)
    assert hits[0]["article_id"] == KARABAKH
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert any(ev in hits[0]["text"] for ev in _weapons_evidence())
    assert hits[0]["title"] == "يريفان تعلن استخدام أذربيجان لنظام قاذفات اللهب الثقيل في قره باغ"
    assert hits[0]["source"] == "سبوتنيك" and hits[0]["published"] == "2020-09-28"
    assert stats(mixed_home)["accurate"]["pending"] == 0


def test_english_question_finds_the_karabakh_article_among_all_xquad_stage1(xquad_home):
    """Stage 1 alone (USE), the seed article among all 24 xquad articles: in the top 3."""
    hits = search(WEAPONS_Q, xquad_home[0], k=5)
    karabakh = [h for h in hits[:3] if h["article_id"] == KARABAKH]
    assert karabakh, [h["chunk_id"] for h in hits]
    assert any(ev in h["text"] for h in karabakh for ev in _weapons_evidence())


def test_english_xquad_questions_find_the_arabic_paragraph(xquad_home, tmp_path):
    """`search --questions FILE --json` with English questions over the Arabic articles: one JSON line per
    question,
    and the passage holding the answer's paragraph in the top 5 for most of them."""
    home, _ = xquad_home
    records = [
        json.loads(line) for line in (XQUAD / "questions.jsonl").read_text().splitlines() if line.strip()
    ]
    sample = records[::15]  # 41 questions over all 24 articles
    qfile = tmp_path / "questions.jsonl"
    qfile.write_text(
        "\n".join(json.dumps({"question": r["question_en"]}) for r in sample) + "\n", encoding="utf-8"
    )
    proc = run_cli("search", "--questions", str(qfile), "--json", home=home)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == len(sample)
    texts = {p.stem: file_text(p) for p in XQUAD_AR.glob("*.txt")}
    found = []
    for record, line in zip(sample, lines, strict=True):
        result = json.loads(line)
        assert result["question"] == record["question_en"]
        assert len(result["hits"]) == 5
        s, e = body_paragraphs(texts[record["article"]])[record["paragraph"]]
        found.append(
            any(
                h["article_id"] == record["article"] and h["start"] < e and h["end"] > s
                for h in result["hits"]
            )
        )
    # USE alone finds the paragraph in the top 5 for ~90% of the English questions (shared/eval/README.md)
    assert sum(found) / len(found) >= 0.75, f"hit@5 {sum(found)}/{len(found)}"
    assert found[0], sample[0]["question_en"]  # "How many points did the Panthers defense surrender?"


# ---- re-indexing ---------------------------------------------------------------------------------


def test_unchanged_articles_are_skipped(xquad_home, xquad_copy):
    _, first = xquad_home
    assert first["added"] == 25 and first["failed"] == []
    before = stats(xquad_copy)
    again = index(XQUAD_AR, EXAMPLE, home=xquad_copy)
    assert (again["added"], again["updated"], again["unchanged"], again["removed"]) == (0, 0, 25, 0)
    assert again["chunks"] == 0 and again["failed"] == []
    assert stats(xquad_copy) == before
    assert before["chunks"] == first["chunks"]


def _small_corpus(folder: Path) -> Path:
    copy_articles(
        folder, EXAMPLE, XQUAD_AR / "xquad-12-oxygen.txt", XQUAD_AR / "xquad-16-amazon-rainforest.txt"
    )
    return folder


def test_changed_article_leaves_no_stale_passage(tmp_path):
    docs = _small_corpus(tmp_path / "docs")
    home = tmp_path / "home"
    first = index(docs, home=home)
    assert first["added"] == 3
    article = docs / EXAMPLE.name
    paragraphs = file_text(article).split("\n\n")
    removed = paragraphs[2]  # "وكتبت ستيبانيان ... نظام قاذفات اللهب الثقيل "توس"." (the TOS sentence)
    assert "توس" in removed
    kept = [p for i, p in enumerate(paragraphs) if i not in (2, 5)]  # two paragraphs out: fewer passages
    article.write_text("\n\n".join(kept) + "\n", encoding="utf-8")

    second = index(docs, home=home)
    assert (second["added"], second["updated"], second["unchanged"]) == (0, 1, 2)
    new_text = file_text(article)
    for hits in search_many([removed, removed[:80], WEAPONS_Q], home, k=10):
        for hit in hits:
            assert removed not in hit["text"] and removed[:60] not in hit["text"]
            if hit["article_id"] == KARABAKH:
                assert new_text[hit["start"] : hit["end"]] == hit["text"]

    clean = tmp_path / "clean"
    index(docs, home=clean)
    got, want = dump(home), dump(clean)
    assert _passage_set(got) == _passage_set(want)  # the same passages as a clean index of the new content
    karabakh = sum(1 for p in got["passages"] if p[1] == KARABAKH)
    others = len(got["passages"]) - karabakh
    assert karabakh == second["chunks"] < first["chunks"] - others  # fewer passages than the old version had
    assert got["articles"][KARABAKH]["chunks"] == karabakh
    assert got["texts"][KARABAKH] == new_text  # quotes are checked against the new text
    assert sorted(got["text_ids"]) == sorted(got["articles"])


_OLD_LAYOUT = r"""
from newsdesk.index.settings import Settings
from newsdesk.index.store import Store
store = Store(Settings.load(env_file=None))
records = store.articles()
texts = {a: store.article_text(a) for a in records}
registry = store._collection("articles")
registry.upsert(ids=list(texts), embeddings=[[1.0]] * len(texts), documents=list(texts.values()),
                metadatas=[records[a] for a in texts])
store.client.delete_collection(store._names["texts"])
"""


def test_an_index_from_before_the_texts_collection_still_checks_quotes(tmp_path):
    """Indexes written before article texts had their own collection kept them as the registry's documents:
    answers must still find their quotes in the article, and re-indexing moves nothing it need not."""
    docs = copy_articles(tmp_path / "docs", EXAMPLE)
    home = tmp_path / "home"
    index(docs, home=home)
    proc = run_python(_OLD_LAYOUT, cli_env(home), ROOT)
    assert proc.returncode == 0, proc.stderr
    old = dump(home)
    assert old["text_ids"] == [] and old["texts"][KARABAKH] == file_text(docs / EXAMPLE.name)
    answer = cli_json("ask", WEAPONS_Q, "--json", home=home)
    assert answer["citations"] and all(c["verified"] for c in answer["citations"])
    assert index(docs, home=home)["unchanged"] == 1


_OLDER_CHUNKER = r"""
import numpy as np
from newsdesk.index.settings import Settings
from newsdesk.index.store import Store
from newsdesk.index.types import Article, Chunk
store = Store(Settings.load(env_file=None))
for article_id, record in store.articles().items():
    text = store.article_text(article_id)
    spans = sorted((p.start, p.end) for p, _ in store.iter_passages() if p.article_id == article_id)
    # an older chunker: passages twice as long (each pair of today's passages as one)
    pairs = [(spans[i][0], spans[min(i + 1, len(spans) - 1)][1]) for i in range(0, len(spans), 2)]
    chunks = [Chunk(f"{article_id}#{i}", article_id, i, text[s:e], s, e) for i, (s, e) in enumerate(pairs)]
    stored = {p.start: v for p, v in store.iter_passages(with_vectors=True) if p.article_id == article_id}
    vectors = np.vstack([stored[c.start] for c in chunks])  # some real vector for each
    store.write_articles([(Article(article_id, record["title"], text), chunks, vectors)], "use-m3", 512)
    written = store.articles()[article_id]  # it names the version just written
    store._collection("articles").upsert(ids=[article_id], embeddings=[[1.0]], metadatas=[
        {**record, "tag": written["tag"], "chunks": len(chunks), "chunker": 0}])
"""


def test_reindexing_cuts_again_what_an_older_chunker_cut(tmp_path):
    """After an upgrade that changes how articles are cut into passages, re-indexing the same, unchanged
    files replaces each article's old passages with the new cut (as for an edited article), once."""
    docs = copy_articles(tmp_path / "docs", EXAMPLE)
    home, fresh = tmp_path / "home", tmp_path / "fresh"
    index(docs, home=home)
    index(docs, home=fresh)
    proc = run_python(_OLDER_CHUNKER, cli_env(home), ROOT)
    assert proc.returncode == 0, proc.stderr
    old, want = dump(home), dump(fresh)
    assert old["articles"][KARABAKH]["hash"] == want["articles"][KARABAKH]["hash"]  # the text is the same
    assert len(old["passages"]) < len(want["passages"])

    report = index(docs, home=home)
    assert (report["updated"], report["unchanged"], report["chunks"]) == (1, 0, len(want["passages"]))
    got = dump(home)
    assert sorted(got["passages"]) == sorted(want["passages"])  # no old passage left, none twice
    assert got["articles"][KARABAKH]["chunker"] == chunking.VERSION
    new_texts = {p[2] for p in want["passages"]}
    merged = next(p[2] for p in old["passages"] if p[2] not in new_texts)
    assert {h["text"] for h in search(merged[:300], home, k=10)} <= new_texts
    assert index(docs, home=home)["unchanged"] == 1


def test_prune_removes_only_what_left_the_given_folder(tmp_path):
    a = copy_articles(
        tmp_path / "a",
        XQUAD_AR / "xquad-12-oxygen.txt",
        XQUAD_AR / "xquad-16-amazon-rainforest.txt",
        XQUAD_AR / "xquad-02-normans.txt",
    )
    b = copy_articles(tmp_path / "b", XQUAD_AR / "xquad-06-martin-luther.txt")
    single = copy_articles(tmp_path / "single", EXAMPLE) / EXAMPLE.name
    home = tmp_path / "home"
    assert index(a, b, single, home=home)["added"] == 5

    (a / "xquad-16-amazon-rainforest.txt").unlink()
    (a / "xquad-02-normans.txt").write_bytes(b"")  # fails to load this time: kept, not pruned
    report = index(a, home=home, extra=("--prune",), status=2)
    assert report["removed"] == 1 and report["unchanged"] == 1
    assert [f["source"] for f in report["failed"]] == [str(a / "xquad-02-normans.txt")]
    ids = [row["id"] for row in cli_json("list", "--json", home=home)]
    assert ids == sorted(["xquad-12-oxygen", "xquad-02-normans", "xquad-06-martin-luther", KARABAKH])
    assert all(
        h["article_id"] != "xquad-16-amazon-rainforest" for h in search("غابات الأمازون المطيرة", home, k=10)
    )

    # without --prune nothing is removed; --prune on the other folder removes only what left that one
    (b / "xquad-06-martin-luther.txt").unlink()
    assert index(b, home=home)["removed"] == 0
    assert index(b, home=home, extra=("--prune",))["removed"] == 1
    data = dump(home)
    assert sorted(data["articles"]) == sorted(["xquad-12-oxygen", "xquad-02-normans", KARABAKH])
    assert {p[1] for p in data["passages"]} == set(data["articles"])
    assert sorted(data["text_ids"]) == sorted(data["articles"])  # the texts of removed articles are gone


def test_rebuild_starts_afresh(tmp_path):
    docs = _small_corpus(tmp_path / "docs")
    home = tmp_path / "home"
    first = index(docs, home=home, fast=False)
    (docs / "xquad-12-oxygen.txt").unlink()
    report = index(docs, home=home, extra=("--rebuild",))
    assert (report["added"], report["unchanged"], report["removed"]) == (2, 0, 0)
    got = stats(home)
    assert got["articles"] == 2 and got["chunks"] == report["chunks"] < first["chunks"]
    assert got["accurate"]["passages"] == 0  # the old accurate vectors went too


# ---- the embedder recorded on the collection -----------------------------------------------------


def test_another_embedder_is_refused_until_rebuild(example_home):
    with FakeOpenAI() as fake:
        env = {
            "NEWSDESK_EMBEDDER": "openai",
            "OPENAI_BASE_URL": fake.base_url,
            "OPENAI_API_KEY": "sk-test",
            "NEWSDESK_ACCURATE": "off",
        }
        for args in (["index", str(EXAMPLE), "--fast"], ["search", WEAPONS_Q]):
            line = one_line_error(run_cli(*args, home=example_home, env=env))
            assert "use-m3" in line and "--rebuild" in line, line
        rebuilt = index(EXAMPLE, home=example_home, env=env, extra=("--rebuild",))
        assert rebuilt["added"] == 1 and rebuilt["chunks"] > 0
        assert stats(example_home, env)["embedder"] == "openai:text-embedding-3-small"
        # the collection records the dimension the server's vectors have (FakeOpenAI: 16), not a guess
        assert dump(example_home, env)["embedder"] == {"embedder": "openai:text-embedding-3-small", "dim": 16}
        # the rebuilt index keeps working with its embedder: re-index, search
        assert index(EXAMPLE, home=example_home, env=env)["unchanged"] == 1
        assert search(WEAPONS_Q, example_home, env=env)[0]["article_id"] == KARABAKH
        assert any(r.path.endswith("/embeddings") for r in fake.requests)
    # and now the local encoder is the other one
    line = one_line_error(run_cli("search", WEAPONS_Q, home=example_home))
    assert "openai:text-embedding-3-small" in line and "--rebuild" in line
    assert index(EXAMPLE, home=example_home, extra=("--rebuild",))["added"] == 1
    assert dump(example_home)["embedder"] == {"embedder": "use-m3", "dim": 512}


# ---- bad input in a batch ------------------------------------------------------------------------

SMALL_ARTICLE = """انقطاع الكهرباء في العاصمة

(بيروت / رويترز - 3 مارس 2021م) انقطعت الكهرباء عن معظم أحياء العاصمة مساء أمس
بسبب عطل في محطة التوليد الرئيسية.

وقالت الشركة إن الفرق الفنية تعمل على إصلاح العطل، وإن التيار سيعود خلال ساعات.
"""


def _closed_port() -> int:
    return free_port()  # bound and released: nothing listens there


def test_bad_sources_fail_one_by_one_and_the_rest_is_indexed(example_home, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.txt").write_text(SMALL_ARTICLE, encoding="utf-8")
    (docs / "empty.txt").write_bytes(b"")
    (docs / "binary.txt").write_bytes(bytes(range(256)) * 40)
    (docs / "undecodable.txt").write_bytes(b"caf\xe9 \xff\xfe\xfa na\xefve \x81\x8d\x9d r\xe9sum\xe9 " * 20)
    (docs / "menu.html").write_text(
        "<html><head><title>Site</title><script>var x = 1;</script></head><body>"
        "<nav><a href='/'>Home</a> <a href='/news'>News</a></nav></body></html>"
    )
    # the indexed karabakh article's file turns into garbage: it fails, the indexed version stays
    (docs / f"{KARABAKH}.txt").write_bytes(b"\x00\x01\x02\x03" * 500)
    url = f"http://127.0.0.1:{_closed_port()}/article.html"
    before = stats(example_home)

    report = index(docs, url, home=example_home, env={"NEWSDESK_ALLOW_PRIVATE_URLS": "1"}, status=2)
    failed = {f["source"]: f["error"] for f in report["failed"]}
    bad = ["empty.txt", "binary.txt", "undecodable.txt", "menu.html", f"{KARABAKH}.txt"]
    assert set(failed) == {str(docs / name) for name in bad} | {url}, failed
    for source, error in failed.items():
        assert error and "\n" not in error and "Traceback" not in error and len(error) < 300, (source, error)
    assert "empty" in failed[str(docs / "empty.txt")]
    assert "binary" in failed[str(docs / "binary.txt")]
    assert "decode" in failed[str(docs / "undecodable.txt")]
    assert "127.0.0.1" in failed[url]
    assert report["added"] == 1 and report["updated"] == 0

    after = stats(example_home)
    assert after["articles"] == before["articles"] + 1
    assert after["chunks"] == before["chunks"] + report["chunks"]
    assert search(WEAPONS_Q, example_home)[0]["article_id"] == KARABAKH  # nothing already indexed is lost
    ids = {row["id"] for row in cli_json("list", "--json", home=example_home)}
    assert ids == {KARABAKH, "good"}


def test_size_cap_and_private_url(example_home, tmp_path):
    small = tmp_path / "small.txt"
    small.write_text(SMALL_ARTICLE, encoding="utf-8")
    assert small.stat().st_size < 1000
    big = tmp_path / "big.txt"
    big.write_text(SMALL_ARTICLE * 3, encoding="utf-8")
    url = f"http://127.0.0.1:{_closed_port()}/article.html"
    report = index(small, big, url, home=example_home, env={"NEWSDESK_MAX_FILE_MB": "0.001"}, status=2)
    failed = {f["source"]: f["error"] for f in report["failed"]}
    assert set(failed) == {str(big), url}
    assert "0.001 MB" in failed[str(big)]
    assert "NEWSDESK_ALLOW_PRIVATE_URLS" in failed[url]
    assert all("\n" not in e for e in failed.values())
    assert report["added"] == 1
    assert stats(example_home)["articles"] == 2


# ---- kill -9 in the middle -----------------------------------------------------------------------


def _passage_set(data: dict) -> list[tuple]:
    return sorted((p[0], p[1], p[2], p[3]) for p in data["passages"])


@pytest.mark.slow  # a process killed half-way, indexing run again: 10-30 s
def test_kill_during_stage1_then_rerun_equals_a_clean_index(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(XQUAD_AR, src / "ar")
    shutil.copytree(XQUAD_EN, src / "en")
    total = 48
    home = tmp_path / "killed"

    def grow():
        nonlocal total
        n = len(list(src.iterdir()))
        shutil.copytree(XQUAD_AR, src / f"ar{n}")
        shutil.copytree(XQUAD_EN, src / f"en{n}")
        total += 48
        shutil.rmtree(home, ignore_errors=True)

    seen = kill_when_partial(
        ["index", str(src), "--fast", "--json"], home, lambda s: 0 < s["articles"] < total, grow=grow
    )
    assert 0 < seen["articles"] < total

    rerun = index(src, home=home)
    assert rerun["failed"] == [] and rerun["added"] + rerun["unchanged"] == total
    assert rerun["unchanged"] >= seen["articles"]

    clean = tmp_path / "clean"
    reference = index(src, home=clean)
    assert reference["added"] == total
    got, want = dump(home), dump(clean)
    assert len(got["articles"]) == len(want["articles"]) == total
    ids = [p[0] for p in got["passages"]]
    assert len(ids) == len(set(ids)) == len(want["passages"]) == reference["chunks"]
    assert len({(p[1], p[2]) for p in got["passages"]}) == len(ids)  # no passage twice under another id
    assert _passage_set(got) == _passage_set(want)
    assert {k: v["hash"] for k, v in got["articles"].items()} == {
        k: v["hash"] for k, v in want["articles"].items()
    }
    assert stats(home) | {"store": ""} == stats(clean) | {"store": ""}


@pytest.mark.slow  # a process killed half-way, indexing run again: 10-30 s
def test_kill_during_stage2_then_rerun_completes_it(tmp_path):
    docs = tmp_path / "docs"
    names = sorted(XQUAD_AR.glob("*.txt"))[:10]
    copy_articles(docs, *names)
    home = tmp_path / "home"
    first = index(docs, home=home)  # stage 1
    chunks = first["chunks"]
    assert stats(home)["accurate"]["passages"] == 0

    def grow():  # more passages to encode: more time to catch it half-way
        copy_articles(docs, *sorted(XQUAD_AR.glob("*.txt"))[10:])
        index(docs, home=home)

    seen = kill_when_partial(
        ["index", str(docs), "--json"],
        home,
        lambda s: 0 < s["accurate"]["passages"] < s["chunks"],
        tries=2,
        grow=grow,
    )
    assert 0 < seen["accurate"]["passages"] < seen["chunks"]

    rerun = index(docs, home=home, fast=False)
    assert rerun["added"] == 0 and rerun["failed"] == []
    got = stats(home)
    assert got["accurate"]["passages"] == got["chunks"] >= chunks and got["accurate"]["pending"] == 0
    data = dump(home)
    assert sorted(data["accurate"]) == sorted(p[0] for p in data["passages"])


# ---- server mode ---------------------------------------------------------------------------------


def test_server_mode_gives_the_same_results_as_embedded(chroma_server, example_index, tmp_path):
    host, port = chroma_server
    env = {"CHROMA_HOST": host, "CHROMA_PORT": str(port)}
    home = tmp_path / "unused-home"
    report = index(EXAMPLE, home=home, env=env, fast=False)
    embedded = stats(example_index)
    assert report["added"] == 1 and report["chunks"] == embedded["chunks"]
    assert not home.exists()  # nothing written locally

    served = stats(home, env)
    assert served["store"] == f"chroma server http://{host}:{port}"
    assert served | {"store": ""} == embedded | {"store": ""}
    assert cli_json("list", "--json", home=home, env=env) == cli_json("list", "--json", home=example_index)

    queries = [WEAPONS_Q, "Who is the spokesperson of the Armenian Ministry of Defense?", "قاذفات اللهب"]
    for got, want in zip(
        search_many(queries, home, env=env), search_many(queries, example_index), strict=True
    ):
        assert got and [h["chunk_id"] for h in got] == [h["chunk_id"] for h in want]
        assert [h["score"] for h in got] == pytest.approx([h["score"] for h in want], abs=1e-3)
        assert [(h["text"], h["start"], h["end"]) for h in got] == [
            (h["text"], h["start"], h["end"]) for h in want
        ]
    assert index(EXAMPLE, home=home, env=env)["unchanged"] == 1


@pytest.mark.parametrize(
    "command",
    [
        ["stats", "--json"],
        ["search", WEAPONS_Q, "--json"],
        ["index", str(EXAMPLE), "--fast", "--json"],
        ["list"],
    ],
)
def test_closed_server_port_is_a_one_line_error(command, tmp_path):
    port = _closed_port()
    proc = run_cli(
        *command,
        home=tmp_path / "home",
        env={"CHROMA_HOST": "127.0.0.1", "CHROMA_PORT": str(port)},
        timeout=120,
    )
    line = one_line_error(proc)
    assert f"127.0.0.1:{port}" in line
    assert proc.stdout == ""


def test_an_open_index_shows_the_new_title_after_another_process_reindexes(tmp_path):
    # a search's hits take titles from what it read with the articles' versions: a bot's long-lived index must
    # not keep showing the title an article had before another process (the CLI) indexed its new version
    from newsdesk.index.service import Index
    from tests.conftest import make_settings

    docs = tmp_path / "docs"
    docs.mkdir()
    body = ("The harbour of Ganja was shelled on Monday night, the ministry said.\n\n"
            "Both sides accused each other of using cluster munitions near the city.\n")
    (docs / "ganja.md").write_text("# Ganja harbour shelled\n\n" + body, encoding="utf-8")
    home = tmp_path / "home"
    index(docs, home=home)
    bot = Index(make_settings(home, accurate="off"))
    assert bot.search("Which harbour was shelled?", 1)[0].title == "Ganja harbour shelled"
    (docs / "ganja.md").write_text("# Ganja harbour shelled again\n\n" + body, encoding="utf-8")
    assert index(docs, home=home)["updated"] == 1  # another process
    deadline = time.monotonic() + 10
    while bot.search("Which harbour was shelled?", 1)[0].title != "Ganja harbour shelled again":
        assert time.monotonic() < deadline, "the open index kept the old title"
        time.sleep(0.5)
    bot.close()
