"""CPU per offline answer: process CPU time (all threads) of ``Engine.ask_sync`` in one process.

    python -m bench.answer_cpu                       # NEWSDESK_ACCURATE=e5 and off, 3 runs each
    python -m bench.answer_cpu --accurate off --runs 5
    python -m bench.answer_cpu --home H              # reuse a home that has the example article indexed

A scratch home gets ``examples/articles`` indexed with both stages (``Index.index``, as ``newsdesk index``
does). Then, per setting of ``NEWSDESK_ACCURATE``, one engine answers the 12 seed questions
(``../shared/eval/seed-questions.jsonl``) offline: one warm-up round (models loaded, null sentences encoded),
then ``--runs`` runs of ``--rounds`` rounds each. Every question text is made unique per round ("… (round N)")
so that nothing could be served from a cache. A run's figure is its process CPU time (``time.process_time``,
which counts the encoder threads too) divided by the answers it gave; the report is the median over the runs.
CPU time, not wall time: on a shared 2-core host it is what an answer costs, whatever else is running.

The process is set up as ``newsdesk`` sets up every command (``newsdesk.bot.startup.configure_process``: one
BLAS thread, sleeping OpenMP workers), without which the answer costs far more CPU. To compare two versions of
the code, run this same script with each version imported (e.g. a ``PYTHONPATH`` pointing at a snapshot's
``newsdesk`` package); it uses only ``Settings``, ``Index`` and ``Engine`` (and the start-up when there is one:
older versions set up the native libraries when their models loaded).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from newsdesk.bot.engine import Engine
from newsdesk.index.service import Index
from newsdesk.index.settings import Settings
from tests.support import EXAMPLE_DIR, SEED_QUESTIONS

try:
    from newsdesk.bot.startup import configure_process
except ImportError:  # a version from before the start-up module: its embedders did it when they loaded
    configure_process = None


def seed_questions() -> list[str]:
    return [json.loads(line)["question"] for line in SEED_QUESTIONS.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def settings_for(home: Path, accurate: str) -> Settings:
    """Offline settings: nothing from the developer's environment or ``.env``."""
    return Settings.load(environ={"NEWSDESK_HOME": str(home), "NEWSDESK_ACCURATE": accurate}, env_file=None)


def build_home(home: Path) -> None:
    """``examples/articles`` indexed with both stages."""
    Index(settings_for(home, "e5")).index([str(EXAMPLE_DIR)], show_progress=False)


def cpu_per_answer(engine: Engine, questions: list[str], rounds: int, tag: str) -> float:
    """Process CPU milliseconds per answer over ``rounds`` rounds of ``questions``."""
    count = 0
    start = time.process_time()
    for r in range(1, rounds + 1):
        for q in questions:
            engine.ask_sync(f"{q} ({tag} {r})")
            count += 1
    return 1000 * (time.process_time() - start) / count


def measure(home: Path, accurate: str, runs: int, rounds: int) -> dict:
    settings = settings_for(home, accurate)
    engine = Engine(replace(settings, openai_api_key=None))
    questions = seed_questions()
    cpu_per_answer(engine, questions, 1, "warm-up")
    figures = [cpu_per_answer(engine, questions, rounds, f"run {i} round") for i in range(1, runs + 1)]
    return {"accurate": accurate, "runs": [round(f, 2) for f in figures],
            "median_ms": round(statistics.median(figures), 2), "answers_per_run": rounds * len(questions)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--home", type=Path, help="a home with the example article indexed (default: build one)")
    p.add_argument("--accurate", choices=["e5", "off", "both"], default="both")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    args = p.parse_args(argv)
    if configure_process is not None:
        configure_process()
    import newsdesk.bot.engine as engine_module

    with tempfile.TemporaryDirectory(prefix="answer-cpu-") as scratch:
        home = args.home
        if home is None:
            home = Path(scratch) / "home"
            build_home(home)
        modes = ["e5", "off"] if args.accurate == "both" else [args.accurate]
        results = [measure(home, mode, args.runs, args.rounds) for mode in modes]
    if args.json:
        print(json.dumps({"code": engine_module.__file__, "results": results}))
        return 0
    print(f"code: {Path(engine_module.__file__).parent.parent}")
    for r in results:
        runs = ", ".join(f"{f:.1f}" for f in r["runs"])
        print(f"NEWSDESK_ACCURATE={r['accurate']}: {r['median_ms']:.1f} ms CPU per answer "
              f"(median of {len(r['runs'])} runs of {r['answers_per_run']} answers: {runs})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
