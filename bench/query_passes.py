"""The question's encoder passes at search time, timed one by one: USE's vector, e5's vector and e5's latent
terms (what a search encodes: ``index.search``), and e5's latent terms of the question without its stop words
(an experiment of session 13, not kept: ``docs/benchmarks/languages.md``).

    python -m bench.query_passes            # 200 English dev questions, the passes taken in turn per question

Each pass runs on one thread, as a search runs it; the passes alternate question by question, so a change in
the machine's speed touches them alike. Prints the median and p95 milliseconds and the mean token count.
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench.common import english_questions, fmt, log, machine_info, machine_note, percentile


def _content_words(text: str, lang: str, stop_words, words) -> str:
    """``text`` without the stop words of ``lang`` (words as written, joined by spaces; a closing "?" dropped)."""
    stop = stop_words(lang)
    kept = [w for w in text.split() if " ".join(words(w, lang)) not in stop]
    return " ".join(kept).rstrip("?").rstrip() or text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=200)
    args = parser.parse_args(argv)

    from newsdesk.index.embedding import E5Embedder, UseEmbedder
    from newsdesk.index.language import detect
    from newsdesk.index.lexical import stop_words, words

    use, e5 = UseEmbedder(), E5Embedder()
    questions = english_questions(args.questions)
    content = [_content_words(q, detect(q), stop_words, words) for q in questions]
    passes = {
        "USE vector": lambda q, c: use._queries([q]),
        "e5 vector": lambda q, c: e5._queries([q]),
        "e5 terms": lambda q, c: e5.terms([q]),
        "e5 terms, stop words left out": lambda q, c: e5.terms([c]),
    }
    for run in passes.values():  # load the models
        run(questions[0], content[0])
    times: dict[str, list[float]] = {name: [] for name in passes}
    for q, c in zip(questions, content):
        for name, run in passes.items():
            started = time.perf_counter()
            run(q, c)
            times[name].append(time.perf_counter() - started)
    tokens = {"whole": statistics.mean(e5._model.token_count(q) for q in questions),
              "content": statistics.mean(e5._model.token_count(c) for c in content)}
    print(f"{len(questions)} English dev questions; e5 tokens: whole question {tokens['whole']:.1f}, "
          f"stop words left out {tokens['content']:.1f}")
    print("| pass | median ms | p95 ms |\n|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {fmt(1000 * statistics.median(values))} | {fmt(1000 * percentile(values, 95))} |")
    log(machine_note(machine_info()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
