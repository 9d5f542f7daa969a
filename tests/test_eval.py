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


# the mixed-language measure: each article in one language, named by mixed_assign.json; gold answers in it
MIXED = {
    "volcano": ARTICLES["volcano"],
    "chess": "La finale d'échecs se termine par un match nul\n\nLa finale du championnat du monde d'échecs à "
             "Madrid s'est terminée par un match nul après quatre-vingt-quatorze coups. La championne, Maria "
             "Lopez, garde son titre pour deux ans de plus.\n",
}
MIXED_QUESTIONS = [
    {"id": "m1", "article": "volcano", "question_en": "Which town was evacuated after the eruption?",
     "answers_en": ["Grindavik"], "answers_fr": ["Grindavik"]},
    {"id": "m2", "article": "chess", "question_en": "How many moves did the chess final last?",
     "answers_en": ["ninety-four moves"], "answers_fr": ["quatre-vingt-quatorze coups"]},
]


def _write_mixed(tmp_path, folder: str, texts: dict[str, str]):
    articles = tmp_path / folder
    articles.mkdir()
    for name, text in texts.items():
        (articles / f"{name}.txt").write_text(text, encoding="utf-8")
    (tmp_path / "mixed_assign.json").write_text(json.dumps({"volcano": "en", "chess": "fr"}), encoding="utf-8")
    questions = tmp_path / "questions.jsonl"
    questions.write_text("\n".join(json.dumps(q) for q in MIXED_QUESTIONS) + "\n", encoding="utf-8")
    return articles, questions


def test_eval_mixed_measure_per_language(tmp_path):
    articles, questions = _write_mixed(tmp_path, "articles-mixed", MIXED)
    proc = run_cli("eval", str(questions), "--articles", str(articles), "--fast", "--json", home=tmp_path / "home",
                   check=True)
    report = json.loads(proc.stdout)
    # the map beside the folder names each article's language: the chess answer is read in French
    assert report["hit@1"] == 1.0
    assert {lang: (c["scored"], c["hit@1"]) for lang, c in report["languages"].items()} == {
        "en": (1, 1.0), "fr": (1, 1.0)}
    text = run_cli("eval", str(questions), "--articles", str(articles), "--fast", home=tmp_path / "home",
                   check=True).stdout
    assert "| fr | 1 | 1.000 | 1.000 | 1.000 |" in text and "| **all** | 2 | 1.000 |" in text


def test_eval_map_beside_a_single_language_folder_is_not_used(tmp_path):
    english = {"volcano": ARTICLES["volcano"], "chess": ARTICLES["chess"]}
    articles, questions = _write_mixed(tmp_path, "articles-en", english)
    report = json.loads(run_cli("eval", str(questions), "--articles", str(articles), "--fast", "--json",
                                home=tmp_path / "home", check=True).stdout)
    assert list(report["languages"]) == ["en"] and report["hit@1"] == 1.0  # scored in English, as indexed
    # named explicitly, the map is used: the French answer is in no English article
    report = json.loads(run_cli("eval", str(questions), "--articles", str(articles), "--fast", "--json",
                                "--assign", str(tmp_path / "mixed_assign.json"), home=tmp_path / "home",
                                check=True).stdout)
    assert report["languages"]["fr"]["hit@1"] == 0.0
