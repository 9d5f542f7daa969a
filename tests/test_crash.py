"""Crash consistency of updates and --rebuild, and writes of any size: the real `newsdesk index` process killed
with SIGKILL at several moments, a real Chroma server that fails half-way through an update (behind a small
HTTP relay that stops passing writes on), an article of 10,000 passages. The embedder is the fake
OpenAI-compatible server (deterministic vectors: a passage's own text finds it first), so the time goes to the
store, which is what is under test.

What a user must see: every article indexed before the run stays listed and searchable with its old passages
until the run has written its replacement; no passage is served without its article; a re-run gives exactly a
fresh index of the same files.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import re
import sqlite3
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from newsdesk.index.chunking import chunk_article
from newsdesk.index.indexer import embed_text
from newsdesk.index.loaders import load_sources
from newsdesk.index.service import Index
from newsdesk.index.settings import Settings
from tests.conftest import NEWSDESK, ROOT, clean_env, run_cli, run_python
from tests.fake_openai import FakeOpenAI

PARAGRAPH = ("The council met on {day} to discuss the bridge over the river, item {i} of {n}, and the report "
             "{code} that the engineers had filed about its state in {year}.")


def paragraph(day: str, i: int, n: int, year: int) -> str:
    """A passage of its own: a code word found in no other passage (nor in the other version of this one)."""
    code = "rep" + "".join(chr(97 + b % 26) for b in hashlib.sha256(f"{day}/{i}/{year}".encode()).digest()[:8])
    return PARAGRAPH.format(day=day, i=i, n=n, year=year, code=code)


# ---- helpers -------------------------------------------------------------------------------------


@pytest.fixture
def embed_env():
    """The environment for a fast, deterministic embedder: the fake OpenAI-compatible server."""
    with FakeOpenAI() as fake:
        yield {"NEWSDESK_EMBEDDER": "openai", "OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": "sk-test",
               "NEWSDESK_ACCURATE": "off"}


def write_docs(folder: Path, articles: int, paragraphs: int, year: int) -> Path:
    """``articles`` files of ``paragraphs`` passages each; ``year`` changes every passage of every article."""
    folder.mkdir(parents=True, exist_ok=True)
    for a in range(articles):
        body = "\n\n".join(paragraph(f"day {a}", i, paragraphs, year) for i in range(paragraphs))
        (folder / f"report-{a:03d}.txt").write_text(f"Report {a}\n\n{body}\n", encoding="utf-8")
    return folder


def versions(folder: Path) -> dict[str, tuple[str, set[tuple[int, str]], str]]:
    """Article id -> (content hash, its passages as (start, text), title) for the files in ``folder``."""
    loaded = load_sources([str(folder)], Settings())
    return {a.id: (a.content_hash, {(c.start, c.text) for c in chunk_article(a.id, a.text)}, a.title)
            for a in loaded.articles}


def cli(*args: str, home: Path, env: dict, status: int = 0):
    proc = run_cli(*args, home=home, env=env)
    assert proc.returncode == status, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


_STATE = r"""
import json
from newsdesk.index.settings import Settings
from newsdesk.index.store import Store
store = Store(Settings.load(env_file=None))
client = store._client(create=False)
live = {}
for p, _ in store.iter_passages():
    live.setdefault(p.article_id, []).append([p.chunk_id, p.start, p.text])
