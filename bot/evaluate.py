"""``newsdesk eval``: retrieval (and answer) quality on a question set, with one command.

Reads both formats of ``../shared/eval``: the XQuAD split (``question_en``/``question_ar``,
``answers_en``/``answers_ar``, ``article``) and the seed questions (``question``, ``evidence``, ``article``,
``expect``). A hit@k is a top-k passage that contains a gold answer after normalisation (NFKC, Arabic
diacritics and tatweel removed, alef forms unified, white space collapsed).

The mixed-language measure (``xquad-dev-multi/articles-mixed``): each article is in one language, named by a
map (``mixed_assign.json``: article id -> language, ``--assign FILE``, or found inside the articles folder or
beside it); a question's gold answers are then ``answers_<its article's language>``, and hit@k is reported per
language as well as overall (``languages`` in the report, one table). A map found beside the folder is used
only when it names the language of most of the folder's articles (detected), so ``articles-de/`` next to the
mixed map is still scored in German. Without a map, the answers are those in the language of the indexed
articles (detected).

``--answers`` also asks every question (``evaluate_answers``) and reports, per question and overall, what
the answers were; in LLM mode that includes what verification made of the model's citations. ``answers_table``
is that report as a markdown table (``bench/llm_answers.py`` prints it for any OpenAI-compatible server).
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
from newsdesk.index.language import detect
from newsdesk.index.lexical import script_of
from newsdesk.index.progress import Progress
from newsdesk.index.service import Index
from newsdesk.index.settings import Settings
from newsdesk.index.textnorm import contains

from .feedback import eval_questions, is_vote

KS = (1, 5, 10)
ASSIGN_FILE = "mixed_assign.json"


def read_questions(path: str, question_field: str | None, answer_field: str | None,
                   answer_lang: str, assign: dict[str, str] | None = None) -> list[dict]:
    """Records with ``question``, ``answers`` (gold strings, possibly empty), ``article``, ``lang`` (the language
    of the gold answers: ``assign[article]``, else ``answer_lang``) and the raw record. Vote lines
    (``newsdesk feedback``'s file) are questions too: their gold is the quotes of the 👍 answers
    (``bot.feedback.eval_questions``)."""
    out, votes = [], []
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
        if is_vote(rec):  # a line of <home>/feedback.jsonl: the votes are read together (bot.feedback)
            votes.append(rec)
            continue
        qf = question_field or ("question" if "question" in rec else "question_en")
        if qf not in rec:
            raise InputError(f"{path}:{lineno}: no field {qf!r} (use --question-field)")
        lang = (assign or {}).get(rec.get("article"), answer_lang)
        if answer_field:
            answers = rec.get(answer_field) or []
            lang = answer_field.removeprefix("answers_") if answer_field.startswith("answers_") else lang
        elif "evidence" in rec:
            answers = rec["evidence"][:1]  # the core evidence
        else:
            answers = rec.get(f"answers_{lang}") or rec.get("answers") or []
        if isinstance(answers, str):
            answers = [answers]
        out.append({"question": rec[qf], "answers": answers, "article": rec.get("article"), "lang": lang,
                    "record": rec})
    return out + [{**q, "lang": (assign or {}).get(q["article"], answer_lang)} for q in eval_questions(votes)]


def read_assign(path: Path) -> dict[str, str]:
    """An article -> language map (``mixed_assign.json``)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc
    except json.JSONDecodeError:
        raise InputError(f"{path}: not valid JSON") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise InputError(f"{path}: not a map of article ids to languages")
    return {str(k): v for k, v in data.items()}


def article_languages(index: Index, article_ids) -> dict[str, str]:
    """The detected language of each of these indexed articles (absent: not indexed)."""
    out = {}
    for article_id in dict.fromkeys(a for a in article_ids if a):
        text = index.article_text(article_id)
        if text:
            out[article_id] = detect(text)
    return out


def find_assign(articles: str | None, explicit: str | None, index: Index, article_ids) -> dict[str, str] | None:
    """The article -> language map to score with: ``--assign FILE``; else a ``mixed_assign.json`` inside the
    articles folder; else one beside it, when it names the detected language of most of the folder's
    articles. None: no map."""
    if explicit:
        return read_assign(Path(explicit))
    if not articles:
        return None
    folder = Path(articles)
    inside, beside = folder / ASSIGN_FILE, folder.parent / ASSIGN_FILE
    if inside.is_file():
        return read_assign(inside)
    if not beside.is_file():
        return None
    assign = read_assign(beside)
    detected = article_languages(index, [a for a in article_ids if a in assign])
    agree = sum(assign[a] == lang for a, lang in detected.items())
    return assign if detected and 2 * agree > len(detected) else None


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
    per_lang: dict[str, dict[int, int]] = {}  # answer language -> {0: scored, n: hits@n}
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
        counts = per_lang.setdefault(q.get("lang") or "und", dict.fromkeys((0, *KS), 0))
        counts[0] += 1
        for n in KS:
            hits_at[n] += first is not None and first <= n
            article_at[n] += first_article is not None and first_article <= n
            counts[n] += first is not None and first <= n
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
        "languages": {lang: {"scored": c[0], **{f"hit@{n}": round(c[n] / max(c[0], 1), 4) for n in KS}}
                      for lang, c in sorted(per_lang.items())},
        "misses": misses[:20],
    }


