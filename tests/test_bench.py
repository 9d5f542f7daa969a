"""The benchmarks in bench/ run end to end at their smallest sizes and write their table, chart and data.

Each script runs as a subprocess (``python -m bench.NAME``, as documented in bench/README.md) into a temp
output folder; together they take about a minute on an idle 2-core machine. The real sizes are run by hand
(see docs/benchmarks/).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import common
from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # the benchmarks' own run: `pytest -m slow`


def run_bench(script: str, out: Path | None, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``bench/<script>`` as bench/README.md says: ``python -m bench.NAME`` from the repository root."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NEWSDESK_", "OPENAI_", "CHROMA_", "TELEGRAM_"))}
    out_args = ["--out", str(out)] if out is not None else []
    proc = subprocess.run([sys.executable, "-m", f"bench.{Path(script).stem}", *args, *out_args],
                          capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, f"{script} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc


def assert_report(out: Path, name: str, *must_contain: str) -> dict:
    md = (out / f"{name}.md").read_text(encoding="utf-8")
    assert md.startswith("# ") and "|---|" in md, md[:500]
    for text in must_contain:
        assert text in md, f"{text!r} not in {name}.md"
    png = (out / f"{name}.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    return json.loads((out / f"{name}.json").read_text(encoding="utf-8"))


# -- the helpers ---------------------------------------------------------------------------------------------

def test_corpus_paragraphs_are_unique_and_keep_their_script(tmp_path):
    from newsdesk.index.lexical import script_of

    bases = common.base_paragraphs()
    assert len(bases) == 240 and {b.lang for b in bases[:10]} == {"ar", "en"}
    texts = [common.unique_text(bases[n % len(bases)], n) for n in range(600)]
    assert len(set(texts)) == 600
    assert all(script_of(t) == ("ar" if bases[n % 240].lang == "ar" else "latin")
               for n, t in enumerate(texts))
    assert common.write_corpus(tmp_path / "c", 23) == 5  # 5 + 5 + 5 + 5 + 3 paragraphs
    files = sorted((tmp_path / "c").glob("*.txt"))
    title, paras = common.read_article(files[-1])
    assert len(paras) == 3 and title.endswith("(1)")
    questions = common.english_questions(120)
    assert len(set(questions)) == 120 and questions == common.english_questions(120)


def test_percentile_and_table():
    assert common.percentile([1, 2, 3, 4], 50) == 2.5
    assert common.percentile(list(range(101)), 95) == 95
    assert common.markdown_table(["a", "b"], [[1, 2]]) == "| a | b |\n|---|---|\n| 1 | 2 |"


# -- each benchmark at its smallest size ---------------------------------------------------------------------

@pytest.mark.slow
def test_search_scale_smoke(tmp_path):
    cache, scratch = str(tmp_path / "cache"), str(tmp_path / "store")
    run_bench("search_scale.py", tmp_path, "--sizes", "20", "--quick", "--cache", cache, "--scratch", scratch)
    data = assert_report(tmp_path, "search_scale", "embedded p95 ms", "server p95 ms", "chroma run")
    result = data["results"]["20"]
    assert result["embedded"]["passages"] == result["embedded"]["accurate"] == 20
    assert result["server"]["server_rss_mb"] > 0 and result["embedded"]["p95_ms"] > 0
    # a kept store is filled on from its size (how a stopped 1M fill goes on), not from nothing
    run_bench("search_scale.py", tmp_path, "--sizes", "30", "--quick", "--cache", cache, "--scratch", scratch,
              "--reuse", "--modes", "embedded")
    data = assert_report(tmp_path, "search_scale", "embedded p95 ms")
    assert data["builds"]["30"]["passages"] == data["builds"]["30"]["accurate"] == 30
    assert data["builds"]["30"]["added"] == 10


@pytest.mark.slow
def test_bot_load_smoke(tmp_path):
    run_bench("bot_load.py", tmp_path, "--chats", "1,2", "--quick", "--both")
    for name, stage in (("bot_load", "both stages"), ("bot_load_fast", "stage 1 only")):
        data = assert_report(tmp_path, name, "No message lost or answered twice", stage, "took turns")
        assert data["problems"] == [] and data["summary"]["2"]["answers"] == 2
        for stats in (data["stats"], data["stats_after"]):  # the stage-1 bot did not fill in stage 2 itself
            assert stats["accurate"]["passages"] == (0 if name == "bot_load_fast" else stats["chunks"])
    assert (tmp_path / "bot_load_both.png").stat().st_size > 10_000  # both bots on one chart


@pytest.mark.slow
def test_index_scale_smoke(tmp_path):
    run_bench("index_scale.py", tmp_path, "--sizes", "20", "--stage2-size", "5", "--quick")
    data = assert_report(tmp_path, "index_scale", "stage 1 at 20", "stage 2 (5-paragraph sample)")
    stage1 = data["stage1"]["20"]
    assert stage1["index"]["passages"] == stage1["encoder"]["passages"] == stage1["ours"]["passages"] == 20
    assert data["stage2"]["index"]["passages"] == data["stage2"]["encoder"]["passages"] == 5


@pytest.mark.slow
def test_reindex_cost_smoke(tmp_path):
    run_bench("reindex_cost.py", tmp_path, "--sizes", "30", "--quick")
    data = assert_report(tmp_path, "reindex_cost", "re-index, nothing changed")
    assert data["problems"] == []
    assert data["results"]["30"]["unchanged"]["inner_s"] < data["results"]["30"]["first"]["inner_s"]


@pytest.mark.slow
def test_ab_index_smoke():
    proc = run_bench("ab_index.py", None, "HEAD", "--size", "20", "--runs", "1")
    rows = {line.split("|")[1].strip() for line in proc.stdout.splitlines() if line.startswith("| ")}
    assert {"HEAD", "USE alone"} <= rows
    worktrees = subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True, text=True).stdout
    assert "newsdesk-ab-" not in worktrees  # the temporary checkouts are removed
