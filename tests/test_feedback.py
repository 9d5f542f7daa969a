"""👍/👎 votes (``bot.feedback``): recorded in ``<home>/feedback.jsonl``, listed and summarised by
`newsdesk feedback [--json]`, taken as questions by `newsdesk eval`. The bot's vote buttons, end to end, are in
tests/test_restart.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from newsdesk.bot.answers import Answer, Citation, Sentence
from newsdesk.bot.engine import Engine
from newsdesk.bot.feedback import record_vote
from newsdesk.index.errors import NewsdeskError
from tests.conftest import make_settings, run_cli

ROOT = Path(__file__).resolve().parent.parent
WEAPONS = "What weapons did each side allege?"
SPOKESPERSON = "Who is the spokesperson of the Armenian Ministry of Defense?"


def answer(question: str, mode: str = "extractive", quote: str = "Shushan Stepanyan") -> Answer:
    citation = Citation(n=1, article_id="karabakh", title=None, source=None, published=None, url=None, quote=quote,
                        start=0, end=len(quote), chunk_id="karabakh#1")
    return Answer(question=question, text=f"[1] «{quote}»", sentences=[Sentence(quote, [1])], citations=[citation],
                  mode=mode, abstained=False, retrieved=["karabakh#1", "karabakh#4"])


def feedback(home: Path, *args: str) -> dict:
    proc = run_cli("feedback", "--json", *args, home=home, check=True)
    return json.loads(proc.stdout)


def test_votes_are_listed_and_summarised_and_the_last_vote_wins(tmp_path):
    home = tmp_path / "home"
    path = make_settings(home).feedback_path
    assert run_cli("feedback", home=home, check=True).stdout.startswith("No votes yet")
    record_vote(path, "k1", answer(WEAPONS), "+", chat=1, user=10)
    record_vote(path, "k1", answer(WEAPONS), "-", chat=1, user=10)  # changes their mind: 👎 counts
    record_vote(path, "k1", answer(WEAPONS), "-", chat=1, user=11)
    record_vote(path, "k2", answer(SPOKESPERSON), "up", chat=1, user=10)
    record_vote(path, "k3", answer("Where?", mode="llm"), "+", chat=2, user=12)
    record_vote(path, "k4", answer("Where?", mode="llm", quote="Facebook"), "-", chat=2, user=12)

    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 6  # appended, never rewritten
    first = lines[0]
    assert (first["question"], first["mode"], first["vote"], first["answer"]) == (WEAPONS, "extractive", "up",
                                                                                   "[1] «Shushan Stepanyan»")
    assert first["citations"] == [{"n": 1, "article_id": "karabakh", "quote": "Shushan Stepanyan"}]
    assert first["retrieved"] == ["karabakh#1", "karabakh#4"] and first["time"].endswith("Z")
    assert path.stat().st_mode & 0o777 == 0o600

    report = feedback(home)
    s = report["summary"]
    assert (s["votes"], s["up"], s["down"], s["answers"], s["users"]) == (5, 2, 3, 4, 3)
    assert s["per_mode"] == {"extractive": {"votes": 3, "up": 1, "down": 2, "up_rate": 0.3333},
                             "llm": {"votes": 2, "up": 1, "down": 1, "up_rate": 0.5}}
    assert [(q["question"], q["down"], q["up"]) for q in s["worst_questions"]] == [(WEAPONS, 2, 0), ("Where?", 1, 1)]
    assert [(v["answer_key"], v["user"], v["vote"]) for v in report["votes"]] == [
        ("k1", 10, "down"), ("k1", 11, "down"), ("k2", 10, "up"), ("k3", 12, "up"), ("k4", 12, "down")]

    text = run_cli("feedback", home=home, check=True).stdout
    assert "5 votes on 4 answers by 3 users: 2 👍, 3 👎" in text
    assert "👍 rate per mode: extractive 33% (1 of 3), llm 50% (1 of 2)" in text
    assert f"Most 👎:\n  2 👎 0 👍  {WEAPONS}\n  1 👎 1 👍  Where?" in text
    assert text.count("👎  extractive") == 2 and "👍  llm" in text


def test_a_damaged_line_is_skipped_with_one_warning(tmp_path):
    home = tmp_path / "home"
    path = make_settings(home).feedback_path
    record_vote(path, "k1", answer("Who?\x1b[2J"), "+", chat=1, user=10)
    with path.open("a", encoding="utf-8") as f:
        f.write('{"vote": "up", "question": "cut sho\n[1, 2]\n')  # a torn line, and a line that is no vote
    record_vote(path, "k2", answer("Where?"), "-", chat=1, user=10)
    proc = run_cli("feedback", home=home, check=True)
    assert proc.stderr.count("\n") == 1 and "2 damaged line(s) skipped" in proc.stderr
    assert "2 votes on 2 answers" in proc.stdout
    assert "\x1b" not in proc.stdout and "Who?\\x1b[2J" in proc.stdout  # a question cannot drive the terminal


def test_a_vote_that_cannot_be_written_is_one_line_error(tmp_path):
    (tmp_path / "home").write_text("a file, not a folder")
    with pytest.raises(NewsdeskError, match="cannot record the vote in .*feedback.jsonl"):
        record_vote(tmp_path / "home" / "feedback.jsonl", "k", answer("q"), "+", chat=1, user=1)
    with pytest.raises(ValueError):
        record_vote(tmp_path / "votes.jsonl", "k", answer("q"), "sideways", chat=1, user=1)


_VOTER = """
import sys
from pathlib import Path
from newsdesk.bot.answers import Answer
from newsdesk.bot.feedback import record_vote
answer = Answer(question="q" * 3000, text="a", sentences=[], citations=[], mode="extractive", abstained=True)
for i in range(200):
    record_vote(Path(sys.argv[1]), f"{sys.argv[2]}{i}", answer, "+", chat=1, user=sys.argv[2])
"""


def test_two_processes_append_votes_at_once(tmp_path):
    path = tmp_path / "feedback.jsonl"
    procs = [subprocess.Popen([sys.executable, "-c", _VOTER, str(path), who], cwd=ROOT, stderr=subprocess.PIPE,
                              text=True) for who in ("bot", "chat")]
    errors = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 400 and all(json.loads(line)["question"] == "q" * 3000 for line in lines)


def test_eval_takes_the_feedback_file_as_questions(example_home):
    """A 👍 answer's quotes are the gold of its question; a question whose last vote is 👎 is asked, not scored."""
    settings = make_settings(example_home)
    engine = Engine(settings)
    liked, disliked = engine.ask_sync(SPOKESPERSON), engine.ask_sync(WEAPONS)
    assert liked.citations and liked.retrieved and set(liked.retrieved) >= {c.chunk_id for c in liked.citations}
    record_vote(settings.feedback_path, "a", liked, "+", chat=1, user=1)
    record_vote(settings.feedback_path, "b", disliked, "+", chat=1, user=1)
    record_vote(settings.feedback_path, "b", disliked, "-", chat=1, user=1)
    proc = run_cli("eval", str(settings.feedback_path), "--use-index", "--json", home=example_home, check=True)
    report = json.loads(proc.stdout)
    # the quotes come from the passages retrieved then (top 5): the same search finds them again
    assert (report["questions"], report["scored"], report["hit@5"]) == (2, 1, 1.0), report
    assert report["article_recall@1"] == 1.0  # the 👍 answer's article