def evaluate_answers(settings: Settings, index: Index, questions: list[dict]) -> dict:
    """Ask every question, as ``newsdesk ask`` would; report per question and overall what the answers were.

    Offline and in LLM mode: do the cited quotes contain the question's evidence, are they verbatim, did it
    abstain, how long did it take. In LLM mode also what verification made of the model's citations (proposed,
    verified as cited or after a repair, dropped), how many of its sentences were shown or dropped, whether
    the answer fell back to quotes (the model failed, or its citations could not be checked) and whether the
    answer is written in the script of the question."""
    from .engine import Engine

    engine = Engine(settings, index=index)
    rows: list[dict] = []

    async def run():
        try:
            for q in questions:
                started = time.perf_counter()
                answer = await engine.ask(q["question"])
                rows.append(_answer_row(index, q, answer, time.perf_counter() - started))
        finally:
            await engine.aclose()
    asyncio.run(run())
    return _answers_summary(engine.mode, rows)


def _fallback_reason(answer) -> str | None:
    """Why an answer fell back to quotes: "failed" (the model), "unverifiable" (its citations), or None."""
    from .engine import MESSAGES

    if answer.mode != "fallback":
        return None
    unverifiable = {m["unverifiable"] for m in MESSAGES.values()}
    return "unverifiable" if answer.notice in unverifiable else "failed"


def _answer_row(index: Index, q: dict, answer, seconds: float) -> dict:
    texts: dict[str, str] = {}
    verbatim = sum(c.verbatim_in(texts.setdefault(c.article_id, index.article_text(c.article_id) or ""))
                   for c in answer.citations)
    written = " ".join(s.text for s in answer.sentences) if answer.mode == "llm" else ""
    quotes = " ".join(c.quote for c in answer.citations)
    return {
        "id": q["record"].get("id"), "question": q["question"], "expect": q["record"].get("expect"),
        "mode": answer.mode, "abstained": answer.abstained, "fallback": _fallback_reason(answer),
        "proposed": answer.proposed, "verified": answer.accepted, "repaired": answer.repaired,
        "dropped": answer.proposed - answer.accepted,
        "repairs": sorted(c.repaired for c in answer.citations if c.repaired),
        "citations": len(answer.citations), "verbatim": verbatim,
        "sentences_shown": len(answer.sentences) if answer.mode == "llm" else 0,
        "sentences_dropped": len(answer.dropped),
        "same_language": script_of(written) == script_of(q["question"]) if written else None,
        "evidence_quoted": contains(quotes, q["answers"][0]) if q["answers"] else None,
        "ms": round(1000 * seconds, 1),
    }


def _answers_summary(mode: str, rows: list[dict]) -> dict:
    def total(name: str) -> int:
        return sum(r[name] for r in rows)

    with_evidence = [r for r in rows if r["evidence_quoted"] is not None]
    expected = [r for r in rows if r["expect"] in ("answer", "abstain")]
    written = [r for r in rows if r["same_language"] is not None]
    latencies = [r["ms"] / 1000 for r in rows]
    citations = total("citations")
    return {
        "mode": mode, "asked": len(rows),
        "answered_questions": len(with_evidence),  # the questions with evidence
        "evidence_quoted": sum(r["evidence_quoted"] for r in with_evidence),
        "evidence_rate": round(sum(r["evidence_quoted"] for r in with_evidence) / max(len(with_evidence), 1), 4),
        "citations": citations, "verbatim_rate": round(total("verbatim") / max(citations, 1), 4),
        "proposed": total("proposed"), "verified": total("verified"), "repaired": total("repaired"),
        "dropped": total("dropped"),
        "sentences_shown": total("sentences_shown"), "sentences_dropped": total("sentences_dropped"),
        "abstained": sum(r["abstained"] for r in rows),
        "abstention_as_expected": sum(r["abstained"] == (r["expect"] == "abstain") for r in expected),
        "with_expectation": len(expected),
        "fallback_failed": sum(r["fallback"] == "failed" for r in rows),
        "fallback_unverifiable": sum(r["fallback"] == "unverifiable" for r in rows),
        "same_language": sum(r["same_language"] for r in written), "written_answers": len(written),
        "ask_ms_p50": round(1000 * _percentile(latencies, 0.5), 1),
        "ask_ms_p95": round(1000 * _percentile(latencies, 0.95), 1),
        "per_question": rows,
    }