raw = store._collection("passages", create=False)
texts = store._collection("texts", create=False)
print(json.dumps({
    "articles": {a: m["hash"] for a, m in store.articles().items()},
    "live": live,
    "raw": raw.count() if raw is not None else 0,
    "texts": texts.count() if texts is not None else 0,
    "article_texts": {a: store.article_text(a) for a in store.articles()},
    "collections": sorted(c.name for c in client.list_collections()) if client is not None else [],
}))
"""


def state(home: Path, env: dict) -> dict:
    """What the store holds, read afresh (a new client, as another process would)."""
    proc = run_python(_STATE, clean_env(home, **env), ROOT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def assert_consistent(home: Path, env: dict, old: dict, new: dict) -> int:
    """Every article of ``old`` is listed, as exactly its old or its new version (passages and text); searching
    a passage's text finds it first; nothing of a version not committed is ever served. Returns how many
    articles are at their new version."""
    got = state(home, env)
    assert set(got["articles"]) == set(old), "an article vanished"
    updated = 0
    for article_id, digest in got["articles"].items():
        version = new if digest == new[article_id][0] else old
        assert digest == version[article_id][0]
        assert {(s, t) for _, s, t in got["live"].get(article_id, [])} == version[article_id][1], article_id
        assert got["article_texts"][article_id] is not None
        updated += version is new
    # the first passage of every 5th article's current version, and a passage of its other version
    sample = sorted(got["articles"])[::5]
    queries, want = [], []
    for article_id in sample:
        current = sorted(got["live"][article_id], key=lambda p: p[1])
        other = new if got["articles"][article_id] == old[article_id][0] else old
        title = old[article_id][2]  # what is embedded for a passage: its article's title, then its text
        queries += [embed_text(title, current[1][2]), embed_text(title, sorted(other[article_id][1])[1][1])]
        want += [current[1][0], None]
    qfile = home.parent / "queries.jsonl"
    qfile.write_text("".join(json.dumps({"question": q}) + "\n" for q in queries), encoding="utf-8")
    proc = cli("search", "--questions", str(qfile), "--k", "5", "--json", home=home, env=env)
    served = {p[0] for passages in got["live"].values() for p in passages}
    for line, expected in zip(proc.stdout.splitlines(), want):
        hits = json.loads(line)["hits"]
        assert {h["chunk_id"] for h in hits} <= served  # never a passage of an uncommitted or replaced version
        if expected is not None:
            assert hits[0]["chunk_id"] == expected
    return updated


def start_index(args: list[str], home: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([*NEWSDESK, "index", *args], env=clean_env(home, **env), cwd=home.parent,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill_when(proc: subprocess.Popen, ready, timeout: float = 120) -> bool:
    """SIGKILL ``proc`` once ``ready()`` holds; False when it ended first."""
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if ready():
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None and time.monotonic() >= deadline:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    return proc.returncode == -signal.SIGKILL


_UPDATED = r"""
import json
from newsdesk.index.settings import Settings
from newsdesk.index.store import Store
store = Store(Settings.load(env_file=None))
print(json.dumps({a: m["hash"] for a, m in store.articles().items()}))
"""


def registry(home: Path, env: dict) -> dict[str, str]:
    proc = run_python(_UPDATED, clean_env(home, **env), ROOT)
    return json.loads(proc.stdout) if proc.returncode == 0 else {}


def assert_clean(home: Path, env: dict, folder: Path, tmp_path: Path) -> None:
    """The store equals a fresh index of ``folder``: the same passages under the same ids, nothing else."""
    fresh = tmp_path / f"fresh-{time.monotonic_ns()}"
    cli("index", str(folder), "--fast", "--json", home=fresh, env=env)
    got, want = state(home, env), state(fresh, env)
    assert got["articles"] == want["articles"]
    assert {a: sorted(map(tuple, p)) for a, p in got["live"].items()} == {
        a: sorted(map(tuple, p)) for a, p in want["live"].items()}
    assert got["raw"] == want["raw"] == sum(len(p) for p in want["live"].values())  # nothing left over, none twice
    assert got["texts"] == want["texts"] == len(want["articles"])
    assert len(got["collections"]) <= len(want["collections"]) + 1  # (+ the pointer after a rebuild)


# ---- kill -9 during an update ----------------------------------------------------------------------


@pytest.mark.slow  # real processes killed three times, then run to the end: ~30 s
def test_kill_during_an_update_never_loses_an_article(embed_env, tmp_path):
    docs = write_docs(tmp_path / "docs", articles=60, paragraphs=40, year=2019)
    home = tmp_path / "home"
    cli("index", str(docs), "--fast", "--json", home=home, env=embed_env)
    old = versions(docs)
    write_docs(docs, articles=60, paragraphs=40, year=2020)  # every article changed, every passage
    new = versions(docs)

    def updated() -> int:
        return sum(1 for a, h in registry(home, embed_env).items() if h == new[a][0])

    done, half_way = 0, 0
    # once this run has replaced an article, once it has replaced a few, and 1.5 s after the start (loading,
    # the clean-up of the killed runs, the first writes)
    for more, after in ((1, None), (4, None), (None, 1.5)):
        proc = start_index([str(docs), "--fast", "--json"], home, embed_env)
        started = time.monotonic()
        if after is not None:
            killed = kill_when(proc, lambda: time.monotonic() - started > after)  # noqa: B023
        else:
            killed = kill_when(proc, lambda: updated() >= done + more)  # noqa: B023
        before, done = done, assert_consistent(home, embed_env, old, new)
        half_way += killed and before < done < len(new)
        print(f"killed={killed}: {done} of {len(new)} articles at their new version")
    assert half_way >= 2  # killed at least twice while replacing articles

    rerun = json.loads(cli("index", str(docs), "--fast", "--json", home=home, env=embed_env).stdout)
    assert rerun["failed"] == [] and rerun["added"] == 0
    assert assert_consistent(home, embed_env, old, new) == len(new)
    assert_clean(home, embed_env, docs, tmp_path)


# ---- kill -9 during --rebuild ----------------------------------------------------------------------


def building(home: Path) -> bool:
    """Whether a rebuild's collections exist beside the active index (read from Chroma's own database, which
    neither opens the store nor waits for the writer)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{home / 'chroma' / 'chroma.sqlite3'}?mode=ro", uri=True,
                                                timeout=0.2)) as db:
            names = [row[0] for row in db.execute("SELECT name FROM collections")]
    except sqlite3.Error:
        return False
    return any(re.fullmatch(r"newsdesk-[a-z]+-g[0-9a-f]{8}", name) for name in names)


