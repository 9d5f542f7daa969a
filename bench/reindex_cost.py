"""Re-indexing cost: N unchanged articles vs the first index, and updating 1% of them.

    python -m bench.reindex_cost                        # 10,000 small articles, 3 runs
    python -m bench.reindex_cost --sizes 50 --quick     # smoke test

Corpus: N small articles (a title line and one short paragraph: the first sentence of an XQuAD paragraph,
Arabic or English, made unique with a numbered sentence), one passage each, in a temp folder.

Each run, in a fresh home, times three whole processes of ``newsdesk index DIR --fast --json``:

1. **first index**: everything is new;
2. **re-index, unchanged**: every article is read, hashed and skipped;
3. **update 1%**: ``--changed`` (default 1%) of the files get a sentence appended, then the same command.

The files are restored after each run. ``--fast`` (stage 1 only) throughout: with stage 2 on, the first index
of 10k passages would take over 30 min of e5 time; the stage-2 work of a re-index is only the changed
passages' (pending = passages without an accurate vector), at e5's rate (see index_scale). Ratios are per
run, then the median over the runs. The indexer's own ``seconds`` (in-process, without interpreter start and
imports) is reported too.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

from bench.common import (
    DEFAULT_OUT,
    base_paragraphs,
    clean_env,
    command_line,
    fmt,
    load_1min,
    log,
    machine_info,
    machine_note,
    markdown_table,
    median,
    pyplot,
    timed_run,
    wait_for_quiet,
    write_report,
)

PHASES = [("first", "first index (all new)"), ("unchanged", "re-index, nothing changed"),
          ("update", "re-index, {pct} changed")]


def write_small_corpus(folder: Path, n: int) -> list[Path]:
    from newsdesk.index.chunking import sentences

    bases = base_paragraphs()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        base = bases[i % len(bases)]
        s, e = sentences(base.text)[0]
        first = base.text[s:e]
        if base.lang == "ar":
            body = f"{first} وهذا هو الخبر القصير رقم {i}."
            title = f"{base.title}: خبر رقم {i}"
        else:
            body = f"{first} This is short news item number {i}."
            title = f"{base.title}: item {i}"
        path = folder / f"{i:06d}-{base.lang}.txt"
        path.write_text(f"{title}\n\n{body}\n", encoding="utf-8")
        paths.append(path)
    return paths


def index(folder: Path, home: Path) -> tuple[float, dict]:
    return timed_run([sys.executable, "-m", "newsdesk.bot.cli", "index", str(folder), "--fast", "--json"],
                     clean_env(home))


def one_run(folder: Path, paths: list[Path], home: Path, changed: float, seed: int) -> dict:
    out = {}
    wall, rep = index(folder, home)
    out["first"] = {"wall": wall, "inner": rep["seconds"], "report": rep}
    wall, rep = index(folder, home)
    out["unchanged"] = {"wall": wall, "inner": rep["seconds"], "report": rep}
    picked = random.Random(seed).sample(paths, max(1, round(len(paths) * changed)))
    originals = {p: p.read_text(encoding="utf-8") for p in picked}
    try:
        for p in picked:
            p.write_text(originals[p].rstrip("\n") + f" Updated in run {seed}.\n", encoding="utf-8")
        wall, rep = index(folder, home)
        out["update"] = {"wall": wall, "inner": rep["seconds"], "report": rep, "changed": len(picked)}
    finally:
        for p, text in originals.items():
            p.write_text(text, encoding="utf-8")
    return out


def check(run: dict, n: int, changed: int) -> list[str]:
    problems = []
    first, same, upd = run["first"]["report"], run["unchanged"]["report"], run["update"]["report"]
    if first["added"] != n or first["failed"]:
        problems.append(f"first index: {first['added']} added, {len(first['failed'])} failed "
                        f"(expected {n} added)")
    if same["unchanged"] != n or same["added"] or same["updated"] or same["chunks"]:
        problems.append(f"unchanged re-index: {same}")
    if upd["updated"] != changed or upd["unchanged"] != n - changed or upd["added"]:
        problems.append(f"update: {upd['updated']} updated, {upd['unchanged']} unchanged "
                        f"(expected {changed})")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000", help="number(s) of small articles, comma-separated")
    parser.add_argument("--changed", type=float, default=0.01,
                        help="share of articles updated (default 0.01)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 run, no waiting")
    parser.add_argument("--no-wait", action="store_true", help="don't wait for a quiet machine")
    args = parser.parse_args()
    if args.quick:
        args.runs = 1
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    info = machine_info(wait_for_quiet(skip=args.quick or args.no_wait))
    began = time.perf_counter()
    results, problems = {}, []
    with tempfile.TemporaryDirectory(prefix="newsdesk-reindex-") as tmp:
        scratch = Path(tmp)
        for n in sizes:
            folder = scratch / f"corpus-{n}"
            paths = write_small_corpus(folder, n)
            runs = []
            for r in range(args.runs):
                run = one_run(folder, paths, scratch / f"home-{n}-{r}", args.changed, seed=r + 1)
                problems += check(run, n, run["update"]["changed"])
                runs.append(run)
                log(f"  {n:,} articles, run {r + 1}: first {run['first']['wall']:.1f} s, unchanged "
                    f"{run['unchanged']['wall']:.1f} s, update {run['update']['changed']} "
                    f"{run['update']['wall']:.1f} s")
            results[n] = summarise(runs)
    info["total_minutes"] = round((time.perf_counter() - began) / 60, 1)
    md, fig, data = report(results, sizes, args, info, problems)
    for path in write_report(args.out, "reindex_cost", md, data, fig):
        log(f"wrote {path}")
    print(md)
    return 1 if problems else 0


def summarise(runs: list[dict]) -> dict:
    out = {"passages": runs[0]["first"]["report"]["chunks"], "changed": runs[0]["update"]["changed"]}
    for phase, _ in PHASES:
        out[phase] = {"wall_s": median(r[phase]["wall"] for r in runs),
                      "inner_s": median(r[phase]["inner"] for r in runs),
                      "walls": [round(r[phase]["wall"], 2) for r in runs]}
    for phase in ("unchanged", "update"):
        out[phase]["ratio"] = median(r[phase]["wall"] / r["first"]["wall"] for r in runs)
        out[phase]["inner_ratio"] = median(r[phase]["inner"] / r["first"]["inner"] for r in runs)
    return out


def report(results: dict, sizes: list[int], args, info: dict, problems: list[str]):
    pct = f"{args.changed * 100:g}%"
    rows = []
    for n in sizes:
        r = results[n]
        for phase, label in PHASES:
            p = r[phase]
            rows.append([f"{n:,}", label.format(pct=f"{pct} ({r['changed']})"), fmt(p["wall_s"], 2),
                         fmt(p["inner_s"], 2), f"{p['ratio']:.3f}" if "ratio" in p else "1",
                         f"{p['inner_ratio']:.3f}" if "inner_ratio" in p else "1",
                         ", ".join(f"{x:.1f}" for x in p["walls"])])
    table = markdown_table(["articles", "run", "whole process, s", "indexer's own seconds",
                            "÷ first (process)", "÷ first (in-process)", "per run, s"], rows)
    checks = ("Every run was checked: the first index added every article, the re-index found all unchanged "
              "and wrote nothing, the update re-wrote exactly the changed ones." if not problems else
              "**Problems:**\n\n" + "\n".join(f"- {p}" for p in problems[:20]))
    md = f"""# Re-indexing cost

