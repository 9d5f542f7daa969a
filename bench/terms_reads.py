"""How many passages' latent terms a search reads, against how many candidates it fused (``Searcher._by_terms``).

    python -m bench.terms_reads HOME [HOME...] [--questions 200]

Each HOME is an index with stage-2 vectors and latent terms (for example the homes ``bench.languages --homes
DIR`` keeps); the first ``--questions`` English questions of ``../shared/eval/xquad-dev-multi`` are asked with
k = 5. A search reads the terms only for the candidates of the articles that own one of the first places and
have more than one candidate; before, it read them for every candidate. ``bench/search_scale.py``'s synthetic
store cannot show this cost: there every candidate is a copy of the question's paragraph in another article,
so no article has two candidates and no terms are read at all.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from bench.common import SHARED


def measure(home: Path, questions: list[str]) -> dict:
    from newsdesk.bot.startup import configure_process
    from newsdesk.index.service import Index
    from newsdesk.index.settings import Settings

    configure_process()
    index = Index(Settings.load(environ={"NEWSDESK_HOME": str(home)}, env_file=None))
    read: list[int] = []
    fused: list[int] = []
    store, searcher = index.store, index.searcher
    get_terms, by_terms = store.get_terms, searcher._by_terms

    def counted_get(ids):
        read.append(len(ids))
        return get_terms(ids)

    def counted_by(candidates, *args, **kwargs):
        fused.append(len(candidates))
        return by_terms(candidates, *args, **kwargs)

    store.get_terms, searcher._by_terms = counted_get, counted_by
    try:
        for question in questions:
            index.search(question, 5)
    finally:
        index.close()
    return {"home": str(home), "searches": len(questions), "candidates_mean": statistics.mean(fused or [0]),
            "terms_reads": len(read), "read_mean": statistics.mean(read or [0]),
            "read_p90": sorted(read)[int(0.9 * len(read))] if read else 0, "read_max": max(read or [0])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("homes", nargs="+", type=Path)
    parser.add_argument("--questions", type=int, default=200)
    args = parser.parse_args()
    lines = (SHARED / "eval" / "xquad-dev-multi" / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    questions = [json.loads(line)["question_en"] for line in lines if line.strip()][:args.questions]
    print("| index | searches | candidates fused (mean) | terms read (mean / p90 / max) |")
    print("|---|---|---|---|")
    for home in args.homes:
        r = measure(home, questions)
        print(f"| {home.name} | {r['searches']} | {r['candidates_mean']:.1f} | "
              f"{r['read_mean']:.1f} / {r['read_p90']} / {r['read_max']} |")


if __name__ == "__main__":
    main()
