"""`newsdesk eval`: the figures it reports, on data where the right answer is known — including a miss."""

from __future__ import annotations

import json

from tests.conftest import EXAMPLE_DIR, SEED_QUESTIONS, run_cli

ARTICLES = {
    "volcano": "Volcano erupts in Iceland\n\nThe Fagradalsfjall volcano erupted on Tuesday near Reykjavik. "
               "Lava flowed for three kilometres and the nearby town of Grindavik was evacuated overnight.\n",
    "chess": "Chess final ends in a draw\n\nThe world chess championship final in Madrid ended in a draw after "
             "ninety-four moves. The champion, Maria Lopez, keeps her title for another two years.\n",
}
QUESTIONS = [
    {"id": "q1", "article": "volcano", "question_en": "Which town was evacuated after the eruption?",
     "answers_en": ["Grindavik"]},
    {"id": "q2", "article": "chess", "question_en": "Where was the chess final played?", "answers_en": ["Madrid"]},
    # the gold answer is in no article: this must be reported as a miss
    {"id": "q3", "article": "chess", "question_en": "Who sponsored the chess final?",
     "answers_en": ["Zebra Holdings"]},
]


def _write_fixture(tmp_path):
    articles = tmp_path / "articles"
    articles.mkdir()
    for name, text in ARTICLES.items():
        (articles / f"{name}.txt").write_text(text, encoding="utf-8")
    questions = tmp_path / "questions.jsonl"
    questions.write_text("\n".join(json.dumps(q) for q in QUESTIONS) + "\n", encoding="utf-8")
    return articles, questions


def test_eval_reports_hits_and_the_miss(tmp_path):
    articles, questions = _write_fixture(tmp_path)
    proc = run_cli("eval", str(questions), "--articles", str(articles), "--answer-field", "answers_en", "--fast",
                   "--json", home=tmp_path / "home", check=True)
    report = json.loads(proc.stdout)
    assert report["questions"] == 3 and report["scored"] == 3
    assert report["hit@1"] == round(2 / 3, 4)  # two found first, the sponsor question cannot be
    assert report["hit@10"] == round(2 / 3, 4)
    assert report["article_recall@1"] == 1.0  # the sponsor question still lands on the chess article
    assert [m["question"] for m in report["misses"]] == ["Who sponsored the chess final?"]
    assert report["misses"][0]["first_hit_rank"] is None
    assert report["passages"] == 2 and 0 < report["mean_passage_chars"] < 1200
    assert report["index_stage1"]["passages"] == 2 and "index_stage2" not in report  # --fast: stage 1 only
    assert report["search_ms_p50"] > 0
    # the eval indexed into a scratch home: the user's own index is untouched
    assert not (tmp_path / "home").exists() or json.loads(
        run_cli("stats", "--json", home=tmp_path / "home", check=True).stdout)["articles"] == 0


def test_eval_table_for_people(tmp_path):
    articles, questions = _write_fixture(tmp_path)
    proc = run_cli("eval", str(questions), "--articles", str(articles), "--answer-field", "answers_en", "--fast",
                   home=tmp_path / "home", check=True)
    assert "hit@1 / hit@5 / hit@10" in proc.stdout and "0.667 / 0.667 / 0.667" in proc.stdout


def test_eval_seed_answers_quote_the_evidence(tmp_path):
    proc = run_cli("eval", str(SEED_QUESTIONS), "--articles", str(EXAMPLE_DIR), "--answers", "--json",
                   home=tmp_path / "home", check=True)
    report = json.loads(proc.stdout)
    assert report["scored"] == 10  # the two "abstain" questions have no evidence
    assert report["index_stage2"]["passages"] == report["passages"]  # both stages by default
    answers = report["answers"]
    assert answers["evidence_quoted"] >= 8
    assert answers["verbatim_rate"] == 1.0 and answers["citations"] >= 10


def test_eval_needs_articles_or_the_index(tmp_path):
    _, questions = _write_fixture(tmp_path)
    proc = run_cli("eval", str(questions), home=tmp_path / "home")
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("newsdesk: error:") and "Traceback" not in proc.stderr
