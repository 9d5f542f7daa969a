"""LLM answers on the seed questions, against any OpenAI-compatible server: what verification makes of them.

    OPENAI_BASE_URL=http://127.0.0.1:8080/v1 OPENAI_API_KEY=local NEWSDESK_LLM_MODEL=qwen2.5-1.5b-instruct \
        .venv/bin/python -m bench.llm_answers
    .venv/bin/python -m bench.llm_answers --json            # the figures as JSON
    .venv/bin/python -m bench.llm_answers --questions Q.jsonl --articles DIR --fast

The server, key and model are the user's settings, as for ``newsdesk ask`` (``OPENAI_BASE_URL``,
``OPENAI_API_KEY`` — any value for a local server that checks none —, ``NEWSDESK_LLM_MODEL`` and the
``NEWSDESK_LLM_*`` timeouts, from the environment or ``.env``). The articles (default ``examples/articles``)
are indexed into a scratch home; each question (default the seed questions, ``../shared/eval``) is asked
once, in one process, as ``newsdesk eval QUESTIONS --answers`` asks it. Printed: a markdown table with one
row per question and one for all: the model's citations proposed / verified / repaired / dropped, its
sentences shown / dropped, whether it abstained or fell back to quotes (the model failed, or none of its
citations could be checked), whether the answer is in the question's script, whether the cited quotes hold
the question's evidence, and the latency. Run it with two models to compare them on your own machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from bench.common import EXAMPLES, SHARED, load_average

SEED = SHARED / "eval" / "seed-questions.jsonl"


def run(settings, questions_path: Path, articles: Path, fast: bool) -> dict:
    """Index ``articles`` into a scratch home, ask the questions; the ``--answers`` report."""
    from newsdesk.bot.evaluate import corpus_language, evaluate_answers, read_questions
    from newsdesk.index.service import Index

    with tempfile.TemporaryDirectory(prefix="newsdesk-llm-answers-") as scratch:
        settings = replace(settings, home=Path(scratch), chroma_host=None, collection="eval")
        index = Index(settings)
        try:
            report = index.index([str(articles)], accurate=not fast, show_progress=False)
            if report.failed:
                raise SystemExit(f"indexing {articles} failed: {report.failed[0].error}")
            questions = read_questions(str(questions_path), None, None, corpus_language(index))
            return evaluate_answers(settings, index, questions)
        finally:
            index.close()


def main(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> int:
    """The command; ``environ`` (default: the process environment and ``.env``) holds the settings."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=Path, default=SEED, help="questions (JSON lines; default the seeds)")
    parser.add_argument("--articles", type=Path, default=EXAMPLES, help="articles to index (default the example)")
    parser.add_argument("--fast", action="store_true", help="index stage 1 only (no accurate vectors)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)

    import json
    import logging

    from newsdesk.index.errors import NewsdeskError
    from newsdesk.index.settings import Settings

    logging.basicConfig(level=logging.ERROR)
    try:
        settings = Settings.load(environ=environ, env_file=".env" if environ is None else None)
    except NewsdeskError as exc:
        raise SystemExit(f"bench.llm_answers: {exc}") from None
    if not settings.llm_enabled:
        raise SystemExit("bench.llm_answers: set OPENAI_API_KEY (any value for a local server that checks "
                         "none), OPENAI_BASE_URL and NEWSDESK_LLM_MODEL")
    load_before = load_average()
    report = run(settings, args.questions, args.articles, args.fast)
    if args.json:
        print(json.dumps({"model": settings.llm_model, "base_url": settings.openai_base_url, **report},
                         ensure_ascii=False, indent=2))
        return 0
    from newsdesk.bot.evaluate import answers_table

    print(f"## LLM answers: {settings.llm_model} at {settings.openai_base_url or 'api.openai.com'}\n")
    print(f"{report['asked']} questions from {args.questions.name}, articles {args.articles}; "
          f"load average {load_before} before, {load_average()} after.\n")
    print(answers_table(report))
    print(f"\nQuotes verbatim in their article: {report['verbatim_rate']:.3f} of {report['citations']}; "
          f"abstention as expected: {report['abstention_as_expected']} of {report['with_expectation']}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
