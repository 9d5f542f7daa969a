"""Offline answers on the seed questions: the evidence score and the `ask` latency.

    .venv/bin/python -m bench.seed_answers                 # index the example article into a scratch home
    .venv/bin/python -m bench.seed_answers --rounds 5 --json
    .venv/bin/python -m bench.seed_answers --home ~/.newsdesk   # an existing index that holds the article

Evidence score: for how many of the answerable seed questions (``expect: answer``) the cited quotes contain
the question's first ``evidence`` string (after the usual normalisation); also whether every quote is verbatim
in its article (``article_text[start:end] == quote``) and what happens to the ``expect: abstain`` questions.

Latency: the offline ``Engine.ask`` of each question, timed in one process after start-up (models loaded, one
warm-up question asked), in one event loop as the chat and the bot run it. Round 1 is the first time each
question is asked (encoders' caches hold only what earlier questions touched); later rounds ask the same
questions again (caches warm). The machine's load average is printed with the figures: on a busy machine
every figure is slower, so compare runs made at similar load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.common import load_average

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT.parent / "shared" / "eval" / "seed-questions.jsonl"
EXAMPLES = ROOT / "examples" / "articles"
WARM_UP = "What is the best recipe for chocolate cake?"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def offline_environ(home: Path) -> dict[str, str]:
    """The NEWSDESK_* settings of this process (e.g. NEWSDESK_EMBED_THREADS), the home given, and no API key:
    the answers are the offline ones."""
    env = {k: v for k, v in os.environ.items() if k.startswith("NEWSDESK_")}
    env["NEWSDESK_HOME"] = str(home)
    return env


def forget_encodings(engine) -> None:
    """Empty the encoders' caches of recently encoded sentences (if they keep one), so that the next question
    pays for encoding its passages' sentences as if they had never been read."""
    for embedder in (engine.index.embedder, engine.index.accurate, engine.extractor.embedder):
        cache = getattr(embedder, "_cache", None)
        if cache is not None and hasattr(cache, "clear"):
            cache.clear()


def run(home: Path, questions: list[dict], rounds: int, cold: bool = False) -> dict:
    from newsdesk.bot.engine import Engine
    from newsdesk.index.settings import Settings
    from newsdesk.index.textnorm import contains

    settings = Settings.load(environ=offline_environ(home), env_file=None)
    engine = Engine(settings)
    times: dict[str, list[float]] = {q["id"]: [] for q in questions}
    answers = {}

    async def ask_all() -> None:
        await engine.ask(WARM_UP)  # loads the models and the null sentences: start-up, not timed
        for r in range(rounds):
            for q in questions:
                if cold:
                    forget_encodings(engine)
                started = time.perf_counter()
                answer = await engine.ask(q["question"])
                times[q["id"]].append(time.perf_counter() - started)
                if r == 0:
                    answers[q["id"]] = answer

    load_before = load_average()
    asyncio.run(ask_all())

    texts: dict[str, str] = {}
    per_question, found, quotes, verbatim = [], [], 0, 0
    for q in questions:
        answer = answers[q["id"]]
        quoted = " ".join(c.quote for c in answer.citations)
        has_evidence = bool(q["evidence"]) and contains(quoted, q["evidence"][0])
        for c in answer.citations:
            text = texts.setdefault(c.article_id, engine.index.article_text(c.article_id) or "")
            quotes += 1
            verbatim += text[c.start:c.end] == c.quote
        if q["expect"] == "answer" and has_evidence:
            found.append(q["id"])
        per_question.append({
            "id": q["id"], "expect": q["expect"], "abstained": answer.abstained,
            "evidence_quoted": has_evidence,
            "quotes": len(answer.citations), "ms_round1": round(1000 * times[q["id"]][0], 1),
            "ms_min": round(1000 * min(times[q["id"]]), 1),
        })
    first = [t[0] for t in times.values()]
    later = [x for t in times.values() for x in t[1:]]
    answerable = [q for q in questions if q["expect"] == "answer"]
    return {
        "questions": len(questions),
        "answerable": len(answerable),
        "evidence_quoted": len(found),
        "evidence_missed": [q["id"] for q in answerable if q["id"] not in found],
        "quotes": quotes,
        "verbatim_quotes": verbatim,
        "expect_abstain": {q["id"]: ("abstained" if answers[q["id"]].abstained else "answered")
                           for q in questions if q["expect"] == "abstain"},
        "rounds": rounds,
        "cold": cold,
        "ask_ms_p50_round1": round(1000 * percentile(first, 0.5), 1),
        "ask_ms_p95_round1": round(1000 * percentile(first, 0.95), 1),
        "ask_ms_p50_later_rounds": round(1000 * percentile(later, 0.5), 1) if later else None,
        "ask_ms_p50_all": round(1000 * percentile(first + later, 0.5), 1),
        "embed_threads": settings.embed_threads,
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "per_question": per_question,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, help="an existing newsdesk home (default: index the example "
                        "article into a scratch home)")
    parser.add_argument("--questions", type=Path, default=SEED, help="seed questions (JSON lines)")
    parser.add_argument("--rounds", type=int, default=3, help="times each question is asked (default 3)")
    parser.add_argument("--cold", action="store_true", help="empty the encoders' sentence caches before "
                        "every question (the cost of passages never read before)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()

    import logging

    logging.basicConfig(level=logging.WARNING)
    questions = [json.loads(line) for line in args.questions.read_text(encoding="utf-8").splitlines()
                 if line.strip()]
    with tempfile.TemporaryDirectory(prefix="newsdesk-seed-") as scratch:
        home = args.home
        if home is None:
            from newsdesk.index.service import Index
            from newsdesk.index.settings import Settings

            home = Path(scratch) / "home"
            report = Index(Settings.load(environ=offline_environ(home), env_file=None)).index(
                [str(EXAMPLES)], show_progress=False)
            if report.failed:
                raise SystemExit(f"indexing the example article failed: {report.failed[0].error}")
        result = run(home, questions, max(1, args.rounds), cold=args.cold)

    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return 0
    print(f"evidence: {result['evidence_quoted']}/{result['answerable']} answerable seed questions quote "
          f"their first evidence string" + (f" (missed: {', '.join(result['evidence_missed'])})"
                                      if result["evidence_missed"] else ""))
    print(f"verbatim: {result['verbatim_quotes']}/{result['quotes']} quotes are verbatim in their article")
    print("expect-abstain questions: " + ", ".join(f"{k} {v}" for k, v in result["expect_abstain"].items()))
    again = (f"; p50 {result['ask_ms_p50_later_rounds']} ms when asked again ({result['rounds']} rounds)"
             if result["ask_ms_p50_later_rounds"] is not None else "")
    cold = " (encoder caches emptied before each question)" if result["cold"] else ""
    print(f"offline ask latency (in-process, after start-up){cold}: p50 {result['ask_ms_p50_round1']} ms, "
          f"p95 {result['ask_ms_p95_round1']} ms on first asking{again}")
    print(f"load average: {result['load_average_before']} before, {result['load_average_after']} after; "
          f"embed threads {result['embed_threads']}")
    for row in result["per_question"]:
        print(f"  {row['id']} {row['expect']:7s} {'abstained' if row['abstained'] else 'answered ':9s} "
              f"evidence {'yes' if row['evidence_quoted'] else 'no ':3s} quotes {row['quotes']}  "
              f"{row['ms_round1']:7.1f} ms first, {row['ms_min']:7.1f} ms best")
    return 0


if __name__ == "__main__":
    sys.exit(main())