def touched(home: Path, env: dict, old: dict) -> bool:
    """Whether the index being served is no longer exactly ``old`` (what a rebuild in place would do)."""
    return registry(home, env) != {a: v[0] for a, v in old.items()}


@pytest.mark.slow  # real processes killed twice, then run to the end: ~30 s
def test_kill_during_a_rebuild_leaves_the_old_index(embed_env, tmp_path):
    docs = write_docs(tmp_path / "docs", articles=60, paragraphs=40, year=2019)
    home = tmp_path / "home"
    cli("index", str(docs), "--fast", "--json", home=home, env=embed_env)
    old = versions(docs)
    before = json.loads(cli("stats", "--json", home=home, env=embed_env).stdout)
    write_docs(docs, articles=60, paragraphs=40, year=2020)
    new = versions(docs)

    kills = 0
    for delay in (0.0, 1.0):  # as soon as the rebuild's collections appear, and a second later
        proc = start_index([str(docs), "--rebuild", "--fast", "--json"], home, embed_env)
        seen: list[float] = []

        def ready(seen: list[float] = seen, delay: float = delay) -> bool:
            if not seen and (building(home) or touched(home, embed_env, old)):
                seen.append(time.monotonic())
            return bool(seen) and time.monotonic() - seen[0] >= delay

        kills += kill_when(proc, ready)
        assert assert_consistent(home, embed_env, old, new) == 0  # the old index, whole
        assert json.loads(cli("stats", "--json", home=home, env=embed_env).stdout) == before
    assert kills == 2

    report = json.loads(cli("index", str(docs), "--rebuild", "--fast", "--json", home=home, env=embed_env).stdout)
    assert report["added"] == len(new) and report["failed"] == []
    assert assert_consistent(home, embed_env, old, new) == len(new)
    assert_clean(home, embed_env, docs, tmp_path)
    names = state(home, embed_env)["collections"]
    assert len({n.rpartition("-")[2] for n in names if n.startswith("newsdesk-articles")}) == 1  # leftovers gone


# ---- writes in batches ---------------------------------------------------------------------------


@pytest.mark.slow  # 10,000 passages embedded and written twice: ~20 s
def test_an_article_of_ten_thousand_passages_is_indexed_and_updated(embed_env, tmp_path):
    docs = write_docs(tmp_path / "docs", articles=1, paragraphs=10_000, year=2019)
    home = tmp_path / "home"
    report = json.loads(cli("index", str(docs), "--fast", "--json", home=home, env=embed_env).stdout)
    assert report["added"] == 1 and report["chunks"] == 10_000, report
    write_docs(docs, articles=1, paragraphs=10_000, year=2020)
    report = json.loads(cli("index", str(docs), "--fast", "--json", home=home, env=embed_env).stdout)
    assert report["updated"] == 1 and report["chunks"] == 10_000, report
    stats = json.loads(cli("stats", "--json", home=home, env=embed_env).stdout)
    assert stats["articles"] == 1 and stats["chunks"] == 10_000  # the old version's 10,000 are gone
    last = paragraph("day 0", 9_999, 10_000, 2020)
    hits = json.loads(cli("search", embed_text("Report 0", last), "--json", home=home, env=embed_env).stdout)["hits"]
    assert hits[0]["text"] == last


