"""``newsdesk eval``: retrieval (and answer) quality on a question set, with one command.

Reads both formats of ``../shared/eval``: the XQuAD split (``question_en``/``question_ar``,
``answers_en``/``answers_ar``, ``article``) and the seed questions (``question``, ``evidence``, ``article``,
``expect``). A hit@k is a top-k passage that contains a gold answer after normalisation (NFKC, Arabic
diacritics and tatweel removed, alef forms unified, white space collapsed).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from newsdesk.index.errors import InputError
from newsdesk.index.lexical import script_of
from newsdesk.index.progress import Progress
from newsdesk.index.service import Index
from newsdesk.index.settings import Settings
from newsdesk.index.textnorm import contains

KS = (1, 5, 10)


def read_questions(path: str, question_field: str | None, answer_field: str | None,
                   answer_lang: str) -> list[dict]:
    """Records with ``question``, ``answers`` (gold strings, possibly empty), ``article`` and the raw record."""
    out = []
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise InputError(f"{path}:{lineno}: not valid JSON") from None
        qf = question_field or ("question" if "question" in rec else "question_en")
        if qf not in rec:
            raise InputError(f"{path}:{lineno}: no field {qf!r} (use --question-field)")
        if answer_field:
            answers = rec.get(answer_field) or []
        elif "evidence" in rec:
            answers = rec["evidence"][:1]  # the core evidence
        else:
            answers = rec.get(f"answers_{answer_lang}") or rec.get("answers") or []
        if isinstance(answers, str):
            answers = [answers]
        out.append({"question": rec[qf], "answers": answers, "article": rec.get("article"), "record": rec})
    return out


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def evaluate(index: Index, questions: list[dict], k: int = 10, show_progress: bool | None = None) -> dict:
    k = max(k, max(KS))
    hits_at = {n: 0 for n in KS}
    article_at = {n: 0 for n in KS}
    rr = 0.0
    latencies = []
    scored = 0
    misses = []
    bar = Progress("questions", len(questions), show_progress)
    for q in questions:
        started = time.perf_counter()
        hits = index.search(q["question"], k)
        latencies.append(time.perf_counter() - started)
        bar.advance()
        if not q["answers"]:
            continue
        scored += 1
        first = next((h.rank for h in hits if any(contains(h.text, a) for a in q["answers"])), None)
        first_article = next((h.rank for h in hits if h.article_id == q["article"]), None)
        for n in KS:
            hits_at[n] += first is not None and first <= n
            article_at[n] += first_article is not None and first_article <= n
        if first is not None and first <= 10:
            rr += 1.0 / first
        if first != 1:
            misses.append({"question": q["question"], "first_hit_rank": first})
    bar.close()
    passages = list(index.passage_texts())
    denom = max(scored, 1)
    return {
        "questions": len(questions), "scored": scored,
        **{f"hit@{n}": round(hits_at[n] / denom, 4) for n in KS},
        **{f"article_recall@{n}": round(article_at[n] / denom, 4) for n in KS},
        "mrr@10": round(rr / denom, 4),
        "mean_passage_chars": round(statistics.mean(len(p) for p in passages), 1) if passages else 0,
        "passages": len(passages),
        "search_ms_p50": round(1000 * _percentile(latencies, 0.5), 1),
        "search_ms_p95": round(1000 * _percentile(latencies, 0.95), 1),
        "misses": misses[:20],
    }


def evaluate_answers(settings: Settings, index: Index, questions: list[dict]) -> dict:
    """Ask each question that has evidence; do the cited quotes contain it, and are the quotes verbatim?"""
    from .engine import Engine

    engine = Engine(settings, index=index)
    with_evidence = [q for q in questions if q["answers"]]
    contained = verbatim = citations = 0
    latencies = []

    async def run():
        nonlocal contained, verbatim, citations
        for q in with_evidence:
            started = time.perf_counter()
            answer = await engine.ask(q["question"])
            latencies.append(time.perf_counter() - started)
            quotes = " ".join(c.quote for c in answer.citations)
            contained += contains(quotes, q["answers"][0])
            for c in answer.citations:
                citations += 1
                text = index.article_text(c.article_id) or ""
                verbatim += text[c.start:c.end] == c.quote
    asyncio.run(run())
    return {
        "answered_questions": len(with_evidence),
        "evidence_quoted": contained,
        "evidence_rate": round(contained / max(len(with_evidence), 1), 4),
        "citations": citations,
        "verbatim_rate": round(verbatim / max(citations, 1), 4),
        "ask_ms_p50": round(1000 * _percentile(latencies, 0.5), 1),
    }


def run_eval(args, settings: Settings) -> int:
    if not args.use_index and not args.articles:
        raise InputError("give --articles DIR to index into a scratch home, or --use-index")
    scratch = None
    report: dict = {}
    if args.use_index:
        index = Index(settings)
    else:
        scratch = tempfile.TemporaryDirectory(prefix="newsdesk-eval-")
        settings = replace(settings, home=Path(scratch.name), chroma_host=None,
                           collection="eval")
        index = Index(settings)
        started = time.perf_counter()
        stage1 = index.index([args.articles], accurate=False)
        t1 = time.perf_counter() - started
        if stage1.failed:
            print(f"newsdesk: {len(stage1.failed)} article(s) failed to load", file=sys.stderr)
        report["index_stage1"] = {"passages": stage1.chunks, "seconds": round(t1, 2),
                                  "passages_per_s": round(stage1.chunks / max(t1, 1e-9), 1)}
        if not args.fast and index.accurate is not None:
            started = time.perf_counter()
            done = index.fill_accurate()
            t2 = time.perf_counter() - started
            report["index_stage2"] = {"passages": done, "seconds": round(t2, 2),
                                      "passages_per_s": round(done / max(t2, 1e-9), 1)}
    try:
        sample = " ".join(text for text, _ in zip(index.passage_texts(), range(50)))
        answer_lang = "ar" if script_of(sample) == "ar" else "en"
        questions = read_questions(args.questions_file, args.question_field, args.answer_field, answer_lang)
        report["stage2_passages"] = index.stats()["accurate"]["passages"]
        report.update(evaluate(index, questions, args.k))
        if args.answers:
            report["answers"] = evaluate_answers(settings, index, questions)
    finally:
        if scratch is not None:
            index.close()
            scratch.cleanup()
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        print(format_report(report))
    return 0


def format_report(r: dict) -> str:
    rows = [("questions (scored)", f"{r['questions']} ({r['scored']})"),
            ("hit@1 / hit@5 / hit@10", f"{r['hit@1']:.3f} / {r['hit@5']:.3f} / {r['hit@10']:.3f}"),
            ("article recall@1 / @5", f"{r['article_recall@1']:.3f} / {r['article_recall@5']:.3f}"),
            ("MRR@10", f"{r['mrr@10']:.3f}"),
            ("passages (mean chars)", f"{r['passages']} ({r['mean_passage_chars']})"),
            ("passages with accurate vectors", str(r.get("stage2_passages", 0))),
            ("search latency p50 / p95", f"{r['search_ms_p50']} ms / {r['search_ms_p95']} ms")]
    for stage in ("index_stage1", "index_stage2"):
        if stage in r:
            s = r[stage]
            rows.append((f"indexing {stage[-6:]}", f"{s['passages']} passages in {s['seconds']} s "
                                                   f"({s['passages_per_s']}/s)"))
    if "answers" in r:
        a = r["answers"]
        rows.append(("evidence quoted", f"{a['evidence_quoted']}/{a['answered_questions']}"))
        rows.append(("citations verbatim", f"{a['verbatim_rate']:.3f} of {a['citations']}"))
        rows.append(("ask latency p50", f"{a['ask_ms_p50']} ms"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)
