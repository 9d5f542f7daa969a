"""`newsdesk ask` and `newsdesk chat` as a user runs them: the real command (run in-process), offline and
against tests/fake_openai.py (a real OpenAI-compatible HTTP server on 127.0.0.1)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from newsdesk.index.service import Index
from newsdesk.index.textnorm import contains
from tests.conftest import SEED_QUESTIONS, copy_of_example, make_settings, run_cli
from tests.fake_openai import Reply, Sleep

SPOKESPERSON_Q = "Who is the spokesperson of the Armenian Ministry of Defense?"
AIR_DEFENCE_Q = "How many anti-aircraft systems did the Azerbaijani army say it destroyed?"
ANSWER_KEYS = {"question", "answer", "mode", "abstained", "sentences", "citations", "dropped", "notice",
               "retrieved"}
CITATION_KEYS = {"n", "article_id", "title", "source", "published", "url", "quote", "start", "end",
                 "verified", "repaired", "pieces", "also"}
TITLE = "يريفان تعلن استخدام أذربيجان لنظام قاذفات اللهب الثقيل في قره باغ"


@pytest.fixture(scope="module")
def home(example_index, tmp_path_factory) -> Path:
    return copy_of_example(example_index, tmp_path_factory, "cli-ask")


@pytest.fixture(scope="module")
def article(home) -> str:
    return Index(make_settings(home)).article_text("karabakh-2020-09-28") or ""


def llm_env(base_url: str, **extra: str) -> dict:
    return {"OPENAI_API_KEY": "sk-test-secret", "OPENAI_BASE_URL": base_url,
            "NEWSDESK_LLM_MODEL": "fake-model", **extra}


def check_answer_json(data: dict, article: str) -> None:
    assert set(data) == ANSWER_KEYS
    assert isinstance(data["answer"], str) and data["answer"]
    for n, c in enumerate(data["citations"], 1):
        assert set(c) == CITATION_KEYS
        assert c["n"] == n and c["verified"] is True
        for piece in c["pieces"] or [c]:  # verbatim in the article (each piece of a quote that leaves words out)
            assert article[piece["start"]:piece["end"]] == piece["quote"]
    for s in data["sentences"]:
        assert set(s) == {"text", "citations"}
        assert all(1 <= n <= len(data["citations"]) for n in s["citations"])


def chat(home: Path, lines: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    """`newsdesk chat` with ``lines`` as its standard input."""
    return run_cli("chat", home=home, env=env, input="".join(f"{line}\n" for line in lines))


# ---- ask, offline --------------------------------------------------------------------------------

def test_ask_json_offline(home, article):
    proc = run_cli("ask", "Where did Stepanyan publish her statement?", "--json", home=home, check=True)
    data = json.loads(proc.stdout)
    check_answer_json(data, article)
    assert data["question"] == "Where did Stepanyan publish her statement?"
    assert data["mode"] == "extractive" and data["abstained"] is False and data["notice"] is None
    assert data["dropped"] == []
    assert any(contains(c["quote"], "صفحتها في فيسبوك") for c in data["citations"])
    c = data["citations"][0]
    assert (c["article_id"], c["title"], c["source"], c["published"], c["url"]) == (
        "karabakh-2020-09-28", TITLE, "سبوتنيك", "2020-09-28", None)


def test_ask_text_offline(home):
    proc = run_cli("ask", AIR_DEFENCE_Q, home=home, check=True)
    out = proc.stdout
    assert out.startswith("Offline answer:")
    answer, sources = out.split("\nSources:\n")
    assert "[1] «" in answer
    lines = sources.strip("\n").split("\n")
    assert lines[0] == f"[1] {TITLE} — سبوتنيك, 2020-09-28"
    assert lines[1].startswith("    «") and lines[1].endswith("»")
    assert "12 منظومة مضادة للطائرات" in sources


def test_ask_unrelated_question_abstains(home):
    proc = run_cli("ask", "What is the best recipe for chocolate cake?", "--json", home=home, check=True)
    data = json.loads(proc.stdout)
    assert data["abstained"] is True and data["citations"] == [] and data["sentences"] == []
    assert data["answer"] == "The indexed articles don't answer this question."
    text = run_cli("ask", "What", "is", "the", "best", "recipe", "for", "chocolate", "cake?", home=home,
                   check=True).stdout
    assert text.strip() == "The indexed articles don't answer this question."


def test_ask_k_limits_passages(home, article):
    data = json.loads(run_cli("ask", "What weapons did each side allege?", "--k", "1", "--json", home=home,
                              check=True).stdout)
    check_answer_json(data, article)
    assert 1 <= len(data["citations"]) <= 2  # at most two quotes from the one passage


def test_ask_questions_file(home, article, tmp_path):
    proc = run_cli("ask", "--questions", str(SEED_QUESTIONS), "--json", home=home, check=True)
    seed = [json.loads(line) for line in SEED_QUESTIONS.read_text(encoding="utf-8").splitlines()
            if line.strip()]
    answers = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [a["question"] for a in answers] == [q["question"] for q in seed]
    found = 0
    for q, a in zip(seed, answers, strict=True):
        check_answer_json(a, article)
        if q["expect"] == "answer":
            found += any(contains(c["quote"], q["evidence"][0]) for c in a["citations"])
    assert found >= 8

    plain = tmp_path / "questions.txt"
    plain.write_text(f"{AIR_DEFENCE_Q}\n\n{SPOKESPERSON_Q}\n", encoding="utf-8")
    lines = run_cli("ask", "--questions", str(plain), "--json", home=home, check=True).stdout.splitlines()
    assert [json.loads(line)["question"] for line in lines] == [AIR_DEFENCE_Q, SPOKESPERSON_Q]


def test_ask_errors(home, tmp_path):
    proc = run_cli("ask", home=home)
    assert proc.returncode == 1 and "give a QUESTION or --questions FILE" in proc.stderr
    proc = run_cli("ask", "--questions", str(tmp_path / "missing.jsonl"), "--json", home=home)
    assert proc.returncode == 1 and "cannot read" in proc.stderr and "Traceback" not in proc.stderr


def test_ask_empty_index(tmp_path):
    proc = run_cli("ask", SPOKESPERSON_Q, home=tmp_path / "empty", check=True)
    assert proc.stdout.strip() == "No articles are indexed yet: run `newsdesk index PATH`."


# ---- ask, LLM mode -------------------------------------------------------------------------------

def test_ask_json_llm(home, article, fake):
    hits = Index(make_settings(home)).search(SPOKESPERSON_Q, 5)
    n = next(i for i, h in enumerate(hits, 1) if "شوشان ستيبانيان" in h.text)
    reply = Reply({"answerable": True, "sentences": [
        {"text": "The spokesperson of Armenia's defence ministry is Shushan Stepanyan.",
         "citations": [{"source": n, "quote": "الأرمينية، شوشان ستيبانيان"}]},  # 3 words: substantial
        {"text": "Azerbaijan shot down thirty Armenian aircraft.",
         "citations": [{"source": n, "quote": "أسقطت أذربيجان ثلاثين طائرة"}]}]})
    fake.script(reply, reply)
    proc = run_cli("ask", SPOKESPERSON_Q, "--json", home=home, env=llm_env(fake.base_url), check=True)
    data = json.loads(proc.stdout)
    check_answer_json(data, article)
    assert data["mode"] == "llm" and data["abstained"] is False and data["notice"] is None
    assert data["answer"] == "The spokesperson of Armenia's defence ministry is Shushan Stepanyan [1]."
    assert data["sentences"] == [
        {"text": "The spokesperson of Armenia's defence ministry is Shushan Stepanyan.", "citations": [1]}]
    assert data["dropped"] == ["Azerbaijan shot down thirty Armenian aircraft."]
    assert [c["quote"] for c in data["citations"]] == ["الأرمينية، شوشان ستيبانيان"]
    request = fake.chat_requests[0]
    assert request.headers["authorization"] == "Bearer sk-test-secret"

    text = run_cli("ask", SPOKESPERSON_Q, home=home, env=llm_env(fake.base_url), check=True).stdout
    assert text == ("The spokesperson of Armenia's defence ministry is Shushan Stepanyan [1].\n\nSources:\n"
                    f"[1] {TITLE} — سبوتنيك, 2020-09-28\n    «الأرمينية، شوشان ستيبانيان»\n")
    assert "thirty" not in text


def test_ask_llm_timeout_falls_back_with_notice(home, article, fake):
    fake.default = Sleep(60)
    env = llm_env(fake.base_url, NEWSDESK_LLM_TIMEOUT="0.5", NEWSDESK_LLM_MAX_ATTEMPTS="1")
    data = json.loads(run_cli("ask", AIR_DEFENCE_Q, "--json", home=home, env=env, check=True).stdout)
    check_answer_json(data, article)
    assert data["mode"] == "fallback" and data["abstained"] is False
    assert data["notice"] and "\n" not in data["notice"]
    assert any(contains(c["quote"], "12 منظومة مضادة للطائرات") for c in data["citations"])

    proc = run_cli("ask", AIR_DEFENCE_Q, home=home, env=env, check=True)
    first, blank, rest = proc.stdout.split("\n", 2)
    assert first == f"({data['notice']})" and blank == ""
    assert rest.startswith("Offline answer:") and "\nSources:\n[1] " in rest
    assert "sk-test-secret" not in proc.stdout + proc.stderr


# ---- chat ----------------------------------------------------------------------------------------

def test_chat_offline(home):
    proc = chat(home, [SPOKESPERSON_Q, "and where did she publish her statement?", "/sources", "/new",
                       "/sources", "", "/quit", "never asked"])
    assert proc.returncode == 0, proc.stderr
    # one part per prompt
    banner, first, second, sources, new, none, *rest = re.split(r"(?m)^> ", proc.stdout)
    assert banner.startswith("Ask about the indexed articles.")
    assert first.startswith("Offline answer:") and "\nSources:\n[1] " in first
    assert second.startswith("Offline answer:")
    assert "صفحتها في فيسبوك" in second  # the follow-up, read with the previous question

    # /sources: each passage of the last answer once, under the numbers of the citations it backs
    cited = re.findall(r"^\[(\d+)\]", second.split("\nSources:\n")[1], re.MULTILINE)
    head = r"^((?:\[\d+\])+) " + re.escape(TITLE) + " — سبوتنيك, 2020-09-28$"
    heads = re.findall(head, sources, re.MULTILINE)
    assert heads and sorted(n for h in heads for n in re.findall(r"\d+", h)) == sorted(cited)
    blocks = [b for b in sources.strip().split("\n\n") if b]
    assert len(blocks) == len(heads) and len({b.split("\n", 1)[1] for b in blocks}) == len(blocks)
    assert "صفحتها في فيسبوك" in sources

    assert new.strip() == "Starting a new conversation."
    assert none.strip() == "No sources yet."
    assert "".join(rest).replace(">", "").strip() == ""  # the empty line is skipped; /quit ends the chat
    assert "never asked" not in proc.stdout
    assert "Traceback" not in proc.stderr


def test_chat_ends_at_end_of_input(home):
    proc = chat(home, [AIR_DEFENCE_Q])
    assert proc.returncode == 0, proc.stderr
    assert "12 منظومة مضادة للطائرات" in proc.stdout and "Sources:" in proc.stdout


def test_chat_llm_follow_up_is_rewritten(home, fake):
    rewritten = "Where did Shushan Stepanyan publish her statement?"
    fake.script(Reply({"answerable": False, "sentences": []}), Reply(rewritten),
                Reply({"answerable": False, "sentences": []}))
    proc = chat(home, [SPOKESPERSON_Q, "and where did she publish her statement?", "/quit"],
                env=llm_env(fake.base_url))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("The indexed articles don't answer this question.") == 2
    first, rewrite, second = fake.chat_requests
    assert "response_format" not in rewrite.body
    assert f"User: {SPOKESPERSON_Q}" in rewrite.content("user")
    assert "Latest message: and where did she publish her statement?" in rewrite.content("user")
    assert f"Question: {rewritten}" in second.content("user")
    assert "Question: and where" not in second.content("user")