Command: `{command_line()}` ({args.runs} run(s); medians; about {info.get('total_minutes', '?')} min in all).

{machine_note(info, load_1min())}

Corpus: small articles (title line + one short XQuAD sentence made unique, Arabic and English), one passage
each. Every step is a whole `newsdesk index DIR --fast --json` process (stage 1 only: with stage 2, the first
index of 10k passages would add over 30 min of e5; a re-index's stage 2 covers only the changed passages). The
in-process column is the indexer's own `seconds` (no interpreter start, imports or model load).

{table}

![re-index cost](reindex_cost.png)

{checks}
"""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    n = sizes[-1]
    r = results[n]
    labels = ["first index", "re-index\nunchanged", f"update {pct}"]
    walls = [r[p]["wall_s"] for p, _ in PHASES]
    inners = [r[p]["inner_s"] for p, _ in PHASES]
    xs = range(3)
    ax.bar([x - 0.2 for x in xs], walls, 0.4, label="whole process")
    ax.bar([x + 0.2 for x in xs], inners, 0.4, label="indexer's own time (in-process)")
    for x, w in zip(xs, walls, strict=False):
        ax.text(x - 0.2, w * 1.02, f"{w:.1f} s", ha="center", fontsize=8)
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels)
    ax.set_ylabel("time (s)")
    ax.set_xlabel(f"newsdesk index --fast on {n:,} small articles")
    ax.set_title("Re-indexing cost")
    ax.legend(fontsize=8)
    data = {"machine": info, "sizes": sizes, "changed": args.changed, "runs": args.runs,
            "results": {str(k): v for k, v in results.items()}, "problems": problems}
    return md, fig, data


if __name__ == "__main__":
    sys.exit(main())
