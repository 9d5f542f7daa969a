"""Retrieval in every language: the twelve XQuAD languages one by one, mixed in one index, and English -> Arabic.

    python -m bench.languages               # both stages (~35 min on a loaded 2-core machine)
    python -m bench.languages --fast        # stage 1 only (~7 min)
    python -m bench.languages --langs vi,el --homes /tmp/lang-homes   # some languages; keep the homes

What it measures (``newsdesk eval``'s hit@k: a top-k passage contains a gold answer, normalised), on
``../shared/eval/xquad-dev-multi`` (the 24 dev articles in ar de el en es hi ro ru th tr vi zh, 612 questions):

- **en→X**: English questions over the single-language index of language X, gold answers ``answers_X``;
- **X→X**: the questions in X over the same index;
- **mixed**: English questions over ``articles-mixed/`` (each article once, in the language ``mixed_assign.json``
  names), gold answers in that language, per language and overall;
- **en→ar on xquad-dev**: the reference setting of ``../shared/eval/xquad-dev`` (README's retrieval table).

Each index is built once (stage 1), its questions asked, then stage 2 filled in and the same questions asked
again, so both stages are measured on the same passages. ``--homes DIR`` keeps the homes (and reuses one that
is complete: only the questions are asked again). Writes ``languages.md``, ``languages.json`` and
``languages.png`` into ``--out`` (default ``docs/benchmarks/``).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench.common import (DEFAULT_OUT, SHARED, command_line, fmt, log, machine_info, machine_note, markdown_table,
                          pyplot, wait_for_quiet, write_report)

MULTI = SHARED / "eval" / "xquad-dev-multi"
XQUAD_DEV = SHARED / "eval" / "xquad-dev"
LANGS = ("ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh")
STAGES = ("stage1", "both")


def _settings(home: Path, stage: str):
    from newsdesk.index.settings import Settings

    base = Settings.load(environ={"NEWSDESK_HOME": str(home)}, env_file=None)
    return replace(base, accurate="e5" if stage == "both" else "off")


def _measure(home: Path, stage: str, runs: list[tuple[str, str, str | None, dict | None]]) -> dict:
    """Ask each run's questions (name, question field, answer field, article -> language map) on ``home``."""
    from newsdesk.bot.evaluate import evaluate, read_questions
    from newsdesk.index.service import Index

    index = Index(_settings(home, stage))
    out = {}
    try:
        for name, qfield, afield, assign in runs:
            questions_file = XQUAD_DEV / "questions.jsonl" if name == "xquad-en-ar" else MULTI / "questions.jsonl"
            questions = read_questions(str(questions_file), qfield, afield, "en", assign)
            started = time.perf_counter()
            report = evaluate(index, questions, show_progress=False)
            report.pop("misses", None)
            report["eval_seconds"] = round(time.perf_counter() - started, 1)
            out[name] = report
            log(f"  {stage} {name}: hit@1 {report['hit@1']:.3f} hit@5 {report['hit@5']:.3f} "
                f"({report['eval_seconds']} s)")
    finally:
        index.close()
    return out


def _build(home: Path, articles: Path, stage: str) -> dict:
    """Index ``articles`` into ``home`` (stage 1), or fill in stage 2; the time it took."""
    from newsdesk.index.service import Index

    index = Index(_settings(home, "both"))
    started = time.perf_counter()
    try:
        if stage == "stage1":
            report = index.index([str(articles)], accurate=False, show_progress=False)
            if report.failed:
                raise SystemExit(f"indexing {articles} failed: {report.failed[0].error}")
            done = report.chunks
        else:
            done = index.fill_accurate(show_progress=False)
    finally:
        index.close()
    return {"passages": done, "seconds": round(time.perf_counter() - started, 1)}


def _complete(home: Path) -> Path:
    return home / "bench-languages-complete"


def settings_to_run(langs: list[str]) -> list[tuple[str, Path, list]]:
    """(home name, articles folder, runs) for every index: one per language, the mixed one, xquad-dev Arabic."""
    from newsdesk.bot.evaluate import read_assign

    out = []
    for lang in langs:
        runs = [(f"en-{lang}", "question_en", f"answers_{lang}", None)]
        if lang != "en":
            runs.append((f"{lang}-{lang}", f"question_{lang}", f"answers_{lang}", None))
        out.append((f"single-{lang}", MULTI / f"articles-{lang}", runs))
    out.append(("mixed", MULTI / "articles-mixed",
                [("mixed", "question_en", None, read_assign(MULTI / "mixed_assign.json"))]))
    out.append(("xquad-ar", XQUAD_DEV / "articles-ar", [("xquad-en-ar", "question_en", "answers_ar", None)]))
    return out


def run(langs: list[str], fast: bool, homes: Path) -> dict:
    stages = STAGES[:1] if fast else STAGES
    results: dict = {"stages": list(stages), "indexes": {}, "runs": {s: {} for s in stages}}
    for name, articles, runs in settings_to_run(langs):
        home = homes / name
        log(f"{name}: {articles}")
        built: dict = {}
        if not (home / "bench-languages-stage1").exists():
            shutil.rmtree(home, ignore_errors=True)
            built["stage1"] = _build(home, articles, "stage1")
            (home / "bench-languages-stage1").touch()
        results["runs"]["stage1"].update(_measure(home, "stage1", runs))
        if not fast:
            if not _complete(home).exists():
                built["stage2"] = _build(home, articles, "stage2")
                _complete(home).touch()
            results["runs"]["both"].update(_measure(home, "both", runs))
        results["indexes"][name] = built
    return results