class _Relay(BaseHTTPRequestHandler):
    """Passes HTTP requests on to the Chroma server; once ``fail_after`` writes have passed, answers every
    write with 503, as a server going away half-way through would (reads still pass)."""

    protocol_version = "HTTP/1.1"
    upstream: tuple[str, int]
    writes = 0
    fail_after: int | None = None
    lock = threading.Lock()

    def _relay(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        cls = type(self)
        if self.path.rsplit("/", 1)[-1] in ("add", "upsert", "delete", "update"):
            with cls.lock:
                cls.writes += 1
                refused = cls.fail_after is not None and cls.writes > cls.fail_after
            if refused:
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        conn = http.client.HTTPConnection(*cls.upstream, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        conn.close()

    do_GET = do_POST = do_PUT = do_DELETE = _relay

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.fixture
def relay(chroma_server):
    """A relay in front of the real Chroma server: yields its class (``writes``, ``fail_after``) and port."""
    relay_cls = type("Relay", (_Relay,), {"upstream": chroma_server, "writes": 0, "fail_after": None})
    server = ThreadingHTTPServer(("127.0.0.1", 0), relay_cls)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield relay_cls, server.server_address[1]
    finally:
        server.shutdown()


@pytest.mark.slow  # a real Chroma server, 1,200 passages written three times: ~12 s
def test_an_update_that_fails_half_way_keeps_the_previous_version(relay, embed_env, tmp_path):
    relay_cls, port = relay
    env = {**embed_env, "CHROMA_HOST": "127.0.0.1", "CHROMA_PORT": str(port)}
    docs = write_docs(tmp_path / "docs", articles=1, paragraphs=1_200, year=2019)  # 2 batches of passages
    home = tmp_path / "home"
    cli("index", str(docs), "--fast", "--json", home=home, env=env)
    old = versions(docs)
    write_docs(docs, articles=1, paragraphs=1_200, year=2020)
    new = versions(docs)

    relay_cls.writes, relay_cls.fail_after = 0, 3  # the update's first few writes pass, then none
    proc = run_cli("index", str(docs), "--fast", "--json", home=home, env=env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("newsdesk: error: the index store failed while writing articles"), proc.stderr
    assert relay_cls.writes >= 4  # journal, text and the first batch of passages written; the second refused

    relay_cls.fail_after = None  # the server is back
    assert assert_consistent(home, env, old, new) == 0  # listed and searchable as it was
    report = json.loads(cli("index", str(docs), "--fast", "--json", home=home, env=env).stdout)
    assert report["updated"] == 1
    assert assert_consistent(home, env, old, new) == 1
    got = state(home, env)
    assert got["raw"] == len(new["report-000"][1]) and got["texts"] == 1  # the failed write's passages are gone


@pytest.mark.slow  # a real Chroma server, two rebuilds: ~10 s
def test_a_rebuild_on_a_server_switches_only_when_complete_and_readers_follow(relay, embed_env, tmp_path):
    relay_cls, port = relay
    env = {**embed_env, "CHROMA_HOST": "127.0.0.1", "CHROMA_PORT": str(port)}
    docs = write_docs(tmp_path / "docs", articles=8, paragraphs=60, year=2019)
    home = tmp_path / "home"
    cli("index", str(docs), "--fast", "--json", home=home, env=env)
    old = versions(docs)
    names = state(home, env)["collections"]
    write_docs(docs, articles=8, paragraphs=60, year=2020)
    new = versions(docs)
    settings = Settings.load(environ=clean_env(home, **env), env_file=None)
    reader = Index(settings)  # a bot's index, open all along
    first = sorted(old["report-003"][1])[1][1]
    assert reader.search(embed_text("Report 3", first), 1)[0].text == first

    relay_cls.writes, relay_cls.fail_after = 0, 3  # the rebuild's writes fail after the first few
    proc = run_cli("index", str(docs), "--rebuild", "--fast", "--json", home=home, env=env)
    assert proc.returncode == 1 and proc.stderr.startswith("newsdesk: error: the index store failed while writing")
    relay_cls.fail_after = None
    assert assert_consistent(home, env, old, new) == 0  # the old index, whole
    assert state(home, env)["collections"] == names  # what the failed rebuild wrote was dropped
    assert reader.search(embed_text("Report 3", first), 1)[0].text == first

    report = json.loads(cli("index", str(docs), "--rebuild", "--fast", "--json", home=home, env=env).stdout)
    assert report["added"] == len(new)
    assert assert_consistent(home, env, old, new) == len(new)
    got = state(home, env)
    assert got["raw"] == sum(len(v[1]) for v in new.values())  # the old collections were dropped
    assert len([n for n in got["collections"] if n.startswith("newsdesk-passages")]) == 1
    # the reader follows the switch, with no error: a read on the collections the rebuild dropped, a search
    assert {row["id"]: row["chunks"] for row in reader.list_articles()} == {a: len(v[1]) for a, v in new.items()}
    replaced = sorted(new["report-003"][1])[1][1]
    assert reader.search(embed_text("Report 3", replaced), 1)[0].text == replaced