_TABLE = (("question", "id"), ("mode", "mode"), ("proposed", "proposed"), ("verified", "verified"),
          ("repaired", "repaired"), ("dropped", "dropped"), ("sentences shown / dropped", None),
          ("abstained", "abstained"), ("fallback", "fallback"), ("same language", "same_language"),
          ("evidence quoted", "evidence_quoted"), ("latency ms", "ms"))


def _cell(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def answers_table(a: dict) -> str:
    """The ``--answers`` report as a markdown table: one row per question and one for all of them."""
    lines = ["| " + " | ".join(name for name, _ in _TABLE) + " |", "|" + "---|" * len(_TABLE)]
    for i, r in enumerate(a["per_question"], 1):
        cells = [_cell(r[key]) if key else f"{r['sentences_shown']} / {r['sentences_dropped']}"
                 for _, key in _TABLE]
        cells[0] = _cell(r["id"] or i)
        lines.append("| " + " | ".join(cells) + " |")
    fallback = f"{a['fallback_failed']} failed, {a['fallback_unverifiable']} unverifiable"
    overall = ["**all**", a["mode"], a["proposed"], a["verified"], a["repaired"], a["dropped"],
               f"{a['sentences_shown']} / {a['sentences_dropped']}", f"{a['abstained']} of {a['asked']}", fallback,
               f"{a['same_language']} of {a['written_answers']}",
               f"{a['evidence_quoted']} of {a['answered_questions']}", f"p50 {a['ask_ms_p50']}, p95 {a['ask_ms_p95']}"]
    lines.append("| " + " | ".join(str(c) for c in overall) + " |")
    return "\n".join(lines)


def corpus_language(index: Index) -> str:
    """The language of the gold answers to read from a question set (``ar``, ``de``, ``zh``, …): that of the
    indexed articles, detected over their first 50 passages ("en" when there is nothing to detect)."""
    sample = " ".join(text for text, _ in zip(index.passage_texts(), range(50)))
    lang = detect(sample, max_chars=20000)
    return "en" if lang == "und" else lang


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
        questions = read_questions(args.questions_file, args.question_field, args.answer_field,
                                   corpus_language(index))
        if not args.answer_field:
            assign = find_assign(args.articles, args.assign, index, [q["article"] for q in questions])
            if assign is not None:
                questions = read_questions(args.questions_file, args.question_field, None, "en", assign)
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
    a = r.get("answers")
    if a:
        rows.append(("evidence quoted", f"{a['evidence_quoted']}/{a['answered_questions']}"))
        rows.append(("citations verbatim", f"{a['verbatim_rate']:.3f} of {a['citations']}"))
        rows.append(("abstained (as expected)", f"{a['abstained']} of {a['asked']} "
                                                 f"({a['abstention_as_expected']} of {a['with_expectation']})"))
        if a["mode"] == "llm":
            rows.append(("model citations", f"{a['proposed']} proposed: {a['verified']} verified "
                                             f"({a['repaired']} repaired), {a['dropped']} dropped"))
            rows.append(("model sentences", f"{a['sentences_shown']} shown, {a['sentences_dropped']} dropped"))
            rows.append(("fell back to quotes", f"{a['fallback_failed']} model failed, "
                                                 f"{a['fallback_unverifiable']} citations unverifiable"))
            rows.append(("answer in the question's script", f"{a['same_language']} of {a['written_answers']}"))
        rows.append(("ask latency p50 / p95", f"{a['ask_ms_p50']} ms / {a['ask_ms_p95']} ms"))
    width = max(len(name) for name, _ in rows)
    text = "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)
    if len(r.get("languages") or {}) > 1:
        text = f"{text}\n\n{languages_table(r)}"
    return f"{text}\n\n{answers_table(a)}" if a else text


def languages_table(r: dict) -> str:
    """hit@k per language of the gold answers and overall, as a markdown table."""
    lines = ["| language | questions | hit@1 | hit@5 | hit@10 |", "|---|---|---|---|---|"]
    for lang, c in r["languages"].items():
        lines.append(f"| {lang} | {c['scored']} | {c['hit@1']:.3f} | {c['hit@5']:.3f} | {c['hit@10']:.3f} |")
    lines.append(f"| **all** | {r['scored']} | {r['hit@1']:.3f} | {r['hit@5']:.3f} | {r['hit@10']:.3f} |")
    return "\n".join(lines)