def _cell(runs: dict, name: str, key: str) -> str:
    r = runs.get(name)
    return f"{r[key]:.3f}" if r else "—"


def _worst(values: dict[str, float], n: int = 3) -> str:
    ranked = sorted(values.items(), key=lambda kv: kv[1])[:n]
    return ", ".join(f"{lang} {v:.3f}" for lang, v in ranked)


def markdown(results: dict, langs: list[str], info: dict, load_end: float, seconds: float) -> str:
    stages = results["stages"]
    parts = ["# Retrieval in every language", "",
             f"`{command_line()}`: {seconds / 60:.1f} min. {machine_note(info, load_end)}", "",
             "hit@k: a top-k passage contains a gold answer (normalised). en→X: English questions over the "
             "single-language index of X; X→X: the questions in X. stage 1: USE + BM25; both: + e5 (the default).",
             ""]
    headers = ["language"]
    for s in stages:
        headers += [f"en→X hit@1 ({s})", f"en→X hit@5 ({s})", f"X→X hit@1 ({s})"]
    rows = []
    for lang in langs:
        row = [lang]
        for s in stages:
            runs = results["runs"][s]
            xx = f"en-{lang}" if lang == "en" else f"{lang}-{lang}"
            row += [_cell(runs, f"en-{lang}", "hit@1"), _cell(runs, f"en-{lang}", "hit@5"), _cell(runs, xx, "hit@1")]
        rows.append(row)
    parts += ["## Single-language indexes", "", markdown_table(headers, rows), ""]
    for s in stages:
        runs = results["runs"][s]
        en_x = {lang: runs[f"en-{lang}"]["hit@1"] for lang in langs if f"en-{lang}" in runs}
        if en_x:
            parts.append(f"- {s}: en→X hit@1 worst {_worst(en_x)}")
    parts.append("")
    mixed = {s: results["runs"][s].get("mixed") for s in stages}
    if any(mixed.values()):
        headers = ["language", "questions"] + [f"{h} ({s})" for s in stages for h in ("hit@1", "hit@5")]
        any_run = next(m for m in mixed.values() if m)
        rows = []
        for lang, c in any_run["languages"].items():
            rows.append([lang, c["scored"]] + [f"{mixed[s]['languages'][lang][h]:.3f}" if mixed[s] else "—"
                                               for s in stages for h in ("hit@1", "hit@5")])
        rows.append(["**all**", any_run["scored"]] + [f"**{mixed[s][h]:.3f}**" if mixed[s] else "—"
                                                      for s in stages for h in ("hit@1", "hit@5")])
        parts += ["## Mixed-language index (`articles-mixed/`, English questions)", "",
                  markdown_table(headers, rows), ""]
    xq = {s: results["runs"][s].get("xquad-en-ar") for s in stages}
    if any(xq.values()):
        rows = [[s, f"{r['hit@1']:.3f}", f"{r['hit@5']:.3f}", f"{r['mrr@10']:.3f}",
                 f"{r['search_ms_p50']} / {r['search_ms_p95']}"] for s, r in xq.items() if r]
        parts += ["## English → Arabic, `xquad-dev`", "",
                  markdown_table(["stages", "hit@1", "hit@5", "MRR@10", "search p50 / p95 ms"], rows), ""]
    timing = [[name, fmt(b.get("stage1", {}).get("seconds")), fmt(b.get("stage2", {}).get("seconds"))]
              for name, b in results["indexes"].items() if b]
    if timing:
        parts += ["## Indexing time per index (s)", "", markdown_table(["index", "stage 1", "stage 2"], timing), ""]
    return "\n".join(parts)


def figure(results: dict, langs: list[str]):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / (2 * len(results["stages"]))
    offset = 0
    for s in results["stages"]:
        runs = results["runs"][s]
        mixed = (runs.get("mixed") or {}).get("languages", {})
        for label, values in ((f"en→X {s}", [runs.get(f"en-{lang}", {}).get("hit@1", 0) for lang in langs]),
                              (f"mixed {s}", [mixed.get(lang, {}).get("hit@1", 0) for lang in langs])):
            ax.bar([i + offset for i in range(len(langs))], values, width, label=label)
            offset += width
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(langs))], langs)
    ax.set_ylabel("hit@1 (English questions)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="stage 1 only")
    parser.add_argument("--langs", default=",".join(LANGS), help="single-language indexes to measure")
    parser.add_argument("--homes", type=Path, help="keep the homes here (reused when complete)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    args = parser.parse_args(argv)
    langs = [lang for lang in args.langs.split(",") if lang]
    unknown = sorted(set(langs) - set(LANGS))
    if unknown:
        parser.error(f"unknown languages: {', '.join(unknown)}")
    logging.basicConfig(level=logging.ERROR)
    info = machine_info(wait_for_quiet(skip=args.no_wait))
    started = time.perf_counter()
    scratch = None
    if args.homes is None:
        scratch = tempfile.TemporaryDirectory(prefix="newsdesk-bench-languages-")
        homes = Path(scratch.name)
    else:
        homes = args.homes
        homes.mkdir(parents=True, exist_ok=True)
    try:
        results = run(langs, args.fast, homes)
    finally:
        if scratch is not None:
            scratch.cleanup()
    import os

    seconds = time.perf_counter() - started
    results["seconds"] = round(seconds, 1)
    results["machine"] = info
    text = markdown(results, langs, info, os.getloadavg()[0], seconds)
    for path in write_report(args.out, "languages", text, results, figure(results, langs)):
        log(f"wrote {path}")
    print(json.dumps({s: {k: {m: v[m] for m in ("hit@1", "hit@5")} for k, v in r.items()}
                      for s, r in results["runs"].items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
