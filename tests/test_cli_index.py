"""`newsdesk index / search / stats / list` as a user runs them: the real command (in-process), its --json
formats, its plain-text output and its exit statuses. (What the index does is in test_index.py.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import CONSOLE_SCRIPT, EXAMPLE, XQUAD, run_cli, run_cli_process

KARABAKH = "karabakh-2020-09-28"
TITLE = "يريفان تعلن استخدام أذربيجان لنظام قاذفات اللهب الثقيل في قره باغ"
WEAPONS_Q = "What weapons did each side allege?"
REPORT_KEYS = {"added", "updated", "unchanged", "removed", "failed", "chunks", "seconds"}
HIT_KEYS = {
    "rank",
    "score",
    "article_id",
    "title",
    "source",
    "published",
    "url",
    "chunk_id",
    "text",
    "start",
    "end",
    "also",
}
ROW_KEYS = {"id", "title", "source", "published", "url", "lang", "chunks", "group"}


@pytest.fixture(scope="module")
def home(example_index, tmp_path_factory) -> Path:
    """A copy of the example index (both stages), shared by the read-only commands below."""
    dest = tmp_path_factory.mktemp("cli-index") / "home"
    shutil.copytree(example_index, dest)
    return dest


def ok(*args: str, home: Path, env: dict | None = None, status: int = 0):
    proc = run_cli(*args, home=home, env=env)
    assert proc.returncode == status, f"newsdesk {' '.join(args)} → {proc.returncode}:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def error_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("newsdesk: error: "), proc.stderr
    return lines[0]


# ---- index ---------------------------------------------------------------------------------------


def test_index_json_report_and_exit_status(tmp_path):
    home = tmp_path / "home"
    report = json.loads(ok("index", str(EXAMPLE), "--fast", "--json", home=home).stdout)
    assert set(report) == REPORT_KEYS
    assert (report["added"], report["updated"], report["unchanged"], report["removed"]) == (1, 0, 0, 0)
    assert report["failed"] == [] and report["chunks"] > 0
    assert isinstance(report["seconds"], (int, float)) and report["seconds"] >= 0

    missing = tmp_path / "no-such-article.txt"
    other = tmp_path / "notes.pdf"
    other.write_bytes(b"%PDF-1.4")
    report = json.loads(
        ok("index", str(EXAMPLE), str(missing), str(other), "--fast", "--json", home=home, status=2).stdout
    )
    assert set(report) == REPORT_KEYS and report["unchanged"] == 1 and report["chunks"] == 0
    assert [set(f) for f in report["failed"]] == [{"source", "error"}] * 2
    errors = {f["source"]: f["error"] for f in report["failed"]}
    assert errors[str(missing)] == "no such file or folder"
    assert ".pdf" in errors[str(other)]


def test_index_plain_text_summary(tmp_path):
    home = tmp_path / "home"
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    proc = ok("index", str(EXAMPLE), str(empty), "--fast", home=home, status=2)
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("1 added, 0 updated, 0 unchanged, 0 removed, 1 failed; ")
    assert "passages written in" in lines[0]
    assert lines[1:] == [f"  failed: {empty}: empty file"]


def test_index_needs_a_source(tmp_path):
    proc = run_cli("index", home=tmp_path / "home")
    assert proc.returncode == 2 and "PATH_OR_URL" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_setting_is_a_one_line_error(tmp_path):
    proc = run_cli(
        "index", str(EXAMPLE), "--json", home=tmp_path / "home", env={"NEWSDESK_EMBEDDER": "magic"}
    )
    assert "NEWSDESK_EMBEDDER" in error_line(proc)


# ---- search --------------------------------------------------------------------------------------


def test_search_json_hits(home):
    data = json.loads(ok("search", WEAPONS_Q, "--json", home=home).stdout)
    assert data["question"] == WEAPONS_Q
    hits = data["hits"]
    assert 1 <= len(hits) <= 5
    text = EXAMPLE.read_text(encoding="utf-8").strip()
    for rank, hit in enumerate(hits, 1):
        assert set(hit) == HIT_KEYS
        assert hit["rank"] == rank and isinstance(hit["score"], float)
        assert hit["article_id"] == KARABAKH and hit["title"] == TITLE
        assert hit["source"] == "سبوتنيك" and hit["published"] == "2020-09-28" and hit["url"] is None
        assert hit["chunk_id"].startswith(f"{KARABAKH}#")
        assert text[hit["start"] : hit["end"]] == hit["text"]
    assert "توس" in hits[0]["text"]


def test_search_k(home):
    two = json.loads(ok("search", "قره باغ", "--k", "2", "--json", home=home).stdout)["hits"]
    assert [h["rank"] for h in two] == [1, 2]
    many = json.loads(ok("search", "قره باغ", "--k", "50", "--json", home=home).stdout)["hits"]
    chunks = json.loads(ok("stats", "--json", home=home).stdout)["chunks"]
    assert len(many) == chunks  # every passage, once
    assert len({h["chunk_id"] for h in many}) == chunks
    for bad in ("0", "-1", "x"):
        proc = run_cli("search", "قره باغ", "--k", bad, home=home)
        assert proc.returncode == 2 and "--k" in proc.stderr and "Traceback" not in proc.stderr


def test_search_plain_text(home):
    out = ok("search", WEAPONS_Q, "--k", "2", home=home).stdout
    assert out.startswith("1. [")
    assert f"{TITLE} — سبوتنيك, 2020-09-28  ({KARABAKH}#" in out
    assert "\n2. [" in out


def test_search_questions_file(home, tmp_path):
    qfile = tmp_path / "questions.txt"
    qfile.write_text(
        f"{WEAPONS_Q}\n\n"
        + json.dumps({"question_en": "How many tanks did Armenia say Azerbaijan lost?"})
        + "\n"
        + json.dumps({"question": "من هي المتحدثة باسم وزارة الدفاع الأرمينية؟"}, ensure_ascii=False)
        + "\n",
        encoding="utf-8",
    )
    proc = ok("search", "--questions", str(qfile), "--k", "3", "--json", home=home)
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["question"] for r in results] == [
        WEAPONS_Q,
        "How many tanks did Armenia say Azerbaijan lost?",
        "من هي المتحدثة باسم وزارة الدفاع الأرمينية؟",
    ]
    assert all(len(r["hits"]) == 3 and set(r["hits"][0]) == HIT_KEYS for r in results)
    assert any("ثلاث دبابات" in h["text"] for h in results[1]["hits"])
    assert any("شوشان ستيبانيان" in h["text"] for h in results[2]["hits"])

    assert "cannot read" in error_line(
        run_cli("search", "--questions", str(tmp_path / "nope.txt"), home=home)
    )
    assert "QUERY" in error_line(run_cli("search", home=home))


def test_search_empty_index(tmp_path):
    home = tmp_path / "home"
    assert (
        ok("search", WEAPONS_Q, home=home).stdout.strip()
        == "No articles are indexed yet: run `newsdesk index PATH`."
    )
    assert json.loads(ok("search", WEAPONS_Q, "--json", home=home).stdout) == {
        "question": WEAPONS_Q,
        "hits": [],
    }


def test_english_xquad_question_finds_its_arabic_paragraph(tmp_path):
    """One xquad article pair, Arabic indexed, English question: the passage with the answer comes first."""
    home = tmp_path / "home"
    ok("index", str(XQUAD / "articles-ar" / "xquad-00-super-bowl-50.txt"), str(EXAMPLE), "--fast", home=home)
    hits = json.loads(
        ok("search", "How many points did the Panthers defense surrender?", "--json", home=home).stdout
    )["hits"]
    assert hits[0]["article_id"] == "xquad-00-super-bowl-50" and "308" in hits[0]["text"]


# ---- stats and list ------------------------------------------------------------------------------


def test_stats(home):
    data = json.loads(ok("stats", "--json", home=home).stdout)
    assert set(data) == {"articles", "languages", "chunks", "embedder", "store", "accurate"}
    assert data["articles"] == 1 and data["chunks"] >= 5 and data["languages"] == {"ar": 1}
    assert data["embedder"] == "use-m3"
    assert data["store"] == f"embedded chroma at {home}"
    assert set(data["accurate"]) == {"model", "passages", "pending"}
    assert data["accurate"]["passages"] == data["chunks"] and data["accurate"]["pending"] == 0

    text = ok("stats", home=home).stdout.splitlines()
    assert text[:4] == [
        "articles: 1",
        f"passages: {data['chunks']}",
        "embedder: use-m3",
        f"store: embedded chroma at {home}",
    ]
    assert text[4].startswith(f"accurate vectors: {data['chunks']} of {data['chunks']} passages (")
    assert text[5] == "languages: ar 1"


def test_stats_fast_index_has_pending_accurate_vectors(tmp_path):
    home = tmp_path / "home"
    ok("index", str(EXAMPLE), "--fast", home=home)
    data = json.loads(ok("stats", "--json", home=home, env={"NEWSDESK_ACCURATE": "off"}).stdout)
    assert data["accurate"] == {
        "model": "off (NEWSDESK_ACCURATE=off)",
        "passages": 0,
        "pending": data["chunks"],
    }


def test_list(home):
    rows = json.loads(ok("list", "--json", home=home).stdout)
    assert len(rows) == 1 and set(rows[0]) == ROW_KEYS
    row = rows[0]
    assert row["id"] == KARABAKH and row["title"] == TITLE and row["source"] == "سبوتنيك"
    assert row["published"] == "2020-09-28" and row["url"] is None
    stats = json.loads(ok("stats", "--json", home=home).stdout)
    assert row["chunks"] == stats["chunks"]
    assert (
        ok("list", home=home).stdout.strip()
        == f"{KARABAKH}  {TITLE} — سبوتنيك, 2020-09-28, ar  ({row['chunks']} passages)"
    )


def test_stats_and_list_of_an_empty_index(tmp_path):
    home = tmp_path / "home"
    data = json.loads(ok("stats", "--json", home=home).stdout)
    assert (data["articles"], data["chunks"], data["accurate"]["pending"]) == (0, 0, 0)
    assert json.loads(ok("list", "--json", home=home).stdout) == []
    assert ok("list", home=home).stdout.strip() == "No articles are indexed yet: run `newsdesk index PATH`."


# ---- the installed command, as a process -----------------------------------------------------------


def test_console_script_runs_as_a_process(home, tmp_path):
    """The `newsdesk` script pip installed, in its own process (the other tests run the command in-process):
    what it writes, the next command reads, even one run in a process that had the store open before (the
    tests' in-process runner drops the store's client after each command, as a process exit does); its exit
    status; a one-line error."""
    mine = tmp_path / "home"
    shutil.copytree(home, mine)
    panthers = "How many points did the Panthers defense surrender?"
    assert json.loads(ok("search", panthers, "--json", home=mine).stdout)["hits"][0]["article_id"] == KARABAKH
    proc = run_cli_process("index", str(XQUAD / "articles-ar" / "xquad-00-super-bowl-50.txt"), "--fast", "--json",
                           home=mine, command=[str(CONSOLE_SCRIPT)], check=True)
    assert json.loads(proc.stdout)["added"] == 1 and proc.stderr == ""
    hits = json.loads(ok("search", panthers, "--json", home=mine).stdout)["hits"]
    assert hits[0]["article_id"] == "xquad-00-super-bowl-50" and "308" in hits[0]["text"]
    proc = run_cli_process("search", WEAPONS_Q, home=tmp_path / "other", env={"NEWSDESK_EMBEDDER": "magic"},
                           command=[str(CONSOLE_SCRIPT)])
    assert "NEWSDESK_EMBEDDER" in error_line(proc) and proc.stdout == ""
